"""What the provider's tasks spent, read back from what they already record: their XCom values.

Pure functions over plain dicts, so the spend view (``plugins/spend_view.py``), the tests and
anyone's own report read the figures the same way. A generate, stream or ``@task.gemini_flex`` task
returns a :class:`~airflow_provider_flex.hooks.results.FlexResponse` dict; an enrichment returns an
:class:`~airflow_provider_flex.enrichment.summary.EnrichSummary` dict; a task that failed after
spending pushes the same figures under :data:`SPEND_XCOM_KEY`. Downstream tasks that repeat these
figures (the example DAGs' reports) are not provider tasks and are never counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

#: The provider's operators as a task instance records them (``task_instance.operator``).
PROVIDER_OPERATORS = (
    "GeminiFlexGenerateContentOperator",
    "GeminiFlexStreamContentOperator",
    "GeminiFlexEnrichOperator",
    "_GeminiFlexDecoratedOperator",
)
#: common.ai's batch operator: its tasks count when this provider's adapter recorded their spend.
BATCH_OPERATORS = ("LLMBatchOperator", "_LLMBatchDecoratedOperator")
#: The XCom key under which a task that fails after spending records what it spent.
SPEND_XCOM_KEY = "gemini_flex_spend"


@dataclass
class Spend:
    """Calls, rows, tokens, money and refusals of one task or a sum of them.

    ``calls`` counts what the API counts: generate requests (every attempt, retries included) and batch
    jobs, not rows. ``cost_usd`` includes the storage of caches the provider made (``cache_storage_usd``).
    """

    calls: int = 0
    rows: int = 0
    batch_jobs: int = 0
    cost_usd: float = 0.0
    standard_cost_usd: float = 0.0
    input_tokens: int = 0
    #: Output tokens, thinking included (what is billed as output).
    output_tokens: int = 0
    cached_tokens: int = 0
    #: What cached tokens saved (at the input price less the cached price), and what the caches' storage cost.
    cache_saved_usd: float = 0.0
    cache_storage_usd: float = 0.0
    #: Calls or rows by the tier that served them (``flex``, ``standard``, ``batch``...).
    tiers: dict[str, int] = field(default_factory=dict)
    #: Spend by route (``flex``: online calls; ``batch``: Batch API jobs) and by the tier that served it.
    cost_by_route: dict[str, float] = field(default_factory=dict)
    cost_by_tier: dict[str, float] = field(default_factory=dict)
    rate_limited_429: int = 0
    unavailable_503: int = 0
    #: The batch jobs of enrichments: ``{"name", "state", "pending", "successful", "failed"}`` each.
    jobs: list[dict[str, Any]] = field(default_factory=list)

    def add(self, other: Spend) -> None:
        """Add ``other``'s figures to these."""
        for name, value in asdict(other).items():
            if isinstance(value, list):
                getattr(self, name).extend(value)
            elif isinstance(value, dict):
                mine = getattr(self, name)
                for key, amount in value.items():
                    mine[key] = mine.get(key, 0) + amount
            else:
                setattr(self, name, getattr(self, name) + value)

    @property
    def saved_usd(self) -> float:
        return round(self.standard_cost_usd - self.cost_usd, 6)


def spend_of(value: Any) -> Spend | None:
    """Return the spend in one XCom value of a provider task, or None when it holds none.

    A generate or stream result, an enrichment summary, or what this provider's common.ai adapter recorded
    for an ``@task.llm_batch`` task (``kind: llm_batch``; common.ai's own manifest carries no spend).
    """
    if not isinstance(value, Mapping):
        return None
    if isinstance(value.get("usage"), Mapping) and "service_tier" in value:
        return _call_spend(value)
    if isinstance(value.get("rows_by_route"), Mapping):
        return _enrichment_spend(value)
    if value.get("kind") == "llm_batch":
        return _llm_batch_spend(value)
    return None


def _call_spend(result: Mapping[str, Any]) -> Spend:
    usage = result["usage"]
    cost = float(result.get("cost_usd") or 0.0)
    tier = str(result["service_tier"])
    return Spend(
        calls=int(result.get("attempts") or 1),
        cost_usd=cost,
        standard_cost_usd=float(result.get("standard_cost_usd") or 0.0),
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0) + int(usage.get("thoughts_tokens") or 0),
        cached_tokens=int(usage.get("cached_tokens") or 0),
        cache_saved_usd=float(result.get("cache_saved_usd") or 0.0),
        tiers={tier: 1},
        cost_by_route={"flex": cost},
        cost_by_tier={tier: cost},
        rate_limited_429=int(result.get("rate_limited_429") or 0),
        unavailable_503=int(result.get("unavailable_503") or 0),
    )


