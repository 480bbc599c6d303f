"""The Gemini Batch API as the emulator keeps it: jobs, their states, results, the enqueued-token quota.

Shapes as google-genai 3.6's ``batches`` module sends and reads them (Gemini Developer API):
``POST /{v}/models/{model}:batchGenerateContent`` with ``{"batch": {"displayName", "inputConfig":
{"requests": {"requests": [{"request": GenerateContentRequest, "metadata": {...}}]}} | {"fileName":
"files/<id>"}}}``; a job is an operation ``{"name": "batches/<id>", "metadata": GenerateContentBatch,
"done"}`` whose metadata holds ``state`` (``BATCH_STATE_*``), ``batchStats`` and, once it succeeded,
``output.inlinedResponses.inlinedResponses`` (inline input) or ``output.responsesFile`` (file input:
a JSONL file of ``{"key", "response"}`` or ``{"key", "error"}`` lines, downloaded through the Files API).
``GET /{v}/batches`` lists ``operations``; ``:cancel`` and ``DELETE`` as documented.

What users report and the emulator can reproduce (shared/reference/batch-and-observability-facts.md):
inline answers without their ``metadata`` (python-genai #1886, #2008), answers out of order
(python-genai #1909), and a per-model *enqueued tokens* quota that refuses a new job with 429
while the project's pending and running jobs hold more prompt tokens than it allows. A job's
turnaround is a setting in seconds (the real target is 24 hours); FAILED, CANCELLED and EXPIRED
(no results) come from admin calls, and so do jobs that never end until cancelled (``STUCK``, or
``stuck`` for every job), as users report of the real API.
"""

from __future__ import annotations

import json
import random
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_provider_flex.emulator.errors import ApiError
from airflow_provider_flex.emulator.files import FileStore

PENDING, RUNNING, SUCCEEDED = "BATCH_STATE_PENDING", "BATCH_STATE_RUNNING", "BATCH_STATE_SUCCEEDED"
FAILED, CANCELLED, EXPIRED = "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED"
TERMINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED, EXPIRED})
#: States an admin call may give a job (or the next jobs) instead of success.
FORCED_STATES = {"FAILED": FAILED, "CANCELLED": CANCELLED, "EXPIRED": EXPIRED, "SUCCEEDED": SUCCEEDED}
#: The fate of a job that stays PENDING, then RUNNING, until it is cancelled or ended by an admin call, as
#: users report of real jobs (python-genai #1482, #2221, #2974: no end after 24 hours and more).
STUCK = "STUCK"
#: What the next jobs may be told to do instead of succeeding.
NEXT_FATES = {**FORCED_STATES, STUCK: STUCK}
#: The share of the turnaround a job spends PENDING before it runs.
PENDING_SHARE = 0.2
BATCH_METADATA_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
ENQUEUED_TOKENS_METRIC = "generativelanguage.googleapis.com/batch_enqueued_tokens"
#: A line that failed inside a job: google.rpc.Status with a gRPC code (13 = INTERNAL).
LINE_ERROR = {"code": 13, "message": "Internal error encountered."}

#: Parses one GenerateContentRequest body: its prompt tokens, or ApiError when the request is invalid.
CountTokens = Callable[[Mapping[str, Any]], int]
#: Answers one valid GenerateContentRequest for a model: a GenerateContentResponse body.
Answer = Callable[[str, Mapping[str, Any]], dict[str, Any]]


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class BatchLine:
    """One request of a job: its key (file input) or metadata (inline), the body, and its prompt tokens."""

    key: str | None
    metadata: dict[str, Any] | None
    request: Any
    tokens: int = 0
    invalid: str | None = None


@dataclass
class BatchJob:
    batch_id: str
    api_key: str
    model: str
    display_name: str | None
    lines: list[BatchLine]
    from_file: bool
    fate: str
    created: float = field(default_factory=time.time)
    started: float = field(default_factory=time.monotonic)
    state: str = PENDING
    ended: float | None = None
    output: dict[str, Any] | None = None
    succeeded_lines: int = 0
    failed_lines: int = 0

    @property
    def name(self) -> str:
        return f"batches/{self.batch_id}"

    @property
    def enqueued_tokens(self) -> int:
        return 0 if self.state in TERMINAL_STATES else sum(line.tokens for line in self.lines)

    def resource(self) -> dict[str, Any]:
        """Return the job as the API answers it: an operation whose metadata is the GenerateContentBatch."""
        done = self.state in TERMINAL_STATES
        pending = 0 if done else len(self.lines)
        metadata: dict[str, Any] = {
            "@type": BATCH_METADATA_TYPE,
            "model": f"models/{self.model}",
            "name": self.name,
            "state": self.state,
            "createTime": _timestamp(self.created),
            "updateTime": _timestamp(self.ended or self.created),
            "batchStats": {
                "requestCount": str(len(self.lines)),
                "successfulRequestCount": str(self.succeeded_lines),
                "failedRequestCount": str(self.failed_lines),
                "pendingRequestCount": str(pending),
            },
        }
        if self.display_name:
            metadata["displayName"] = self.display_name
        if self.ended is not None:
            metadata["endTime"] = _timestamp(self.ended)
        if self.output is not None:
            metadata["output"] = self.output
        body: dict[str, Any] = {"name": self.name, "metadata": metadata, "done": done}
        if self.state == FAILED:
            body["error"] = {"code": 13, "message": "The batch job failed."}
        return body


