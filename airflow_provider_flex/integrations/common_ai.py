"""A Gemini Batch API adapter for common.ai's ``@task.llm_batch`` / ``LLMBatchOperator``.

common.ai (``apache-airflow-providers-common-ai``) ships batch adapters for OpenAI and Anthropic
only; this one gives its users Gemini's Batch API (50% of the standard price) through this
provider's hook layer. It is registered through the ``airflow.providers.common.ai.batch_adapters``
entry point for the model-id prefixes pydantic-ai uses for the Gemini API: ``google`` (pydantic-ai
2.x) and ``google-gla`` (1.x), e.g. ``model_id="google:gemini-2.5-flash"``. Credentials come from a
``gemini_flex`` connection (or common.ai's ``pydanticai`` one): its password is the API key, its host
an optional base URL (a proxy, or this provider's emulator).

Each request's key is ``<idempotency_key>-<index>``, the form common.ai's results layer parses; the
job's display name is ``<idempotency_key>-<fingerprint[:16]>``, so :meth:`find_orphaned_batch` can
find a job whose create response was lost. Importing this module imports common.ai (it subclasses its
contract) but never google-genai, which loads at first use.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.ai.batch.base import (
    BatchAdapter,
    BatchState,
    BatchStatus,
    ExtractedOutput,
    RawResultItem,
    SubmitResult,
)
from airflow.providers.common.ai.exceptions import LLMBatchLimitExceededError

if TYPE_CHECKING:
    from airflow.providers.common.ai.batch.base import BatchRequest
    from airflow.providers.common.ai.batch.output_schema import OutputSpec

    from airflow_provider_flex.hooks.batch import FlexBatches

#: This provider's batch states in common.ai's words.
STATUS: dict[str, BatchStatus] = {
    "pending": "in_progress",
    "running": "in_progress",
    "succeeded": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
    "expired": "expired",
}
#: How far before the intent record's time a job may have been created and still be ours (clock skew).
CLOCK_SKEW = timedelta(minutes=5)


def display_name(idempotency_key: str, input_fingerprint: str) -> str:
    """Return the job's display name: which task instance and which exact input it was made for."""
    return f"{idempotency_key}-{input_fingerprint[:16]}"


