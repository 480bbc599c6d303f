"""What an enrichment returns (its XCom): a typed, documented summary, JSON through :meth:`EnrichSummary.to_dict`.

Every key is a field below with its meaning; ``to_dict()`` is what lands in XCom, so a downstream
task reads ``summary["standard_cost_usd"]`` rather than rebuilding figures from result files.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_provider_flex.exceptions import FlexError, FlexQuotaExhausted, FlexRequestError

if TYPE_CHECKING:
    from airflow_provider_flex.enrichment.failures import DeadLetters
    from airflow_provider_flex.enrichment.request import EnrichRequest
    from airflow_provider_flex.enrichment.store import OutputTotals

#: Dead-letter reasons listed in a summary, most frequent first.
TOP_REASONS = 5
#: Keys of dead-lettered rows listed in a summary, as a sample to look at.
FAILED_KEY_SAMPLE = 10


@dataclass
class TokenTotals:
    """Tokens of the rows answered: ``output_tokens`` includes thinking (billed as output), also given apart."""

    input_tokens: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0
    cached_tokens: int = 0

    def add(self, usage: Any) -> None:
        """Add one answer's :class:`~airflow_provider_flex.hooks.results.FlexUsage`."""
        self.input_tokens += usage.prompt_tokens
        self.output_tokens += usage.output_tokens + usage.thoughts_tokens
        self.thinking_tokens += usage.thoughts_tokens
        self.cached_tokens += usage.cached_tokens

    def merge(self, other: TokenTotals) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class RouteFigures:
    """What one route (flex or batch) answered in a run: rows, spend, the same tokens at standard price."""

    rows: int = 0
    cost_usd: float = 0.0
    standard_cost_usd: float = 0.0
    cache_saved_usd: float = 0.0
    tokens: TokenTotals = field(default_factory=TokenTotals)
    #: Spend by the tier that served the rows (``flex``, ``standard``, ``batch``).
    cost_by_tier: dict[str, float] = field(default_factory=dict)

    def count(self, response: Any) -> None:
        """Count one answered row (a :class:`~airflow_provider_flex.hooks.results.FlexResponse`)."""
        self.rows += 1
        tier = str(response.service_tier or "unknown")
        self.cost_by_tier[tier] = self.cost_by_tier.get(tier, 0.0) + (response.cost_usd or 0.0)
        self.cost_usd += response.cost_usd or 0.0
        self.standard_cost_usd += response.standard_cost_usd or 0.0
        self.cache_saved_usd += response.cache_saved_usd or 0.0
        self.tokens.add(response.usage)

    def merge(self, other: RouteFigures) -> None:
        """Add ``other``'s rows, spend and tokens to these."""
        self.rows += other.rows
        self.cost_usd += other.cost_usd
        self.standard_cost_usd += other.standard_cost_usd
        self.cache_saved_usd += other.cache_saved_usd
        self.tokens.merge(other.tokens)
        for tier, cost in other.cost_by_tier.items():
            self.cost_by_tier[tier] = self.cost_by_tier.get(tier, 0.0) + cost