@dataclass(frozen=True)
class BatchSettings:
    """How emulated batch jobs behave (part of :class:`~.config.EmulatorConfig`)."""

    turnaround_s: float = 2.0
    error_rate: float = 0.0
    shuffle: bool = False
    drop_metadata: bool = False
    #: Prompt tokens a project's pending and running jobs may hold per model; 0 = unlimited.
    enqueued_tokens: int = 0
    #: Every job stays PENDING, then RUNNING, until cancelled (or ended by an admin call): a stalled Batch API.
    stuck: bool = False


class BatchJobs:
    """Every batch job of one emulator, advanced by the clock whenever one is read."""

    def __init__(
        self,
        settings: BatchSettings,
        files: FileStore,
        *,
        count_tokens: CountTokens,
        answer: Answer,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.files = files
        self.count_tokens = count_tokens
        self.answer = answer
        self.rng = rng
        self.clock = clock
        self.jobs: dict[str, BatchJob] = {}
        self.next_fates: list[str] = []
        self.refusals = 0
        self.deleted = 0

    # ---- the API

    def create(self, api_key: str, model: str, body: Any) -> BatchJob:
        batch = body.get("batch") if isinstance(body, Mapping) else None
        if not isinstance(batch, Mapping):
            raise ApiError(400, "INVALID_ARGUMENT", "* BatchGenerateContentRequest.batch: batch is not specified")
        source = batch.get("inputConfig") or batch.get("input_config") or {}
        lines = self._lines(source)
        if not lines:
            raise ApiError(400, "INVALID_ARGUMENT", "* inputConfig: the batch holds no requests.")
        self._admit(api_key, model, lines)
        fate = self.next_fates.pop(0) if self.next_fates else (STUCK if self.settings.stuck else SUCCEEDED)
        job = BatchJob(
            batch_id=secrets.token_hex(8),
            api_key=api_key,
            model=model,
            display_name=batch.get("displayName") or batch.get("display_name"),
            lines=lines,
            from_file="fileName" in source or "file_name" in source,
            fate=fate,
        )
        self.jobs[job.batch_id] = job
        return job

    def get(self, api_key: str, name: str) -> BatchJob:
        job = self.jobs.get(name.removeprefix("batches/"))
        if job is None or job.api_key != api_key:
            raise ApiError(404, "NOT_FOUND", f"Batch {name} not found.")
        self._advance(job)
        return job

    def list(self, api_key: str, page_size: int, page_token: str | None) -> dict[str, Any]:
        """Return the project's jobs, newest first, a page at a time."""
        mine = sorted((j for j in self.jobs.values() if j.api_key == api_key), key=lambda j: -j.created)
        start = int(page_token or 0)
        page = mine[start : start + page_size]
        for job in page:
            self._advance(job)
        body: dict[str, Any] = {"operations": [job.resource() for job in page]}
        if start + page_size < len(mine):
            body["nextPageToken"] = str(start + page_size)
        return body

    def cancel(self, api_key: str, name: str) -> None:
        job = self.get(api_key, name)
        if job.state not in TERMINAL_STATES:
            self._end(job, CANCELLED)

    def delete(self, api_key: str, name: str) -> None:
        job = self.get(api_key, name)
        del self.jobs[job.batch_id]
        self.deleted += 1

    # ---- admin

    def force(self, name: str, state: str) -> BatchJob:
        """End a job now in ``state`` (``FAILED``, ``CANCELLED``, ``EXPIRED`` or ``SUCCEEDED``)."""
        job = self.jobs.get(name.removeprefix("batches/"))
        if job is None:
            raise ApiError(404, "NOT_FOUND", f"Batch {name} not found.")
        if job.state not in TERMINAL_STATES:
            self._end(job, FORCED_STATES[state])
        return job

    def snapshot(self) -> dict[str, Any]:
        return {
            "jobs": [
                {
                    "name": job.name,
                    "display_name": job.display_name,
                    "model": job.model,
                    "state": job.state,
                    "requests": len(job.lines),
                    "keys": [line.key or (line.metadata or {}).get("key") for line in job.lines],
                    "from_file": job.from_file,
                }
                for job in (self._advanced(j) for j in self.jobs.values())
            ],
            "refusals": self.refusals,
            "deleted": self.deleted,
            "next_fates": list(self.next_fates),
        }

    # ---- inside

    def _advanced(self, job: BatchJob) -> BatchJob:
        self._advance(job)
        return job

    def _lines(self, source: Mapping[str, Any]) -> list[BatchLine]:
        requests = source.get("requests")
        if isinstance(requests, Mapping):
            items = requests.get("requests") or []
            return [
                self._line(None, item.get("metadata"), item.get("request"))
                for item in items
                if isinstance(item, Mapping)
            ]
        file_name = source.get("fileName") or source.get("file_name")
        if not file_name:
            raise ApiError(400, "INVALID_ARGUMENT", "* inputConfig: give requests or a fileName.")
        stored = self.files.get(str(file_name))
        if stored is None or not stored.complete:
            raise ApiError(403, "PERMISSION_DENIED", f"You do not have permission to access the File {file_name}.")
        lines = []
        for number, text in enumerate(bytes(stored.data).decode("utf-8").splitlines(), start=1):
            if not text.strip():
                continue
            try:
                item = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ApiError(
                    400, "INVALID_ARGUMENT", f"{file_name} line {number} is not valid JSON: {exc.msg}"
                ) from None
            if not isinstance(item, Mapping) or "request" not in item:
                raise ApiError(400, "INVALID_ARGUMENT", f"{file_name} line {number} has no request.")
            lines.append(self._line(str(item.get("key", "")), None, item["request"]))
        return lines

    def _line(self, key: str | None, metadata: Any, request: Any) -> BatchLine:
        line = BatchLine(key, dict(metadata) if isinstance(metadata, Mapping) else None, request)
        try:
            line.tokens = self.count_tokens(request)
        except ApiError as invalid:
            line.invalid = invalid.message
        return line

    def _admit(self, api_key: str, model: str, lines: list[BatchLine]) -> None:
        limit = self.settings.enqueued_tokens
        if not limit:
            return
        held = sum(j.enqueued_tokens for j in self.jobs.values() if j.api_key == api_key and j.model == model)
        wanted = sum(line.tokens for line in lines)
        if held + wanted > limit:
            self.refusals += 1
            raise ApiError(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota, please check your plan and billing details. "
                f"* Quota exceeded for metric: {ENQUEUED_TOKENS_METRIC}, limit: {limit}, model: {model}",
                details=[
                    {
                        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                        "violations": [
                            {
                                "quotaMetric": ENQUEUED_TOKENS_METRIC,
                                "quotaId": "BatchEnqueuedTokensPerModelPerProject",
                                "quotaDimensions": {"model": model},
                                "quotaValue": str(limit),
                            }
                        ],
                    }
                ],
                outcome="rate_limited",
            )

    def _advance(self, job: BatchJob) -> None:
        if job.state in TERMINAL_STATES:
            return
        age = self.clock() - job.started
        turnaround = self.settings.turnaround_s
        if age >= turnaround and job.fate != STUCK:  # a stuck job runs until it is cancelled
            self._end(job, job.fate)
        elif age >= turnaround * PENDING_SHARE:
            job.state = RUNNING

    def _end(self, job: BatchJob, state: str) -> None:
        job.state = state
        job.ended = time.time()
        if state == SUCCEEDED:
            job.output = self._results(job)

    def _results(self, job: BatchJob) -> dict[str, Any]:
        """Answer every line; a share of them with an error, in shuffled order if set so."""
        answered = []
        for line in job.lines:
            if line.invalid is not None:
                outcome: dict[str, Any] = {"error": {"code": 3, "message": line.invalid}}
            elif self.rng.random() < self.settings.error_rate:
                outcome = {"error": dict(LINE_ERROR)}
            else:
                outcome = {"response": self.answer(job.model, line.request)}
            job.failed_lines += "error" in outcome
            job.succeeded_lines += "response" in outcome
            answered.append((line, outcome))
        if self.settings.shuffle:
            self.rng.shuffle(answered)
        if job.from_file:
            text = "".join(json.dumps({"key": line.key, **outcome}) + "\n" for line, outcome in answered)
            stored = self.files.add_generated(text.encode(), "application/jsonl", f"{job.name} responses")
            return {"responsesFile": f"files/{stored.file_id}"}
        responses = []
        for line, outcome in answered:
            if line.metadata is not None and not self.settings.drop_metadata:
                outcome = {**outcome, "metadata": line.metadata}
            responses.append(outcome)
        return {"inlinedResponses": {"inlinedResponses": responses}}
