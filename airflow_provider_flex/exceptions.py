"""The errors a flex call ends with, whatever the SDK or transport raised underneath."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, ClassVar

from airflow_provider_flex.compat import AirflowException
from airflow_provider_flex.hooks.quota_errors import QUOTA_TIMEZONE


class FlexError(AirflowException):
    """Base class of every error this provider raises.

    Every subclass crosses a trigger event whole: :meth:`to_payload` writes its class and the
    constructor arguments named in ``payload_fields`` (kept as attributes of the same names), and
    :meth:`from_payload` builds the same class from them. A plain FlexError carries its message.
    """

    #: Constructor keyword arguments, stored as attributes of the same names, that rebuild the error.
    payload_fields: ClassVar[tuple[str, ...]] = ()
    _by_name: ClassVar[dict[str, type[FlexError]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        FlexError._by_name[cls.__name__] = cls

    def to_payload(self) -> dict[str, Any]:
        """Return a JSON-safe description of this error: its class, message and constructor arguments."""
        fields = {name: _encode(getattr(self, name)) for name in self.payload_fields}
        return {"status": "error", "error_type": type(self).__name__, "message": str(self), "fields": fields}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> FlexError:
        """Return the error :meth:`to_payload` described, as its own class (a plain FlexError if that cannot be)."""
        kind = payload.get("error_type")
        error_class = FlexError._by_name.get(str(kind))
        if error_class is not None:
            try:
                if not error_class.payload_fields:
                    return error_class(str(payload["message"]))
                return error_class(**{name: _decode(value) for name, value in dict(payload["fields"]).items()})
            except (KeyError, TypeError, ValueError):
                pass
        return FlexError(f"{kind or 'Error'}: {payload.get('message', 'no message')}")


class FlexCapacityError(FlexError):
    """Flex capacity stayed unavailable (429, 5xx, timeouts, drops) until attempts or patience ran out."""

    payload_fields = ("attempts", "waited_s", "last_status", "last_api_status", "last_message", "fallback_tried")

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

    payload_fields = ("model", "quota_id", "quota", "limit", "reset_at", "attempts", "waited_s", "last_message")

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
        local = reset_at.astimezone(QUOTA_TIMEZONE)
        left = max(0.0, (reset_at - datetime.now(timezone.utc)).total_seconds())
        summary = (
            f"Daily quota exhausted for model {model}: {quota} ({quota_id}{limit_text}). No call can succeed "
            f"before it resets at {local:%Y-%m-%d %H:%M %Z} ({reset_at.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%SZ}, "
            f"in {left / 3600:.1f} h)."
        )
        super().__init__(
            attempts=attempts,
            waited_s=waited_s,
            last_status=429,
            last_api_status="RESOURCE_EXHAUSTED",
            last_message=last_message or summary,
        )
        self.last_message = last_message or summary
        self.args = (summary,)

    def __str__(self) -> str:
        return self.args[0]


class FlexRequestError(FlexError):
    """The API refused the request itself (400, 401, 403, 404, other 4xx): retrying cannot help."""

    payload_fields = ("code", "status", "message")

    def __init__(self, code: int | None, status: str | None, message: str) -> None:
        self.code = code
        self.status = status
        self.message = message
        super().__init__(f"Gemini API refused the request: {code} {status}: {message}")


class FlexResponseError(FlexError):
    """The call succeeded but its answer is unusable: a blocked prompt, or JSON that fails the schema.

    ``reason`` is ``blocked``, ``invalid_json``, ``max_tokens`` (cut at ``max_output_tokens``) or
    ``off_schema``. The answer was paid for all the same: ``spend`` holds its model, served tier, usage,
    ``cost_usd`` and ``standard_cost_usd`` (a result dict without the answer), so summaries and the spend
    view count it; ``paid`` is the priced answer itself, where the hook had one.
    """

    payload_fields = ("reason", "message", "spend")

    def __init__(self, reason: str, message: str, spend: dict[str, Any] | None = None) -> None:
        self.reason = reason
        self.message = message
        self.spend = spend
        self.paid: Any = None
        super().__init__(f"Unusable answer ({reason}): {message}")

    def with_spend(self, paid: Any) -> FlexResponseError:
        """Return this error carrying the priced answer ``paid`` (a FlexResponse) and its spend."""
        self.paid = paid
        result = paid.to_dict()
        self.spend = {
            name: result[name]
            for name in ("model", "service_tier", "requested_tier", "usage", "cost_usd", "standard_cost_usd")
        } | {"finish_reason": result["finish_reason"], "attempts": result["attempts"], "text": None, "parsed": None}
        return self


class FlexStreamInterrupted(FlexError):
    """A stream broke after part of the answer was delivered; the partial text is not an answer."""

    payload_fields = ("message", "chars_received", "attempts")

    def __init__(self, message: str, *, chars_received: int, attempts: int) -> None:
        self.message = message
        self.chars_received = chars_received
        self.attempts = attempts
        super().__init__(f"Stream interrupted after {chars_received} characters (attempt {attempts}): {message}")


FlexError._by_name[FlexError.__name__] = FlexError


def _encode(value: Any) -> Any:
    return {"datetime": value.isoformat()} if isinstance(value, datetime) else value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"datetime"}:
        return datetime.fromisoformat(value["datetime"])
    return value


def error_payload(exc: BaseException) -> dict[str, Any]:
    """Return a JSON-safe description of any error, to carry it across a trigger event (``FlexError.to_payload``)."""
    if isinstance(exc, FlexError):
        return exc.to_payload()
    return {"status": "error", "error_type": type(exc).__name__, "message": str(exc), "fields": {}}


def error_from_payload(payload: dict[str, Any]) -> FlexError:
    """Return the error :func:`error_payload` described (``FlexError.from_payload``)."""
    return FlexError.from_payload(payload)