def _enrichment_spend(summary: Mapping[str, Any]) -> Spend:
    tokens = summary.get("tokens") or {}
    by_route = summary["rows_by_route"]
    on_standard = int(summary.get("standard_tier_calls") or 0)
    tiers = {
        "flex": max(0, int(by_route.get("flex") or 0) - on_standard),
        "standard": on_standard,
        "batch": int(by_route.get("batch") or 0),
    }
    rows = int(summary.get("succeeded") or 0)
    jobs = len(summary.get("batch_jobs") or [])
    requests = summary.get("api_requests")  # older summaries: one request per answer
    storage = float(summary.get("cache_storage_usd") or 0.0)
    by_route = {route: float(cost) for route, cost in (summary.get("cost_by_route") or {}).items() if cost}
    if storage:
        by_route["flex"] = by_route.get("flex", 0.0) + storage
    return Spend(
        calls=(int(requests) if requests is not None else rows + int(summary.get("unusable_answers") or 0)) + jobs,
        rows=rows,
        batch_jobs=jobs,
        cost_usd=float(summary.get("cost_usd") or 0.0),
        standard_cost_usd=float(summary.get("standard_cost_usd") or 0.0),
        input_tokens=int(tokens.get("input_tokens") or 0),
        output_tokens=int(tokens.get("output_tokens") or 0),
        cached_tokens=int(tokens.get("cached_tokens") or 0),
        cache_saved_usd=float(summary.get("cache_saved_usd") or 0.0),
        cache_storage_usd=storage,
        tiers={tier: count for tier, count in tiers.items() if count},
        cost_by_route=by_route,
        cost_by_tier={tier: float(cost) for tier, cost in (summary.get("cost_by_tier") or {}).items() if cost},
        rate_limited_429=int(summary.get("rate_limited_429") or 0),
        unavailable_503=int(summary.get("unavailable_503") or 0),
        jobs=[dict(job) for job in summary.get("batch_jobs") or [] if isinstance(job, Mapping)],
    )


def _llm_batch_spend(spend: Mapping[str, Any]) -> Spend:
    """Return the spend this provider's common.ai adapter recorded for a ``@task.llm_batch`` task's job."""
    cost = float(spend.get("cost_usd") or 0.0)
    rows = int(spend.get("rows") or 0)
    return Spend(
        calls=int(spend.get("batch_jobs") or 1),
        rows=rows,
        batch_jobs=int(spend.get("batch_jobs") or 1),
        cost_usd=cost,
        standard_cost_usd=float(spend.get("standard_cost_usd") or 0.0),
        input_tokens=int(spend.get("input_tokens") or 0),
        output_tokens=int(spend.get("output_tokens") or 0),
        cached_tokens=int(spend.get("cached_tokens") or 0),
        tiers={"batch": rows},
        cost_by_route={"batch": cost},
        cost_by_tier={"batch": cost},
    )


@dataclass(frozen=True)
class TaskRecord:
    """One provider task's XCom value, as the view reads it from the metadata database."""

    dag_id: str
    run_id: str
    run_state: str | None
    run_start: str | None
    task_id: str
    map_index: int
    #: The XCom key, or None for a provider task that ended without any XCom (it failed before a call).
    key: str | None
    value: Any


def runs_spend(records: Iterable[TaskRecord]) -> list[dict[str, Any]]:
    """Return one entry per DAG run that spent through the provider, newest first.

    A task counts once: its ``return_value`` when that holds spend, else what it recorded under
    :data:`SPEND_XCOM_KEY` (a task that failed after spending; a common.ai batch task through this provider's
    adapter). A provider task that ended with no XCom at all (``key`` None: it failed before its first call)
    lists its run with $0.
    """
    chosen: dict[tuple[str, str, str, int], tuple[TaskRecord, Spend | None]] = {}
    for record in records:
        slot = (record.dag_id, record.run_id, record.task_id, record.map_index)
        spend = Spend() if record.key is None else spend_of(record.value)  # no XCom: it failed before a call
        earlier = chosen.get(slot)
        if earlier is None or (spend is not None and (earlier[1] is None or record.key == "return_value")):
            chosen[slot] = (record, spend)
    runs: dict[tuple[str, str], dict[str, Any]] = {}
    totals: dict[tuple[str, str], Spend] = {}
    for record, spend in chosen.values():
        if spend is None:
            continue
        run = (record.dag_id, record.run_id)
        if run not in runs:
            runs[run] = {
                "dag_id": record.dag_id,
                "run_id": record.run_id,
                "state": record.run_state,
                "start_date": record.run_start,
                "tasks": 0,
            }
            totals[run] = Spend()
        runs[run]["tasks"] += 1
        totals[run].add(spend)
    entries = [{**runs[run], **_rounded(asdict(totals[run])), "saved_usd": totals[run].saved_usd} for run in runs]
    return sorted(entries, key=lambda entry: (entry["start_date"] or "", entry["run_id"]), reverse=True)


def _rounded(figures: dict[str, Any]) -> dict[str, Any]:
    """Return money to the micro-dollar, once, after summing (rounding each addition drifts)."""
    return {
        name: round(value, 6)
        if name.endswith("_usd")
        else {key: round(amount, 6) for key, amount in value.items()}
        if name.startswith("cost_by_")
        else value
        for name, value in figures.items()
    }


def spend_by_day(runs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Return cost and standard-equivalent cost per day (UTC, by run start), oldest first."""
    days: dict[str, dict[str, Any]] = {}
    for run in runs:
        day = (run.get("start_date") or "")[:10] or "unknown"
        entry = days.setdefault(day, {"day": day, "cost_usd": 0.0, "standard_cost_usd": 0.0, "runs": 0})
        entry["cost_usd"] += run["cost_usd"]
        entry["standard_cost_usd"] += run["standard_cost_usd"]
        entry["runs"] += 1
    return [_rounded(days[day]) for day in sorted(days)]


def record_failed_spend(context: Any, spend: Mapping[str, Any] | None) -> None:
    """Push what a failing task spent under :data:`SPEND_XCOM_KEY`: it has no return value to read it from."""
    ti = context.get("ti") if hasattr(context, "get") else None
    if ti is not None and spend:
        ti.xcom_push(key=SPEND_XCOM_KEY, value=dict(spend))
