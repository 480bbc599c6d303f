"""Retry decisions as data and small pure functions: what to retry, how long to wait, when to stop.

Shared by the hook's sync and async paths (only their I/O differs) and by bulk
callers that want the same answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from airflow_provider_flex.exceptions import FlexCapacityError, FlexError, FlexRequestError
from airflow_provider_flex.hooks.quota_errors import QuotaViolation, read_quota_violations

#: HTTP codes worth another attempt; every other 4xx/5xx is final.
RETRYABLE_STATUS_CODES = frozenset({429, 500, 502, 503, 504})
_TRANSPORT_ERROR_BASES = {("httpx2", "TransportError"), ("httpx", "TransportError"), ("aiohttp", "ClientError")}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


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
        return cls(**coerce_fields(cls, dict(value), source="retry_policy"))


def coerce_fields(cls: type, values: dict[str, Any], *, source: str) -> dict[str, Any]:
    """Return values typed as the dataclass declares, with errors naming ``source`` and the field."""
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
    """Return seconds to wait before the next attempt after ``attempt`` failed, or None to give up.

    ``jitter_draw`` is a number in [0, 1). A server-given delay (``retryDelay``,
    ``Retry-After``) replaces the exponential backoff, so the wait is never shorter
    than what the server asked; a wait that would end past the deadline means giving up.
    ``backoff_step`` (default ``attempt``, at most ``attempt``) is the exponent's step; 0 means
    no backoff, for a caller whose own pacing (a quota's) already spaces the retry.
    """
    if attempt >= policy.max_attempts:
        return None
    if server_delay_s is not None:
        base = server_delay_s  # the server knows when capacity frees up: wait that, not a blind backoff
    else:
        step = attempt if backoff_step is None else max(0, min(backoff_step, attempt))
        base = 0.0 if step == 0 else min(policy.max_delay, policy.initial_delay * policy.multiplier ** (step - 1))
    delay = base * (1 + policy.jitter * jitter_draw)
    if elapsed_s + delay >= policy.deadline:
        return None
    return delay


def parse_retry_delay(error_body: Any, headers: Mapping[str, str] | None = None) -> float | None:
    """Return the server's requested wait: ``google.rpc.RetryInfo.retryDelay``, else ``Retry-After``."""
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
    #: The quotas a 429 says ran out (its ``google.rpc.QuotaFailure``), if it said.
    quotas: tuple[QuotaViolation, ...] = ()
    #: A 429 about shared capacity, not our quota (Vertex AI's "Resource exhausted. Please try again
    #: later."): retried with backoff like a 503, and no reason to slow our own rate.
    capacity: bool = False

    @property
    def daily_quota(self) -> QuotaViolation | None:
        """Return the per-day quota this failure names: no attempt can succeed before it resets."""
        return next((quota for quota in self.quotas if quota.daily), None)


def classify_error(exc: BaseException) -> Failure | None:
    """Describe an SDK or transport error; None for errors that are bugs, not API failures."""
    from google.genai import errors

    if isinstance(exc, errors.APIError):
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        quotas = read_quota_violations(exc.details) if exc.code == 429 else ()
        daily = any(quota.daily for quota in quotas)
        return Failure(
            retryable=exc.code in RETRYABLE_STATUS_CODES and not daily,
            status_code=exc.code,
            api_status=exc.status,
            message=str(exc.message or exc.status or exc.code),
            server_delay_s=parse_retry_delay(exc.details, dict(headers) if headers else None),
            quotas=quotas,
            capacity=exc.code == 429 and not quotas and "try again later" in str(exc.message or "").lower(),
        )
    if isinstance(exc, TimeoutError) or "timeout" in type(exc).__name__.lower():
        return Failure(True, None, "TIMEOUT", f"{type(exc).__name__}: the attempt timed out")
    if isinstance(exc, ConnectionError | json.JSONDecodeError) or any(
        (klass.__module__.split(".")[0], klass.__name__) in _TRANSPORT_ERROR_BASES for klass in type(exc).__mro__
    ):
        return Failure(True, None, "CONNECTION", f"{type(exc).__name__}: {exc}")
    return None


class RetryableFailure(Exception):
    """Internal: an attempt failed in a way worth another attempt."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class DailyQuotaRefusal(Exception):
    """Internal: a per-day quota refused the call; the hook turns it into FlexQuotaExhausted."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def translate_error(exc: Exception) -> Exception:
    """Return the exception the retry layer sees in place of ``exc``."""
    if isinstance(exc, FlexError | RetryableFailure | DailyQuotaRefusal):
        return exc
    failure = classify_error(exc)
    if failure is None:
        return exc
    if failure.retryable:
        return RetryableFailure(failure)
    if failure.daily_quota is not None:
        return DailyQuotaRefusal(failure)
    return FlexRequestError(failure.status_code, failure.api_status, failure.message)


def describe_failure(failure: Failure) -> str:
    status = " ".join(str(s) for s in (failure.status_code, failure.api_status) if s)
    delay = f", server asked for {failure.server_delay_s:g}s" if failure.server_delay_s is not None else ""
    return f"{status or 'error'}{delay}"


def capacity_error(
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


def single_call_error(exc: Exception) -> Exception:
    """Return the error a single, unretried call (count_tokens, test_connection, a file's deletion) raises."""
    translated = translate_error(exc)
    if isinstance(translated, RetryableFailure | DailyQuotaRefusal):
        return capacity_error(translated.failure, attempts=1, waited_s=0.0)
    return translated
