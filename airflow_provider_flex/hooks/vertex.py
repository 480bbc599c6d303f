"""Vertex AI mode: Flex PayGo for teams on Google Cloud, with service accounts instead of API keys.

From the Vertex AI Flex PayGo documentation
(https://cloud.google.com/vertex-ai/generative-ai/docs/flex-paygo) and public code using it:

- flex is selected by headers, never a body field: ``X-Vertex-AI-LLM-Shared-Request-Type: flex``
  uses Provisioned Throughput first, then flex; adding ``X-Vertex-AI-LLM-Request-Type: shared``
  makes it flex only (the same pair as Priority PayGo's ``priority``);
- the ``global`` location only; default timeout 20 minutes, at most 30;
- inline payloads up to 20 MB (larger files go by Cloud Storage URI);
- the served tier is ``usageMetadata.trafficType`` (``ON_DEMAND_FLEX``...);
- capacity 429s ("Resource exhausted. Please try again later.") carry no QuotaFailure.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

VERTEX_DEFAULT_TIMEOUT_S = 20 * 60.0
VERTEX_MAX_TIMEOUT_S = 30 * 60.0
VERTEX_INLINE_LIMIT_BYTES = 20 * 1024 * 1024
FLEX_LOCATION = "global"
SHARED_REQUEST_TYPE_HEADER = "X-Vertex-AI-LLM-Shared-Request-Type"
REQUEST_TYPE_HEADER = "X-Vertex-AI-LLM-Request-Type"
#: ``vertex_flex_mode``: flex only (the default: a call leaves on the tier asked for), or Provisioned
#: Throughput first when the project has it, then flex.
FLEX_MODES = ("flex_only", "provisioned_then_flex")
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
#: usageMetadata.trafficType -> the tier that served the call.
SERVED_BY_TRAFFIC_TYPE = {
    "ON_DEMAND": "standard",
    "ON_DEMAND_FLEX": "flex",
    "ON_DEMAND_PRIORITY": "priority",
    "PROVISIONED_THROUGHPUT": "provisioned",
}


@dataclass(frozen=True)
class VertexSettings:
    """The Vertex AI half of a ``gemini_flex`` connection (extra ``vertexai: true``)."""

    project: str | None
    location: str
    flex_mode: str
    key_json: str | None = field(default=None, repr=False)
    key_path: str | None = None
    gcp_conn_id: str | None = None

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any], source: str) -> VertexSettings | None:
        if not _truthy(extras.get("vertexai")):
            return None
        key_json = extras.get("key_json") or None
        if isinstance(key_json, Mapping):
            key_json = json.dumps(dict(key_json))
        if key_json is not None:
            try:
                info = json.loads(key_json)
            except json.JSONDecodeError:
                raise ValueError(f"{source} extra key_json is not a service-account key (not JSON)") from None
            if not isinstance(info, dict) or "private_key" not in info or "client_email" not in info:
                raise ValueError(f"{source} extra key_json is not a service-account key (no private_key/client_email)")
        flex_mode = extras.get("vertex_flex_mode") or FLEX_MODES[0]
        if flex_mode not in FLEX_MODES:
            raise ValueError(
                f"{source} extra vertex_flex_mode must be one of {', '.join(FLEX_MODES)}, got {flex_mode!r}"
            )
        return cls(
            project=extras.get("project") or None,
            location=extras.get("location") or FLEX_LOCATION,
            flex_mode=flex_mode,
            key_json=key_json,
            key_path=extras.get("key_path") or None,
            gcp_conn_id=extras.get("gcp_conn_id") or None,
        )

    @property
    def private_key(self) -> str | None:
        return json.loads(self.key_json).get("private_key") if self.key_json else None

    def identity(self) -> str:
        """Return who calls, irreversibly: for the client and quota registries, never the key itself."""
        material = self.key_json or self.key_path or (f"gcp:{self.gcp_conn_id}" if self.gcp_conn_id else "adc")
        return hashlib.sha256(f"{material}|{self.project}|{self.location}".encode()).hexdigest()[:16]


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes", "on") if isinstance(value, str) else bool(value)


def credentials(vertex: VertexSettings) -> tuple[Any, str | None]:
    """Return (google-auth credentials, project) from, in order: ``key_json``, ``key_path``, ``gcp_conn_id``, ADC."""
    if vertex.key_json:
        from google.oauth2 import service_account

        info = json.loads(vertex.key_json)
        creds = service_account.Credentials.from_service_account_info(info, scopes=[CLOUD_PLATFORM_SCOPE])
        return creds, vertex.project or info.get("project_id")
    if vertex.key_path:
        from google.oauth2 import service_account

        creds = service_account.Credentials.from_service_account_file(vertex.key_path, scopes=[CLOUD_PLATFORM_SCOPE])
        return creds, vertex.project or getattr(creds, "project_id", None)
    if vertex.gcp_conn_id:
        try:
            from airflow.providers.google.common.hooks.base_google import GoogleBaseHook
        except ImportError:
            raise ValueError(
                f"gcp_conn_id={vertex.gcp_conn_id!r} needs apache-airflow-providers-google; "
                "or give the service-account key as extra key_json or key_path"
            ) from None
        google_hook = GoogleBaseHook(gcp_conn_id=vertex.gcp_conn_id)
        return google_hook.get_credentials(), vertex.project or google_hook.project_id
    import google.auth

    creds, project = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    return creds, vertex.project or project


def tier_headers(tier: str, flex_mode: str) -> dict[str, str]:
    """Return the headers that select ``tier`` on Vertex AI (standard: none, the project's default routing)."""
    if tier == "standard":
        return {}
    headers = {SHARED_REQUEST_TYPE_HEADER: tier}
    if tier == "priority" or flex_mode == "flex_only":
        headers[REQUEST_TYPE_HEADER] = "shared"
    return headers


def served_by_traffic_type(traffic_type: Any) -> str | None:
    value = getattr(traffic_type, "value", traffic_type)
    return SERVED_BY_TRAFFIC_TYPE.get(str(value)) if value else None


def vertex_timeout(timeout_s: float | None, source: str, log: Any = None) -> float:
    """Return Vertex's flex timeout: 20 minutes unless given, never above its 30-minute ceiling."""
    if timeout_s is None:
        return VERTEX_DEFAULT_TIMEOUT_S
    if timeout_s > VERTEX_MAX_TIMEOUT_S:
        if log is not None:
            log.warning("%s: timeout %.0fs is above Vertex AI's 30-minute ceiling; using 1800s.", source, timeout_s)
        return VERTEX_MAX_TIMEOUT_S
    return timeout_s


def inline_payload_bytes(contents: Any) -> int:
    """Return bytes a request carries inline: text, and inline data as base64 (what the 20 MB limit counts)."""
    if contents is None:
        return 0
    if isinstance(contents, str):
        return len(contents.encode("utf-8"))
    if isinstance(contents, bytes):
        return len(contents) * 4 // 3
    if isinstance(contents, Mapping):
        return sum(
            inline_payload_bytes(value) for key, value in contents.items() if key not in ("mime_type", "mimeType")
        )
    if isinstance(contents, list | tuple):
        return sum(inline_payload_bytes(item) for item in contents)
    if hasattr(contents, "model_dump"):
        return inline_payload_bytes(contents.model_dump(exclude_none=True))
    return 0


def check_vertex_request(vertex: VertexSettings, tier: str, contents: Any, source: str) -> None:
    """Refuse what Vertex AI would refuse, before any call: flex off ``global``, inline payloads over 20 MB."""
    if tier == "flex" and vertex.location != FLEX_LOCATION:
        raise ValueError(
            f"{source}: Vertex AI serves Flex PayGo on the global endpoint only, but location is "
            f"{vertex.location!r}; set the connection extra location to 'global' (or use service_tier='standard')."
        )
    size = inline_payload_bytes(contents)
    if size > VERTEX_INLINE_LIMIT_BYTES:
        raise ValueError(
            f"{source}: the request carries {size / 2**20:.1f} MB inline, above Vertex AI Flex PayGo's 20 MB; "
            "pass large files by Cloud Storage URI (a file_data part) instead."
        )
