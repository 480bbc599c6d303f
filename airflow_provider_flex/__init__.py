"""Apache Airflow provider for the Gemini API's flex inference tier."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def get_provider_info() -> dict[str, Any]:
    """Provider metadata Airflow reads through the ``apache_airflow_provider`` entry point."""
    return {
        "package-name": "airflow-provider-flex",
        "name": "Gemini Flex",
        "description": "Run Gemini API calls on the cheap, sheddable flex tier from Airflow.",
        "versions": [__version__],
    }
