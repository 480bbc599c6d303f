"""Every operator argument is documented in its docstring, and so is what it returns."""

from __future__ import annotations

import inspect
import re

import pytest

from airflow_provider_flex.operators.gemini_flex import (
    GeminiFlexEnrichOperator,
    GeminiFlexGenerateContentOperator,
    GeminiFlexStreamContentOperator,
)


def _ours(cls: type) -> list[type]:
    return [klass for klass in cls.__mro__ if klass.__module__.startswith("airflow_provider_flex")]


@pytest.mark.parametrize(
    "operator", [GeminiFlexGenerateContentOperator, GeminiFlexStreamContentOperator, GeminiFlexEnrichOperator]
)
def test_each_init_parameter_has_a_param_line_and_the_result_is_described(operator):
    parameters = {
        name
        for klass in _ours(operator)
        for name in inspect.signature(klass.__init__).parameters
        if name not in ("self", "kwargs")
    }
    docs = "\n".join(klass.__doc__ or "" for klass in _ours(operator))
    documented = set(re.findall(r":param (\w+):", docs))
    assert parameters - documented == set(), f"{operator.__name__}: undocumented {sorted(parameters - documented)}"
    assert documented - parameters == set(), f"{operator.__name__}: documents {sorted(documented - parameters)}"
    assert ":return:" in docs
