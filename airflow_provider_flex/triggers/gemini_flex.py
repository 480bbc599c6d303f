"""Triggers that hold a waiting flex call on the triggerer's event loop instead of a worker slot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TaskFailedEvent, TaskSuccessEvent, TriggerEvent

from airflow_provider_flex.compat import CONNECTION_READ_MODULES, import_off_the_loop, push_xcom_from_trigger
from airflow_provider_flex.exceptions import FlexError, FlexResponseError, error_payload
from airflow_provider_flex.media import media_locations
from airflow_provider_flex.spend import SPEND_XCOM_KEY

if TYPE_CHECKING:
    import jinja2


class GeminiFlexGenerateContentTrigger(BaseTrigger):
    """Run one flex generate call, with the hook's retry policy and deadline, in the triggerer.

    Its serialized form holds only JSON-safe call arguments and the connection id,
    never the API key: the triggerer reads the connection itself, asynchronously.
    A triggerer restart runs the trigger again, which re-sends the request (and
    pays for it again if the first one had been answered).

    ``media`` names files for the prompt (read in the triggerer: local paths must exist there;
    object storage URLs are safest). The request is the task's own ``system_instruction``,
    ``generation_config`` and ``response_schema`` (a JSON Schema), whichever way the task came:
    from a worker (rendered there) or starting in the triggerer (rendered there, before :meth:`run`).

    With ``end_from_trigger`` the trigger ends the task itself, the result as its
    ``return_value`` XCom (then ``TaskSuccessEvent``) or the error in its log
    (``TaskFailedEvent``, retried as the task's ``retries`` say), so no worker resumes
    it: there is no resume to race with the deferral (apache/airflow#71580). A run
    with no task instance (``airflow dags test`` runs triggers in-process) hands the
    result back to the operator instead.
    """

    def __init__(
        self,
        *,
        contents: Any,
        model: str | None = None,
        service_tier: str = "flex",
        gemini_flex_conn_id: str = "gemini_flex_default",
        retry_policy: dict[str, Any] | None = None,
        timeout: float | None = None,
        system_instruction: str | None = None,
        generation_config: dict[str, Any] | None = None,
        response_schema: dict[str, Any] | None = None,
        end_from_trigger: bool = False,
        media: list[str] | None = None,
        cached_content: str | None = None,
    ) -> None:
        super().__init__()
        self.contents = contents
        self.model = model
        self.service_tier = service_tier
        self.gemini_flex_conn_id = gemini_flex_conn_id
        self.retry_policy = retry_policy
        self.timeout = timeout
        self.system_instruction = system_instruction
        self.generation_config = generation_config
        self.response_schema = response_schema
        self.end_from_trigger = end_from_trigger
        self.media = media
        self.cached_content = cached_content

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "contents": self.contents,
            "model": self.model,
            "system_instruction": self.system_instruction,
            "generation_config": self.generation_config,
            "response_schema": self.response_schema,
            "service_tier": self.service_tier,
            "gemini_flex_conn_id": self.gemini_flex_conn_id,
            "retry_policy": self.retry_policy,
            "timeout": self.timeout,
        }
        if self.end_from_trigger:
            kwargs["end_from_trigger"] = True
        if self.media:
            kwargs["media"] = self.media
        if self.cached_content:
            kwargs["cached_content"] = self.cached_content
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    def get_template_env(self, dag: Any = None) -> jinja2.Environment:
        """Return the task's DAG environment where the triggerer has one; the plain sandbox otherwise.

        (The triggerer's DAG is the serialized one, without an environment: inline templates
        render there, template files do not.)
        """
        dag = dag or getattr(self.task, "dag", None)
        return super().get_template_env(dag=dag if hasattr(dag, "get_template_env") else None)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        await import_off_the_loop("airflow_provider_flex.hooks.gemini_flex", *CONNECTION_READ_MODULES)
        from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook
        from airflow_provider_flex.hooks.pacing import wait_for_loop_pass
        from airflow_provider_flex.hooks.request import FlexRequest
        from airflow_provider_flex.hooks.results import log_result
        from airflow_provider_flex.process_state import freeze_startup_heap_once

        await wait_for_loop_pass()  # a triggerer starts new triggers in batches: set them up one per loop pass
        hook = GeminiFlexHook(self.gemini_flex_conn_id, retry_policy=self.retry_policy, timeout=self.timeout)
        try:
            await hook.aprepare()
            if freeze_startup_heap_once():  # after the SDK's one-time objects exist, so they are frozen too
                self.log.info("Froze the triggerer's start-up objects ([gemini_flex] triggerer_freeze_gc)")
            request = FlexRequest(**{name: getattr(self, name) for name in FlexRequest.__dataclass_fields__})
            request = replace(request, media=media_locations(self.media))
            request.check(f"Task {getattr(self.task_instance, 'task_id', None) or 'flex call'!r}")
            response = await hook.agenerate_content(request)
        except (FlexError, ValueError, TypeError) as exc:
            if self._ends_the_task:
                self.log.error("Flex call failed: %s", exc)
                if isinstance(exc, FlexResponseError) and exc.spend:  # paid for: the spend view counts it
                    await push_xcom_from_trigger(self.task_instance, SPEND_XCOM_KEY, exc.spend)
                yield TaskFailedEvent()
            else:
                yield TriggerEvent(error_payload(exc))
            return
        result = response.to_dict()
        if self._ends_the_task:
            log_result(self.log, result)
            await self._push_return_value(result)
            yield TaskSuccessEvent()
        else:
            yield TriggerEvent({"status": "success", "result": result})

    async def _push_return_value(self, result: dict[str, Any]) -> None:
        """Push the result as the task's ``return_value``, through the XCom backend as a task would push it.

        (``TaskSuccessEvent(xcoms=...)`` would store it JSON-encoded twice, so downstream tasks read a string.)
        """
        await push_xcom_from_trigger(self.task_instance, "return_value", result)

    @property
    def _ends_the_task(self) -> bool:
        return self.end_from_trigger and self.task_instance is not None
