"""The emulator's admin API from Python: statistics, faults, the clock of quotas and batch jobs (``/__emulator__``)."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from airflow_provider_flex.emulator.app import ADMIN_PREFIX


class EmulatorAdmin:
    """The admin endpoints of a running emulator (in-process or another process)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url + ADMIN_PREFIX, timeout=30)

    def stats(self) -> dict[str, Any]:
        return self._request("GET", "/stats")

    def calls(self, since: int = 0) -> list[dict[str, Any]]:
        return self._request("GET", "/calls", params={"since": since})["calls"]

    def inject(self, kind: str, **fields: Any) -> list[dict[str, Any]]:
        """Queue a fault for the next matching calls; see :class:`~.faults.Fault` for fields."""
        return self._request("POST", "/faults", json={"kind": kind, **fields})["faults"]

    def clear_faults(self) -> None:
        self._request("DELETE", "/faults")

    def reset(self) -> dict[str, Any]:
        """Forget stats, queued faults and quota windows."""
        return self._request("POST", "/reset")

    def expire_tokens(self) -> dict[str, Any]:
        """Expire every Vertex AI access token the emulator issued (clients must get new ones)."""
        return self._request("POST", "/oauth/expire")

    def tokens(self) -> dict[str, Any]:
        """Return Vertex AI access tokens: how many are known and how many were ever issued."""
        return self._request("GET", "/oauth/tokens")

    def end_day(self) -> dict[str, Any]:
        """Start a new quota day now, as midnight America/Los_Angeles would."""
        return self._request("POST", "/quota/end-day")

    def batches(self) -> list[dict[str, Any]]:
        """Return every batch job the emulator holds, with its state and the keys of its requests."""
        return self._request("GET", "/batches")["jobs"]

    def batch_fate(self, state: str, count: int = 1) -> dict[str, Any]:
        """Make the next ``count`` batch jobs end in ``state`` (FAILED, CANCELLED or EXPIRED) instead of succeeding,
        or never end until cancelled (STUCK)."""
        return self._request("POST", "/batches", json={"state": state, "count": count})

    def end_batch(self, name: str, state: str) -> dict[str, Any]:
        """End batch job ``name`` now in ``state``."""
        return self._request("POST", f"/batches/{name.removeprefix('batches/')}/end", json={"state": state})

    def caches(self) -> dict[str, Any]:
        """Return the explicit caches made since the reset (alive or not) and their storage per model."""
        return self._request("GET", "/caches")

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health")

    def hold_slot(self, seconds: float, model: str = "gemini-2.5-flash") -> threading.Thread:
        """Take a serving slot for ``seconds`` with a slow standard call, returned once it is in service.

        With ``slots=1`` every flex call made meanwhile waits in the flex queue, however long
        the caller takes to make it. Join the returned thread to wait for the slot to free.
        """
        in_service = self.stats()["in_service"]
        self.inject("slow", delay_s=seconds, count=1)
        holder = threading.Thread(
            target=httpx.post,
            args=(f"{self.base_url}/v1beta/models/{model}:generateContent",),
            kwargs={
                "json": {"contents": [{"parts": [{"text": "hold the slot"}]}]},
                "headers": {"x-goog-api-key": "slot-holder"},
                "timeout": seconds + 60,
            },
            daemon=True,
        )
        holder.start()
        deadline = time.monotonic() + 60
        while self.stats()["in_service"] <= in_service:
            if time.monotonic() > deadline or not holder.is_alive():
                raise RuntimeError("the slot-holding call never came into service")
            time.sleep(0.02)
        return holder

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()
