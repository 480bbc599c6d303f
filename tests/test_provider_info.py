"""The provider's metadata passes Airflow's own schema (a key it does not know would be dropped or refused)."""

from __future__ import annotations

import json
from pathlib import Path

import airflow
import jsonschema

from airflow_provider_flex import get_provider_info


def test_provider_info_follows_airflows_schema():
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_the_gc_opt_in_is_an_airflow_setting_off_by_default():
    from airflow.configuration import conf

    option = get_provider_info()["config"]["gemini_flex"]["options"]["triggerer_freeze_gc"]
    assert option["default"] == "False"
    assert conf.getboolean("gemini_flex", "triggerer_freeze_gc", fallback=None) is False
