"""A ``gemini_flex`` connection read into settings: key or Vertex AI account, base URL, timeouts, policy, quotas."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from airflow_provider_flex.exceptions import FlexError
from airflow_provider_flex.hooks.quota import QuotaLimits, project_fingerprint
from airflow_provider_flex.hooks.retry import FlexRetryPolicy, coerce_fields
from airflow_provider_flex.hooks.vertex import VERTEX_DEFAULT_TIMEOUT_S, VertexSettings, vertex_timeout

DEFAULT_MODEL = "gemini-3-flash-preview"
DEFAULT_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class ConnectionSettings:
    api_key: str = field(repr=False)
    base_url: str | None
    api_version: str | None
    default_model: str
    timeout: float
    retry_policy: FlexRetryPolicy
    #: model id (or ``*`` for any other) -> the quotas configured for it.
    quotas: Mapping[str, QuotaLimits] = field(default_factory=dict)
    #: A ``redis`` connection through which every process paces to the same quotas (None: this process alone).
    rate_limit_redis_conn_id: str | None = None
    #: Vertex AI mode (extra ``vertexai: true``): project, location, service-account credentials.
    vertex: VertexSettings | None = None

    @property
    def project(self) -> str:
        """Return the project this connection's calls count against, irreversibly named (quotas, shared clients)."""
        if self.vertex is not None:
            return self.vertex.identity()
        return project_fingerprint(self.api_key, self.base_url)

    def quotas_for(self, model: str) -> QuotaLimits:
        model = model.removeprefix("models/")
        return self.quotas.get(model) or self.quotas.get("*") or QuotaLimits()

    @classmethod
    def from_connection(
        cls, conn: Any, *, explicit_policy: FlexRetryPolicy | None, explicit_timeout: float | None
    ) -> ConnectionSettings:
        extras = dict(conn.extra_dejson or {})
        source = f"connection {conn.conn_id!r}"
        vertex = VertexSettings.from_extras(extras, source)
        api_key = conn.password or os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY") or ""
        if not api_key and vertex is None:
            raise FlexError(
                f"{source} has no API key: set its password (API key), or GEMINI_API_KEY / GOOGLE_API_KEY, "
                "or extra vertexai: true for Vertex AI with a service account."
            )
        policy_fields = {f.name for f in fields(FlexRetryPolicy)}
        policy = explicit_policy or FlexRetryPolicy(
            **coerce_fields(
                FlexRetryPolicy,
                {k: v for k, v in extras.items() if k in policy_fields and v not in (None, "")},
                source=f"{source} extra",
            )
        )
        default_timeout = VERTEX_DEFAULT_TIMEOUT_S if vertex is not None else DEFAULT_TIMEOUT_S
        timeout = explicit_timeout if explicit_timeout is not None else extras.get("timeout") or default_timeout
        try:
            timeout = float(timeout)
            if timeout <= 0 or math.isnan(timeout):
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError(f"{source}: timeout must be a positive number of seconds, got {timeout!r}") from None
        if vertex is not None:
            timeout = vertex_timeout(timeout, source)
        return cls(
            api_key=api_key,
            base_url=_base_url(conn, source),
            api_version=extras.get("api_version") or None,
            default_model=extras.get("default_model") or DEFAULT_MODEL,
            timeout=timeout,
            retry_policy=policy,
            quotas=_quotas(extras.get("quotas"), source),
            rate_limit_redis_conn_id=extras.get("rate_limit_redis_conn_id") or None,
            vertex=vertex,
        )


def _quotas(raw: Any, source: str) -> dict[str, QuotaLimits]:
    """Return the ``quotas`` extra: a JSON object of model id -> {requests_per_minute, tokens_per_minute, requests_per_day}."""
    if raw in (None, "", {}):
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source} extra quotas is not valid JSON: {exc.msg}") from None
    if not isinstance(raw, Mapping):
        raise ValueError(f"{source} extra quotas must be a JSON object of model id -> quotas")
    return {
        str(model).removeprefix("models/"): QuotaLimits.from_value(value, source=f"{source} extra quotas[{model!r}]")
        for model, value in raw.items()
    }


def _base_url(conn: Any, source: str) -> str | None:
    host = (conn.host or "").strip()
    if not host:
        return None
    parts = urlsplit(host)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        shown = f"{parts.scheme}://***@{host.rsplit('@', 1)[-1]}" if "@" in host else host  # hide credentials
        raise ValueError(f"{source}: base URL must be an http:// or https:// URL, got {shown!r}")
    if conn.port and parts.port is None:
        host = urlunsplit(parts._replace(netloc=f"{parts.netloc}:{conn.port}"))
    return host.rstrip("/")


def mask(secret: str) -> None:
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - older task SDKs
        return
    mask_secret(secret)


def redact(text: str, settings: ConnectionSettings | None) -> str:
    if settings is None:
        return text
    for secret in (settings.api_key, settings.vertex.private_key if settings.vertex else None):
        if secret:
            text = text.replace(secret, "***")
    return text
