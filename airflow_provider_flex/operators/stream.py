"""Stream an answer from the flex tier into the task log: ``GeminiFlexStreamContentOperator``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_flex.exceptions import FlexError
from airflow_provider_flex.operators.generate import _GeminiFlexBaseOperator
from airflow_provider_flex.storage import write_whole

if TYPE_CHECKING:
    from airflow.sdk import Context

#: A streamed line is logged once it is complete, or once it grows this long.
STREAM_LOG_LINE_CHARS = 400


class GeminiFlexStreamContentOperator(_GeminiFlexBaseOperator):
    """Stream an answer from the Gemini flex tier into the task log, and optionally a file.

    It runs on the worker, not the triggerer, since the log streams from there.
    Text is logged in whole lines as it arrives. With ``output_path`` (a local path
    or an ``ObjectStoragePath`` URL such as ``s3://bucket/digest.md``) the full text
    is written only once the stream has ended whole: an interrupted stream fails the
    task and leaves no file behind. Takes the arguments of
    :class:`GeminiFlexGenerateContentOperator` except ``deferrable``, and returns the same result dict.

    :param output_path: where to write the whole answer once the stream ended whole (rendered as a
        Jinja string, never read as a template file).
    """

    def __init__(self, *, output_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.output_path = output_path

    def _rendered_output_path(self, context: Context) -> str | None:
        """Return ``output_path`` rendered as a Jinja string: it names a file to write, never a template to read.

        (As a template field, a path ending in ``.md`` would be loaded as a template file.)
        """
        if not self.output_path:
            return None
        return self.get_template_env().from_string(self.output_path).render(**context)

    def _lineage_locations(self) -> tuple[list[str], list[str]]:
        inputs, _ = super()._lineage_locations()
        written = getattr(self, "_written_path", None)
        return inputs, [written] if written else []

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_flex.media import media_locations

        request = self._flex_request(media_locations(self.media))
        request.check(f"Task {self.task_id!r}")
        output_path = self._rendered_output_path(context)  # before the call: a bad path costs nothing
        stream = self.get_hook().stream_content(request)
        pending = ""
        for piece in stream:
            pending += piece
            *lines, pending = pending.split("\n")
            for line in lines:
                self.log.info("%s", line)
            while len(pending) >= STREAM_LOG_LINE_CHARS:
                cut = pending.rfind(" ", 0, STREAM_LOG_LINE_CHARS) + 1 or STREAM_LOG_LINE_CHARS
                self.log.info("%s", pending[:cut].rstrip())
                pending = pending[cut:]
        if pending:
            self.log.info("%s", pending)
        result = stream.result
        if result is None:  # pragma: no cover - the hook raises before this can happen
            raise FlexError(f"Task {self.task_id!r}: the stream ended without a result")
        if output_path:
            write_whole(output_path, result.text or "")
            self._written_path = output_path
            self.log.info("Wrote %d characters to %s", len(result.text or ""), output_path)
        return self._summarize(result.to_dict())
