"""GeminiFlexHook: the one place that talks to google-genai and makes a flex call safe.

The SDK makes one attempt with no timeout, ignores ``RetryInfo`` and ends a cut
stream quietly. This hook adds what flex needs: a per-attempt timeout (also sent
as ``X-Server-Timeout``), one tenacity retry layer that honours the server's
delay and a total deadline, the tier that actually served the call, usage and
cost. The decisions (what to retry, how long to wait, how to read usage) are
small pure functions shared by the sync and async paths; only the I/O differs.

``google.genai`` is imported lazily so DAG files that import this module parse fast.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import tenacity
from airflow.sdk import BaseHook

from airflow_provider_flex.exceptions import (
    FlexCapacityError,
    FlexError,
    FlexRequestError,
    FlexResponseError,
    FlexStreamInterrupted,
)
from airflow_provider_flex.pricing import DEFAULT_PRICES, TokenPrice, token_cost

if TYPE_CHECKING:
    from google import genai
    from google.genai import types

DEFAULT_MODEL = "gemini-3-flash-preview"
DEFAULT_TIMEOUT_S = 900.0
SERVICE_TIER_HEADER = "x-gemini-service-tier"
TIERS = ("flex", "standard", "priority")
#: HTTP codes worth another attempt; every other 4xx/5xx is final.
RETRYABLE_STATUS_CODES = frozenset({429, 500, 502, 503, 504})
_TRANSPORT_ERROR_BASES = {("httpx2", "TransportError"), ("httpx", "TransportError"), ("aiohttp", "ClientError")}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
_warned_unpriced: set[tuple[str, str]] = set()


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class FlexRetryPolicy:
    """How long to keep trying one flex call, as data.

    - ``max_attempts``: calls made at most, fallback included.
    - ``initial_delay``, ``multiplier``, ``max_delay``: exponential backoff in seconds.
    - ``jitter``: up to this fraction of the backoff is added at random, so that many
      clients do not retry in step.
    - ``deadline``: total seconds of patience for one call, attempts and waits included.
    - ``fallback_to_standard``: when flex is exhausted, make the last attempt on the
      standard tier (full price). Off by default: no call ever leaves on another tier.

    The server's ``RetryInfo.retryDelay`` (or ``Retry-After``) is always waited at least.
    """

    max_attempts: int = 10
    initial_delay: float = 5.0
    max_delay: float = 120.0
    multiplier: float = 2.0
    jitter: float = 0.5
    deadline: float = 3600.0
    fallback_to_standard: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.max_attempts < 1:
            problems.append(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.initial_delay < 0 or self.max_delay < 0:
            problems.append("initial_delay and max_delay must be >= 0")
        if self.multiplier < 1:
            problems.append(f"multiplier must be >= 1, got {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            problems.append(f"jitter must be between 0 and 1, got {self.jitter}")
        if self.deadline <= 0:
            problems.append(f"deadline must be positive, got {self.deadline}")
        if problems:
            raise ValueError("Invalid FlexRetryPolicy: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_value(cls, value: FlexRetryPolicy | Mapping[str, Any] | None) -> FlexRetryPolicy | None:
        """Accept a policy, its ``to_dict()`` form (e.g. from a serialized trigger) or None."""
        if value is None or isinstance(value, FlexRetryPolicy):
            return value
        return cls(**_coerce_fields(cls, dict(value), source="retry_policy"))


def _coerce_fields(cls: type, values: dict[str, Any], *, source: str) -> dict[str, Any]:
    """Values typed as the dataclass declares, with errors naming ``source`` and the field."""
    declared = {f.name: f for f in fields(cls)}
    unknown = set(values) - set(declared)
    if unknown:
        raise ValueError(f"{source}: unknown field(s) {sorted(unknown)}; known: {sorted(declared)}")
    coerced = {}
    for name, raw in values.items():
        default = declared[name].default
        try:
            coerced[name] = _coerce(raw, type(default))
        except (TypeError, ValueError):
            raise ValueError(f"{source}: {name} must be a {type(default).__name__}, got {raw!r}") from None
    return coerced


def _coerce(raw: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(raw, str):
            if raw.strip().lower() in ("true", "1", "yes", "on"):
                return True
            if raw.strip().lower() in ("false", "0", "no", "off", ""):
                return False
            raise ValueError(raw)
        return bool(raw)
    if kind is int:
        number = float(raw)
        if not number.is_integer():
            raise ValueError(raw)
        return int(number)
    return kind(raw)


def plan_retry(
    policy: FlexRetryPolicy,
    *,
    attempt: int,
    elapsed_s: float,
    server_delay_s: float | None,
    jitter_draw: float,
    backoff_step: int | None = None,
) -> float | None:
    """Seconds to wait before the next attempt after ``attempt`` failed, or None to give up.

    ``jitter_draw`` is a number in [0, 1). A server-given delay (``retryDelay``,
    ``Retry-After``) replaces the exponential backoff, so the wait is never shorter
    than what the server asked; a wait that would end past the deadline means giving up.
    ``backoff_step`` (default ``attempt``, at most ``attempt``) is the exponent's step.
    """
    if attempt >= policy.max_attempts:
        return None
    if server_delay_s is not None:
        base = server_delay_s  # the server knows when capacity frees up: wait that, not a blind backoff
    else:
        step = attempt if backoff_step is None else max(1, min(backoff_step, attempt))
        base = min(policy.max_delay, policy.initial_delay * policy.multiplier ** (step - 1))
    delay = base * (1 + policy.jitter * jitter_draw)
    if elapsed_s + delay >= policy.deadline:
        return None
    return delay


def parse_retry_delay(error_body: Any, headers: Mapping[str, str] | None = None) -> float | None:
    """The server's requested wait: ``google.rpc.RetryInfo.retryDelay``, else ``Retry-After``."""
    details = []
    if isinstance(error_body, Mapping):
        error = error_body.get("error", error_body)
        details = error.get("details") or [] if isinstance(error, Mapping) else []
    for detail in details:
        if isinstance(detail, Mapping) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = detail.get("retryDelay")
            if isinstance(delay, Mapping):  # {"seconds": 53, "nanos": 0}
                return float(delay.get("seconds", 0)) + float(delay.get("nanos", 0)) / 1e9
            match = _DURATION_RE.match(str(delay))
            if match:
                return float(match.group(1))
    retry_after = (headers or {}).get("retry-after") or (headers or {}).get("Retry-After")
    if retry_after:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class Failure:
    """What went wrong with one attempt, as the retry decision needs it."""

    retryable: bool
    status_code: int | None
    api_status: str | None
    message: str
    server_delay_s: float | None = None


