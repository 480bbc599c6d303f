"""A Google service account made in the test: its key signs the real google-auth JWT flow against the emulator."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from functools import cache
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from airflow_provider_flex.emulator import FlexEmulator


@cache
def _private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@dataclass(frozen=True)
class ServiceAccount:
    project: str
    info: dict[str, Any]

    @property
    def private_key(self) -> str:
        return self.info["private_key"]

    @property
    def key_json(self) -> str:
        return json.dumps(self.info)

    def connection(self, emulator: FlexEmulator, **extra: Any) -> dict[str, Any]:
        """A ``gemini_flex`` connection in Vertex AI mode, the emulator as its base URL."""
        return {
            "conn_type": "gemini_flex",
            "host": emulator.base_url,
            "extra": {
                "vertexai": True,
                "project": self.project,
                "location": "global",
                "key_json": self.key_json,
                **extra,
            },
        }

    def connection_json(self, emulator: FlexEmulator, **extra: Any) -> str:
        return json.dumps(self.connection(emulator, **extra))


def service_account(emulator: FlexEmulator, project: str = "flex-analytics") -> ServiceAccount:
    """A service-account key of ``project`` whose token URI is the emulator's OAuth endpoint."""
    return ServiceAccount(
        project,
        {
            "type": "service_account",
            "project_id": project,
            "private_key_id": secrets.token_hex(8),
            "private_key": _private_key_pem(),
            "client_email": f"airflow-runner@{project}.iam.gserviceaccount.com",
            "client_id": str(secrets.randbelow(10**20)),
            "token_uri": f"{emulator.base_url}/token",
        },
    )
