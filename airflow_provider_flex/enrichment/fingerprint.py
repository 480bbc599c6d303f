"""What defines an enrichment's answers, recorded beside its checkpoints so a rerun notices a change.

A rerun on the same ``output_path`` skips every row that has a result. That is right when the request is
the same, and wrong when the model, the system instruction (an evaluation's rubric), the prompt template,
the response schema or the generation config changed: the run would report the old answers as the new
request's. So the first run writes ``request.json`` (one hash per part of the request), and a later run
compares: a run whose request differs refuses before any call, naming what changed, unless
``on_changed_request="rerun"`` (the old output is set aside under ``superseded/`` and every row is
answered again). Pure functions, apart from the store's read and write.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The parts of a request that define its answers, in the order a change is named.
REQUEST_PARTS = (
    "model",
    "system_instruction",
    "prompt_template",
    "response_schema",
    "generation_config",
    "service_tier",
    "route",
    "shared_contents",
)
ON_CHANGED_REQUEST = ("fail", "rerun")


def part_hash(value: Any) -> str:
    """Return a short, stable hash of one part of a request (JSON with sorted keys; None is its own value)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def request_fingerprint(**parts: Any) -> dict[str, str]:
    """Return the fingerprint of a request: one hash per part of :data:`REQUEST_PARTS`."""
    unknown = set(parts) - set(REQUEST_PARTS)
    if unknown:
        raise TypeError(f"unknown request parts {sorted(unknown)}")
    return {name: part_hash(parts.get(name)) for name in REQUEST_PARTS}


def changed_parts(recorded: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """Return the parts whose hash differs between a recorded fingerprint and the current one.

    A part the recorded fingerprint lacks (written by an older version) counts as unchanged.
    """
    return [name for name in REQUEST_PARTS if name in recorded and recorded[name] != current.get(name)]


def check_on_changed_request(task: str, value: str) -> None:
    """Fail with a clear error on an ``on_changed_request`` that is neither ``fail`` nor ``rerun``."""
    if value not in ON_CHANGED_REQUEST:
        raise ValueError(f"{task}: on_changed_request must be one of {list(ON_CHANGED_REQUEST)}, got {value!r}")


def describe_change(task: str, output_path: str, changed: list[str]) -> str:
    """Return why a rerun refuses: what changed, and the two ways on."""
    return (
        f"{task}: the request changed since the results in {output_path} were made ({', '.join(changed)}), so "
        "they are not this request's answers. Nothing was called. Write to a new output_path, or set "
        "on_changed_request='rerun' to answer every row again (the old output is kept under superseded/)."
    )


@dataclass(frozen=True)
class OutputDecision:
    """What a run does with the output it finds, before any call (see :func:`decide_on_output`).

    ``action``: ``"keep"`` (same request: resume), ``"record"`` (write this request's fingerprint and
    resume), ``"set_aside"`` (move the earlier output away and start afresh) or ``"refuse"`` (``error``).
    """

    action: str
    changed: tuple[str, ...] = ()
    error: str | None = None
    unrecorded: bool = False


def decide_on_output(
    recorded: Mapping[str, Any] | None,
    fingerprint: Mapping[str, str],
    *,
    has_output: bool,
    on_changed_request: str,
    task: str,
    output_path: str,
) -> OutputDecision:
    """Return what to do with an output given the fingerprint recorded there and this run's.

    An output with no answer yet (a run that stopped before any call) binds nothing: this request is
    recorded. A changed request is refused with ``on_changed_request="fail"``, else set aside.
    """
    if not has_output:
        return OutputDecision("record")
    changed = tuple(changed_parts(recorded["fingerprint"], fingerprint)) if recorded else ()
    if changed and on_changed_request == "fail":
        return OutputDecision("refuse", changed, describe_change(task, output_path, list(changed)))
    if changed:
        return OutputDecision("set_aside", changed)
    return OutputDecision("record" if recorded is None else "keep", unrecorded=recorded is None)
