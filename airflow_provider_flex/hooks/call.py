"""One logical flex call's decisions (tiers, timeouts, quota reservations, retries, results), shared by its sync and
async I/O in the hook."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity

from airflow_provider_flex.exceptions import (
    FlexCapacityError,
    FlexQuotaExhausted,
    FlexResponseError,
    FlexStreamInterrupted,
)
from airflow_provider_flex.hooks.quota import DayBlocked, QuotaLimiter, Reservation
from airflow_provider_flex.hooks.request import RequestConfigs
from airflow_provider_flex.hooks.results import (
    FlexResponse,
    FlexUsage,
    GeneratedImage,
    StreamAssembly,
    answer_text,
    finish_reason_of,
    images_of,
    served_tier,
    unusable_answer,
)
from airflow_provider_flex.hooks.retry import (
    DailyQuotaRefusal,
    Failure,
    FlexRetryPolicy,
    RetryableFailure,
    capacity_error,
    describe_failure,
    plan_retry,
    translate_error,
)
from airflow_provider_flex.hooks.schema import AnswerSchema
from airflow_provider_flex.hooks.tracing import (
    call_attributes,
    content_attributes,
    content_wanted,
    live_tracer,
    record_call_span,
)
from airflow_provider_flex.pricing import SHIPPED, TokenPrice, bare_model_id, cache_saving, price_of, usage_cost
from airflow_provider_flex.process_state import PROCESS

if TYPE_CHECKING:
    from google.genai import types


class CallPacer:
    """What a bulk caller plugs into the hook; this default changes nothing.

    - :meth:`attempt` is entered around every async API attempt, not the waits
      between attempts (the enrichment engine caps calls in flight with it);
    - :meth:`request_sent` is called when an attempt's request goes, after its quota and start waits;
    - :meth:`on_failure` hears every retryable failure (429, 5xx, timeout, drop);
    - :meth:`backoff_step` maps a call's attempt number to its backoff exponent's
      step (never more than the attempt);
    - ``log_level`` is the level of the per-call lines (retries, "call done").
    """

    log_level: int = logging.INFO

    def attempt(self) -> AbstractAsyncContextManager[Any]:
        return nullcontext()

    def request_sent(self) -> None:
        return None

    def on_failure(self, failure: Failure) -> None:
        return None

    def backoff_step(self, attempt: int) -> int:
        return attempt


#: Jitter draws for every call of the process (seeding a generator per hook costs ~0.2 ms and 2.5 KB).
JITTER = random.Random()
_E = TypeVar("_E", bound=BaseException)


@dataclass
class FlexCall:
    """The decisions of one logical call, shared by its sync and async I/O."""

    model: str
    base_config: types.GenerateContentConfig
    requested_tier: str
    policy: FlexRetryPolicy
    timeout_s: float
    prices: Mapping[str, Mapping[str, TokenPrice]]
    limiter: QuotaLimiter
    pacer: CallPacer
    log: logging.Logger
    configs: RequestConfigs
    vertex_flex_mode: str | None = None
    started: float = field(default_factory=time.monotonic)
    attempts: int = 0
    last_failure: Failure | None = None
    fallback_tried: bool = False
    reservation: Reservation | None = None
    #: Attempts refused with 429 and 503 (what the spend view and traces count).
    refused: dict[int, int] = field(default_factory=dict)
    #: For the call's trace span: when it began (epoch seconds), when its latest attempt was sent, its prompt.
    started_wall: float = field(default_factory=time.time)
    attempt_started: float | None = None
    contents: Any = field(default=None, repr=False)

    def tiers_to_try(self) -> Iterator[tuple[str, FlexRetryPolicy]]:
        """Yield the tiers to try in order, each with its own attempt budget."""
        policy = self.policy
        fallback = policy.fallback_to_standard and self.requested_tier == "flex"
        if not fallback:
            yield self.requested_tier, policy
            return
        yield "flex", replace(policy, max_attempts=max(1, policy.max_attempts - 1))
        if self.attempts < policy.max_attempts and self.elapsed < policy.deadline:
            self.fallback_tried = True
            self.log.warning(
                "Flex exhausted after %d attempt(s); falling back to the standard tier at full price (%s).",
                self.attempts,
                price_note(self.model, self.prices),
            )
            yield "standard", replace(policy, max_attempts=1)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def reserve(self, contents: Any) -> float:
        """Reserve this attempt's start in the model's quotas; the seconds to wait before sending it.

        Raises FlexQuotaExhausted while the day's quota is spent, and FlexCapacityError
        when the quotas allow no start before the deadline.
        """
        self.contents = contents
        now = time.monotonic()
        outcome = self.limiter.reserve(contents, now=now, wall=datetime.now(timezone.utc))
        if isinstance(outcome, DayBlocked):
            raise self.quota_exhausted(outcome)
        self.reservation = outcome
        wait = outcome.start - now
        if self.elapsed + wait >= self.policy.deadline:
            failure = Failure(True, 429, "RESOURCE_EXHAUSTED", f"the quotas allow no start for {wait:.0f}s")
            raise self.traced(error=capacity_error(failure, self.attempts, self.elapsed))
        return wait

    def config_for(self, tier: str) -> types.GenerateContentConfig:
        """Return the request config: the caller's, with the tier, this attempt's timeout and no SDK retries."""
        self.attempts += 1
        self.attempt_started = time.monotonic()
        remaining = self.policy.deadline - self.elapsed
        timeout_ms = max(1000, int(min(self.timeout_s, remaining)) * 1000)
        return self.configs.get(self.base_config, tier, timeout_ms, self.vertex_flex_mode)

    def attempt_failed(self, exc: Exception, assembly: StreamAssembly | None = None) -> Exception:
        """Return what an attempt's error becomes; a quota 429 also teaches the model's limiter."""
        translated = translate_error(exc)
        failure = getattr(translated, "failure", None)
        if isinstance(failure, Failure) and failure.status_code in (429, 503):
            self.refused[failure.status_code] = self.refused.get(failure.status_code, 0) + 1
        if isinstance(failure, Failure) and failure.quotas:
            blocked = self.limiter.on_refused(
                self.reservation,
                failure.quotas,
                failure.server_delay_s,
                now=time.monotonic(),
                wall=datetime.now(timezone.utc),
            )
            if isinstance(translated, DailyQuotaRefusal):
                assert blocked is not None
                return self.quota_exhausted(blocked, message=failure.message)
        received = sum(len(piece) for piece in assembly.text) if assembly is not None else 0
        if isinstance(translated, RetryableFailure) and received:
            return self.traced(
                error=FlexStreamInterrupted(translated.failure.message, chars_received=received, attempts=self.attempts)
            )
        return translated if isinstance(translated, RetryableFailure) else self.traced(error=translated)

    def quota_exhausted(self, blocked: DayBlocked, message: str = "") -> FlexQuotaExhausted:
        return self.traced(
            error=FlexQuotaExhausted(
                model=self.model,
                quota_id=blocked.quota.quota_id,
                quota=blocked.quota.name,
                limit=blocked.quota.limit,
                reset_at=blocked.reset_at,
                attempts=self.attempts,
                waited_s=self.elapsed,
                last_message=message,
            )
        )

    def retry_kwargs(self, policy: FlexRetryPolicy, rng: random.Random) -> dict[str, Any]:
        """tenacity settings for one leg: retry only RetryableFailure, on :func:`plan_retry`'s schedule."""
        planned: dict[int, float | None] = {}
        attempts_before = self.attempts

        def plan(state: tenacity.RetryCallState) -> float | None:
            if state.attempt_number not in planned:
                failure = state.outcome.exception().failure  # type: ignore[union-attr]
                self.pacer.on_failure(failure)
                attempt = self.attempts - attempts_before
                planned[state.attempt_number] = plan_retry(
                    policy,
                    attempt=attempt,
                    backoff_step=self.pacer.backoff_step(attempt),
                    elapsed_s=self.elapsed,
                    server_delay_s=failure.server_delay_s,
                    jitter_draw=rng.random(),
                )
            return planned[state.attempt_number]

        def log_retry(state: tenacity.RetryCallState) -> None:
            failure = state.outcome.exception().failure  # type: ignore[union-attr]
            self.last_failure = failure
            self.log.log(
                self.pacer.log_level,
                "Gemini %s call attempt %d of %d failed (%s); retrying in %.1fs",
                self.model,
                self.attempts,
                self.policy.max_attempts,
                describe_failure(failure),
                plan(state),
            )

        return {
            "retry": tenacity.retry_if_exception_type(RetryableFailure),
            "stop": lambda state: plan(state) is None,
            "wait": lambda state: plan(state) or 0.0,
            "before_sleep": log_retry,
        }

    def each_attempt(self) -> Iterator[tuple[str, Any]]:
        """Yield every attempt of this call, on each tier in turn: ``for tier, attempt in call.each_attempt(): with attempt:``.

        The one attempt loop of the sync paths (generate and stream): tenacity decides from the policy
        whether to try again and how long to wait; a tier whose attempts ran out hands over to the next;
        when none is left, FlexCapacityError. The caller's block is the I/O alone.
        """
        for tier, policy in self.tiers_to_try():
            try:
                for attempt in tenacity.Retrying(**self.retry_kwargs(policy, JITTER)):
                    yield tier, attempt
            except tenacity.RetryError as exhausted:
                self.record_exhausted(exhausted)
        raise self.capacity_error()

    async def aeach_attempt(self) -> AsyncIterator[tuple[str, Any]]:
        """:meth:`each_attempt` for the async paths (same decisions; tenacity waits with ``asyncio.sleep``)."""
        for tier, policy in self.tiers_to_try():
            try:
                async for attempt in tenacity.AsyncRetrying(**self.retry_kwargs(policy, JITTER)):
                    yield tier, attempt
            except tenacity.RetryError as exhausted:
                self.record_exhausted(exhausted)
        raise self.capacity_error()

    def record_exhausted(self, exhausted: tenacity.RetryError) -> None:
        self.last_failure = exhausted.last_attempt.exception().failure  # type: ignore[union-attr]

    def capacity_error(self) -> FlexCapacityError:
        failure = self.last_failure or Failure(True, None, None, "no attempt was made")
        return self.traced(
            error=capacity_error(failure, self.attempts, self.elapsed, fallback_tried=self.fallback_tried)
        )

    def traced(self, response: FlexResponse | None = None, error: _E | None = None) -> _E:
        """Record the call's span when tracing is on (see ``hooks/tracing``); returns ``error`` for ``raise``."""
        tracer = live_tracer()
        if tracer is not None:
            result = response.to_dict() if response is not None else None
            attributes = call_attributes(
                model=self.model,
                provider_name="gcp.vertex_ai" if self.vertex_flex_mode else "gcp.gemini",
                requested_tier=self.requested_tier,
                attempts=self.attempts,
                elapsed_s=self.elapsed,
                last_attempt_s=time.monotonic() - self.attempt_started if self.attempt_started else None,
                result=result,
                error=error,
            )
            if content_wanted():
                attributes.update(content_attributes(self.contents, response.text if response else None))
            record_call_span(tracer, started_wall_s=self.started_wall, attributes=attributes, error=error)
        return error  # type: ignore[return-value]

    def finish(self, raw: Any, tier: str) -> FlexResponse:
        """Return the call's priced answer; raise FlexResponseError, carrying what it cost, if it is unusable."""
        headers = raw.sdk_http_response.headers if raw.sdk_http_response else None
        parsed, problem = unusable_answer(raw, AnswerSchema.of_config(self.base_config))
        images = images_of(raw)
        response = self._response(
            text=answer_text(raw) if images else raw.text,
            parsed=parsed,
            finish_reason=finish_reason_of(raw),
            usage=FlexUsage.from_metadata(raw.usage_metadata),
            tier=served_tier(headers, tier, getattr(raw.usage_metadata, "traffic_type", None)),
            images=images,
            problem=problem,
            model_version=raw.model_version,
        )
        if problem is not None:
            raise problem.with_spend(response)
        return response

    def finish_stream(self, assembly: StreamAssembly, tier: str) -> FlexResponse:
        return self._response(
            text="".join(assembly.text),
            parsed=None,
            finish_reason=assembly.finish_reason,
            usage=FlexUsage.from_metadata(assembly.usage_metadata),
            tier=assembly.tier or tier,
            model_version=assembly.model_version,
        )

    def _response(
        self,
        *,
        text: Any,
        parsed: Any,
        finish_reason: Any,
        usage: FlexUsage,
        tier: str,
        images: tuple[GeneratedImage, ...] = (),
        problem: FlexResponseError | None = None,
        model_version: str | None = None,
    ) -> FlexResponse:
        if self.reservation is not None:
            self.limiter.correct_tokens(self.reservation, usage.prompt_tokens)
        answered = answering_model(self.model, model_version, self.prices)
        cost = usage_cost(usage, model=answered, tier=tier, prices=self.prices)
        if cost is None and (answered, tier) not in PROCESS.warned_unpriced:
            PROCESS.warned_unpriced.add((answered, tier))
            self.log.warning("No price for model %s on tier %s: cost_usd is None (unpriced, not $0).", answered, tier)
        response = FlexResponse(
            text=text,
            standard_cost_usd=usage_cost(usage, model=answered, tier="standard", prices=self.prices),
            cache_saved_usd=cache_saving(usage, model=answered, tier=tier, prices=self.prices),
            parsed=parsed,
            model=answered,
            service_tier=tier,
            requested_tier=self.requested_tier,
            finish_reason=finish_reason,
            usage=usage,
            cost_usd=cost,
            attempts=self.attempts,
            elapsed_s=round(self.elapsed, 3),
            images=images,
            rate_limited_429=self.refused.get(429, 0),
            unavailable_503=self.refused.get(503, 0),
        )
        self.traced(response, problem)
        if self.log.isEnabledFor(self.pacer.log_level):
            self.log.log(
                self.pacer.log_level,
                "Gemini call done: model=%s tier=%s tokens in=%d out=%d thoughts=%d cost=%s attempts=%d elapsed=%.2fs",
                answered,
                tier,
                usage.prompt_tokens,
                usage.output_tokens,
                usage.thoughts_tokens,
                "n/a" if cost is None else f"${cost:.6f}",
                self.attempts,
                response.elapsed_s,
            )
        return response


def answering_model(requested: str, model_version: str | None, prices: Mapping[str, Mapping[str, TokenPrice]]) -> str:
    """Return the model a call is named and priced as: the answer's ``modelVersion`` when the table prices it,
    else the requested model with an alias resolved to the model it stands behind."""
    if model_version:
        version = model_version.removeprefix("models/")
        if version in prices or version in SHIPPED.raw["models"] or bare_model_id(requested) == version:
            return version
    return bare_model_id(requested)


def price_note(model: str, prices: Mapping[str, Mapping[str, TokenPrice]]) -> str:
    flex, standard = price_of(model, "flex", prices), price_of(model, "standard", prices)
    if not flex or not standard:
        return "no price known for this model"
    return (
        f"standard ${standard.input:g}/${standard.output:g} vs flex ${flex.input:g}/${flex.output:g} "
        "per 1M input/output tokens"
    )
