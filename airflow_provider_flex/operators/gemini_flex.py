"""The provider's operators, by their public import path.

``from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator`` is the path DAGs
use; each operator lives in its own module (``generate``, ``stream``, ``enrich``) and is imported
only when asked for, so a DAG file that uses one operator does not pay for the others at parse time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_flex.operators.enrich import GeminiFlexEnrichOperator
    from airflow_provider_flex.operators.generate import GeminiFlexGenerateContentOperator
    from airflow_provider_flex.operators.stream import GeminiFlexStreamContentOperator

#: Public name -> the module that defines it.
_HOMES = {
    "GeminiFlexGenerateContentOperator": "airflow_provider_flex.operators.generate",
    "GeminiFlexStreamContentOperator": "airflow_provider_flex.operators.stream",
    "GeminiFlexEnrichOperator": "airflow_provider_flex.operators.enrich",
}

__all__ = ["GeminiFlexEnrichOperator", "GeminiFlexGenerateContentOperator", "GeminiFlexStreamContentOperator"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
