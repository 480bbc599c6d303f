"""An enrichment from its request to its summary: the one path the operator (and a script) takes.

:func:`prepare_run` reads the output (what request made it, what is answered), checks every row in
one pass and finds the rows still to do, before any call. :meth:`PreparedRun.run` checks the cost cap,
splits the rows between flex and batch, and runs the engine on a fresh event loop; what the task
then does with the summary is :func:`~airflow_provider_flex.enrichment.outcome.next_step`'s to say.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from airflow_provider_flex.enrichment.context_cache import CachePlan, RunCache, plan_cache
from airflow_provider_flex.enrichment.engine import Enrichment
from airflow_provider_flex.enrichment.estimate import CostEstimate, estimate_cost
from airflow_provider_flex.enrichment.failures import refused_rows
from airflow_provider_flex.enrichment.fingerprint import decide_on_output, request_fingerprint
from airflow_provider_flex.enrichment.keys import KeySet
from airflow_provider_flex.enrichment.media import RowMedia
from airflow_provider_flex.enrichment.pacing import EnrichmentPacer
from airflow_provider_flex.enrichment.request import EnrichRequest, RowsToDo, find_rows_to_do
from airflow_provider_flex.enrichment.routing import quota_rate
from airflow_provider_flex.enrichment.store import OutputStore, OutputTotals
from airflow_provider_flex.enrichment.summary import EnrichSummary
from airflow_provider_flex.exceptions import FlexError
from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook
from airflow_provider_flex.process_state import fix_mmap_threshold_once

#: Loggers of google-genai's HTTP clients, which log every request at INFO.
HTTP_CLIENT_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2")


@dataclass
class PreparedRun:
    """A run ready to start: its request (model and config resolved), output, pacer, hook and rows to do."""

    request: EnrichRequest
    store: OutputStore
    pacer: EnrichmentPacer
    hook: GeminiFlexHook
    done: KeySet
    earlier: OutputTotals
    rows: RowsToDo
    log: Any

    @functools.cached_property
    def cache_plan(self) -> CachePlan | None:
        """Return whether the run makes a context cache (its shared part counted once), or None when it has no
        shared part or goes by batch only (batch lines never name a cache)."""
        request = self.request
        shared = request.shared
        if request.route == "batch" or not (shared.system_instruction or shared.parts):
            return None
        tokens = 0
        if request.context_cache == "auto":
            tokens = self.hook.count_tokens(contents=shared.counted_contents(), model=request.model_id)
        limiter = self.hook.quota_limiter(request.model_id)
        return plan_cache(
            mode=request.context_cache,
            shared_tokens=tokens,
            rows=self.rows.todo,
            model=request.model_id,
            tier=request.service_tier,
            prices=self.hook.price_table,
            rows_per_s=quota_rate(limiter.known_limits(), None),
        )

    def estimate(self) -> CostEstimate:
        """Return the cost of the rows still to do (prompts counted on a sample, the context cache planned) and
        log it."""
        estimate = estimate_cost(
            self.request, hook=self.hook, done=self.done, todo=self.rows.todo, cache_plan=self.cache_plan
        )
        self.log.info("%s", estimate.describe(self.request.price_tier))
        return estimate

    def estimate_only(self) -> dict[str, Any]:
        """Return what ``estimate_only`` hands to XCom: the estimate, with no generate call."""
        return {
            "estimate": self.estimate().to_dict(),
            "total": self.rows.total,
            "skipped": len(self.done),
            "output_path": self.request.output_path,
        }

    def run(self) -> EnrichSummary:
        """Check the cost cap, route the rows, run the engine to the end; return the finished summary."""
        fix_mmap_threshold_once()  # a million rows in flat memory (see there)
        request = self.request
        if request.max_cost_usd is not None and self.rows.todo:
            self.estimate().check_cap(request.task, request.max_cost_usd)
        routing = None
        if request.route != "flex":
            from airflow_provider_flex.enrichment.deadline_routing import start_routing

            routing = start_routing(
                request, hook=self.hook, store=self.store, rows=self.rows, done=self.done, log=self.log
            )
        media = request.media
        plan = self.cache_plan
        context_cache = None
        if plan is not None and self.rows.todo:
            context_cache = RunCache(
                self.hook.caches, store=self.store, prefix=request.shared, model=request.model_id, plan=plan,
                log=self.log,
            )  # fmt: skip
        engine = Enrichment(
            request,
            hook=self.hook,
            pacer=self.pacer,
            store=self.store,
            log=self.log,
            total=self.rows.total,
            earlier=self.earlier,
            routing=routing,
            media=RowMedia(
                self.hook,
                media.fields,
                media_root=media.root,
                inline_limit=media.inline_limit,
                max_bytes=media.max_bytes,
            )
            if media is not None
            else None,
            context_cache=context_cache,
            dead_letters=self.rows.dead_letters,
        )

        async def main() -> EnrichSummary:
            await self.hook.aprepare()
            self.hook.forget_spent_day(request.model)  # each run looks at the day's quota afresh
            return await engine.run(request.rows(), self.done)

        with quiet_http_client_logs():
            return asyncio.run(main())


def prepare_run(request: EnrichRequest, *, log: Any, host: str) -> PreparedRun:
    """Return the run ready to start: the output's request checked, every row checked, the rows to do found.

    Nothing is called and nothing is written when the input is bad or the request changed (unless
    ``on_changed_request="rerun"``, which sets the earlier output aside once the input passed).
    """
    store = OutputStore(request.output_path)
    pacer = EnrichmentPacer(request.max_concurrency)
    hook = GeminiFlexHook(
        request.gemini_flex_conn_id,
        retry_policy=request.retry_policy,
        timeout=request.timeout,
        quotas=request.quotas,
        pacer=pacer,
        rate_limit_redis_conn_id=request.rate_limit_redis_conn_id or None,
    )
    request = request.resolved(hook.settings.default_model)
    fingerprint = _fingerprint(request)
    decision = decide_on_output(
        store.read_request(),
        fingerprint,
        has_output=store.has_output(),
        on_changed_request=request.on_changed_request,
        task=request.task,
        output_path=request.output_path,
    )
    if decision.action == "refuse":
        raise FlexError(decision.error)
    fresh = decision.action == "set_aside"
    done, earlier = (KeySet(), OutputTotals()) if fresh else store.scan()
    refused = {} if fresh or request.retry_refused else refused_rows(store.dead_letters())
    rows = find_rows_to_do(request, done, keep_positions=request.route != "flex", refused=refused)
    if rows.set_aside:
        request = replace(request, set_aside=frozenset(rows.set_aside))
        _log_set_aside(log, request, rows)
    if decision.action == "set_aside":
        folder = store.set_aside()
        log.warning(
            "The request changed (%s): the earlier output is set aside in %s and every row is answered again.",
            ", ".join(decision.changed),
            folder,
        )
    if decision.unrecorded:
        log.info("Output %s has no request record (an older version wrote it): recording this one.",
                 request.output_path)  # fmt: skip
    if decision.action != "keep":
        store.write_request(fingerprint)
    log.info(
        "Enriching %d rows (%d already have a result in %s), max concurrency %d, on %s (pid %d)",
        rows.total,
        len(done),
        request.output_path,
        request.max_concurrency,
        host,
        os.getpid(),
    )
    return PreparedRun(request, store, pacer, hook, done, earlier, rows, log)


def _log_set_aside(log: Any, request: EnrichRequest, rows: RowsToDo) -> None:
    """Say which rows the checking pass set aside, and why (the first few reasons)."""
    if rows.duplicates_skipped:
        log.warning("%d rows repeat a key already in the input: only each key's first row is enriched "
                    "(on_duplicate_key='keep_first').", rows.duplicates_skipped)  # fmt: skip
    if rows.refused_earlier:
        log.warning("%d rows the API refused in an earlier run (a 4xx for the row, a blocked prompt) stay dead "
                    "letters without a call; retry_refused=True asks again.", rows.refused_earlier)  # fmt: skip
    set_aside = len(rows.dead_letters) - rows.refused_earlier
    if set_aside:
        letters = (letter for letter in rows.dead_letters if not letter.get("carried_over"))
        reasons = "; ".join(letter["error"] for letter in itertools.islice(letters, 3))
        log.warning("%d rows set aside as dead letters before any call (on_duplicate_key=%r, on_bad_row=%r): %s%s",
                    set_aside, request.on_duplicate_key, request.on_bad_row, reasons,
                    "; ..." if set_aside > 3 else "")  # fmt: skip


def _fingerprint(request: EnrichRequest) -> dict[str, str]:
    """Return the fingerprint of what defines this request's answers (see ``fingerprint``)."""
    from airflow_provider_flex.hooks.request import response_json_schema

    return request_fingerprint(
        model=request.model_id.removeprefix("models/"),
        system_instruction=request.system_instruction,
        prompt_template=request.template.source,
        response_schema=response_json_schema(request.response_schema),
        generation_config=request.generation_config,
        service_tier=request.service_tier,
        route=request.route,
        shared_contents=request.shared.describe() or None,
    )


@contextlib.contextmanager
def quiet_http_client_logs() -> Iterator[None]:
    """Silence the HTTP client's one INFO line per request for the run (progress lines summarise).

    Over thousands of rows those lines flood the task log and cost a measurable share
    of the engine's CPU (benchmarks/enrich_throughput.py --scenario cpu).
    """
    loggers = [logging.getLogger(name) for name in HTTP_CLIENT_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
