"""Generate content on the flex tier: ``GeminiFlexGenerateContentOperator``, deferrable.

Also the arguments generate and stream share (``_GeminiFlexBaseOperator``). The result is
:meth:`FlexResponse.to_dict` (text, parsed, usage, cost, served tier, attempts), logged in a summary line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_flex import DEFAULT_CONN_ID
from airflow_provider_flex.arguments import normalize_tier
from airflow_provider_flex.compat import TRIGGERER_RENDERS_START_ARGUMENTS, conf
from airflow_provider_flex.exceptions import FlexError, FlexResponseError, error_from_payload
from airflow_provider_flex.hooks.request import FlexRequest, check_cached_content, check_schema_at_parse_time
from airflow_provider_flex.hooks.retry import FlexRetryPolicy
from airflow_provider_flex.operators.schema_field import fields_to_render

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook

#: The trigger a deferrable generate task hands its call to (imported when the task runs, not at parse time).
TRIGGER_CLASSPATH = "airflow_provider_flex.triggers.gemini_flex.GeminiFlexGenerateContentTrigger"
#: Seconds the deferral may outlive the retry deadline (connection set-up, the event's trip back).
DEFERRAL_MARGIN_S = 300
#: The deadline assumed for a task that starts in the triggerer without an explicit retry_policy: the
#: connection's own deadline cannot be read when the DAG is parsed (the hook still enforces it).
UNKNOWN_DEADLINE_S = 24 * 3600


class _GeminiFlexBaseOperator(BaseOperator):
    """What generate and stream share: arguments, validation, config and the summary line.

    :param contents: the prompt: text, or a list of Gemini contents. Templated; a
        path ending in ``.txt``, ``.md`` or ``.j2`` is rendered as a template file.
    :param model: model id; default from the connection (``default_model``).
    :param system_instruction: optional system instruction. Templated.
    :param generation_config: extra ``GenerateContentConfig`` fields as a dict. Templated.
    :param response_schema: a JSON Schema dict, a pydantic model class or a ``TypeAdapter``; the result's
        ``parsed`` then holds the JSON, validated on the client (``jsonschema`` for a dict, the model's JSON
        Schema for a class). Templated when a string or a dict; a class is used as it is.
    :param service_tier: ``flex`` (default), ``standard`` or ``priority``.
    :param gemini_flex_conn_id: the ``gemini_flex`` connection (API key, optional base URL, retry and
        timeout extras, quotas); default ``gemini_flex_default``. Templated.
    :param retry_policy: a :class:`FlexRetryPolicy` (or its dict) overriding the connection's.
    :param timeout: seconds per attempt, overriding the connection's.
    :param media: file locations (local paths, ``file://`` or ``ObjectStoragePath`` URLs) added to the
        prompt as parts, typed by their content; inline up to 14 MB, else uploaded through the Files API
        and deleted after the call. A single location may be a string. Templated.
    :param cached_content: the name of an explicit context cache (``cachedContents/...``, made with
        ``GeminiFlexHook.caches.create``) holding the instruction and the leading contents: its tokens are
        billed at the cached-input price. It may not be combined with ``system_instruction`` (the cache
        holds it; the API refuses both). Templated.
    :return: (XCom) :meth:`FlexResponse.to_dict`: ``text``, ``parsed``, ``usage`` (prompt, output,
        thinking, cached tokens), ``cost_usd``, ``standard_cost_usd`` (the same tokens at standard price),
        ``service_tier`` (the tier that served it), ``requested_tier``, ``model``, ``finish_reason``,
        ``attempts``, ``elapsed_s``, ``images`` (types and sizes).
    """

    template_fields: Sequence[str] = (
        "contents",
        "system_instruction",
        "model",
        "generation_config",
        "response_schema",
        "gemini_flex_conn_id",
        "media",
        "cached_content",
    )
    template_ext: Sequence[str] = (".txt", ".md", ".j2")
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        contents: Any,
        model: str | None = None,
        system_instruction: str | None = None,
        generation_config: dict[str, Any] | None = None,
        response_schema: Any = None,
        service_tier: str = "flex",
        gemini_flex_conn_id: str = DEFAULT_CONN_ID,
        retry_policy: FlexRetryPolicy | dict[str, Any] | None = None,
        timeout: float | None = None,
        media: Sequence[str] | None = None,
        cached_content: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.media = media
        self.cached_content = cached_content
        self.contents = contents
        self.model = model
        self.system_instruction = system_instruction
        self.generation_config = generation_config
        self.response_schema = response_schema
        self.service_tier = normalize_tier(service_tier)
        self.gemini_flex_conn_id = gemini_flex_conn_id
        self.retry_policy = FlexRetryPolicy.from_value(retry_policy)
        self.timeout = timeout
        check_schema_at_parse_time(self.task_id, response_schema)
        check_cached_content(f"Task {self.task_id!r}", cached_content, system_instruction, generation_config)

    def _do_render_template_fields(
        self, parent: Any, template_fields: Any, context: Any, jinja_env: Any, seen_oids: set[int]
    ) -> None:
        """Render the template fields, leaving a pydantic ``response_schema`` as it is (see ``schema_field``)."""
        fields = fields_to_render(self, parent, template_fields)
        super()._do_render_template_fields(parent, fields, context, jinja_env, seen_oids)

    def get_hook(self) -> GeminiFlexHook:
        from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook

        return GeminiFlexHook(self.gemini_flex_conn_id, retry_policy=self.retry_policy, timeout=self.timeout)

    def _flex_request(self, media: Any = None) -> FlexRequest:
        """Return the task's call as one request (``media``: the locations, default the task's ``media``)."""
        return FlexRequest(
            contents=self.contents,
            model=self.model,
            system_instruction=self.system_instruction,
            generation_config=self.generation_config,
            response_schema=self.response_schema,
            service_tier=self.service_tier,
            media=self.media if media is None else media,
            cached_content=self.cached_content or None,
        )

    def _summarize(self, result: Mapping[str, Any]) -> dict[str, Any]:
        from airflow_provider_flex.hooks.results import log_result

        log_result(self.log, result)
        self._flex_result = dict(result)
        return dict(result)

    def _lineage_locations(self) -> tuple[list[str], list[str]]:
        """Return the files this task read and wrote (OpenLineage datasets)."""
        from airflow_provider_flex.media import media_locations

        return [str(location) for location in media_locations(self.media) or []], []

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the media read, the file written, and the ``geminiFlex`` run facet (model, tier, tokens,
        cost). Used when ``apache-airflow-providers-openlineage`` is installed."""
        from airflow_provider_flex.lineage import operator_lineage

        inputs, outputs = self._lineage_locations()
        return operator_lineage(
            inputs=inputs, outputs=outputs, result=getattr(self, "_flex_result", None), model=self.model
        )


