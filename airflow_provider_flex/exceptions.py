"""The errors a flex call ends with, whatever the SDK or transport raised underneath."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException


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
