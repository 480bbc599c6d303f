"""The example DAGs in dags/: they import cleanly and run end to end on a real Airflow against the emulator."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import subprocess
from pathlib import Path

from airflow_provider_flex.emulator import FlexEmulator
from tests.deployment import AIRFLOW, airflow_env

DAGS = Path(__file__).resolve().parents[2] / "dags"


def test_dags_folder_imports_without_errors():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert "flex_product_enrichment" in bag.dag_ids
    for dag_id, dag in bag.dags.items():
        assert dag.doc_md, f"{dag_id} needs doc_md"


def _airflow_env(emulator: FlexEmulator, tmp_path: Path, api_key: str = "k", **extra: object) -> dict[str, str]:
    """An Airflow CLI environment: its own home, the repo's dags, the emulator as the flex connection."""
    return airflow_env(
        tmp_path / "airflow",
        DAGS,
        AIRFLOW_CONN_GEMINI_FLEX_DEFAULT=emulator.connection_json(api_key, initial_delay=0.1, **extra),
        AIRFLOW_CONN_FLEX_DEMO_SQLITE=json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "demo.db")}),
        AIRFLOW_VAR_FLEX_OUTPUT_ROOT=str(tmp_path / "output"),
    )


def _dags_test(dag_id: str, env: dict[str, str], *extra: str) -> str:
    """`airflow db migrate` then `airflow dags test DAG_ID`; the run's console output."""
    for args in (["db", "migrate"], ["dags", "test", dag_id, *extra]):
        result = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_sequential_agent_feeds_each_step_the_previous_output(tmp_path):
    with FlexEmulator(seed=4) as emulator:
        output = _dags_test("flex_sequential_agent", _airflow_env(emulator, tmp_path))
        calls = emulator.admin.calls()
    assert "state=success" in output
    assert [c["tier"] for c in calls] == ["flex"] * 3
    summary, profile, crm = (c["prompt"] for c in calls)
    assert summary.startswith("Summarise these account notes")
    assert "Build a customer profile from this summary:\nFlex emulator answer to: Summarise" in profile
    assert crm.startswith("Given this customer profile") and '"segment"' in crm


def test_stream_digest_writes_the_whole_answer_to_a_file(tmp_path):
    with FlexEmulator(answer_tokens=(300, 400)) as emulator:
        _dags_test("flex_stream_digest", _airflow_env(emulator, tmp_path), "2026-11-23")
    digest = tmp_path / "output" / "digests" / "2026-11-23.md"
    assert digest.read_text().startswith("Flex emulator answer to:")
    assert len(digest.read_text().split()) > 250


def test_product_enrichment_loads_every_product_with_the_airflow_cli(tmp_path):
    with FlexEmulator(slots=4, service_time=(0.01, 0.05), rps=50, preempt_rate=0.2, seed=3) as emulator:
        output = _dags_test("flex_product_enrichment", _airflow_env(emulator, tmp_path))
        stats = emulator.admin.stats()
    assert "Enriched 100 of 100 products (0 failed" in output
    with sqlite3.connect(tmp_path / "demo.db") as db:
        rows = db.execute("SELECT sku, category, attributes, service_tier FROM enriched_products").fetchall()
    assert len(rows) == 100 == len({row[0] for row in rows})
    from dags.flex_product_enrichment import TAXONOMY

    assert all(category in TAXONOMY and tier == "flex" for _, category, _, tier in rows)
    assert all(isinstance(json.loads(attributes), list) for _, _, attributes, _ in rows)
    assert set(stats["calls_by_tier"]) == {"flex"}
    assert stats["calls"]["flex"]["ok"] == 100


def test_product_enrichment_on_the_auto_route_meets_its_deadline_through_flex_and_batch(tmp_path):
    """60 requests a minute cannot serve 100 products in 20 s: flex keeps its share, the rest go to batch jobs."""
    with FlexEmulator(rpm=60, quota_window="sliding", seed=3) as emulator:
        conf = json.dumps({"route": "auto", "finish_by_minutes": 20 / 60})
        env = _airflow_env(emulator, tmp_path, quotas={"*": {"requests_per_minute": 60}})
        output = _dags_test("flex_product_enrichment", env, "--conf", conf)
        stats = emulator.admin.stats()
    found = re.search(
        r"Enriched 100 of 100 products \(0 failed, 0 already done; (\d+) on flex, (\d+) through batch\)", output
    )
    assert found, output[-3000:]
    flex_rows, batch_rows = map(int, found.groups())
    assert flex_rows + batch_rows == 100 and flex_rows > 0 and batch_rows > 50
    assert stats["calls"]["flex"]["ok"] == flex_rows
    with sqlite3.connect(tmp_path / "demo.db") as db:
        tiers = dict(
            db.execute("SELECT service_tier, COUNT(*) FROM enriched_products GROUP BY service_tier").fetchall()
        )
    assert tiers == {"flex": flex_rows, "batch": batch_rows}


