"""
### Product photos on the Gemini flex tier: attributes in, thumbnails out

A catalogue of product photos (`dags/data/product_photos.csv` and the small photos in
`dags/data/photos/`) enriched on the **flex** tier in two ways:

- **Attributes**: each photo goes into its row's prompt (`media_fields=["photo"]`, typed
  by its content; small files inline, larger ones through the Files API) and the model
  answers with structured attributes (category, colours, visible defects, alt text),
  loaded into a SQL table (`photo_attributes`) through any common-sql connection.
- **Thumbnails**: an image model (`image_model`, default Gemini 2.5 Flash Image) draws one
  square thumbnail variant per product from its photo; each is written under
  `<output>/thumbnails/images/` and the results hold their locations, not the bytes.

A missing or unreadable photo, or one of a type Gemini does not take, makes that row a
dead letter naming the file; the rest of the catalogue goes on. Reruns skip products
already done. Params: `model`, `image_model`, `gemini_flex_conn_id`, `sql_conn_id`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator

DATA = Path(__file__).parent / "data"
CATALOGUE = DATA / "product_photos.csv"
#: The run's day: its logical date, or when it ran for a run triggered without one (no ``ds`` then).
DAY = "{{ ds if ds is defined else dag_run.run_after.strftime('%Y-%m-%d') }}"
OUTPUT = "{{ var.value.get('flex_output_root', '/tmp/airflow-flex') }}/product_photos/" + DAY
TABLE = "photo_attributes"
ATTRIBUTES_SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["Kitchen", "Garden", "Home", "Toys", "Sports", "Pets", "Office"]},
        "colours": {"type": "array", "maxItems": 4, "items": {"type": "string"}},
        "defects": {"type": "array", "maxItems": 4, "items": {"type": "string"}},
        "alt_text": {"type": "string", "maxLength": 125},
    },
    "required": ["category", "colours", "defects", "alt_text"],
}

with DAG(
    dag_id="flex_product_photos",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["gemini", "flex", "enrichment", "images"],
    params={
        "model": Param("gemini-2.5-flash", type="string", description="A flex-capable model that reads images"),
        "image_model": Param("gemini-2.5-flash-image", type="string", description="A flex-capable image model"),
        "gemini_flex_conn_id": Param("gemini_flex_default", type="string"),
        "sql_conn_id": Param("flex_demo_sqlite", type="string", description="Any common.sql DB-API connection"),
    },
):
    attributes = GeminiFlexEnrichOperator(
        task_id="describe_photos",
        input_path=str(CATALOGUE),
        key_field="sku",
        media_fields=["photo"],
        media_root=str(DATA),
        prompt_template=(
            "This is the catalogue photo of '{{ row.title }}'. Give its category, its main colours, any visible "
            "defects (none if it looks new), and alt text for a shop page."
        ),
        response_schema=ATTRIBUTES_SCHEMA,
        model="{{ params.model }}",
        gemini_flex_conn_id="{{ params.gemini_flex_conn_id }}",
        output_path=OUTPUT + "/attributes",
        max_failed_fraction=0.1,
        max_cost_usd=2.0,
        sql_conn_id="{{ params.sql_conn_id }}",  # attributes upserted by sku into TABLE
        table=TABLE,
    )

    thumbnails = GeminiFlexEnrichOperator(
        task_id="draw_thumbnails",
        input_path=str(CATALOGUE),
        key_field="sku",
        media_fields=["photo"],
        media_root=str(DATA),
        prompt_template="Draw a square thumbnail variant of this '{{ row.title }}' on a plain white background.",
        model="{{ params.image_model }}",
        generation_config={"response_modalities": ["IMAGE"]},
        gemini_flex_conn_id="{{ params.gemini_flex_conn_id }}",
        output_path=OUTPUT + "/thumbnails",
        max_failed_fraction=0.1,
        max_cost_usd=2.0,
    )

    @task
    def report(described: dict, drawn: dict) -> dict:
        """Rows, images written and what it cost on flex."""
        images = sum(
            len(json.loads(line).get("images", []))
            for path in Path(drawn["output_path"]).glob("results-*.jsonl")
            for line in path.read_text().splitlines()
        )
        cost, loaded = described["cost_usd"] + drawn["cost_usd"], described["loaded_rows"]
        print(
            f"Described {described['succeeded']} of {described['total']} photos ({described['failed']} failed), "
            f"loaded {loaded} rows into {TABLE}; drew {images} thumbnails ({drawn['failed']} failed). "
            f"Flex cost ${cost:.4f}."
        )
        return {"described": described["succeeded"], "loaded": loaded, "thumbnails": images, "cost_usd": cost}

    report(attributes.output, thumbnails.output)
