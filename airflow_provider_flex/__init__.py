"""Apache Airflow provider for the Gemini API's flex inference tier."""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"
#: The connection every hook, operator and trigger uses unless told otherwise.
DEFAULT_CONN_ID = "gemini_flex_default"


def _field(
    label: str, kind: str | list[str], description: str, default: Any = None, fmt: str | None = None
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": kind}
    if default is not None:
        schema["default"] = default
    if fmt is not None:
        schema["format"] = fmt
    return {"label": label, "description": description, "schema": schema}


#: Connection extras the Airflow UI shows as form fields (Airflow 3.2+ declarative form).
CONNECTION_FIELDS: dict[str, dict[str, Any]] = {
    "default_model": _field(
        "Default model", ["string", "null"], "Model used when a task names none.", "gemini-3-flash-preview"
    ),
    "timeout": _field(
        "Timeout per attempt (s)", ["number", "null"], "Covers the flex queue wait; sent as X-Server-Timeout.", 900
    ),
    "max_attempts": _field("Max attempts", ["integer", "null"], "Calls made at most for one request.", 10),
    "initial_delay": _field("Initial backoff (s)", ["number", "null"], "First wait before a retry.", 5),
    "max_delay": _field("Max backoff (s)", ["number", "null"], "Longest backoff between attempts.", 120),
    "deadline": _field("Deadline (s)", ["number", "null"], "Total patience for one request, waits included.", 3600),
    "fallback_to_standard": _field(
        "Fall back to standard", ["boolean", "null"], "Last attempt on the standard tier at full price.", False
    ),
    "api_version": _field("API version", ["string", "null"], "v1 (default) or v1beta."),
    "quotas": _field(
        "Quotas per model",
        ["object", "null"],
        "Your project's quotas, when you know them: model id (or * for any) -> requests_per_minute, "
        'tokens_per_minute, requests_per_day, e.g. {"gemini-2.5-flash": {"requests_per_minute": 1000}}. '
        "Calls are paced to them; quotas not given are learned from the API's 429s.",
        fmt="json",
    ),
    "vertexai": _field(
        "Vertex AI", ["boolean", "null"], "Call Vertex AI (Flex PayGo) with a service account instead of an API key."
    ),
    "project": _field("Vertex AI project", ["string", "null"], "Google Cloud project id (default: the key's)."),
    "location": _field("Vertex AI location", ["string", "null"], "Flex PayGo is served on global only.", "global"),
    "key_json": _field(
        "Service-account key (JSON)",
        ["string", "null"],
        "The key file's JSON; masked, never logged. Else key_path, gcp_conn_id, or Application Default Credentials.",
        fmt="password",
    ),
    "key_path": _field("Service-account key file", ["string", "null"], "Path of a service-account key file."),
    "gcp_conn_id": _field(
        "Google Cloud connection",
        ["string", "null"],
        "Take the credentials from this google_cloud_platform connection (apache-airflow-providers-google).",
    ),
    "vertex_flex_mode": _field(
        "Vertex flex mode",
        ["string", "null"],
        "flex_only (default: never Provisioned Throughput) or provisioned_then_flex.",
        "flex_only",
    ),
    "rate_limit_redis_conn_id": _field(
        "Redis connection for shared quotas",
        ["string", "null"],
        "A redis connection (apache-airflow-providers-redis) through which every worker paces to the same "
        "quotas. Empty: each process paces alone.",
    ),
}


def get_provider_info() -> dict[str, Any]:
    """Return the provider metadata Airflow reads through the ``apache_airflow_provider`` entry point."""
    return {
        "package-name": "airflow-provider-flex",
        "name": "Gemini Flex",
        "description": "Run Gemini API calls on the cheap, sheddable flex tier from Airflow.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Gemini Flex",
                "external-doc-url": "https://ai.google.dev/gemini-api/docs/flex-inference",
                "tags": ["ai"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Gemini Flex",
                "python-modules": ["airflow_provider_flex.hooks.gemini_flex"],
            }
        ],
        "operators": [
            {
                "integration-name": "Gemini Flex",
                "python-modules": [
                    "airflow_provider_flex.operators.generate",
                    "airflow_provider_flex.operators.stream",
                    "airflow_provider_flex.operators.enrich",
                ],
            }
        ],
        "task-decorators": [
            {"class-name": "airflow_provider_flex.decorators.gemini_flex.gemini_flex_task", "name": "gemini_flex"}
        ],
        "triggers": [
            {
                "integration-name": "Gemini Flex",
                "python-modules": [
                    "airflow_provider_flex.triggers.gemini_flex",
                    "airflow_provider_flex.triggers.batch",
                ],
            }
        ],
        "connection-types": [
            {
                "connection-type": "gemini_flex",
                "hook-class-name": "airflow_provider_flex.hooks.gemini_flex.GeminiFlexHook",
                "hook-name": "Gemini Flex",
                "conn-fields": CONNECTION_FIELDS,
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port", "extra"],
                    "relabeling": {"password": "API key (Gemini API)", "host": "Base URL (optional)"},
                    "placeholders": {"host": "https://generativelanguage.googleapis.com"},
                },
            }
        ],
        "config": {
            "gemini_flex": {
                "description": "Settings of the Gemini Flex provider.",
                "options": {
                    "triggerer_freeze_gc": {
                        "description": (
                            "Freeze the triggerer's start-up objects (gc.freeze) when its first flex trigger "
                            "runs, so the garbage collector's full passes, which a thousand waiting calls set "
                            "off, no longer scan Airflow's own objects: the event loop's worst stall drops "
                            "by about half (docs/reliability.md). Off by default: it is process-wide."
                        ),
                        "version_added": "0.1.0",
                        "type": "boolean",
                        "example": "True",
                        "default": "False",
                    },
                    "fix_mmap_threshold": {
                        "description": (
                            "In the process of an enrichment, fix glibc's mmap threshold at 128 KiB (as "
                            "MALLOC_MMAP_THRESHOLD_=131072 does), so large buffers are returned to the system "
                            "when freed and a million-row run keeps a flat peak memory (without it: +52 MB). "
                            "Linux with glibc only; False leaves the process's allocator as it is."
                        ),
                        "version_added": "0.3.0",
                        "type": "boolean",
                        "example": "False",
                        "default": "True",
                    },
                    "trace_content": {
                        "description": (
                            "Put each call's prompt and answer on its OpenTelemetry span "
                            "(gen_ai.input.messages, gen_ai.output.messages) when Airflow's tracing is on. "
                            "Off by default: spans carry models, tokens, tiers and cost, never text."
                        ),
                        "version_added": "0.1.0",
                        "type": "boolean",
                        "example": "True",
                        "default": "False",
                    },
                },
            }
        },
    }