def classify_error(exc: BaseException) -> Failure | None:
    """Describe an SDK or transport error; None for errors that are bugs, not API failures."""
    from google.genai import errors

    if isinstance(exc, errors.APIError):
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        return Failure(
            retryable=exc.code in RETRYABLE_STATUS_CODES,
            status_code=exc.code,
            api_status=exc.status,
            message=str(exc.message or exc.status or exc.code),
            server_delay_s=parse_retry_delay(exc.details, dict(headers) if headers else None),
        )
    if isinstance(exc, TimeoutError) or "timeout" in type(exc).__name__.lower():
        return Failure(True, None, "TIMEOUT", f"{type(exc).__name__}: the attempt timed out")
    if isinstance(exc, ConnectionError | json.JSONDecodeError) or any(
        (klass.__module__.split(".")[0], klass.__name__) in _TRANSPORT_ERROR_BASES for klass in type(exc).__mro__
    ):
        return Failure(True, None, "CONNECTION", f"{type(exc).__name__}: {exc}")
    return None


class _RetryableFailure(Exception):
    """Internal: an attempt failed in a way worth another attempt."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def _translated(exc: Exception) -> Exception:
    """The exception the retry layer sees in place of ``exc``."""
    if isinstance(exc, FlexError | _RetryableFailure):
        return exc
    failure = classify_error(exc)
    if failure is None:
        return exc
    if failure.retryable:
        return _RetryableFailure(failure)
    return FlexRequestError(failure.status_code, failure.api_status, failure.message)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class FlexUsage:
    """Tokens of one call. ``output_tokens`` excludes thinking; both are billed as output."""

    prompt_tokens: int = 0
    output_tokens: int = 0
    thoughts_tokens: int = 0
    cached_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_metadata(cls, metadata: Any) -> FlexUsage:
        if metadata is None:
            return cls()
        prompt = metadata.prompt_token_count or 0
        output = metadata.candidates_token_count or 0
        thoughts = metadata.thoughts_token_count or 0
        return cls(
            prompt_tokens=prompt,
            output_tokens=output,
            thoughts_tokens=thoughts,
            cached_tokens=metadata.cached_content_token_count or 0,
            total_tokens=metadata.total_token_count or prompt + output + thoughts,
        )

    @property
    def billed_output_tokens(self) -> int:
        return self.output_tokens + self.thoughts_tokens


@dataclass(frozen=True)
class FlexResponse:
    """The outcome of one logical call (all its attempts), JSON-safe through ``to_dict()``."""

    text: str | None
    model: str
    service_tier: str
    requested_tier: str
    finish_reason: str | None
    usage: FlexUsage
    cost_usd: float | None
    attempts: int
    elapsed_s: float
    parsed: Any = None

    def to_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["parsed"] = _json_safe(self.parsed)
        return result


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "value") and hasattr(type(value), "__members__"):  # an Enum
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return str(value)


def normalize_tier(tier: Any) -> str:
    """``flex``/``standard``/``priority`` from any accepted spelling; ValueError otherwise."""
    raw = getattr(tier, "value", tier)
    name = str(raw).strip().lower().removeprefix("service_tier_") if raw is not None else ""
    if name not in TIERS:
        raise ValueError(f"Unknown service tier {tier!r}; use one of {', '.join(TIERS)}")
    return name


def served_tier(headers: Mapping[str, str] | None, requested: str) -> str:
    """The tier that served a call: the response header when present, else the one requested."""
    value = (headers or {}).get(SERVICE_TIER_HEADER)
    try:
        return normalize_tier(value) if value else requested
    except ValueError:
        return requested


def _finish_reason(response: Any) -> str | None:
    candidates = response.candidates or []
    reason = candidates[0].finish_reason if candidates else None
    return getattr(reason, "value", reason)


def _check_usable(response: Any, *, wants_json: bool) -> None:
    """Raise FlexResponseError for a blocked prompt or JSON that fails the requested schema."""
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        reason = getattr(feedback.block_reason, "value", feedback.block_reason)
        raise FlexResponseError("blocked", f"the prompt was blocked (blockReason {reason})")
    if wants_json and response.parsed is None:
        finish = _finish_reason(response)
        hint = " (the answer was cut at maxOutputTokens)" if finish == "MAX_TOKENS" else ""
        raise FlexResponseError("invalid_json", f"the answer does not match the response schema{hint}")


@dataclass
class _StreamAssembly:
    """Collects one streamed answer and tells whether it arrived whole."""

    requested_tier: str
    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage_metadata: Any = None
    tier: str | None = None
    model_version: str | None = None

    def add(self, chunk: Any) -> str:
        if self.tier is None:
            headers = getattr(chunk.sdk_http_response, "headers", None) if chunk.sdk_http_response else None
            self.tier = served_tier(headers, self.requested_tier)
        self.usage_metadata = chunk.usage_metadata or self.usage_metadata
        self.model_version = chunk.model_version or self.model_version
        self.finish_reason = _finish_reason(chunk) or self.finish_reason
        piece = chunk.text or ""
        self.text.append(piece)
        return piece

    def ensure_complete(self) -> None:
        if self.finish_reason is None:
            raise _RetryableFailure(Failure(True, None, "STREAM_CUT", "the stream ended without a finishReason"))


# --------------------------------------------------------------------------- the hook


class GeminiFlexHook(BaseHook):
    """Calls the Gemini API on the flex tier with timeouts, retries, served tier, usage and cost.

    :param gemini_flex_conn_id: connection with the API key as password and an optional
        base URL as host (an emulator, a proxy).
    :param retry_policy: overrides the connection's retry extras and the defaults.
    :param timeout: seconds per attempt; overrides the connection's ``timeout`` extra.
    :param prices: price table overriding :data:`~airflow_provider_flex.pricing.DEFAULT_PRICES`.
    """

    conn_name_attr = "gemini_flex_conn_id"
    default_conn_name = "gemini_flex_default"
    conn_type = "gemini_flex"
    hook_name = "Gemini Flex"

    def __init__(
        self,
        gemini_flex_conn_id: str = default_conn_name,
        *,
        retry_policy: FlexRetryPolicy | Mapping[str, Any] | None = None,
        timeout: float | None = None,
        prices: Mapping[str, Mapping[str, TokenPrice]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.gemini_flex_conn_id = gemini_flex_conn_id
        self._explicit_policy = FlexRetryPolicy.from_value(retry_policy)
        self._explicit_timeout = timeout
        self.prices = prices if prices is not None else DEFAULT_PRICES
        self._settings: _ConnectionSettings | None = None
        self._rng = random.Random()
        self._sdk_warm = False
        #: Called with every retryable failure (429, 5xx, timeout, drop), e.g. to adapt concurrency.
        self.failure_listeners: list[Callable[[Failure], None]] = []
        #: Maps a call's attempt number to the step its backoff grows by (default: the attempt
        #: itself, never more). A bulk caller can pass its shared failure streak, so that one
        #: row's bad luck under random shedding does not grow its wait as if the API were down.
        self.backoff_step: Callable[[int], int] | None = None
        #: Level of the per-call lines (retries, "call done"); a bulk caller logs progress instead.
        self.call_log_level = logging.INFO
        #: Entered around every async API attempt, not the waits between attempts: a caller
        #: running many calls (the enrichment engine) uses it to cap the calls in flight.
        self.attempt_gate: Callable[[], AbstractAsyncContextManager[Any]] = nullcontext

    def __repr__(self) -> str:
        return f"{type(self).__name__}(gemini_flex_conn_id={self.gemini_flex_conn_id!r})"

    # ---- connection

    def _load_settings(self, conn: Any) -> _ConnectionSettings:
        settings = _ConnectionSettings.from_connection(
            conn, explicit_policy=self._explicit_policy, explicit_timeout=self._explicit_timeout
        )
        if settings.api_key != conn.password:  # Airflow masks a connection's own password already
            _mask(settings.api_key)
        return settings

    @property
    def settings(self) -> _ConnectionSettings:
        if self._settings is None:
            self._settings = self._load_settings(self.get_connection(self.gemini_flex_conn_id))
        return self._settings

    async def aload_settings(self) -> _ConnectionSettings:
        """Read the connection without blocking the event loop (for triggers)."""
        if self._settings is None:
            self._settings = self._load_settings(await self.aget_connection(self.gemini_flex_conn_id))
        return self._settings

    async def aprepare(self) -> None:
        """Read the connection and do google-genai's one-time work in a thread, off the event loop.

        The first client and first call cost ~0.2 s of imports, SSL contexts and pydantic
        schema building; on a triggerer's shared loop that would stall every other trigger.
        """
        await self.aload_settings()
        if not self._sdk_warm:
            await asyncio.to_thread(self._warm_sdk)
            self._sdk_warm = True

    def _warm_sdk(self) -> None:
        import anyio
        from google.genai import types

        anyio.run(anyio.sleep, 0)  # loads anyio's asyncio backend, which httpx imports on its first connection
        self.client  # noqa: B018  (the cached client, with its SSL contexts)
        types.GenerateContentConfig(
            service_tier="flex",
            http_options=types.HttpOptions(timeout=1000),
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        types.GenerateContentResponse.model_validate(
            {
                "candidates": [{"content": {"role": "model", "parts": [{"text": "x"}]}, "finish_reason": "STOP"}],
                "usage_metadata": {"prompt_token_count": 1},
            }
        )

    @property
    def retry_policy(self) -> FlexRetryPolicy:
        return self.settings.retry_policy

    @cached_property
    def client(self) -> genai.Client:
        """One google-genai client for sync (``client.models``) and async (``client.aio``) calls."""
        from google import genai
        from google.genai import types

        settings = self.settings
        http_options = types.HttpOptions(base_url=settings.base_url, api_version=settings.api_version)
        return genai.Client(api_key=settings.api_key, http_options=http_options)

    def get_conn(self) -> genai.Client:
        return self.client

    # ---- generate

    def generate_content(
        self, *, contents: Any, model: str | None = None, config: Any = None, service_tier: str = "flex"
    ) -> FlexResponse:
        """One flex call with retries; raises FlexCapacityError, FlexRequestError or FlexResponseError."""
        call = self._prepare(model, config, service_tier)
        for tier, policy in call.legs():
            try:
                for attempt in tenacity.Retrying(**call.retry_kwargs(policy, self._rng)):
                    with attempt:
                        try:
                            raw = self.client.models.generate_content(
                                model=call.model, contents=contents, config=call.config_for(tier)
                            )
                        except Exception as exc:
                            raise _translated(exc) from exc
                        return call.finish(raw, tier)
            except tenacity.RetryError as exhausted:
                call.record_exhausted(exhausted)
        raise call.capacity_error()

    async def agenerate_content(
        self, *, contents: Any, model: str | None = None, config: Any = None, service_tier: str = "flex"
    ) -> FlexResponse:
        """Async twin of :meth:`generate_content`, for triggers and the enrichment engine."""
        await self.aprepare()
        call = self._prepare(model, config, service_tier)
        for tier, policy in call.legs():
            try:
                async for attempt in tenacity.AsyncRetrying(**call.retry_kwargs(policy, self._rng)):
                    with attempt:
                        try:
                            async with self.attempt_gate():
                                raw = await self.client.aio.models.generate_content(
                                    model=call.model, contents=contents, config=call.config_for(tier)
                                )
                        except Exception as exc:
                            raise _translated(exc) from exc
                        return call.finish(raw, tier)
            except tenacity.RetryError as exhausted:
                call.record_exhausted(exhausted)
        raise call.capacity_error()

    # ---- stream

    def stream_content(
        self, *, contents: Any, model: str | None = None, config: Any = None, service_tier: str = "flex"
    ) -> FlexStream:
        """Yield the answer's text as it arrives; ``.result`` holds the FlexResponse once it ends.

        A failure before any text arrived is retried; after that it raises
        FlexStreamInterrupted, so partial text is never passed off as an answer.
        """
        call = self._prepare(model, config, service_tier)
        return FlexStream(self._stream(call, contents))

    def _stream(self, call: _Call, contents: Any) -> Iterator[str | FlexResponse]:
        for tier, policy in call.legs():
            try:
                for attempt in tenacity.Retrying(**call.retry_kwargs(policy, self._rng)):
                    with attempt:
                        assembly = _StreamAssembly(call.requested_tier)
                        try:
                            chunks = self.client.models.generate_content_stream(
                                model=call.model, contents=contents, config=call.config_for(tier)
                            )
                            for chunk in chunks:
                                if piece := assembly.add(chunk):
                                    yield piece
                            assembly.ensure_complete()
                        except Exception as exc:
                            raise call.stream_failure(exc, assembly) from exc
                        yield call.finish_stream(assembly, tier)
                        return
            except tenacity.RetryError as exhausted:
                call.record_exhausted(exhausted)
        raise call.capacity_error()

    def astream_content(
        self, *, contents: Any, model: str | None = None, config: Any = None, service_tier: str = "flex"
    ) -> FlexAsyncStream:
        """Async twin of :meth:`stream_content`."""
        return FlexAsyncStream(self._astream(model, config, service_tier, contents))

    async def _astream(
        self, model: Any, config: Any, service_tier: str, contents: Any
    ) -> AsyncIterator[str | FlexResponse]:
        await self.aprepare()
        call = self._prepare(model, config, service_tier)
        for tier, policy in call.legs():
            try:
                async for attempt in tenacity.AsyncRetrying(**call.retry_kwargs(policy, self._rng)):
                    with attempt:
                        assembly = _StreamAssembly(call.requested_tier)
                        try:
                            async with self.attempt_gate():
                                chunks = await self.client.aio.models.generate_content_stream(
                                    model=call.model, contents=contents, config=call.config_for(tier)
                                )
                                async for chunk in chunks:
                                    if piece := assembly.add(chunk):
                                        yield piece
                            assembly.ensure_complete()
                        except Exception as exc:
                            raise call.stream_failure(exc, assembly) from exc
                        yield call.finish_stream(assembly, tier)
                        return
            except tenacity.RetryError as exhausted:
                call.record_exhausted(exhausted)
        raise call.capacity_error()

    # ---- misc

    def count_tokens(self, *, contents: Any, model: str | None = None) -> int:
        """Prompt tokens as the API counts them (no retries: it is a cheap, standard call)."""
        try:
            result = self.client.models.count_tokens(model=model or self.settings.default_model, contents=contents)
        except Exception as exc:
            raise _final_error(exc) from exc
        return result.total_tokens or 0

    def test_connection(self) -> tuple[bool, str]:
        """Check the key and base URL with a cheap model lookup."""
        try:
            model = self.settings.default_model
            self.client.models.get(model=model)
        except Exception as exc:
            return False, _redact(str(_final_error(exc)), self._settings)
        return True, f"Connection works: model {model} is available."

    def close(self) -> None:
        if "client" in self.__dict__:
            self.client.close()
            del self.__dict__["client"]

    def _prepare(self, model: str | None, config: Any, service_tier: str) -> _Call:
        settings = self.settings
        return _Call(
            hook=self,
            model=model or settings.default_model,
            base_config=_as_config(config),
            requested_tier=normalize_tier(service_tier),
            policy=settings.retry_policy,
            timeout_s=settings.timeout,
            prices=self.prices,
        )


class FlexStream(Iterator[str]):
    """The text of a streamed answer; ``result`` is the FlexResponse once the stream ended whole."""

    def __init__(self, source: Iterator[str | FlexResponse]) -> None:
        self._source = source
        self.result: FlexResponse | None = None

    def __iter__(self) -> FlexStream:
        return self

    def __next__(self) -> str:
        item = next(self._source)
        if isinstance(item, FlexResponse):
            self.result = item
            raise StopIteration
        return item


class FlexAsyncStream(AsyncIterator[str]):
    """Async twin of :class:`FlexStream`."""

    def __init__(self, source: AsyncIterator[str | FlexResponse]) -> None:
        self._source = source
        self.result: FlexResponse | None = None

    def __aiter__(self) -> FlexAsyncStream:
        return self

    async def __anext__(self) -> str:
        item = await anext(self._source)
        if isinstance(item, FlexResponse):
            self.result = item
            raise StopAsyncIteration
        return item


# --------------------------------------------------------------------------- one call's bookkeeping


@dataclass
class _Call:
    """The decisions of one logical call, shared by its sync and async I/O."""

    hook: GeminiFlexHook
    model: str
    base_config: types.GenerateContentConfig
    requested_tier: str
    policy: FlexRetryPolicy
    timeout_s: float
    prices: Mapping[str, Mapping[str, TokenPrice]]
    started: float = field(default_factory=time.monotonic)
    attempts: int = 0
    last_failure: Failure | None = None
    fallback_tried: bool = False

    def legs(self) -> Iterator[tuple[str, FlexRetryPolicy]]:
        """The tiers to try in order, each with its own attempt budget."""
        policy = self.policy
        fallback = policy.fallback_to_standard and self.requested_tier == "flex"
        if not fallback:
            yield self.requested_tier, policy
            return
        yield "flex", replace(policy, max_attempts=max(1, policy.max_attempts - 1))
        if self.attempts < policy.max_attempts and self.elapsed < policy.deadline:
            self.fallback_tried = True
            self.hook.log.warning(
                "Flex exhausted after %d attempt(s); falling back to the standard tier at full price (%s).",
                self.attempts,
                _price_note(self.model, self.prices),
            )
            yield "standard", replace(policy, max_attempts=1)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def config_for(self, tier: str) -> types.GenerateContentConfig:
        """The request config: the caller's, with the tier, this attempt's timeout and no SDK retries."""
        from google.genai import types

        self.attempts += 1
        remaining = self.policy.deadline - self.elapsed
        timeout_ms = max(1000, int(min(self.timeout_s, remaining) * 1000))
        base_http = self.base_config.http_options
        http_options = (base_http.model_copy() if base_http else types.HttpOptions()).model_copy(
            update={"timeout": timeout_ms, "retry_options": None}
        )
        update: dict[str, Any] = {"service_tier": tier, "http_options": http_options}
        if self.base_config.automatic_function_calling is None:
            # One SDK call must stay one API call, so retries, usage and cost stay exact.
            update["automatic_function_calling"] = types.AutomaticFunctionCallingConfig(disable=True)
        return self.base_config.model_copy(update=update)

    def retry_kwargs(self, policy: FlexRetryPolicy, rng: random.Random) -> dict[str, Any]:
        """tenacity settings for one leg: retry only _RetryableFailure, on :func:`plan_retry`'s schedule."""
        planned: dict[int, float | None] = {}
        attempts_before = self.attempts

        def plan(state: tenacity.RetryCallState) -> float | None:
            if state.attempt_number not in planned:
                failure = state.outcome.exception().failure  # type: ignore[union-attr]
                for listener in self.hook.failure_listeners:
                    listener(failure)
                attempt = self.attempts - attempts_before
                step = self.hook.backoff_step(attempt) if self.hook.backoff_step else attempt
                planned[state.attempt_number] = plan_retry(
                    policy,
                    attempt=attempt,
                    backoff_step=step,
                    elapsed_s=self.elapsed,
                    server_delay_s=failure.server_delay_s,
                    jitter_draw=rng.random(),
                )
            return planned[state.attempt_number]

        def log_retry(state: tenacity.RetryCallState) -> None:
            failure = state.outcome.exception().failure  # type: ignore[union-attr]
            self.last_failure = failure
            self.hook.log.log(
                self.hook.call_log_level,
                "Gemini %s call attempt %d of %d failed (%s); retrying in %.1fs",
                self.model,
                self.attempts,
                self.policy.max_attempts,
                _describe(failure),
                plan(state),
            )

        return {
            "retry": tenacity.retry_if_exception_type(_RetryableFailure),
            "stop": lambda state: plan(state) is None,
            "wait": lambda state: plan(state) or 0.0,
            "before_sleep": log_retry,
        }

    def record_exhausted(self, exhausted: tenacity.RetryError) -> None:
        self.last_failure = exhausted.last_attempt.exception().failure  # type: ignore[union-attr]

    def capacity_error(self) -> FlexCapacityError:
        failure = self.last_failure or Failure(True, None, None, "no attempt was made")
        return _capacity_error(failure, self.attempts, self.elapsed, fallback_tried=self.fallback_tried)

    def stream_failure(self, exc: Exception, assembly: _StreamAssembly) -> Exception:
        translated = _translated(exc)
        received = sum(len(piece) for piece in assembly.text)
        if isinstance(translated, _RetryableFailure) and received:
            return FlexStreamInterrupted(translated.failure.message, chars_received=received, attempts=self.attempts)
        return translated

    def finish(self, raw: Any, tier: str) -> FlexResponse:
        headers = raw.sdk_http_response.headers if raw.sdk_http_response else None
        _check_usable(raw, wants_json=self._wants_parsed)
        return self._response(
            text=raw.text,
            parsed=raw.parsed if self._wants_parsed else None,
            finish_reason=_finish_reason(raw),
            usage=FlexUsage.from_metadata(raw.usage_metadata),
            tier=served_tier(headers, tier),
        )

    def finish_stream(self, assembly: _StreamAssembly, tier: str) -> FlexResponse:
        return self._response(
            text="".join(assembly.text),
            parsed=None,
            finish_reason=assembly.finish_reason,
            usage=FlexUsage.from_metadata(assembly.usage_metadata),
            tier=assembly.tier or tier,
        )

    @property
    def _wants_parsed(self) -> bool:
        config = self.base_config
        return config.response_schema is not None or config.response_json_schema is not None

    def _response(self, *, text: Any, parsed: Any, finish_reason: Any, usage: FlexUsage, tier: str) -> FlexResponse:
        cost = token_cost(
            usage.prompt_tokens, usage.billed_output_tokens, model=self.model, tier=tier, prices=self.prices
        )
        if cost is None and (self.model, tier) not in _warned_unpriced:
            _warned_unpriced.add((self.model, tier))
            self.hook.log.warning("No price for model %s on tier %s: cost_usd is None.", self.model, tier)
        response = FlexResponse(
            text=text,
            parsed=parsed,
            model=self.model,
            service_tier=tier,
            requested_tier=self.requested_tier,
            finish_reason=finish_reason,
            usage=usage,
            cost_usd=cost,
            attempts=self.attempts,
            elapsed_s=round(self.elapsed, 3),
        )
        self.hook.log.log(
            self.hook.call_log_level,
            "Gemini call done: model=%s tier=%s tokens in=%d out=%d thoughts=%d cost=%s attempts=%d elapsed=%.2fs",
            self.model,
            tier,
            usage.prompt_tokens,
            usage.output_tokens,
            usage.thoughts_tokens,
            "n/a" if cost is None else f"${cost:.6f}",
            self.attempts,
            response.elapsed_s,
        )
        return response


