"""The errors a flex call ends with, whatever the SDK or transport raised underneath."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from airflow.sdk.exceptions import AirflowException

_QUOTA_TIMEZONE = ZoneInfo("America/Los_Angeles")


class FlexError(AirflowException):
    """Base class of every error this provider raises."""


class FlexCapacityError(FlexError):
    """Flex capacity stayed unavailable (429, 5xx, timeouts, drops) until attempts or patience ran out."""

    def __init__(
        self,
        *,
        attempts: int,
        waited_s: float,
        last_status: int | None,
        last_api_status: str | None,
        last_message: str,
        fallback_tried: bool = False,
    ) -> None:
        self.attempts = attempts
        self.waited_s = waited_s
        self.last_status = last_status
        self.last_api_status = last_api_status
        self.last_message = last_message
        self.fallback_tried = fallback_tried
        status = " ".join(str(s) for s in (last_status, last_api_status) if s) or "no HTTP status"
        fallback = " (including the standard-tier fallback)" if fallback_tried else ""
        super().__init__(
            f"Gave up after {attempts} attempt(s){fallback} over {waited_s:.1f}s; "
            f"last failure: {status}: {last_message}"
        )


class FlexQuotaExhausted(FlexCapacityError):
    """A per-day quota ran out: no call to this model can succeed before it resets (midnight Pacific)."""

    def __init__(
        self,
        *,
        model: str,
        quota_id: str,
        quota: str,
        limit: int | None,
        reset_at: datetime,
        attempts: int,
        waited_s: float,
        last_message: str = "",
    ) -> None:
        self.model = model
        self.quota_id = quota_id
        self.quota = quota
        self.limit = limit
        self.reset_at = reset_at
        limit_text = f", limit {limit}" if limit is not None else ""
        local = reset_at.astimezone(_QUOTA_TIMEZONE)
        left = max(0.0, (reset_at - datetime.now(UTC)).total_seconds())
        summary = (
            f"Daily quota exhausted for model {model}: {quota} ({quota_id}{limit_text}). No call can succeed "
            f"before it resets at {local:%Y-%m-%d %H:%M %Z} ({reset_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}, "
            f"in {left / 3600:.1f} h)."
        )
        super().__init__(
            attempts=attempts,
            waited_s=waited_s,
            last_status=429,
            last_api_status="RESOURCE_EXHAUSTED",
            last_message=last_message or summary,
        )
        self.args = (summary,)

    def __str__(self) -> str:
        return self.args[0]


class FlexRequestError(FlexError):
    """The API refused the request itself (400, 401, 403, 404, other 4xx): retrying cannot help."""

    def __init__(self, code: int | None, status: str | None, message: str) -> None:
        self.code = code
        self.status = status
        self.message = message
        super().__init__(f"Gemini API refused the request: {code} {status}: {message}")


class FlexResponseError(FlexError):
    """The call succeeded but its answer is unusable: a blocked prompt, or JSON that fails the schema."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"Unusable answer ({reason}): {message}")


class FlexStreamInterrupted(FlexError):
    """A stream broke after part of the answer was delivered; the partial text is not an answer."""

    def __init__(self, message: str, *, chars_received: int, attempts: int) -> None:
        self.chars_received = chars_received
        self.attempts = attempts
        super().__init__(f"Stream interrupted after {chars_received} characters (attempt {attempts}): {message}")


def error_payload(exc: BaseException) -> dict[str, object]:
    """A JSON-safe description of an error, to carry it across a trigger event."""
    payload: dict[str, object] = {"status": "error", "error_type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, FlexQuotaExhausted):
        payload.update(
            model=exc.model,
            quota_id=exc.quota_id,
            quota=exc.quota,
            limit=exc.limit,
            reset_at=exc.reset_at.isoformat(),
            attempts=exc.attempts,
            waited_s=exc.waited_s,
        )
    elif isinstance(exc, FlexCapacityError):
        payload.update(
            attempts=exc.attempts,
            waited_s=exc.waited_s,
            last_status=exc.last_status,
            last_api_status=exc.last_api_status,
            last_message=exc.last_message,
            fallback_tried=exc.fallback_tried,
        )
    elif isinstance(exc, FlexRequestError):
        payload.update(code=exc.code, api_status=exc.status, api_message=exc.message)
    elif isinstance(exc, FlexResponseError):
        payload.update(reason=exc.reason, reason_message=exc.message)
    elif isinstance(exc, FlexStreamInterrupted):
        payload.update(chars_received=exc.chars_received, attempts=exc.attempts)
    return payload


def error_from_payload(payload: dict) -> FlexError:
    """Rebuild the exception :func:`error_payload` described, as the same class where it is ours."""
    kind = payload.get("error_type")
    try:
        if kind == "FlexQuotaExhausted":
            return FlexQuotaExhausted(
                model=str(payload["model"]),
                quota_id=str(payload["quota_id"]),
                quota=str(payload["quota"]),
                limit=payload.get("limit"),
                reset_at=datetime.fromisoformat(str(payload["reset_at"])),
                attempts=int(payload["attempts"]),
                waited_s=float(payload["waited_s"]),
            )
        if kind == "FlexCapacityError":
            return FlexCapacityError(
                attempts=int(payload["attempts"]),
                waited_s=float(payload["waited_s"]),
                last_status=payload.get("last_status"),
                last_api_status=payload.get("last_api_status"),
                last_message=str(payload.get("last_message", "")),
                fallback_tried=bool(payload.get("fallback_tried")),
            )
        if kind == "FlexRequestError":
            return FlexRequestError(payload.get("code"), payload.get("api_status"), str(payload.get("api_message")))
        if kind == "FlexResponseError":
            return FlexResponseError(str(payload["reason"]), str(payload.get("reason_message", "")))
    except (KeyError, TypeError, ValueError):
        pass
    return FlexError(f"{kind or 'Error'}: {payload.get('message', 'no message')}")