class GeminiFlexGenerateContentOperator(_GeminiFlexBaseOperator):
    """Generate content on the Gemini flex tier; deferrable, so a long queue wait holds no worker slot.

    Takes the arguments listed on ``_GeminiFlexBaseOperator`` (``contents``, ``model``,
    ``system_instruction``, ``generation_config``, ``response_schema``, ``service_tier``,
    ``gemini_flex_conn_id``, ``retry_policy``, ``timeout``, ``media``) and returns its result dict.

    :param deferrable: hand the call to the triggerer, which also ends the task (the result
        is its ``return_value`` XCom), so no worker resumes it. A task that is not mapped
        starts there too, with no worker at all (templated arguments are rendered in the
        triggerer) on Airflow 3.3 and newer; a mapped one (Airflow 3.3 cannot start those in
        the triggerer), and every one on Airflow 3.0 to 3.2, runs briefly on a worker to defer.
        A triggerer restart re-runs the trigger, which re-sends the request.
    """

    def __init__(
        self,
        *,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.deferrable = deferrable
        if deferrable and TRIGGERER_RENDERS_START_ARGUMENTS:
            # Start in the triggerer (no worker at all); templated arguments are rendered there.
            # A mapped task cannot (Airflow 3.3, GH-52141): it defers from a worker in execute().
            # Before Airflow 3.3 the triggerer renders no template: the task defers from a worker.
            self.start_from_trigger = True
            from airflow.triggers.base import StartTriggerArgs

            self.start_trigger_args = StartTriggerArgs(
                trigger_cls=TRIGGER_CLASSPATH,
                # a single media location stays a string, rendered whole in the triggerer
                trigger_kwargs=self._trigger_kwargs(self.media if isinstance(self.media, str) else None),
                next_method="execute_complete",
                next_kwargs=None,
                timeout=self._deferral_timeout(),
            )

    def _trigger_kwargs(self, media: str | None = None) -> dict[str, Any]:
        """Return the trigger's arguments, one shape for both ways a deferrable task reaches the triggerer: built here
        unrendered for a task that starts there (the triggerer renders them), rendered when a worker defers."""
        from airflow_provider_flex.media import media_locations

        return {
            **self._flex_request(media if media is not None else media_locations(self.media)).to_trigger_kwargs(),
            "gemini_flex_conn_id": self.gemini_flex_conn_id,
            "retry_policy": self.retry_policy.to_dict() if self.retry_policy else None,
            "timeout": self.timeout,
            "end_from_trigger": True,
        }

    def _deferral_timeout(self, deadline: float | None = None) -> timedelta:
        """Return the retry deadline plus a margin; at parse time the connection's deadline is unknown (a day, then)."""
        if deadline is None:
            deadline = self.retry_policy.deadline if self.retry_policy else UNKNOWN_DEADLINE_S
        return timedelta(seconds=deadline + DEFERRAL_MARGIN_S)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_flex.media import media_locations
        from airflow_provider_flex.triggers.gemini_flex import GeminiFlexGenerateContentTrigger

        request = self._flex_request(media_locations(self.media))
        request.check(f"Task {self.task_id!r}")
        if not self.deferrable:
            hook = self.get_hook()
            try:
                response = hook.generate_content(request)
            except FlexResponseError as unusable:
                from airflow_provider_flex.spend import record_failed_spend

                record_failed_spend(context, unusable.spend)  # the spend view counts a paid, unusable answer
                raise
            return self._summarize(response.to_dict())
        self.defer(
            trigger=GeminiFlexGenerateContentTrigger(**self._trigger_kwargs()),
            method_name="execute_complete",
            timeout=self._deferral_timeout(self.get_hook().retry_policy.deadline),
        )
        raise AssertionError("defer() always raises")  # pragma: no cover

    def execute_complete(self, context: Context, event: Any = None) -> dict[str, Any]:
        """Check the trigger's event; raise the same errors the non-deferrable path raises."""
        if not isinstance(event, Mapping) or event.get("status") not in ("success", "error"):
            raise FlexError(f"Task {self.task_id!r}: the trigger sent an unexpected event: {event!r:.200}")
        if event["status"] == "error":
            error = error_from_payload(dict(event))
            if isinstance(error, FlexResponseError):
                from airflow_provider_flex.spend import record_failed_spend

                record_failed_spend(context, error.spend)
            raise error
        result = event.get("result")
        if not isinstance(result, Mapping) or "text" not in result:
            raise FlexError(f"Task {self.task_id!r}: the trigger's success event carries no result")
        return self._summarize(result)
