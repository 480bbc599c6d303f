"""Triggers that hold a waiting flex call on the triggerer's event loop instead of a worker slot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_flex.exceptions import FlexError, error_payload


class GeminiFlexGenerateContentTrigger(BaseTrigger):
    """Run one flex generate call, with the hook's retry policy and deadline, in the triggerer.

    Its serialized form holds only JSON-safe call arguments and the connection id,
    never the API key: the triggerer reads the connection itself, asynchronously.
    A triggerer restart runs the trigger again, which re-sends the request (and
    pays for it again if the first one had been answered).
    """

    def __init__(
        self,
        *,
        contents: Any,
        model: str | None = None,
        config: dict[str, Any] | None = None,
        service_tier: str = "flex",
        gemini_flex_conn_id: str = "gemini_flex_default",
        retry_policy: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.contents = contents
        self.model = model
        self.config = config
        self.service_tier = service_tier
        self.gemini_flex_conn_id = gemini_flex_conn_id
        self.retry_policy = retry_policy
        self.timeout = timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "contents": self.contents,
                "model": self.model,
                "config": self.config,
                "service_tier": self.service_tier,
                "gemini_flex_conn_id": self.gemini_flex_conn_id,
                "retry_policy": self.retry_policy,
                "timeout": self.timeout,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook

        hook = GeminiFlexHook(self.gemini_flex_conn_id, retry_policy=self.retry_policy, timeout=self.timeout)
        try:
            response = await hook.agenerate_content(
                contents=self.contents, model=self.model, config=self.config, service_tier=self.service_tier
            )
        except (FlexError, ValueError, TypeError) as exc:
            yield TriggerEvent(error_payload(exc))
            return
        yield TriggerEvent({"status": "success", "result": response.to_dict()})
