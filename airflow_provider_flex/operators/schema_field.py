"""``response_schema`` as a template field that leaves a pydantic type alone.

Airflow calls whatever is callable in a template field (with the context), and a pydantic model class is
callable: rendering would instantiate the class (``ValidationError: ... Field required``). So the operators
leave a class or a ``TypeAdapter`` out of rendering (their ``_do_render_template_fields``, which plain and
mapped tasks both go through); a string or a dict is rendered as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def is_templatable(schema: Any) -> bool:
    """Return whether a ``response_schema`` is rendered as a template: a string (``{{ var.json.x }}``) or a dict."""
    return schema is None or isinstance(schema, str | Mapping | list)


def fields_to_render(operator: Any, parent: Any, template_fields: Iterable[str]) -> list[str]:
    """Return ``template_fields`` less ``response_schema`` when the operator's schema is a pydantic type."""
    if parent is operator and not is_templatable(getattr(operator, "response_schema", None)):
        return [name for name in template_fields if name != "response_schema"]
    return list(template_fields)