def request_configs(
    requests: list[BatchRequest],
    system_prompt: str,
    max_tokens: int,
    directive: dict[str, Any],
    params: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """Return each request's GenerateContentConfig fields: the caller's params (batch, then the request's own),
    then what the adapter manages (the token cap, structured output, the system instruction)."""
    configs = []
    for request in requests:
        config: dict[str, Any] = {
            **(params or {}),
            **(request.get("params") or {}),
            "max_output_tokens": request.get("max_tokens") or max_tokens,
            **directive,
        }
        if request.get("system_prompt") or system_prompt:
            config["system_instruction"] = request.get("system_prompt") or system_prompt
        configs.append(config)
    return configs


class GeminiFlexBatchAdapter(BatchAdapter):
    """Gemini Batch API jobs for common.ai, through :class:`~airflow_provider_flex.hooks.batch.FlexBatches`."""

    name = "google"
    conn_types = frozenset({"gemini_flex", "pydanticai"})
    max_requests = 200_000
    #: The Files API's 2 GB per file: larger inputs go as several mapped tasks.
    max_payload_bytes = 2 * 2**30
    allows_per_request_model = False

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None, client: Any | None = None) -> None:
        super().__init__(api_key=api_key, base_url=base_url, client=client)
        self._api_key = api_key
        self._base_url = base_url
        self._batches: FlexBatches | None = None

    @property
    def batches(self) -> FlexBatches:
        """Return the provider's batch calls for these credentials (built at first use: google-genai loads then)."""
        if self._batches is None:
            from airflow.sdk import Connection

            from airflow_provider_flex.hooks.batch import FlexBatches
            from airflow_provider_flex.hooks.clients import shared_client
            from airflow_provider_flex.hooks.connection import ConnectionSettings, mask
            from airflow_provider_flex.pricing import DEFAULT_PRICES

            conn = Connection(
                conn_id="common_ai_gemini_batch", conn_type="gemini_flex", host=self._base_url, password=self._api_key
            )
            settings = ConnectionSettings.from_connection(conn, explicit_policy=None, explicit_timeout=None)
            mask(settings.api_key)
            client = self._client if self._client is not None else shared_client(settings)
            self._batches = FlexBatches(lambda: client, DEFAULT_PRICES)
        return self._batches

    def close(self) -> None:
        """Do nothing: the client is shared with the process's hooks."""

    # ---- the contract

    def build_output_directive(self, spec: OutputSpec) -> dict[str, Any]:
        if not spec.is_structured:
            return {}
        return {"response_mime_type": "application/json", "response_json_schema": spec.json_schema}

    def validate_requests(
        self,
        requests: list[BatchRequest],
        *,
        model: str,
        output_spec: OutputSpec,
        idempotency_key: str,
        system_prompt: str = "",
        max_tokens: int = 1024,
        request_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.check_custom_id_length(idempotency_key, len(requests))
        if len(requests) > self.max_requests:
            raise LLMBatchLimitExceededError(
                f"Gemini batch (this adapter) takes at most {self.max_requests} requests per job; got "
                f"{len(requests)}. Split the input with .expand()."
            )
        for index, request in enumerate(requests):
            self.resolve_request_model(request.get("model"), default_bare_model=model, request_index=index)
        configs = request_configs(
            requests, system_prompt, max_tokens, self.build_output_directive(output_spec), request_params
        )
        size = sum(
            len(json.dumps({"prompt": r["prompt"], **config}, default=str))
            for r, config in zip(requests, configs, strict=True)
        )
        if size > self.max_payload_bytes:
            raise LLMBatchLimitExceededError(
                f"Gemini batch takes a JSONL input of at most {self.max_payload_bytes} bytes; this input is about "
                f"{size} bytes. Split the input with .expand()."
            )

    def submit(
        self,
        requests: list[BatchRequest],
        *,
        model: str,
        idempotency_key: str,
        input_fingerprint: str,
        output_spec: OutputSpec,
        system_prompt: str = "",
        max_tokens: int = 1024,
        request_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> SubmitResult:
        from airflow_provider_flex.hooks.batch import BatchRequest as FlexBatchRequest
        from airflow_provider_flex.hooks.request import as_generate_config

        configs = request_configs(
            requests, system_prompt, max_tokens, self.build_output_directive(output_spec), request_params
        )
        if len({json.dumps(c, sort_keys=True, default=str) for c in configs}) > 1:
            raise LLMBatchLimitExceededError(
                "this Gemini adapter sends one config per job: give per-request system_prompt, max_tokens and "
                "params the same values, or split the requests into separate tasks"
            )
        job = self.batches.submit(
            model,
            [FlexBatchRequest(f"{idempotency_key}-{index}", r["prompt"]) for index, r in enumerate(requests)],
            config=as_generate_config(configs[0]) if configs else None,
            display_name=display_name(idempotency_key, input_fingerprint),
        )
        return SubmitResult(batch_id=job.name, provider_input_ref=job.input_file)

    def get_batch(self, batch_id: str) -> BatchState:
        job = self.batches.get(batch_id)
        counts = None
        if job.counts:
            counts = {
                "succeeded": job.counts.get("successful", 0),
                "errored": job.counts.get("failed", 0),
            }
        return BatchState(status=STATUS.get(job.state, "in_progress"), counts=counts, error_message=job.error)

    def cancel_batch(self, batch_id: str) -> None:
        self.batches.cancel(batch_id)

    def iter_results(self, batch_id: str) -> Iterator[RawResultItem]:
        """Return the job's results as common.ai reads them; once read to the end, the job's spend is recorded
        in the task's XCom (``gemini_flex_spend``) for the spend view: common.ai's manifest carries none."""
        job = self.batches.get(batch_id)  # raises now for an unknown job, before iteration
        results = self.batches.results(batch_id, model=job.model or "", wants_json=False)
        return self._items_then_spend(results.lines)

    def _items_then_spend(self, lines: list[Any]) -> Iterator[RawResultItem]:
        for line in lines:
            yield self._item(line)
        record_batch_spend(batch_job_spend(lines))

    @staticmethod
    def _item(line: Any) -> RawResultItem:
        index = int(line.key.rsplit("-", 1)[1])
        response = line.response
        if response is None:
            return RawResultItem(
                custom_id=line.key,
                index=index,
                provider_status="errored",
                model=None,
                usage=None,
                finish_reason=None,
                error={"type": "provider_error", "message": line.error, "provider_code": None, "stage": "provider"},
                raw=None,
            )
        return RawResultItem(
            custom_id=line.key,
            index=index,
            provider_status="success",
            model=response.model,
            usage={
                "input_tokens": response.usage.prompt_tokens,
                "output_tokens": response.usage.output_tokens + response.usage.thoughts_tokens,
            },
            finish_reason=response.finish_reason,
            error=None,
            raw=response.text,
        )

    def extract_output(self, raw: RawResultItem, spec: OutputSpec) -> ExtractedOutput:
        if raw.raw is None:
            return ExtractedOutput(kind="absent")
        return ExtractedOutput(kind="json_text" if spec.is_structured else "text", text=raw.raw)

    def find_orphaned_batch(self, idempotency_key: str, input_fingerprint: str, not_before: str) -> str | None:
        """Return the newest job named for this task instance and input, created at or after ``not_before``."""
        job = self.batches.find(display_name(idempotency_key, input_fingerprint))
        if job is None:
            return None
        too_old = (
            bool(not_before)
            and job.create_time is not None
            and job.create_time < datetime.fromisoformat(not_before) - CLOCK_SKEW
        )
        return None if too_old else job.name


class GeminiFlexLegacyBatchAdapter(GeminiFlexBatchAdapter):
    """The same adapter under pydantic-ai 1.x's prefix for the Gemini API (``google-gla:<model>``)."""

    name = "google-gla"


def batch_job_spend(lines: list[Any]) -> dict[str, Any]:
    """Return what a finished job's lines cost (answers and paid unusable ones), as the spend view reads it."""
    paid = [line.response or line.paid for line in lines if (line.response or line.paid) is not None]
    return {
        "kind": "llm_batch",
        "batch_jobs": 1,
        "rows": sum(1 for line in lines if line.response is not None),
        "cost_usd": round(sum(r.cost_usd or 0.0 for r in paid), 9),
        "standard_cost_usd": round(sum(r.standard_cost_usd or 0.0 for r in paid), 9),
        "input_tokens": sum(r.usage.prompt_tokens for r in paid),
        "output_tokens": sum(r.usage.output_tokens + r.usage.thoughts_tokens for r in paid),
        "cached_tokens": sum(r.usage.cached_tokens for r in paid),
    }


def record_batch_spend(spend: dict[str, Any]) -> None:
    """Push ``spend`` under the spend key of the running task, if there is one (none outside a task)."""
    from airflow_provider_flex.spend import SPEND_XCOM_KEY

    try:
        from airflow.sdk import get_current_context

        context = get_current_context()
    except Exception:  # not inside a running task (a script, a test of the adapter alone)
        return
    context["ti"].xcom_push(key=SPEND_XCOM_KEY, value=spend)
