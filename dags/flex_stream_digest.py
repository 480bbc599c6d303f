"""
### A long digest streamed from the flex tier into a file

`GeminiFlexStreamContentOperator` writes the answer to the task log in whole lines
as it arrives and, once the stream has ended whole, to a Markdown file (a local
path or an object-storage URL such as `s3://bucket/digests/...`). An interrupted
stream fails the task and leaves no file behind.

Params: `model`, `gemini_flex_conn_id`, `topic`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_flex.operators.gemini_flex import GeminiFlexStreamContentOperator

#: The run's day: its logical date, or when it ran for a run triggered without one (no ``ds`` then).
DAY = "{{ ds if ds is defined else dag_run.run_after.strftime('%Y-%m-%d') }}"
with DAG(
    dag_id="flex_stream_digest",
    schedule="@weekly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["gemini", "flex", "stream"],
    params={
        "model": Param("gemini-2.5-flash", type="string"),
        "gemini_flex_conn_id": Param("gemini_flex_default", type="string"),
        "topic": Param("this week's data-platform incidents and what they teach", type="string"),
    },
):
    GeminiFlexStreamContentOperator(
        task_id="write_digest",
        contents="Write a detailed weekly digest on {{ params.topic }}, with sections and bullet points.",
        system_instruction="You write clear internal engineering digests.",
        model="{{ params.model }}",
        gemini_flex_conn_id="{{ params.gemini_flex_conn_id }}",
        generation_config={"max_output_tokens": 4096},
        output_path="{{ var.value.get('flex_output_root', '/tmp/airflow-flex') }}/digests/" + DAY + ".md",
    )