def test_llm_judge_eval_scores_every_candidate_through_mapped_tasks(tmp_path):
    candidates = [json.loads(line) for line in (DAGS / "data" / "eval_candidates.jsonl").read_text().splitlines()]
    with FlexEmulator(slots=3, service_time=(0.05, 0.2), preempt_rate=0.3, seed=11) as emulator:
        output = _dags_test("flex_llm_judge_eval", _airflow_env(emulator, tmp_path))
        calls = emulator.admin.calls()
    assert f"Judged {len(candidates)} candidates" in output
    with sqlite3.connect(tmp_path / "demo.db") as db:
        rows = db.execute("SELECT candidate_id, score, verdict, service_tier FROM judge_scores").fetchall()
    assert sorted(row[0] for row in rows) == sorted(c["id"] for c in candidates)
    assert all(1 <= score <= 5 and verdict == ("pass" if score >= 4 else "fail") for _, score, verdict, _ in rows)
    assert {row[3] for row in rows} == {"flex"}
    answered = [c for c in calls if c["outcome"] == "ok"]
    assert len(answered) == len(candidates) and {c["tier"] for c in calls} == {"flex"}
    # Each prompt reached the API exactly as built: mapped values are not rendered as templates,
    # so the braces in q05's answer survive.
    from dags.flex_llm_judge_eval import RUBRIC

    expected = {
        f"{RUBRIC}\nQuestion: {c['question']}\nReference answer: {c['reference']}\nCandidate answer: {c['candidate']}"
        for c in candidates
    }
    assert {c["prompt_sha256"] for c in answered} == {hashlib.sha256(p.encode()).hexdigest() for p in expected}


def test_sharded_enrichment_paces_every_shard_through_one_redis_and_a_rerun_resumes_them(tmp_path):
    from tests.redis_server import RedisServer

    conf = {"rows_per_shard": 30, "rate_limit_redis_conn_id": "flex_quota_redis", "requests_per_minute": 1200}
    with RedisServer(tmp_path) as redis_server, FlexEmulator(rpm=1200, slots=8, service_time=(0.01, 0.03)) as emulator:
        env = _airflow_env(emulator, tmp_path)
        env["AIRFLOW_CONN_FLEX_QUOTA_REDIS"] = redis_server.connection_json()
        output = _dags_test("flex_sharded_enrichment", env, "2026-11-20", "--conf", json.dumps(conf))
        first_calls = emulator.admin.calls()
        again = _dags_test("flex_sharded_enrichment", env, "2026-11-20", "--conf", json.dumps(conf))
        all_calls = emulator.admin.calls()
        keys = [key.decode() for key in redis_server.client().keys("flex:quota:*")]
        refusals = emulator.admin.stats()["quota_refusals"]
    root = tmp_path / "output" / "sharded" / "2026-11-20"
    shards = sorted(p.name for p in (root / "shards").glob("shard-*.jsonl"))
    assert shards == [f"shard-{i:05d}.jsonl" for i in range(4)]  # 100 rows, 30 a shard
    assert "Sharded enrichment: 100 of 100 rows enriched over 4 shards (0 failed, 0 already done)" in output
    assert "Sharded enrichment: 0 of 100 rows enriched over 4 shards (0 failed, 100 already done)" in again
    summary = json.loads((root / "summary.json").read_text())
    assert (summary["shards"], summary["skipped"], summary["total"]) == (4, 100, 100)
    assert len([c for c in first_calls if c["outcome"] == "ok"]) == 100
    assert len(all_calls) == len(first_calls)  # the rerun paid for nothing
    results = [
        json.loads(line)["key"]
        for shard in sorted((root / "enriched").iterdir())
        for part in sorted(shard.glob("results-*.jsonl"))
        for line in part.read_text().splitlines()
    ]
    assert len(results) == 100 == len(set(results))
    assert keys and refusals == {}  # paced through the shared state, no 429