def _describe(failure: Failure) -> str:
    status = " ".join(str(s) for s in (failure.status_code, failure.api_status) if s)
    delay = f", server asked for {failure.server_delay_s:g}s" if failure.server_delay_s is not None else ""
    return f"{status or 'error'}{delay}"


def _price_note(model: str, prices: Mapping[str, Mapping[str, TokenPrice]]) -> str:
    tiers = prices.get(model.removeprefix("models/"), {})
    flex, standard = tiers.get("flex"), tiers.get("standard")
    if not flex or not standard:
        return "no price known for this model"
    return (
        f"standard ${standard.input:g}/${standard.output:g} vs flex ${flex.input:g}/${flex.output:g} "
        "per 1M input/output tokens"
    )


def _capacity_error(
    failure: Failure, attempts: int, waited_s: float, *, fallback_tried: bool = False
) -> FlexCapacityError:
    return FlexCapacityError(
        attempts=attempts,
        waited_s=waited_s,
        last_status=failure.status_code,
        last_api_status=failure.api_status,
        last_message=failure.message,
        fallback_tried=fallback_tried,
    )


def _final_error(exc: Exception) -> Exception:
    """The error a single, unretried call (count_tokens, test_connection) raises."""
    translated = _translated(exc)
    if isinstance(translated, _RetryableFailure):
        return _capacity_error(translated.failure, attempts=1, waited_s=0.0)
    return translated


