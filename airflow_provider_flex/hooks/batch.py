"""Gemini Batch API jobs through the hook's client: submit, follow, cancel, delete, results by key.

The Batch API costs what flex costs (50% of standard) and has its own, far larger quota
(enqueued tokens per model), but answers within 24 hours instead of minutes. A job is
submitted inline while its requests stay under the 20 MB request limit, else as a keyed
JSONL file through the Files API (deleted once the job is). Results are matched to rows
by their keys (inline: the request's ``metadata``; file: each line's ``key``), never by
position: users report answers out of order and inline answers without their metadata.
An answer that carries no key cannot be matched and is reported as unmatched, so its row
is done again rather than guessed.

Blocking calls: the async callers (the enrichment engine, the trigger) run them in a thread.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_provider_flex.exceptions import FlexError, FlexResponseError
from airflow_provider_flex.hooks.results import FlexResponse, FlexUsage, finish_reason_of, unusable_answer
from airflow_provider_flex.hooks.retry import Failure, RetryableFailure, translate_error
from airflow_provider_flex.hooks.schema import AnswerSchema
from airflow_provider_flex.pricing import cache_saving, usage_cost

if TYPE_CHECKING:
    from google import genai
    from google.genai import types

#: The request limit (20 MB) less room for the envelope: larger jobs go as a JSONL file.
INLINE_BATCH_LIMIT_BYTES = 19 * 2**20
#: ``JOB_STATE_*`` -> the words this provider uses; anything else is still under way.
BATCH_STATES = {
    "JOB_STATE_PENDING": "pending",
    "JOB_STATE_QUEUED": "pending",
    "JOB_STATE_RUNNING": "running",
    "JOB_STATE_SUCCEEDED": "succeeded",
    "JOB_STATE_FAILED": "failed",
    "JOB_STATE_CANCELLED": "cancelled",
    "JOB_STATE_EXPIRED": "expired",
}
TERMINAL_BATCH_STATES = frozenset({"succeeded", "failed", "cancelled", "expired"})
#: The served "tier" of a row answered by a batch job (priced as such in ``pricing``).
BATCH_TIER = "batch"


class BatchEnqueueRefused(FlexError):
    """The API would not take a new batch job now (429: the model's enqueued-token quota, or shedding)."""


@dataclass(frozen=True)
class BatchRequest:
    """One row of a batch job: your key, and its prompt (text or Gemini contents)."""

    key: str
    contents: Any


@dataclass(frozen=True)
class BatchJobState:
    """Where a batch job stands: ``state`` is pending, running, succeeded, failed, cancelled or expired."""

    name: str
    state: str
    display_name: str | None = None
    error: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    #: The JSONL file a job was submitted as (None: inline), to delete with the job.
    input_file: str | None = None
    model: str | None = None
    create_time: datetime | None = None

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_BATCH_STATES


@dataclass(frozen=True)
class BatchLineResult:
    """One answered line of a finished job: a response, or the reason it failed."""

    key: str
    response: FlexResponse | None
    error: str | None = None
    #: An answer that came back unusable (off-schema, cut, blocked): paid for all the same.
    paid: FlexResponse | None = None


@dataclass(frozen=True)
class BatchResults:
    """A finished job's lines by key; ``unmatched`` answers came back with no key to match them by."""

    lines: list[BatchLineResult]
    unmatched: int = 0


def job_state(job: Any) -> BatchJobState:
    """Return a google-genai ``BatchJob`` in this provider's words."""
    raw = getattr(job.state, "value", job.state)
    stats = getattr(job, "batch_stats", None)
    counts = {}
    if stats is not None:
        counts = {
            name: int(getattr(stats, f"{name}_request_count", 0) or 0)
            for name in ("successful", "failed", "pending")
            if getattr(stats, f"{name}_request_count", None) is not None
        }
    error = getattr(job, "error", None)
    return BatchJobState(
        name=str(job.name),
        state=BATCH_STATES.get(str(raw), "running" if raw else "pending"),
        display_name=job.display_name,
        error=getattr(error, "message", None) if error is not None else None,
        counts=counts,
        model=str(job.model).removeprefix("models/") if getattr(job, "model", None) else None,
        create_time=getattr(job, "create_time", None),
    )


def batch_stats_of(body: Mapping[str, Any]) -> dict[str, int]:
    """Return a job's ``metadata.batchStats`` (pending, successful, failed requests) from the API's JSON.

    google-genai 3.6 drops ``batchStats`` from a Gemini API job (its ``BatchJob`` has only Vertex AI's
    ``completion_stats``), so :meth:`FlexBatches.get` reads the job's JSON for them.
    """
    stats = (body.get("metadata") or {}).get("batchStats") or {}
    return {
        name: int(stats[f"{name}RequestCount"])
        for name in ("pending", "successful", "failed")
        if f"{name}RequestCount" in stats
    }


def batch_line_config(config: types.GenerateContentConfig | None) -> types.GenerateContentConfig | None:
    """Return the per-request config of a batch line: the caller's, without a tier or HTTP options (a job has neither)."""
    if config is None:
        return None
    return config.model_copy(update={"service_tier": None, "http_options": None})


def response_from_line(
    raw: types.GenerateContentResponse,
    *,
    model: str,
    schema: AnswerSchema | None,
    prices: Mapping[str, Any],
    attempts: int,
) -> FlexResponse:
    """Return a batch line's answer priced at the batch tier; raise FlexResponseError (with its spend) if unusable."""
    parsed, problem = unusable_answer(raw, schema)
    usage = FlexUsage.from_metadata(raw.usage_metadata)
    response = FlexResponse(
        text=raw.text,
        parsed=parsed,
        model=model,
        service_tier=BATCH_TIER,
        requested_tier=BATCH_TIER,
        finish_reason=finish_reason_of(raw),
        usage=usage,
        cost_usd=usage_cost(usage, model=model, tier=BATCH_TIER, prices=prices),
        attempts=attempts,
        elapsed_s=0.0,
        standard_cost_usd=usage_cost(usage, model=model, tier="standard", prices=prices),
        cache_saved_usd=cache_saving(usage, model=model, tier=BATCH_TIER, prices=prices),
    )
    if problem is not None:
        raise problem.with_spend(response)
    return response


class FlexBatches:
    """The Batch API for one hook: ``client`` is called for the hook's shared google-genai client."""

    def __init__(self, client: Callable[[], genai.Client], prices: Mapping[str, Any]) -> None:
        self._client = client
        self.prices = prices

    def supports_batch(self, model: str) -> bool:
        """Return whether ``model`` takes batch jobs (``batchGenerateContent`` among its supported actions)."""
        found = self._call(lambda c: c.models.get(model=model))
        return "batchGenerateContent" in (found.supported_actions or [])

    def submit(
        self,
        model: str,
        requests: Sequence[BatchRequest],
        *,
        config: types.GenerateContentConfig | None,
        display_name: str,
        as_file: bool = False,
    ) -> BatchJobState:
        """Create a job for ``requests`` (inline under the request limit, else a keyed JSONL file).

        ``as_file`` sends a keyed JSONL file whatever the size (after inline answers came back without
        their metadata, the file's keys are the only way to match answers to rows).

        Not idempotent: a caller that may crash must record ``display_name`` first and look for it
        (:meth:`find`) before submitting again. Raises :class:`BatchEnqueueRefused` on a 429.
        """
        from google.genai import types

        line_config = batch_line_config(config)
        inlined = [
            types.InlinedRequest(contents=r.contents, config=line_config, metadata={"key": r.key}) for r in requests
        ]
        lines = self._wire_lines(inlined)
        size = sum(len(line) for line in lines)
        job_config = types.CreateBatchJobConfig(display_name=display_name)
        if size <= INLINE_BATCH_LIMIT_BYTES and not as_file:
            return job_state(self._call(lambda c: c.batches.create(model=model, src=inlined, config=job_config)))
        text = "".join(
            json.dumps({"key": r.key, "request": json.loads(line)["request"]}) + "\n"
            for r, line in zip(requests, lines, strict=True)
        )
        uploaded = self._call(
            lambda c: c.files.upload(
                file=io.BytesIO(text.encode()),
                config={"mime_type": "application/jsonl", "display_name": f"{display_name}.jsonl"[:100]},
            )
        )
        try:
            job = self._call(lambda c: c.batches.create(model=model, src=str(uploaded.name), config=job_config))
        except Exception:
            self._quietly(lambda c: c.files.delete(name=str(uploaded.name)))
            raise
        return dataclasses.replace(job_state(job), input_file=str(uploaded.name))

    def get(self, name: str) -> BatchJobState:
        """Return where job ``name`` stands, with the API's ``batchStats`` counts when it reports them."""
        state = job_state(self._call(lambda c: c.batches.get(name=name)))
        if state.counts:
            return state
        counts = self._quietly(
            lambda c: batch_stats_of(json.loads(c._api_client.request("get", name, {}).body or "{}"))
        )
        return dataclasses.replace(state, counts=counts) if counts else state

    def find(self, display_name: str) -> BatchJobState | None:
        """Return the newest job of this project named ``display_name`` (how a rerun finds the job a crash hid)."""
        for job in self._call(lambda c: list(c.batches.list(config={"page_size": 100}))):
            if job.display_name == display_name:
                return job_state(job)
        return None

    def cancel(self, name: str) -> None:
        self._call(lambda c: c.batches.cancel(name=name))

    def delete(self, name: str, input_file: str | None = None) -> None:
        """Delete a finished job, its results file and its input file; one already gone is not an error."""
        job = self._quietly(lambda c: c.batches.get(name=name))
        dest = getattr(job, "dest", None) if job is not None else None
        for file_name in (getattr(dest, "file_name", None), input_file):
            if file_name:
                self._quietly(lambda c, f=file_name: c.files.delete(name=f))
        self._quietly(lambda c: c.batches.delete(name=name))

    def results(
        self,
        name: str,
        *,
        model: str,
        wants_json: bool,
        attempts: Mapping[str, int] | None = None,
        schema: AnswerSchema | None = None,
    ) -> BatchResults:
        """Return a succeeded job's lines by key; ``attempts`` (key -> tries so far) fills each response's ``attempts``.

        Each answer is checked against ``schema`` (:class:`~.schema.AnswerSchema`; with ``wants_json`` and no
        schema, it must be JSON); an unusable one is a failed line that keeps what it cost (``paid``).
        """
        job = self._call(lambda c: c.batches.get(name=name))
        dest = job.dest
        if dest is None:
            return BatchResults([])
        lines: list[BatchLineResult] = []
        unmatched = 0
        for key, raw, error in self._raw_lines(dest):
            if not key:
                unmatched += 1
                continue
            tries = (attempts or {}).get(key, 1)
            if error is not None:
                lines.append(BatchLineResult(key, None, error))
                continue
            try:
                response = response_from_line(
                    raw,
                    model=model,
                    schema=schema or (AnswerSchema() if wants_json else None),
                    prices=self.prices,
                    attempts=tries,
                )
            except FlexResponseError as unusable:
                lines.append(BatchLineResult(key, None, str(unusable), paid=unusable.paid))
            else:
                lines.append(BatchLineResult(key, response))
        return BatchResults(lines, unmatched)

    # ---- inside

    def _raw_lines(self, dest: Any) -> Iterator[tuple[str | None, Any, str | None]]:
        from google.genai import types

        if dest.file_name:
            data = self._call(lambda c: c.files.download(file=dest.file_name))
            for text in data.decode("utf-8").splitlines():
                if not text.strip():
                    continue
                item = json.loads(text)
                key = item.get("key")
                if "response" in item:
                    yield key, types.GenerateContentResponse.model_validate(item["response"]), None
                else:
                    yield key, None, _line_error(item.get("error") or item.get("status"))
            return
        for answer in dest.inlined_responses or []:
            key = (answer.metadata or {}).get("key")
            if answer.response is not None:
                yield key, answer.response, None
            else:
                yield key, None, _line_error(answer.error)

    def _wire_lines(self, inlined: list[types.InlinedRequest]) -> list[str]:
        """Return each request as the API receives it (the SDK's own serializer), to size the job and write the file."""
        from google.genai import batches

        api_client = self._client()._api_client
        return [json.dumps(batches._InlinedRequest_to_mldev(api_client, request), default=str) for request in inlined]

    def _call(self, action: Callable[[genai.Client], Any]) -> Any:
        try:
            return action(self._client())
        except Exception as exc:
            translated = translate_error(exc)
            failure = getattr(translated, "failure", None)
            if isinstance(failure, Failure) and failure.status_code == 429:
                raise BatchEnqueueRefused(f"the Batch API refused a new job (429): {failure.message}") from exc
            if isinstance(translated, RetryableFailure) and failure is not None:
                raise FlexError(f"the Batch API is unavailable ({failure.status_code}): {failure.message}") from exc
            if translated is exc:
                raise
            raise translated from exc

    def _quietly(self, action: Callable[[genai.Client], Any]) -> Any:
        try:
            return action(self._client())
        except Exception:
            return None


def _line_error(error: Any) -> str:
    if error is None:
        return "the batch line failed without a reason"
    if isinstance(error, Mapping):
        code, message = error.get("code"), error.get("message")
    else:
        code, message = getattr(error, "code", None), getattr(error, "message", None)
    return f"batch line failed (code {code}): {message or 'no message'}"