@dataclass
class EnrichSummary:
    """The outcome of one enrichment run; rows are counted once, on the route that answered them."""

    #: Rows in the input.
    total: int
    #: Rows answered in this run (flex and batch), and rows that ended as dead letters in this run.
    succeeded: int
    failed: int
    #: Rows that already had a result under ``output_path`` (not paid for again).
    skipped: int
    #: Rows not started (a cost cap, a spent day, a refused run): a rerun does them.
    not_started: int
    #: Rows waiting in batch jobs when the run returned (the task then defers while they run).
    in_batch: int
    #: The model called.
    model: str | None
    #: Spend of this run, the same tokens at the standard tier's price, and the difference.
    cost_usd: float
    standard_cost_usd: float
    saved_usd: float
    tokens: TokenTotals
    #: Rows and spend by route (``flex``, ``batch``): answered rows only.
    rows_by_route: dict[str, int]
    cost_by_route: dict[str, float]
    #: Wall time of the run and rows answered per second.
    elapsed_s: float
    rows_per_s: float
    #: Flex calls refused with 429 and 503 (retried), calls served on the standard tier, the most in flight.
    rate_limited_429: int
    unavailable_503: int
    standard_tier_calls: int
    peak_concurrency: int
    #: The run stopped at ``max_cost_usd``.
    stopped_by_cost_cap: bool
    #: The per-day quota that ran out (model, quota, limit, reset time), or None.
    daily_quota_exhausted: dict[str, Any] | None
    #: Answers paid for but unusable (off-schema, cut at ``max_output_tokens``, blocked) and what they cost;
    #: counted in ``cost_usd`` and ``tokens`` too, since they were billed.
    unusable_answers: int = 0
    unusable_cost_usd: float = 0.0
    #: Rows the API refused in an earlier run on this output (a 4xx for the row, a blocked prompt), carried
    #: over as dead letters without a call (among ``failed``); ``retry_refused=True`` asks again.
    refused_earlier: int = 0
    #: Generate requests sent (every attempt, retries included): with the batch jobs, the API's calls, not rows.
    api_requests: int = 0
    #: Spend by the tier that served it (``flex``, ``standard``, ``batch``), unusable answers included.
    cost_by_tier: dict[str, float] = field(default_factory=dict)
    #: What the API's cache saved this run: cached prompt tokens at the input price less at the cached price.
    cache_saved_usd: float = 0.0
    #: The storage of the run's explicit context cache (in ``cost_usd`` too), and what became of the cache:
    #: ``{"name", "made", "reattached", "shared_tokens", "reason", "lost"}`` (None: the run had no shared part).
    cache_storage_usd: float = 0.0
    context_cache: dict[str, Any] | None = None
    #: The most frequent dead-letter reasons (``{"reason", "rows"}``) and a sample of their keys.
    top_errors: list[dict[str, Any]] = field(default_factory=list)
    failed_keys_sample: list[str] = field(default_factory=list)
    #: Where results are, and everything written there by every run so far.
    output_path: str | None = None
    output_rows: int = 0
    output_cost_usd: float = 0.0
    output_standard_cost_usd: float = 0.0
    #: ``route`` and, with batch, the deadline and the jobs (``{"name", "state"}``).
    route: str = "flex"
    finish_by: str | None = None
    batch_jobs: list[dict[str, str]] = field(default_factory=list)
    #: With ``sql_conn_id``: the table loaded and the rows upserted into it.
    table: str | None = None
    loaded_rows: int | None = None
    #: With ``results_parquet``: the Parquet file written and the rows in it.
    results_parquet: str | None = None
    exported_rows: int | None = None
    #: Why the run stopped before its rows were done, for the task to act on (not in XCom): the API refused
    #: the run, the day's quota was spent (also in ``daily_quota_exhausted``), or the task's supervisor went away.
    run_refused: FlexRequestError | None = field(default=None, repr=False)
    quota_exhausted: FlexQuotaExhausted | None = field(default=None, repr=False)
    supervisor_gone: bool = field(default=False, repr=False)
    #: The batch jobs still running when the run returned (the task defers on them), and when the watchdog
    #: next looks at them (the deferred task wakes then at the latest).
    waiting_jobs: list[str] = field(default_factory=list, repr=False)
    cutoff: datetime | None = field(default=None, repr=False)
    #: Rows of batch jobs cancelled past their cutoff (``finish_by`` plus grace, or ``batch_max_wait``) and
    #: served on flex instead, and those jobs with the rows each held.
    late_rows: int = 0
    late_jobs: dict[str, int] = field(default_factory=dict)

    def failure(self, max_failed_fraction: float, max_cost_usd: float | None) -> FlexError | None:
        """Return why the task fails after writing everything: it stopped at the cost cap, or too many rows failed."""
        if self.stopped_by_cost_cap:
            return FlexError(
                f"Stopped at the cost cap: spent ${self.cost_usd:.4f} of max_cost_usd=${max_cost_usd}; "
                f"{self.not_started} rows not started. Results so far are in {self.output_path}; "
                "raise max_cost_usd and rerun to resume where it stopped."
            )
        if self.total and self.failed / self.total > max_failed_fraction:
            return FlexError(
                f"{self.failed} of {self.total} rows failed ({self.failed / self.total:.1%}), more than "
                f"max_failed_fraction={max_failed_fraction:.1%}; dead letters are in the failed*.jsonl "
                f"files under {self.output_path}; a rerun retries those another try may answer "
                "(the rows the API refused only with retry_refused=True)."
            )
        return None

    def describe(self) -> str:
        """Return the run's closing log line."""
        return (
            f"Enrichment summary: {self.succeeded} rows answered ({self.rows_by_route['flex']} flex, "
            f"{self.rows_by_route['batch']} batch), {self.failed} failed; {self.tokens.input_tokens} input and "
            f"{self.tokens.output_tokens} output tokens ({self.tokens.thinking_tokens} thinking); cost "
            f"${self.cost_usd:.4f} against ${self.standard_cost_usd:.4f} at standard price (saved ${self.saved_usd:.4f}); "
            f"this output so far: {self.output_rows} rows, ${self.output_cost_usd:.4f}."
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the XCom form: plain JSON; token totals appear at the top level as well as under ``tokens``."""
        data = {
            f.name: asdict(self.tokens) if f.name == "tokens" else _plain(getattr(self, f.name))
            for f in fields(self)
            if f.name not in NOT_IN_XCOM
        }
        data.update(data["tokens"])
        return data


#: Summary fields the task acts on that are not data: left out of the XCom.
NOT_IN_XCOM = frozenset({"run_refused", "quota_exhausted", "supervisor_gone", "waiting_jobs", "cutoff"})


def _plain(value: Any) -> Any:
    """Return a copy of a JSON-like value (lists and dicts copied, so the XCom does not share them)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def error_digest(dead_letters: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Return the most frequent dead-letter reasons and a sample of the keys that failed, in one pass."""
    reasons: Counter[str] = Counter()
    sample: list[str] = []
    for letter in dead_letters:
        reasons[str(letter.get("error", ""))[:300]] += 1
        if len(sample) < FAILED_KEY_SAMPLE:
            sample.append(str(letter["key"]))
    top = [{"reason": reason, "rows": rows} for reason, rows in reasons.most_common(TOP_REASONS)]
    return top, sample


@dataclass
class EnrichStats:
    """What a run has done so far: the engine's accumulator, from which :class:`EnrichSummary` is made."""

    total: int = 0
    skipped: int = 0
    failed: int = 0
    standard_tier_calls: int = 0
    #: What each route answered in this run (batch: filled in once, when flex is done).
    flex: RouteFigures = field(default_factory=RouteFigures)
    batch: RouteFigures = field(default_factory=RouteFigures)
    #: Answers paid for but unusable (off-schema, cut at max_output_tokens, blocked): dead letters that cost.
    unusable: RouteFigures = field(default_factory=RouteFigures)
    in_batch: int = 0
    started: float = field(default_factory=time.monotonic)
    stopped_by_cost_cap: bool = False
    quota_exhausted: FlexQuotaExhausted | None = None
    #: The API refused the run itself (a bad key, an unknown model, a config every row would fail).
    run_refused: FlexRequestError | None = None
    #: The process that started this one (Airflow's task supervisor) went away mid-run: the run stopped.
    orphaned: bool = False
    #: What the run's explicit context cache cost to keep (known once it is deleted).
    cache_storage_usd: float = 0.0

    def add_batch(self, answered: RouteFigures, unusable: RouteFigures, dead_letters: int) -> None:
        """Fold the batch route's answers and dead letters into the run's figures (once, at the end)."""
        self.batch = answered
        self.unusable.merge(unusable)
        self.failed += dead_letters

    @property
    def succeeded(self) -> int:
        return self.flex.rows + self.batch.rows

    @property
    def cost_usd(self) -> float:
        """Return what the run paid: its answers, its unusable answers and its context cache's storage."""
        return self.flex.cost_usd + self.batch.cost_usd + self.unusable.cost_usd + self.cache_storage_usd

    @property
    def standard_cost_usd(self) -> float:
        return self.flex.standard_cost_usd + self.batch.standard_cost_usd + self.unusable.standard_cost_usd

    def rows_per_s(self) -> float:
        elapsed = time.monotonic() - self.started
        return round(self.done / elapsed, 2) if elapsed > 0 else 0.0

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    def summary(
        self,
        request: EnrichRequest,
        calls: CallCounts,
        *,
        dead_letters: DeadLetters,
        earlier: OutputTotals,
        jobs: BatchJobsSeen | None = None,
        context_cache: dict[str, Any] | None = None,
    ) -> EnrichSummary:
        """Return the finished summary: this run's figures, and the output's over every run (``earlier`` ones
        and this run's answers, all of them in the output now)."""
        jobs = jobs or BatchJobsSeen()
        top_errors, failed_keys = error_digest(dead_letters)
        routes = (self.flex, self.batch, self.unusable)
        answers = (self.flex, self.batch)  # what the output holds: answers, not unusable ones
        return EnrichSummary(
            total=self.total,
            succeeded=self.succeeded,
            failed=self.failed,
            skipped=self.skipped,
            not_started=self.total - self.skipped - self.done - self.in_batch,
            in_batch=self.in_batch,
            model=request.model,
            cost_usd=round(self.cost_usd, 6),
            standard_cost_usd=round(self.standard_cost_usd, 6),
            saved_usd=round(self.standard_cost_usd - self.cost_usd, 6),
            tokens=_tokens_of(routes),
            rows_by_route={"flex": self.flex.rows, "batch": self.batch.rows},
            cost_by_route={"flex": round(self.flex.cost_usd, 6), "batch": round(self.batch.cost_usd, 6)},
            api_requests=calls.api_requests,
            cost_by_tier=_cost_by_tier(*routes),
            unusable_answers=self.unusable.rows,
            unusable_cost_usd=round(self.unusable.cost_usd, 6),
            refused_earlier=dead_letters.carried_over,
            cache_saved_usd=round(sum(route.cache_saved_usd for route in routes), 6),
            cache_storage_usd=round(self.cache_storage_usd, 9),  # seconds of a small cache: fractions of a cent
            context_cache=context_cache,
            elapsed_s=round(time.monotonic() - self.started, 3),
            rows_per_s=self.rows_per_s(),
            rate_limited_429=calls.rate_limited_429,
            unavailable_503=calls.unavailable_503,
            standard_tier_calls=self.standard_tier_calls,
            peak_concurrency=calls.peak_in_flight,
            stopped_by_cost_cap=self.stopped_by_cost_cap,
            daily_quota_exhausted=_exhausted_dict(self.quota_exhausted),
            top_errors=top_errors,
            failed_keys_sample=failed_keys,
            output_path=request.output_path,
            **_output_totals(earlier, answers),
            route=request.route,
            finish_by=request.deadline.isoformat() if request.deadline and request.route != "flex" else None,
            batch_jobs=jobs.jobs,
            run_refused=self.run_refused,
            quota_exhausted=self.quota_exhausted,
            supervisor_gone=self.orphaned,
            waiting_jobs=jobs.waiting,
            cutoff=jobs.cutoff,
            late_rows=sum(jobs.late.values()),
            late_jobs=dict(jobs.late),
        )


@dataclass(frozen=True)
class BatchJobsSeen:
    """The run's batch jobs as its summary tells them: every job (name, state, ``batchStats``), those still
    running, those the watchdog cancelled (rows each held), and the next cutoff."""

    jobs: list[dict[str, Any]] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    late: dict[str, int] = field(default_factory=dict)
    cutoff: datetime | None = None


@dataclass(frozen=True)
class CallCounts:
    """What the pacer counted over a run's calls: 429s and 503s refused (and retried), the most in flight."""

    rate_limited_429: int = 0
    unavailable_503: int = 0
    peak_in_flight: int = 0
    api_requests: int = 0


def _output_totals(earlier: OutputTotals, answers: Iterable[RouteFigures]) -> dict[str, Any]:
    """Return the output's totals over every run: ``earlier`` ones and this run's ``answers``."""
    answers = list(answers)
    return {
        "output_rows": earlier.rows + sum(r.rows for r in answers),
        "output_cost_usd": round(earlier.cost_usd + sum(r.cost_usd for r in answers), 6),
        "output_standard_cost_usd": round(earlier.standard_cost_usd + sum(r.standard_cost_usd for r in answers), 6),
    }


def _tokens_of(routes: Iterable[RouteFigures]) -> TokenTotals:
    """Return the token totals over ``routes``."""
    tokens = TokenTotals()
    for route in routes:
        tokens.merge(route.tokens)
    return tokens


def _cost_by_tier(*routes: RouteFigures) -> dict[str, float]:
    """Return spend by served tier over ``routes``, to the micro-dollar."""
    total: dict[str, float] = {}
    for route in routes:
        for tier, cost in route.cost_by_tier.items():
            total[tier] = total.get(tier, 0.0) + cost
    return {tier: round(cost, 6) for tier, cost in sorted(total.items())}


def _exhausted_dict(exhausted: FlexQuotaExhausted | None) -> dict[str, Any] | None:
    """Return the spent per-day quota as JSON (model, quota, limit, reset time), or None."""
    if exhausted is None:
        return None
    return {
        "model": exhausted.model,
        "quota": exhausted.quota,
        "quota_id": exhausted.quota_id,
        "limit": exhausted.limit,
        "reset_at": exhausted.reset_at.isoformat(),
        "message": str(exhausted),
    }
