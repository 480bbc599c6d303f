"""Enrich every row of a table on the flex tier (or the Batch API by a deadline): ``GeminiFlexEnrichOperator``.

The engine, its output store, routing and SQL loading live in ``airflow_provider_flex.enrichment``
and are imported when the task runs, not when a DAG file is parsed.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_flex import DEFAULT_CONN_ID
from airflow_provider_flex.arguments import (
    CONTEXT_CACHE_MODES,
    INLINE_LIMIT_BYTES,
    MAX_MEDIA_BYTES,
    ON_BAD_ROW,
    ON_DUPLICATE_KEY,
    QuotaLimits,
    check_choice,
    check_enrichment_arguments,
    normalize_tier,
)
from airflow_provider_flex.compat import AIRFLOW_V_3_1_PLUS, conf
from airflow_provider_flex.enrichment.fingerprint import check_on_changed_request
from airflow_provider_flex.enrichment.routing import (
    DEFAULT_BATCH_MAX_WAIT,
    DEFAULT_BATCH_TURNAROUND,
    ON_UNREACHABLE_DEADLINE,
    as_finish_by,
    check_route,
    deadline_of,
    is_template,
    positive_duration,
)
from airflow_provider_flex.hooks.request import check_schema_at_parse_time
from airflow_provider_flex.hooks.retry import FlexRetryPolicy
from airflow_provider_flex.operators.schema_field import fields_to_render

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_flex.enrichment.request import EnrichRequest

#: How long after the quota day's reset a waiting enrichment looks again.
QUOTA_RESET_MARGIN = timedelta(seconds=30)


class GeminiFlexEnrichOperator(BaseOperator):
    """Enrich every row of a table on the flex tier: concurrent, rate-adaptive, resumable, nothing lost.

    Each row's prompt is ``prompt_template`` rendered per row (not an Airflow template field, so
    ``{{ row.title }}`` survives Airflow's own rendering). Calls run concurrently on one event loop
    through :class:`GeminiFlexHook`'s retry policy, paced to the quotas; results ``results-*.jsonl``
    and dead letters ``failed-*.jsonl`` under ``output_path`` are checkpoints, so a retry or rerun
    skips rows already answered (nothing is paid twice). It runs on the worker; several enrichment
    tasks sharing a key share one pool and split ``max_concurrency``. See ``docs/enrichment.md``.

    :param records: rows as a list of dicts (e.g. an upstream XCom); or
    :param input_path: a JSONL or CSV file, local path or ``ObjectStoragePath`` URL, read as a stream; or
    :param input_sql: a query whose result rows are the input (columns are the fields), streamed in chunks
        (PostgreSQL: a server-side cursor) through ``input_conn_id``, any common-sql connection. Templated.
    :param input_conn_id: the connection ``input_sql`` runs on.
    :param key_field: the field holding each row's unique id.
    :param prompt_template: the Jinja template of each row's prompt (``{{ row.field }}``; also ``params``,
        ``ds`` and the rest of the task context). Not an Airflow template field.
    :param output_path: where results, dead letters and checkpoints go (local path or
        ``ObjectStoragePath`` URL); a rerun with the same path resumes. Templated.
    :param model: model id; default from the connection's ``default_model``. Templated.
    :param system_instruction: the system instruction of every call. Templated.
    :param response_schema: a JSON Schema dict, a pydantic model class or a ``TypeAdapter``: each
        result's ``parsed`` holds the JSON, validated on the client whatever the API enforced; an answer
        failing it is a dead letter whose reason names the path and the rule (``error_kind``: ``invalid_json``,
        ``max_tokens`` or ``off_schema``), its tokens and cost counted. Templated when a string or a dict.
    :param generation_config: extra ``GenerateContentConfig`` fields as a dict (temperature,
        ``max_output_tokens``, ``thinking_config``...). Templated.
    :param service_tier: ``flex`` (default), ``standard`` or ``priority``.
    :param max_concurrency: the most API calls in flight at once (the engine adapts between 1 and this).
    :param gemini_flex_conn_id: the ``gemini_flex`` connection; default ``gemini_flex_default``. Templated.
    :param retry_policy: a :class:`FlexRetryPolicy` (or its dict) overriding the connection's, per row.
    :param timeout: seconds per attempt, overriding the connection's.
    :param max_failed_fraction: the task fails, after writing everything, when more
        than this fraction of rows ends as dead letters.
    :param max_cost_usd: before the first call, the task fails if the cost estimate (see ``estimate_only``)
        for the rows still to do exceeds it; during the run, no new row starts once the spent plus in-flight
        cost reaches it, and the task then fails and resumes where it stopped after the cap is raised.
    :param estimate_only: count the prompts of a sample of rows with ``countTokens``, log the projected
        cost on the run's tier and at standard price, and return ``{"estimate": ...}`` without any
        generate call.
    :param estimated_output_tokens: output tokens per row (thinking included) the estimate assumes; default
        ``max_output_tokens`` from ``generation_config``, else 1,000.
    :param on_changed_request: what a run does when ``output_path`` holds answers to a different request
        (model, system instruction, prompt template, response schema, generation config, tier or route
        changed; recorded in ``request.json`` beside the results): ``"fail"`` (default) refuses before any
        call, naming what changed; ``"rerun"`` sets the earlier output aside under ``superseded/`` and
        answers every row again.
    :param include_prompt: write each row's rendered prompt into its result line (``prompt``), so an
        evaluation or an agent chain can be traced prompt by prompt (flex-route rows; off by default, since
        prompts may hold data you keep out of files).
    :param requests_per_minute: the model's requests-per-minute quota, when you know it;
        overrides the connection's ``quotas`` extra for this task. Starts are paced evenly
        to it. Unknown quotas are learned from the first 429 that names them.
    :param tokens_per_minute: likewise, the input-tokens-per-minute quota.
    :param on_daily_quota: what to do when a per-day quota runs out (no call can succeed
        before midnight America/Los_Angeles): ``"fail"`` (default) fails the task with
        :class:`FlexQuotaExhausted` after checkpointing; ``"wait"`` defers the task until
        the reset (no worker slot meanwhile), then carries on from the checkpoint.
    :param media_fields: row fields holding file locations (local paths, ``ObjectStoragePath`` URLs such
        as ``s3://``, ``gs://``, ``file://``); each file becomes a part of the row's prompt, typed by its
        content. A missing, unreadable, oversize (``max_media_bytes``) or unsupported file makes that
        row a dead letter naming the field and location, before its call. Files up to
        ``inline_media_bytes`` travel inline; larger ones are uploaded through the Files API once per
        run and deleted when it ends.
    :param media_root: where relative locations in media fields are found.
    :param inline_media_bytes: files up to this size travel inline; larger ones go through the Files API.
    :param max_media_bytes: a file larger than this makes its row a dead letter (default 2 GB).
    :param rate_limit_redis_conn_id: a ``redis`` connection through which this task paces to the
        project's quotas together with every other worker (shards, other DAGs); overrides the
        connection extra of the same name. Without it the task paces alone.
    :param daily_quota_recheck: with ``"wait"``, look again after this long at most even
        if the reset is later (a day that reset early, a clock that disagrees): one
        refused call each time.
    :param route: ``"flex"`` (default): every row on the flex tier. ``"batch"``: every row through
        Gemini Batch API jobs (the same 50% price, its own far larger quota, answers within 24
        hours). ``"auto"``: flex serves the rows it can finish by ``finish_by`` at the rate the
        quotas allow (known, learned or measured), and the rest go into batch jobs as soon as that
        is known (all the rest once the day's quota is spent). No row is answered on both routes;
        a failed batch line is retried in a later job, and after the retry policy's attempts
        becomes a dead letter with its reason. Batch jobs are checkpointed under ``output_path``
        before they are created, so a rerun or retry re-attaches to its own jobs instead of paying
        twice. Not with ``media_fields``.
    :param finish_by: with ``route="auto"``: a ``timedelta`` from the task's start, an aware ``datetime``,
        or seconds from the task's start (a number, or a template rendering to one). ``route`` and
        ``finish_by`` are templated; templated values are checked once rendered, before any call.
    :param batch_poll_interval: seconds between two looks at running batch jobs.
    :param batch_max_wait: how long a batch job may live (a ``timedelta`` or seconds; default 24 hours, the
        Batch API's target turnaround) before it is cancelled and its rows are served on flex. With
        ``route="auto"`` a job still unfinished 15 s past ``finish_by`` is cancelled the same way.
    :param batch_turnaround: how long a batch job is expected to take (default 24 hours, the Batch API's target;
        once this output's jobs have finished, the median of what they took). With ``route="auto"``, when flex
        plus that turnaround cannot meet ``finish_by``, the task says before the first call how many rows will
        be late and by about how much, and goes on (``on_unreachable_deadline="warn"``) or fails (``"fail"``).
    :param on_unreachable_deadline: ``"warn"`` (default) or ``"fail"``, see ``batch_turnaround``.
    :param sql_conn_id: with ``table``, load the results into that table through this common-sql
        connection once the run succeeds: the key (primary key), one column per top-level property of
        ``response_schema`` (``text`` without one; JSON text for objects and arrays), ``service_tier``,
        ``route``, ``model``, ``cost_usd``; upserted by key, so a rerun does not duplicate rows. The table is
        created when missing.
    :param table: the table to load into (a plain identifier, optionally ``schema.table``). Every row loaded has
        ``status`` (``ok``) and ``error`` columns; answer columns take the database's type for their JSON type.
    :param on_duplicate_key: a key that repeats in the input: ``"keep_first"`` (default: the first row is
        enriched, the others skipped with a warning), ``"dead_letter"`` (the others are dead letters naming both
        rows) or ``"fail"`` (the task fails before any call, naming the rows).
    :param on_bad_row: a row whose prompt does not render (a field missing) or renders empty:
        ``"dead_letter"`` (default: a dead letter naming the row and the reason, no call made for it) or
        ``"fail"`` (the task fails before any call). A row without a key always fails the task.
    :param retry_refused: ask the API again for rows it refused in an earlier run on this output (a 400 or
        other 4xx for the row's request, a prompt its safety filters blocked). Default False: the same request
        gets the same refusal, so a rerun carries those dead letters over without a call (``refused_earlier``
        in the summary). Rows that failed for want of capacity, or with an answer cut short or off the schema,
        are retried on every rerun; a changed prompt, model or config asks every row anew.
    :param output_asset: declare the output as an Airflow Asset in ``outlets`` (default True; Airflow 3.1 and
        newer: 3.0's ``dags test`` fails a task whose outlets it has not activated, so there give ``outlets``
        yourself): a local
        ``output_path`` (``file://`` URI) and, with ``sql_conn_id`` and ``table``, the table
        (``x-gemini-flex-table://<conn>/<table>``), when they are not templated. Each asset event (yours in
        ``outlets`` too) carries ``rows``, ``succeeded``, ``failed``, ``cost_usd``, ``output_path``, ``table``.
    :param results_parquet: once the run succeeds, write its results (and dead letters, ``status`` and
        ``error`` columns) to this Parquet file, local or an ``ObjectStoragePath`` URL (the ``parquet``
        extra). Templated.
    :param load_failed: also load the rows that failed (dead letters), with ``status`` ``failed`` and their
        ``error``, so the table tells a failed row from one not yet done; a rerun that answers one turns it ``ok``.
    :param shared_contents: text or files every row's prompt starts with, after the system instruction (a
        string, or a list of strings, ``{"file": location}`` and paths; text files as text, images and PDFs
        inline). Read before any call: a missing file fails the task naming it. Templated.
    :param context_cache: ``"auto"`` (default): when the shared part (system instruction and
        ``shared_contents``) reaches the model's cache minimum and the rows pay for its storage, the run makes
        one explicit cache, names it in every flex row (shared tokens at about a tenth of the input price),
        extends it while the run goes on and deletes it when the run ends; a rerun after a crash re-attaches
        to it or deletes it (see ``docs/enrichment.md``). ``"off"``: no explicit cache (the API's implicit
        cache may still serve the shared start). Batch-route rows never name a cache.
    :return: (XCom) :class:`~airflow_provider_flex.enrichment.summary.EnrichSummary` as a dict: rows
        (``total``, ``succeeded``, ``failed``, ``skipped``, ``not_started``, ``in_batch``), ``model``,
        tokens (``input_tokens``, ``output_tokens`` with thinking, ``thinking_tokens``, ``cached_tokens``),
        ``cost_usd``, ``standard_cost_usd``, ``saved_usd``, ``rows_by_route``, ``cost_by_route``, the
        output's totals over every run (``output_rows``, ``output_cost_usd``), ``top_errors``,
        ``failed_keys_sample``, 429/503 counts, ``daily_quota_exhausted``, ``batch_jobs``, ``loaded_rows``;
        each field is documented on the class.
    :param deferrable: while batch jobs run, defer (no worker slot; a trigger polls them, then the task
        resumes to collect their answers); with ``False`` the worker polls.
    """

    template_fields: Sequence[str] = (
        "records",
        "input_path",
        "input_sql",
        "output_path",
        "model",
        "system_instruction",
        "response_schema",
        "generation_config",
        "gemini_flex_conn_id",
        "rate_limit_redis_conn_id",
        "requests_per_minute",
        "tokens_per_minute",
        "media_root",
        "route",
        "finish_by",
        "sql_conn_id",
        "table",
        "shared_contents",
        "results_parquet",
    )
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        records: Any = None,
        input_path: str | None = None,
        input_sql: str | None = None,
        input_conn_id: str | None = None,
        key_field: str,
        prompt_template: str,
        output_path: str,
        model: str | None = None,
        system_instruction: str | None = None,
        response_schema: Any = None,
        generation_config: dict[str, Any] | None = None,
        service_tier: str = "flex",
        max_concurrency: int = 32,
        max_failed_fraction: float = 0.0,
        max_cost_usd: float | None = None,
        gemini_flex_conn_id: str = DEFAULT_CONN_ID,
        retry_policy: FlexRetryPolicy | dict[str, Any] | None = None,
        timeout: float | None = None,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        on_daily_quota: str = "fail",
        daily_quota_recheck: timedelta | float = timedelta(hours=1),
        rate_limit_redis_conn_id: str | None = None,
        media_fields: Sequence[str] | None = None,
        media_root: str | None = None,
        inline_media_bytes: int = INLINE_LIMIT_BYTES,
        max_media_bytes: int = MAX_MEDIA_BYTES,
        route: str = "flex",
        finish_by: timedelta | datetime | float | str | None = None,
        batch_poll_interval: float = 60.0,
        batch_max_wait: timedelta | float = DEFAULT_BATCH_MAX_WAIT,
        batch_turnaround: timedelta | float = DEFAULT_BATCH_TURNAROUND,
        on_unreachable_deadline: str = "warn",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        sql_conn_id: str | None = None,
        table: str | None = None,
        estimate_only: bool = False,
        estimated_output_tokens: int | None = None,
        on_changed_request: str = "fail",
        include_prompt: bool = False,
        context_cache: str = "auto",
        shared_contents: Any = None,
        load_failed: bool = False,
        results_parquet: str | None = None,
        on_duplicate_key: str = "keep_first",
        on_bad_row: str = "dead_letter",
        retry_refused: bool = False,
        output_asset: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if output_asset and AIRFLOW_V_3_1_PLUS:  # 3.0's `dags test` refuses outlets its DAG run has not activated
            from airflow_provider_flex.enrichment.assets import output_assets

            self.outlets = [*self.outlets, *output_assets(output_path, sql_conn_id, table)]
        check_on_changed_request(f"Task {self.task_id!r}", on_changed_request)
        check_choice(self.task_id, "context_cache", context_cache, CONTEXT_CACHE_MODES)
        self.context_cache = context_cache
        self.shared_contents = shared_contents
        self.load_failed = load_failed
        self.results_parquet = results_parquet
        check_choice(self.task_id, "on_duplicate_key", on_duplicate_key, ON_DUPLICATE_KEY)
        check_choice(self.task_id, "on_bad_row", on_bad_row, ON_BAD_ROW)
        self.on_duplicate_key, self.on_bad_row = on_duplicate_key, on_bad_row
        self.retry_refused = retry_refused
        self.on_changed_request = on_changed_request
        self.include_prompt = include_prompt
        check_enrichment_arguments(
            f"Task {self.task_id!r}",
            has_records=records is not None,
            has_input_path=input_path is not None,
            has_input_sql=input_sql is not None,
            input_conn_id=input_conn_id,
            max_concurrency=max_concurrency,
            max_failed_fraction=max_failed_fraction,
            on_daily_quota=on_daily_quota,
            route=route,
            media_fields=media_fields,
            batch_poll_interval=batch_poll_interval,
            sql_conn_id=sql_conn_id,
            table=table,
            estimated_output_tokens=estimated_output_tokens,
        )
        self.estimate_only = estimate_only
        self.estimated_output_tokens = estimated_output_tokens
        self.sql_conn_id = sql_conn_id
        self.table = table
        if not is_template(route) and not is_template(finish_by):
            check_route(self.task_id, route, as_finish_by(self.task_id, finish_by))
        self.route = route
        self.finish_by = finish_by
        self.batch_poll_interval = batch_poll_interval
        self.batch_max_wait = positive_duration(self.task_id, "batch_max_wait", batch_max_wait)
        self.batch_turnaround = positive_duration(self.task_id, "batch_turnaround", batch_turnaround)
        check_choice(self.task_id, "on_unreachable_deadline", on_unreachable_deadline, ON_UNREACHABLE_DEADLINE)
        self.on_unreachable_deadline = on_unreachable_deadline
        self.deferrable = deferrable
        self.media_fields = list(media_fields or [])
        self.media_root = media_root
        self.inline_media_bytes = inline_media_bytes
        self.max_media_bytes = max_media_bytes
        self.records = records
        self.input_path = input_path
        self.input_sql = input_sql
        self.input_conn_id = input_conn_id
        self.key_field = key_field
        self.prompt_template = prompt_template
        self.output_path = output_path
        self.model = model
        self.system_instruction = system_instruction
        self.response_schema = response_schema
        self.generation_config = generation_config
        self.service_tier = normalize_tier(service_tier)
        self.max_concurrency = max_concurrency
        self.max_failed_fraction = max_failed_fraction
        self.max_cost_usd = max_cost_usd
        self.gemini_flex_conn_id = gemini_flex_conn_id
        self.retry_policy = FlexRetryPolicy.from_value(retry_policy)
        self.timeout = timeout
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        if not any(isinstance(v, str) for v in (requests_per_minute, tokens_per_minute)):
            self._quotas()  # plain values are checked when the DAG is parsed; templates once rendered
        self.on_daily_quota = on_daily_quota
        self.rate_limit_redis_conn_id = rate_limit_redis_conn_id
        recheck = daily_quota_recheck
        self.daily_quota_recheck = recheck if isinstance(recheck, timedelta) else timedelta(seconds=float(recheck))
        check_schema_at_parse_time(self.task_id, response_schema)

    def _do_render_template_fields(
        self, parent: Any, template_fields: Any, context: Any, jinja_env: Any, seen_oids: set[int]
    ) -> None:
        """Render the template fields, leaving a pydantic ``response_schema`` as it is (see ``schema_field``)."""
        fields = fields_to_render(self, parent, template_fields)
        super()._do_render_template_fields(parent, fields, context, jinja_env, seen_oids)

    def _quotas(self) -> QuotaLimits:
        """Return the task's quota overrides (an empty or 0 value: not given)."""
        given = {
            "requests_per_minute": self.requests_per_minute,
            "tokens_per_minute": self.tokens_per_minute,
        }
        return QuotaLimits.from_value(
            {name: None if value in (None, "", 0, "0") else value for name, value in given.items()},
            source=f"Task {self.task_id!r}",
        )

    def execute_after_quota_reset(self, context: Context, event: Any = None) -> dict[str, Any]:
        """Resume after waiting for the daily quota's reset and carry on from the checkpoint."""
        return self.execute(context)

    def execute_after_batches(self, context: Context, event: Any = None, deadline: str | None = None) -> dict[str, Any]:
        """Resume once a batch job ended: collect its answers, resubmit what it missed, defer again or finish."""
        return self._run(context, datetime.fromisoformat(deadline) if deadline else None)

    def _deadline(self, context: Context) -> datetime | None:
        """Return the absolute ``finish_by`` of a ``route="auto"`` run (checked once rendered), else None."""
        finish_by = as_finish_by(self.task_id, self.finish_by)
        check_route(self.task_id, self.route, finish_by)
        if self.route != "auto" or finish_by is None:
            return None
        ti = _task_instance(context)
        started = getattr(ti, "start_date", None) or datetime.now(timezone.utc)
        return deadline_of(self.task_id, finish_by, started)

    def _enrich_request(self, context: Context, deadline: datetime | None) -> EnrichRequest:
        """Return the task's rendered arguments as one request, checked before any call."""
        from airflow_provider_flex.enrichment.request import request_of_task

        return request_of_task(self, context, deadline or self._deadline(context), self._quotas())

    def _wait_for_quota_reset(self, reset_at: datetime) -> None:
        from airflow.providers.standard.triggers.temporal import DateTimeTrigger

        moment = min(reset_at + QUOTA_RESET_MARGIN, datetime.now(timezone.utc) + self.daily_quota_recheck)
        self.log.info("Waiting for the daily quota: deferring until %s (reset at %s).", moment, reset_at)
        self.defer(trigger=DateTimeTrigger(moment=moment), method_name="execute_after_quota_reset")

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the input file, the output folder and table, and the ``geminiFlex`` run facet (model, tiers,
        rows, tokens, cost). Used when ``apache-airflow-providers-openlineage`` is installed."""
        from airflow_provider_flex.lineage import operator_lineage, table_dataset

        outputs: list[Any] = [self.output_path]
        if self.sql_conn_id and self.table:
            outputs.append(table_dataset(self.sql_conn_id, self.table))
        summary = getattr(self, "_flex_summary", None)
        return operator_lineage(
            inputs=[self.input_path] if self.input_path else [],
            outputs=outputs,
            result=summary.to_dict() if summary is not None else None,
            model=self.model,
        )

    def execute(self, context: Context) -> dict[str, Any]:
        return self._run(context, None)

    def _run(self, context: Context, deadline: datetime | None) -> dict[str, Any]:
        from airflow_provider_flex.enrichment.outcome import DEFER_FOR_BATCHES, FAIL, WAIT_FOR_QUOTA_RESET, next_step
        from airflow_provider_flex.enrichment.run import prepare_run

        host = getattr(_task_instance(context), "hostname", None) or socket.gethostname()
        run = prepare_run(self._enrich_request(context, deadline), log=self.log, host=host)
        if self.estimate_only:
            return run.estimate_only()
        summary = self._flex_summary = run.run()
        step = next_step(summary, run.request)
        for level, line in step.log_lines:
            self.log.log(level, "%s", line)
        if step.action == DEFER_FOR_BATCHES:
            self._defer_for_batches(summary.waiting_jobs, run.request.deadline, summary.cutoff)
        if step.action == WAIT_FOR_QUOTA_RESET:
            self._wait_for_quota_reset(step.reset_at)
        if step.action == FAIL:
            if step.record_spend:
                from airflow_provider_flex.spend import record_failed_spend

                record_failed_spend(context, summary.to_dict())  # the spend view counts what a failed run spent
            raise step.error
        if run.request.loads_table:
            summary.table = self.table
            summary.loaded_rows = self._load_table(run.store)
        from airflow_provider_flex.enrichment.assets import record_asset_events

        record_asset_events(context, list(self.outlets), summary)
        if self.results_parquet:
            from airflow_provider_flex.enrichment.parquet import export_parquet

            summary.results_parquet = self.results_parquet
            summary.exported_rows = export_parquet(run.request.output_path, self.results_parquet)
            self.log.info("Wrote %d rows to %s.", summary.exported_rows, self.results_parquet)
        return summary.to_dict()

    def _defer_for_batches(self, job_names: list[str], deadline: datetime | None, cutoff: datetime | None) -> None:
        """Defer until a batch job ends or the watchdog's ``cutoff`` comes (no worker slot meanwhile); resume in
        :meth:`execute_after_batches`."""
        from airflow_provider_flex.triggers.batch import GeminiFlexBatchTrigger

        wake_at = cutoff.isoformat() if cutoff else None
        self.defer(
            trigger=GeminiFlexBatchTrigger(job_names, self.gemini_flex_conn_id, self.batch_poll_interval, wake_at),
            method_name="execute_after_batches",
            kwargs={"deadline": deadline.isoformat() if deadline else None},
        )

    def _load_table(self, store: Any) -> int:
        """Upsert every result (and with ``load_failed`` every dead letter) into ``table``; return the rows loaded."""
        from airflow_provider_flex.enrichment.sql import load_results

        answered, failed = load_results(
            store=store,
            sql_conn_id=self.sql_conn_id,
            table=self.table,
            key_field=self.key_field,
            response_schema=self.response_schema,
            task=f"Task {self.task_id!r}",
            load_failed=self.load_failed,
        )
        self.log.info("Loaded %d answered and %d failed rows into %s (%s), upserted by %s.", answered, failed,
                      self.table, self.sql_conn_id, self.key_field)  # fmt: skip
        return answered + failed


def _task_instance(context: Any) -> Any:
    """Return the running task instance, or None (a test may call ``execute`` with a plain dict, or none at all)."""
    return context.get("ti") if hasattr(context, "get") else None
