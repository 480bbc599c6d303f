"""``@task.gemini_flex``: a function that returns the prompt becomes a flex generate task.

The decorated function returns the prompt (text, or Gemini contents) built from its arguments,
the Airflow context and upstream XComs; the decorator takes
:class:`~airflow_provider_flex.operators.gemini_flex.GeminiFlexGenerateContentOperator`'s arguments
(``model``, ``response_schema``, ``system_instruction``, ``media``, ``deferrable``, ...) and returns
the same result dict (text, parsed, usage, cost, served tier, attempts). With ``deferrable=True``
the call waits in the triggerer, which ends the task: the prompt is built on a worker first, so a
decorated task always starts there (a plain operator can start in the triggerer).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk.bases.decorator import DecoratedOperator, TaskDecorator, task_decorator_factory
from airflow.sdk.definitions._internal.types import SET_DURING_EXECUTION

from airflow_provider_flex.compat import context_merge, determine_kwargs
from airflow_provider_flex.operators.gemini_flex import GeminiFlexGenerateContentOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class _GeminiFlexDecoratedOperator(DecoratedOperator, GeminiFlexGenerateContentOperator):
    """Calls the decorated function for the prompt at run time, then makes the flex call."""

    template_fields: Sequence[str] = (
        *DecoratedOperator.template_fields,
        *(name for name in GeminiFlexGenerateContentOperator.template_fields if name != "contents"),
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {**DecoratedOperator.template_fields_renderers}
    custom_operator_name: str = "@task.gemini_flex"

    def __init__(
        self,
        *,
        python_callable: Callable,
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            contents=SET_DURING_EXECUTION,
            **kwargs,
        )
        # The prompt comes from the function, which runs on a worker: never start in the triggerer.
        self.start_from_trigger = False
        self.start_trigger_args = None

    def execute(self, context: Context) -> Any:
        context_merge(context, self.op_kwargs)
        kwargs = determine_kwargs(self.python_callable, self.op_args, context)
        self.contents = self.python_callable(*self.op_args, **kwargs)
        if self.contents is None or (isinstance(self.contents, str) and not self.contents.strip()):
            raise ValueError(f"@task.gemini_flex task {self.task_id!r}: the function returned no prompt")
        return GeminiFlexGenerateContentOperator.execute(self, context)


def gemini_flex_task(python_callable: Callable | None = None, **kwargs: Any) -> TaskDecorator:
    """Wrap a function that returns a prompt into a flex generate task.

    Usage::

        @task.gemini_flex(model="gemini-2.5-flash", response_schema=Triage, deferrable=True)
        def triage(ticket: dict) -> str:
            return f"Triage this support ticket: {ticket['text']}"

    :param python_callable: the function to decorate; it returns the prompt.
    :param kwargs: :class:`GeminiFlexGenerateContentOperator`'s arguments (``contents`` excepted).
    """
    return task_decorator_factory(
        python_callable=python_callable, decorated_operator_class=_GeminiFlexDecoratedOperator, **kwargs
    )