def _as_config(config: Any) -> types.GenerateContentConfig:
    from google.genai import types

    if config is None:
        return types.GenerateContentConfig()
    if isinstance(config, types.GenerateContentConfig):
        return config
    if isinstance(config, Mapping):
        try:
            return types.GenerateContentConfig.model_validate(dict(config))
        except Exception as exc:
            raise ValueError(f"Invalid generate config: {exc}") from None
    raise TypeError(f"config must be a GenerateContentConfig or a dict, got {type(config).__name__}")


# --------------------------------------------------------------------------- connection settings


@dataclass(frozen=True)
class _ConnectionSettings:
    api_key: str = field(repr=False)
    base_url: str | None
    api_version: str | None
    default_model: str
    timeout: float
    retry_policy: FlexRetryPolicy

    @classmethod
    def from_connection(
        cls, conn: Any, *, explicit_policy: FlexRetryPolicy | None, explicit_timeout: float | None
    ) -> _ConnectionSettings:
        extras = dict(conn.extra_dejson or {})
        source = f"connection {conn.conn_id!r}"
        api_key = conn.password or os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")
        if not api_key:
            raise FlexError(f"{source} has no API key: set its password (API key), or GEMINI_API_KEY / GOOGLE_API_KEY.")
        policy_fields = {f.name for f in fields(FlexRetryPolicy)}
        policy = explicit_policy or FlexRetryPolicy(
            **_coerce_fields(
                FlexRetryPolicy,
                {k: v for k, v in extras.items() if k in policy_fields and v not in (None, "")},
                source=f"{source} extra",
            )
        )
        timeout = explicit_timeout if explicit_timeout is not None else extras.get("timeout") or DEFAULT_TIMEOUT_S
        try:
            timeout = float(timeout)
            if timeout <= 0 or math.isnan(timeout):
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError(f"{source}: timeout must be a positive number of seconds, got {timeout!r}") from None
        return cls(
            api_key=api_key,
            base_url=_base_url(conn, source),
            api_version=extras.get("api_version") or None,
            default_model=extras.get("default_model") or DEFAULT_MODEL,
            timeout=timeout,
            retry_policy=policy,
        )


def _base_url(conn: Any, source: str) -> str | None:
    host = (conn.host or "").strip()
    if not host:
        return None
    parts = urlsplit(host)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        shown = f"{parts.scheme}://***@{host.rsplit('@', 1)[-1]}" if "@" in host else host  # hide credentials
        raise ValueError(f"{source}: base URL must be an http:// or https:// URL, got {shown!r}")
    if conn.port and parts.port is None:
        host = urlunsplit(parts._replace(netloc=f"{parts.netloc}:{conn.port}"))
    return host.rstrip("/")


def _mask(secret: str) -> None:
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - older task SDKs
        return
    mask_secret(secret)


def _redact(text: str, settings: _ConnectionSettings | None) -> str:
    if settings is not None and settings.api_key:
        text = text.replace(settings.api_key, "***")
    return text
