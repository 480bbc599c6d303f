"""Faults queued by tests for the next calls: errors, slowness, drops, cut streams."""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_provider_flex.emulator.capacity import OVERLOADED_MESSAGE

#: kind -> (HTTP code, API status, message) for faults that answer with an error.
ERROR_FAULTS: dict[str, tuple[int, str, str]] = {
    "unavailable": (503, "UNAVAILABLE", OVERLOADED_MESSAGE),
    "rate_limited": (429, "RESOURCE_EXHAUSTED", "You exceeded your current quota. Please retry later."),
    "internal": (500, "INTERNAL", "An internal error has occurred. Please retry."),
    "bad_gateway": (502, "UNAVAILABLE", "Bad gateway."),
    "deadline_exceeded": (504, "DEADLINE_EXCEEDED", "The request timed out on the server."),
    "invalid_argument": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    "permission_denied": (403, "PERMISSION_DENIED", "The caller does not have permission."),
}

#: The API status Google pairs with each HTTP code, for ``http_error`` faults of any code.
API_STATUS_BY_CODE: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    412: "FAILED_PRECONDITION",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

#: Faults that change how an otherwise normal answer is delivered.
DELIVERY_FAULTS: frozenset[str] = frozenset({"slow", "drop", "stream_cut", "non_json", "blocked"})

FAULT_KINDS: tuple[str, ...] = (*ERROR_FAULTS, "http_error", *sorted(DELIVERY_FAULTS))
METHODS: frozenset[str] = frozenset({"generate", "stream"})


class FaultSpecError(ValueError):
    """A fault request the emulator cannot honour."""


@dataclass
class Fault:
    """One queued fault.

    - ``count``: how many matching calls it applies to.
    - ``method``: ``generate``, ``stream`` or None for both.
    - ``retry_delay_s``: the ``RetryInfo`` delay of a ``rate_limited`` fault.
    - ``delay_s``: the extra wait of a ``slow`` fault.
    - ``after_chunks``: chunks sent before a ``drop`` or ``stream_cut``.
    - ``status_code``: the HTTP code of a ``non_json`` body or an ``http_error`` (any 4xx or 5xx).
    - ``details``: the error's ``details`` list verbatim (e.g. a QuotaFailure), for error faults.
    - ``message``: the error's message, replacing the default one.
    """

    kind: str
    count: int = 1
    method: str | None = None
    retry_delay_s: float | None = None
    delay_s: float = 0.0
    after_chunks: int = 0
    status_code: int = 502
    message: str | None = None
    details: list[dict[str, Any]] | None = None
    id: int = field(default=0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_fault(spec: Any) -> Fault:
    """Build a :class:`Fault` from an admin request body, naming what is wrong."""
    if not isinstance(spec, dict):
        raise FaultSpecError("a fault must be a JSON object")
    known = set(Fault.__dataclass_fields__) - {"id"}
    unknown = set(spec) - known
    if unknown:
        raise FaultSpecError(f"unknown fault field(s) {sorted(unknown)}; known: {sorted(known)}")
    kind = spec.get("kind")
    if kind not in FAULT_KINDS:
        raise FaultSpecError(f"unknown fault kind {kind!r}; known: {list(FAULT_KINDS)}")
    method = spec.get("method", "stream" if kind == "stream_cut" else None)
    if method is not None and method not in METHODS:
        raise FaultSpecError(f"method must be one of {sorted(METHODS)} or null, got {method!r}")
    try:
        fault = Fault(**{**spec, "method": method})
        fault.count = int(fault.count)
        fault.delay_s = float(fault.delay_s)
        fault.after_chunks = int(fault.after_chunks)
        fault.status_code = int(fault.status_code)
        if fault.retry_delay_s is not None:
            fault.retry_delay_s = float(fault.retry_delay_s)
    except (TypeError, ValueError) as exc:
        raise FaultSpecError(f"bad fault field: {exc}") from None
    if fault.details is not None and not (
        isinstance(fault.details, list) and all(isinstance(d, dict) for d in fault.details)
    ):
        raise FaultSpecError("details must be a list of JSON objects")
    if fault.count < 1:
        raise FaultSpecError("count must be at least 1")
    if kind == "http_error" and not 400 <= fault.status_code <= 599:
        raise FaultSpecError(f"an http_error needs a 4xx or 5xx status_code, got {fault.status_code}")
    return fault


class FaultQueue:
    """Faults in the order they were queued; each call takes the first that matches."""

    def __init__(self) -> None:
        self._faults: deque[Fault] = deque()
        self._next_id = 1

    def add(self, fault: Fault) -> Fault:
        fault.id = self._next_id
        self._next_id += 1
        self._faults.append(fault)
        return fault

    def take(self, method: str) -> Fault | None:
        for fault in self._faults:
            if fault.method in (None, method):
                fault.count -= 1
                if fault.count == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def clear(self) -> None:
        self._faults.clear()

    def pending(self) -> list[dict[str, Any]]:
        return [fault.to_dict() for fault in self._faults]
