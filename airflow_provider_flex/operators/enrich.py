"""Enrich every row of a table on the flex tier (or the Batch API by a deadline): ``GeminiFlexEnrichOperator``.

The engine, its output store, routing and SQL loading live in ``airflow_provider_flex.enrichment``
and are imported when the task runs, not when a DAG file is parsed.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_flex import DEFAULT_CONN_ID
from airflow_provider_flex.arguments import (
    INLINE_LIMIT_BYTES,
    MAX_MEDIA_BYTES,
    QuotaLimits,
    check_enrichment_arguments,
    normalize_tier,
)
from airflow_provider_flex.compat import conf
from airflow_provider_flex.enrichment.fingerprint import check_on_changed_request
from airflow_provider_flex.enrichment.routing import as_finish_by, check_route, deadline_of, is_template
from airflow_provider_flex.exceptions import FlexError
from airflow_provider_flex.hooks.request import check_schema_at_parse_time, generate_config
from airflow_provider_flex.hooks.retry import FlexRetryPolicy
from airflow_provider_flex.operators.schema_field import fields_to_render

if TYPE_CHECKING:
    from airflow.sdk import Context

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
    :param input_path: a JSONL or CSV file, local path or ``ObjectStoragePath`` URL, read as a stream.
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
    :param sql_conn_id: with ``table``, load the results into that table through this common-sql
        connection once the run succeeds: the key (primary key), one column per top-level property of
        ``response_schema`` (``text`` without one; JSON text for objects and arrays), ``service_tier``,
        ``route``, ``model``, ``cost_usd``; upserted by key, so a rerun does not duplicate rows. The table is
        created when missing.
    :param table: the table to load into (a plain identifier, optionally ``schema.table``).
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
    )
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        records: Any = None,
        input_path: str | None = None,
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
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        sql_conn_id: str | None = None,
        table: str | None = None,
        estimate_only: bool = False,
        estimated_output_tokens: int | None = None,
        on_changed_request: str = "fail",
        include_prompt: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_on_changed_request(f"Task {self.task_id!r}", on_changed_request)
        self.on_changed_request = on_changed_request
        self.include_prompt = include_prompt
        check_enrichment_arguments(
            f"Task {self.task_id!r}",
            has_records=records is not None,
            has_input_path=input_path is not None,
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
        self.deferrable = deferrable
        self.media_fields = list(media_fields or [])
        self.media_root = media_root
        self.inline_media_bytes = inline_media_bytes
        self.max_media_bytes = max_media_bytes
        self.records = records
        self.input_path = input_path
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
        """The task's quota overrides (an empty or 0 value: not given)."""
        given = {
            "requests_per_minute": self.requests_per_minute,
            "tokens_per_minute": self.tokens_per_minute,
        }
        return QuotaLimits.from_value(
            {name: None if value in (None, "", 0, "0") else value for name, value in given.items()},
            source=f"Task {self.task_id!r}",
        )

    def _estimate(self, hook: Any, rows: Any, template: Any, done: set[str], todo: int) -> Any:
        """Count a sample of the prompts with countTokens and project the cost of the rows still to do."""
        from airflow_provider_flex.enrichment.estimate import estimate_cost, output_tokens_per_row

        tier = "batch" if self.route == "batch" else self.service_tier
        estimate = estimate_cost(
            hook=hook,
            rows=rows(),
            template=template,
            key_field=self.key_field,
            done=done,
            todo=todo,
            model=self.model or hook.settings.default_model,
            tier=tier,
            system_instruction=self.system_instruction,
            output_tokens=output_tokens_per_row(self.estimated_output_tokens, self.generation_config),
            prices=hook.price_table,
        )
        self.log.info("%s", estimate.describe(tier))
        return estimate

    def _check_request(self, store: Any, hook: Any) -> None:
        """Record what defines this output's answers; refuse (or, with ``on_changed_request="rerun"``, set the
        old output aside) when an earlier run here answered a different request."""
        from airflow_provider_flex.enrichment.fingerprint import changed_parts, describe_change, request_fingerprint
        from airflow_provider_flex.hooks.request import response_json_schema

        fingerprint = request_fingerprint(
            model=(self.model or hook.settings.default_model).removeprefix("models/"),
            system_instruction=self.system_instruction,
            prompt_template=self.prompt_template,
            response_schema=response_json_schema(self.response_schema),
            generation_config=self.generation_config,
            service_tier=self.service_tier,
            route=self.route,
        )
        recorded = store.read_request()
        if not store.has_output():  # nothing answered here yet (a run that stopped before any call, say)
            store.write_request(fingerprint)
            return
        changed = changed_parts(recorded["fingerprint"], fingerprint) if recorded else []
        if changed and self.on_changed_request == "fail":
            raise FlexError(describe_change(f"Task {self.task_id!r}", self.output_path, changed))
        if changed:
            folder = store.set_aside()
            self.log.warning(
                "The request changed (%s): the earlier output is set aside in %s and every row is answered again.",
                ", ".join(changed),
                folder,
            )
        if recorded is None:
            self.log.info("Output %s has no request record (an older version wrote it): recording this one.",
                          self.output_path)  # fmt: skip
        if changed or recorded is None:
            store.write_request(fingerprint)

    def execute_after_quota_reset(self, context: Context, event: Any = None) -> dict[str, Any]:
        """Resume after waiting for the daily quota's reset and carry on from the checkpoint."""
        return self.execute(context)

    def execute_after_batches(self, context: Context, event: Any = None, deadline: str | None = None) -> dict[str, Any]:
        """Resume once a batch job ended: collect its answers, resubmit what it missed, defer again or finish."""
        return self._run(context, datetime.fromisoformat(deadline) if deadline else None)

    def _deadline(self, context: Context) -> datetime | None:
        finish_by = as_finish_by(self.task_id, self.finish_by)
        check_route(self.task_id, self.route, finish_by)
        if self.route != "auto" or finish_by is None:
            return None
        ti = _task_instance(context)
        started = getattr(ti, "start_date", None) or datetime.now(timezone.utc)
        return deadline_of(self.task_id, finish_by, started)

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
        from airflow_provider_flex.enrichment.batch_route import build_routing
        from airflow_provider_flex.enrichment.engine import Enrichment, reset_time, run_enrichment
        from airflow_provider_flex.enrichment.media import RowMedia
        from airflow_provider_flex.enrichment.pacing import EnrichmentPacer
        from airflow_provider_flex.enrichment.records import PromptTemplate, check_rows, iter_rows, row_key
        from airflow_provider_flex.enrichment.store import OutputStore
        from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook, as_generate_config

        def rows():
            return iter_rows(self.records, self.input_path)

        if self.sql_conn_id and self.table:  # bad names fail before any call
            from airflow_provider_flex.enrichment.sql import check_identifiers, schema_columns

            check_identifiers(
                f"Task {self.task_id!r}", self.table, [self.key_field, *schema_columns(self.response_schema)]
            )
        template = PromptTemplate(self.prompt_template, dict(context))
        total = check_rows(rows(), self.key_field, template)
        store = OutputStore(self.output_path)
        pacer = EnrichmentPacer(self.max_concurrency)
        hook = GeminiFlexHook(
            self.gemini_flex_conn_id,
            retry_policy=self.retry_policy,
            timeout=self.timeout,
            quotas=self._quotas(),
            pacer=pacer,
            rate_limit_redis_conn_id=self.rate_limit_redis_conn_id or None,
        )
        self._check_request(store, hook)  # before any call: a changed request never passes off old answers
        done, earlier = store.scan()
        ti = _task_instance(context)
        self.log.info(
            "Enriching %d rows (%d already have a result in %s), max concurrency %d, on %s (pid %d)",
            total,
            len(done),
            self.output_path,
            self.max_concurrency,
            getattr(ti, "hostname", None) or socket.gethostname(),
            os.getpid(),
        )
        config = as_generate_config(
            generate_config(self.system_instruction, self.generation_config, self.response_schema)
        )
        todo = 0
        if self.estimate_only or self.max_cost_usd is not None:  # the rows still to do, for the estimate
            todo = sum(1 for number, row in rows() if row_key(row, self.key_field, number) not in done)
        if self.estimate_only or todo:
            estimate = self._estimate(hook, rows, template, done, todo)
            if self.estimate_only:
                return {
                    "estimate": estimate.to_dict(),
                    "total": total,
                    "skipped": len(done),
                    "output_path": self.output_path,
                }
            estimate.check_cap(self.task_id, self.max_cost_usd)
        routing = None
        deadline = deadline or self._deadline(context)
        if self.route != "flex":
            routing = build_routing(
                hook=hook,
                store=store,
                rows=rows,
                template=template,
                key_field=self.key_field,
                model=self.model or hook.settings.default_model,
                config=config,
                route=self.route,
                deadline=deadline,
                done=done,
                poll_interval=self.batch_poll_interval,
                wait_for_batches=not self.deferrable,
                log=self.log,
                task=f"Task {self.task_id!r}",
            )
        engine = Enrichment(
            hook=hook,
            pacer=pacer,
            store=store,
            template=template,
            key_field=self.key_field,
            model=self.model,
            config=config,
            service_tier=self.service_tier,
            max_cost_usd=self.max_cost_usd,
            log=self.log,
            media=RowMedia(
                hook,
                self.media_fields,
                media_root=self.media_root or None,
                inline_limit=self.inline_media_bytes,
                max_bytes=self.max_media_bytes,
            )
            if self.media_fields
            else None,
            routing=routing,
            total=total,
            include_prompt=self.include_prompt,
        )
        summary = run_enrichment(engine, rows, done)
        summary.output_path, summary.route = self.output_path, self.route
        # everything written before this run, and this run's answers (all of them are in the output now)
        summary.output_rows = earlier.rows + summary.succeeded
        answers = (engine.stats.flex, engine.stats.batch)  # what the output holds: answers, not unusable ones
        summary.output_cost_usd = round(earlier.cost_usd + sum(route.cost_usd for route in answers), 6)
        summary.output_standard_cost_usd = round(
            earlier.standard_cost_usd + sum(route.standard_cost_usd for route in answers), 6
        )
        self._flex_summary = summary
        if engine.stats.orphaned:  # no supervisor to push XComs to: say it in the log and stop
            raise FlexError(
                f"Task {self.task_id!r}: its supervisor went away mid-run; {summary.succeeded} rows answered are "
                f"checkpointed in {self.output_path}, and Airflow's retry resumes from there."
            )
        try:
            if engine.stats.run_refused is not None:
                self.log.error(
                    "The API refused the run: %s. Results so far are in %s; fix the cause and rerun: every row not "
                    "answered is done then.",
                    engine.stats.run_refused,
                    self.output_path,
                )
                raise engine.stats.run_refused
            if routing is not None:
                summary.finish_by = deadline.isoformat() if deadline else None
                summary.batch_jobs = [
                    {"name": name, "state": state} for name, state in routing.batch.stats.jobs.items()
                ]
                if summary.in_batch:
                    self.log.info(
                        "Waiting for %d rows in batch jobs %s.", summary.in_batch, ", ".join(routing.batch.job_names())
                    )
                    from airflow_provider_flex.triggers.batch import GeminiFlexBatchTrigger

                    self.defer(
                        trigger=GeminiFlexBatchTrigger(
                            routing.batch.job_names(), self.gemini_flex_conn_id, self.batch_poll_interval
                        ),
                        method_name="execute_after_batches",
                        kwargs={"deadline": deadline.isoformat() if deadline else None},
                    )
            self.log.info("%s", summary.describe())
            exhausted = engine.stats.quota_exhausted
            if exhausted is not None and self.route == "flex":
                self.log.warning(
                    "Daily quota spent: %d rows done this run, %d left for after the reset; results are in %s.",
                    summary.succeeded + summary.failed,
                    summary.not_started,
                    self.output_path,
                )
                if self.on_daily_quota == "wait":
                    self._wait_for_quota_reset(reset_time(summary) or exhausted.reset_at)
                raise exhausted
            failure = summary.failure(self.max_failed_fraction, self.max_cost_usd)
            if failure is not None:
                raise failure
        except FlexError:
            from airflow_provider_flex.spend import record_failed_spend

            record_failed_spend(context, summary.to_dict())  # the spend view counts what a failed run spent
            raise
        if self.sql_conn_id and self.table:
            from airflow_provider_flex.enrichment.sql import load_results

            summary.table = self.table
            summary.loaded_rows = load_results(
                store=store,
                sql_conn_id=self.sql_conn_id,
                table=self.table,
                key_field=self.key_field,
                response_schema=self.response_schema,
                task=f"Task {self.task_id!r}",
            )
            self.log.info(
                "Loaded %d rows into %s (%s), upserted by %s.",
                summary.loaded_rows,
                self.table,
                self.sql_conn_id,
                self.key_field,
            )
        return summary.to_dict()


def _task_instance(context: Any) -> Any:
    """The running task instance, or None (a test may call ``execute`` with a plain dict, or none at all)."""
    return context.get("ti") if hasattr(context, "get") else None
