"""Vertex AI's side of the emulator: OAuth tokens for service accounts, bearer auth, Flex PayGo by header.

Following the Vertex AI documentation (Flex PayGo: https://cloud.google.com/vertex-ai/generative-ai/docs/flex-paygo)
and shared/reference/gemini-quotas-facts.md:

- Routes ``/{v1,v1beta1}/projects/{project}/locations/{location}/publishers/google/models/{model}:{action}``.
- ``Authorization: Bearer <token>``: none or unknown gives 401 UNAUTHENTICATED; a token of another
  project gives 403 PERMISSION_DENIED. Tokens come from ``POST /token``, the OAuth 2.0 JWT-bearer
  grant google-auth's service-account flow makes; the assertion's claims (issuer, audience, expiry)
  are checked, its signature is not (the emulator has no Google key registry).
- The tier is the ``X-Vertex-AI-LLM-Shared-Request-Type`` header (``flex``, ``priority``), never a body
  field: a ``serviceTier`` in the body is refused as an unknown field. Flex is served on the ``global``
  location only; a regional one is refused.
- The served tier is ``usageMetadata.trafficType`` (``ON_DEMAND``, ``ON_DEMAND_FLEX``, ``ON_DEMAND_PRIORITY``).
- Capacity refusals are 429 "Resource exhausted. Please try again later." with no QuotaFailure (dynamic
  shared quota), not 503.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

VERTEX_API_VERSIONS = ("v1", "v1beta1")
SHARED_REQUEST_TYPE_HEADER = "x-vertex-ai-llm-shared-request-type"
REQUEST_TYPE_HEADER = "x-vertex-ai-llm-request-type"
TRAFFIC_TYPES = {"standard": "ON_DEMAND", "flex": "ON_DEMAND_FLEX", "priority": "ON_DEMAND_PRIORITY"}
CAPACITY_MESSAGE = (
    "Resource exhausted. Please try again later. Please refer to "
    "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details."
)
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"


class VertexError(Exception):
    """A refusal in Vertex AI's words."""

    def __init__(self, code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.code, self.status, self.message, self.details = code, status, message, details


def unauthenticated() -> VertexError:
    return VertexError(
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
        "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
    )


def permission_denied(project: str, location: str, model: str) -> VertexError:
    resource = f"projects/{project}/locations/{location}/publishers/google/models/{model}"
    return VertexError(
        403,
        "PERMISSION_DENIED",
        f"Permission 'aiplatform.endpoints.predict' denied on resource '//aiplatform.googleapis.com/{resource}' "
        "(or it may not exist).",
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "IAM_PERMISSION_DENIED",
                "domain": "aiplatform.googleapis.com",
                "metadata": {"permission": "aiplatform.endpoints.predict", "resource": resource},
            }
        ],
    )


@dataclass
class Token:
    project: str
    expires_at: float
    client_email: str


class TokenIssuer:
    """Access tokens for service accounts, as Google's OAuth server grants them to google-auth."""

    def __init__(self, lifetime_s: float) -> None:
        self.lifetime_s = lifetime_s
        self.tokens: dict[str, Token] = {}
        self.issued = 0

    def grant(self, form: dict[str, str], token_url: str) -> dict[str, Any]:
        """Answer a JWT-bearer grant; raises ValueError with OAuth's error words."""
        if form.get("grant_type") != JWT_BEARER_GRANT:
            raise ValueError("unsupported_grant_type")
        claims = _jwt_claims(form.get("assertion", ""))
        email = str(claims.get("iss") or "")
        if "@" not in email or not email.endswith(".iam.gserviceaccount.com"):
            raise ValueError("invalid_grant: the assertion's issuer is not a service account")
        if claims.get("aud") not in (token_url, GOOGLE_TOKEN_AUDIENCE):  # google-auth names Google's endpoint
            raise ValueError(f"invalid_grant: the assertion's audience is neither {token_url} nor Google's")
        if float(claims.get("exp", 0)) < time.time():
            raise ValueError("invalid_grant: the assertion has expired")
        project = email.split("@", 1)[1].removesuffix(".iam.gserviceaccount.com")
        token = f"ya29.emulator-{secrets.token_urlsafe(24)}"
        self.tokens[token] = Token(project, time.time() + self.lifetime_s, email)
        self.issued += 1
        return {"access_token": token, "expires_in": int(self.lifetime_s), "token_type": "Bearer"}

    def check(self, authorization: str | None, *, project: str, location: str, model: str) -> Token:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise unauthenticated()
        token = self.tokens.get(authorization.split(" ", 1)[1].strip())
        if token is None or token.expires_at < time.time():
            raise unauthenticated()
        if token.project != project:
            raise permission_denied(project, location, model)
        return token

    def expire_all(self) -> None:
        for token in self.tokens.values():
            token.expires_at = 0.0


def _jwt_claims(assertion: str) -> dict[str, Any]:
    try:
        payload = assertion.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError) as exc:
        raise ValueError("invalid_grant: the assertion is not a JWT") from exc


def vertex_tier(headers: Any, location: str, body: Any) -> str:
    """Return the tier a Vertex request asks for, from its headers; the body must not name one."""
    if isinstance(body, dict):
        for name in ("serviceTier", "service_tier"):
            if name in body:
                raise VertexError(
                    400,
                    "INVALID_ARGUMENT",
                    f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.',
                    [
                        {
                            "@type": "type.googleapis.com/google.rpc.BadRequest",
                            "fieldViolations": [
                                {"description": f'Invalid JSON payload received. Unknown name "{name}"'}
                            ],
                        }
                    ],
                )
    shared = (headers.get(SHARED_REQUEST_TYPE_HEADER) or "").strip().lower()
    if not shared:
        return "standard"
    if shared not in ("flex", "priority"):
        raise VertexError(400, "INVALID_ARGUMENT", f"Unsupported {SHARED_REQUEST_TYPE_HEADER}: {shared!r}.")
    if shared == "flex" and location != "global":
        raise VertexError(
            400,
            "INVALID_ARGUMENT",
            f"Flex PayGo is only supported on the global endpoint; location {location!r} does not support it.",
        )
    return shared