def test_product_enrichment_on_vertex_ai_with_a_service_account(tmp_path):
    from tests.vertex_account import service_account

    with FlexEmulator(slots=4, service_time=(0.01, 0.05), seed=3) as emulator:
        env = _airflow_env(emulator, tmp_path)
        env["AIRFLOW_CONN_GEMINI_FLEX_VERTEX"] = service_account(emulator).connection_json(emulator, initial_delay=0.1)
        output = _dags_test("flex_product_enrichment", env, "--conf", json.dumps({"vertexai": True}))
        stats = emulator.admin.stats()
        tokens = emulator.admin.tokens()
    assert "Enriched 100 of 100 products (0 failed" in output
    assert stats["calls"]["flex"]["ok"] == 100 and set(stats["calls_by_tier"]) == {"flex"}
    assert tokens["issued"] >= 1  # the Vertex route, with the service account's token
    with sqlite3.connect(tmp_path / "demo.db") as db:
        tiers = {row[0] for row in db.execute("SELECT service_tier FROM enriched_products")}
    assert tiers == {"flex"}


def test_product_photos_loads_attributes_and_draws_a_thumbnail_per_product(tmp_path):
    import csv

    from PIL import Image

    products = list(csv.DictReader((DAGS / "data" / "product_photos.csv").open()))
    with FlexEmulator(slots=4, service_time=(0.01, 0.03), seed=5) as emulator:
        output = _dags_test("flex_product_photos", _airflow_env(emulator, tmp_path), "2026-11-25")
        calls = emulator.admin.calls()
    assert f"Described {len(products)} of {len(products)} photos (0 failed)" in output
    assert f"drew {len(products)} thumbnails (0 failed)" in output
    # every call carried its photo, as an image part typed from its content
    assert len(calls) == 2 * len(products)
    assert all(c["parts"][1]["type"] == "inline_data" and c["parts"][1]["mime_type"] == "image/png" for c in calls)
    with sqlite3.connect(tmp_path / "demo.db") as db:
        rows = db.execute("SELECT sku, colours, alt_text FROM photo_attributes").fetchall()
    assert sorted(row[0] for row in rows) == sorted(p["sku"] for p in products)
    assert all(isinstance(json.loads(colours), list) and alt for _, colours, alt in rows)
    images = sorted((tmp_path / "output" / "product_photos" / "2026-11-25" / "thumbnails" / "images").iterdir())
    assert len(images) == len(products)
    for path in images:
        with Image.open(path) as image:
            image.load()
            assert image.format == "PNG"


def test_model_comparison_judges_every_answer_and_writes_the_report(tmp_path):
    with FlexEmulator(seed=6) as emulator:
        env = _airflow_env(emulator, tmp_path)
        output = _dags_test("flex_model_comparison", env)
        stats = emulator.admin.stats()
    assert "state=success" in output
    questions = len((DAGS / "data" / "eval_candidates.jsonl").read_text().splitlines())
    (run,) = list((tmp_path / "output" / "model_comparison").iterdir())
    from airflow_provider_flex.enrichment.store import read_results

    answers = {
        model: {row["key"]: row["text"] for row in read_results(str(run / "answers" / model))}
        for model in ("gemini-2.5-flash-lite", "gemini-2.5-flash")
    }
    assert all(len(texts) == questions for texts in answers.values())
    assert answers["gemini-2.5-flash-lite"] != answers["gemini-2.5-flash"]  # two models, two sets of answers
    lines = (run / "scores.csv").read_text().splitlines()
    assert lines[0] == "model,question,score,status" and len(lines) == 1 + 2 * questions
    assert {line.split(",")[0] for line in lines[1:]} == {"gemini-2.5-flash-lite", "gemini-2.5-flash"}
    assert (run / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the report extra is installed here
    assert re.search(r"gemini-2\.5-flash-lite: mean score [1-5](\.\d+)? over \d+ answers", output)
    assert stats["calls"]["flex"]["ok"] >= 3 * questions


def test_reviews_table_loads_every_rows_status_and_its_asset_schedules_the_report(tmp_path):
    with FlexEmulator(seed=6) as emulator:
        env = _airflow_env(emulator, tmp_path)
        output = _dags_test("flex_reviews_table", env)
        report = _dags_test("flex_reviews_report", env)
    assert "state=success" in output and "state=success" in report
    with sqlite3.connect(tmp_path / "demo.db") as conn:
        statuses = dict(conn.execute("SELECT status, COUNT(*) FROM reviews_enriched GROUP BY status").fetchall())
        errors = conn.execute("SELECT error FROM reviews_enriched WHERE status = 'failed'").fetchall()
        flags = {row[0] for row in conn.execute("SELECT needs_reply FROM reviews_enriched WHERE status = 'ok'")}
    assert statuses == {"ok": 25, "failed": 5}, "every row of the table, the empty reviews as failed"
    assert all("empty prompt" in error for (error,) in errors) and flags <= {0, 1}
    assert "Reviews enriched:" in report and "'statuses': {" in report
