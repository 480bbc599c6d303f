"""
### A background agent on the flex tier: customer profile to CRM update

Three sequential steps, each prompt built from the previous step's output through
XCom, the pattern the flex tier suits (minutes of latency are fine; half the
price). Every step is deferrable: while a call waits in the flex queue, the
triggerer holds it and no worker slot is used.

1. `summarise_notes`: condense raw account notes.
2. `build_profile`: a structured customer profile from that summary.
3. `crm_update`: the CRM fields to change, from the profile.

Params: `model`, `gemini_flex_conn_id`, `account_notes`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_flex.operators.gemini_flex import GeminiFlexGenerateContentOperator

PROFILE_SCHEMA = {
    "type": "object",
    "properties": {
        "segment": {"type": "string", "enum": ["enterprise", "mid-market", "small business"]},
        "health": {"type": "string", "enum": ["healthy", "at risk", "churning"]},
        "interests": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
    },
    "required": ["segment", "health", "interests"],
}
CRM_SCHEMA = {
    "type": "object",
    "properties": {
        "next_action": {"type": "string"},
        "owner_team": {"type": "string", "enum": ["sales", "success", "support"]},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["next_action", "owner_team", "priority"],
}

with DAG(
    dag_id="flex_sequential_agent",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["gemini", "flex", "agent"],
    params={
        "model": Param("gemini-3-flash-preview", type="string"),
        "gemini_flex_conn_id": Param("gemini_flex_default", type="string"),
        "account_notes": Param(
            "Acme Tools: 240 seats, renewal in March. Two escalations about slow exports last month; "
            "champion left in October; asked about the analytics add-on twice.",
            type="string",
        ),
    },
) as dag:
    common = {
        "model": "{{ params.model }}",
        "gemini_flex_conn_id": "{{ params.gemini_flex_conn_id }}",
        "deferrable": True,
    }
    summarise = GeminiFlexGenerateContentOperator(
        task_id="summarise_notes",
        contents="Summarise these account notes in three sentences:\n{{ params.account_notes }}",
        **common,
    )
    profile = GeminiFlexGenerateContentOperator(
        task_id="build_profile",
        contents="Build a customer profile from this summary:\n{{ ti.xcom_pull(task_ids='summarise_notes')['text'] }}",
        response_schema=PROFILE_SCHEMA,
        **common,
    )
    crm = GeminiFlexGenerateContentOperator(
        task_id="crm_update",
        contents=(
            "Given this customer profile, propose the CRM update:\n"
            "{{ ti.xcom_pull(task_ids='build_profile')['parsed'] | tojson }}"
        ),
        response_schema=CRM_SCHEMA,
        **common,
    )
    summarise >> profile >> crm
