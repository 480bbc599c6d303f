"""The provider on a distributed Airflow: CeleryExecutor, two workers, PostgreSQL, Redis, a worker killed mid-run.

One deployment for the module: PostgreSQL (Debian's package, a cluster made here as an unprivileged
user) is the metadata database, one redis-server is the Celery broker (db 0) and the shared quota
store (db 1), and api-server, scheduler, dag-processor, triggerer and two `airflow celery worker`
processes (w1, w2, 4 task slots each) run as their own processes with their own consoles. The
emulator enforces a requests-per-minute quota, so the shards must share it through Redis.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest

from airflow_provider_flex.emulator import FlexEmulator
from tests.deployment import AirflowDeployment
from tests.integration.celery_deployment import REPO_DAGS, SKU, celery_deployment, write_catalogue
from tests.postgres_server import postgres_binaries

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(postgres_binaries() is None, reason="make test installs Debian's postgresql"),
]

API_KEY = f"celery-key-{secrets.token_hex(12)}"
MODEL = "gemini-2.5-flash-lite"
RPM = 240
ROWS = 240
ROWS_PER_SHARD = 30  # 8 shards
SERVICE_S = (0.5, 1.5)


@pytest.fixture(scope="module")
def celery_airflow(tmp_path_factory):
    root = tmp_path_factory.mktemp("celery")
    with (
        FlexEmulator(api_key=API_KEY, slots=16, service_time=SERVICE_S, rpm=RPM, preempt_rate=0.0, seed=9) as emulator,
        celery_deployment(
            root,
            emulator,
            API_KEY,
            # a lost worker's tasks are noticed within ~20 s (the default is 5 minutes)
            AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT="20",
            AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL="5",
        ) as airflow,
    ):
        airflow.cli("pools", "set", "gemini_flex", "4", "Gemini flex calls", "--include-deferred")
        yield airflow, emulator, root


def sharded_run(airflow: AirflowDeployment, root: Path, name: str, first_sku: int) -> tuple[str, Path, set[str]]:
    """Trigger flex_sharded_enrichment on a fresh catalogue into its own output root: (run id, output, SKUs)."""
    catalogue = root / f"{name}.csv"
    skus = write_catalogue(catalogue, first_sku, ROWS)
    output = root / f"output-{name}"
    airflow.cli("variables", "set", "flex_output_root", str(output))
    conf = {
        "input_path": str(catalogue),
        "rows_per_shard": ROWS_PER_SHARD,
        "model": MODEL,
        "rate_limit_redis_conn_id": "flex_redis",
        "requests_per_minute": RPM,
    }
    return airflow.trigger("flex_sharded_enrichment", conf), output, skus


def answered_keys(output: Path) -> list[str]:
    keys = []
    for results in output.rglob("results-*.jsonl"):
        keys += [json.loads(line)["key"] for line in results.read_text().splitlines() if line.strip()]
    return keys


def shard_tasks(airflow: AirflowDeployment, run_id: str) -> list[tuple]:
    return airflow.query(
        "SELECT map_index, state, try_number, hostname FROM task_instance "
        "WHERE dag_id = 'flex_sharded_enrichment' AND run_id = ? AND task_id = 'enrich_shard' ORDER BY map_index",
        run_id,
    )


def test_shards_on_two_workers_share_one_quota(celery_airflow):
    airflow, emulator, root = celery_airflow
    since = max((call["seq"] for call in emulator.admin.calls()), default=0)
    run_id, output, skus = sharded_run(airflow, root, "shared", 10_000)
    assert airflow.wait_for_run("flex_sharded_enrichment", run_id, timeout=400) == "success"
    tasks = shard_tasks(airflow, run_id)
    assert len(tasks) == ROWS // ROWS_PER_SHARD
    assert {state for _, state, _, _ in tasks} == {"success"}
    workers = {hostname.split("@")[0] for _, _, _, hostname in tasks}
    assert workers == {"w1", "w2"}  # both workers ran shards
    keys = answered_keys(output)
    assert sorted(keys) == sorted(skus)  # every row exactly once
    calls = [call for call in emulator.admin.calls(since) if SKU.search(call["prompt"] or "")]
    answered = sorted(call["time"] for call in calls if call["outcome"] == "ok")
    refused = [call for call in calls if call["outcome"] != "ok"]
    assert len(refused) <= 0.01 * len(calls), refused[:3]
    busiest = max(sum(1 for t in answered[i:] if t < start + 60) for i, start in enumerate(answered))
    assert busiest <= RPM  # no 60 s window over the quota, whichever worker called


def test_a_worker_killed_mid_shard_costs_no_row_and_pays_at_most_its_calls_in_flight(celery_airflow):
    airflow, emulator, root = celery_airflow
    since = max((call["seq"] for call in emulator.admin.calls()), default=0)
    run_id, output, skus = sharded_run(airflow, root, "killed", 20_000)

    def both_workers_calling() -> bool:
        running = [row for row in shard_tasks(airflow, run_id) if row[1] == "running" and row[3]]
        return {hostname.split("@")[0] for *_, hostname in running} == {"w1", "w2"} and len(answered_keys(output)) >= 20

    airflow._wait(both_workers_calling, 300, "shards running on both workers")
    lost_shards = {index for index, state, _, host in shard_tasks(airflow, run_id) if host.startswith("w1@")}
    airflow.kill("worker-w1")  # the worker and its pool; its task runners live on as orphans and must stop
    killed_at = time.time()
    checkpointed = set(answered_keys(output))
    assert airflow.wait_for_run("flex_sharded_enrichment", run_id, timeout=500) == "success"

    tasks = shard_tasks(airflow, run_id)
    for index, state, try_number, hostname in tasks:
        assert state == "success"
        if index in lost_shards and try_number > 1:
            assert hostname.startswith("w2@")  # retried on the surviving worker
    assert any(try_number > 1 for index, _, try_number, _ in tasks if index in lost_shards)
    keys = answered_keys(output)
    assert sorted(keys) == sorted(skus)  # every row once in the output

    calls = [call for call in emulator.admin.calls(since) if SKU.search(call["prompt"] or "")]
    sent: dict[str, list[float]] = {}  # answered calls (paid); a refused call that was retried is no double payment
    for call in calls:
        if call["outcome"] == "ok":
            sent.setdefault(SKU.search(call["prompt"]).group(), []).append(call["time"])
    twice = {sku for sku, times in sent.items() if len(times) > 1}
    # The emulator logs a call when it answers; a call sent before the kill is answered within SERVICE_S.
    sent_by_then = killed_at + SERVICE_S[1] + 0.5
    # in flight in the killed worker: sent before the kill and not in a checkpoint then
    in_flight = {sku for sku, times in sent.items() if min(times) <= sent_by_then and sku not in checkpointed}
    assert twice <= in_flight, {sku: [round(t - killed_at, 2) for t in sent[sku]] for sku in twice - in_flight}
    assert all(min(sent[sku]) <= sent_by_then for sku in twice)  # nothing first sent after the kill went twice
    print(f"killed w1 with {len(in_flight)} rows in flight; {len(twice)} sent twice")


def test_deferred_judge_calls_on_celery_end_in_the_triggerer(celery_airflow):
    airflow, emulator, _ = celery_airflow
    since = max((call["seq"] for call in emulator.admin.calls()), default=0)
    run_id = airflow.trigger("flex_llm_judge_eval")
    assert airflow.wait_for_run("flex_llm_judge_eval", run_id, timeout=400) == "success"
    candidates = (REPO_DAGS / "data" / "eval_candidates.jsonl").read_text().splitlines()
    judges = airflow.query(
        "SELECT map_index, state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = 'judge'",
        "flex_llm_judge_eval",
        run_id,
    )
    assert sorted(judges) == [(i, "success", 1) for i in range(len(candidates))]
    triggerer_jobs = {row[0] for row in airflow.query("SELECT id FROM job WHERE job_type = 'TriggererJob'")}
    run_logs = airflow.home / "logs" / "dag_id=flex_llm_judge_eval" / f"run_id={run_id}" / "task_id=judge"
    for map_index in range(len(candidates)):
        task_log = (run_logs / f"map_index={map_index}" / "attempt=1.log").read_text()
        assert "Pausing task as DEFERRED" in task_log and "Flex result:" not in task_log
        (trigger_log,) = (run_logs / f"map_index={map_index}").glob("attempt=1.log.trigger.*.log")
        assert int(trigger_log.name.rsplit(".", 2)[-2]) in triggerer_jobs
        assert "Flex result:" in trigger_log.read_text()
    prompts = [call["prompt_sha256"] for call in emulator.admin.calls(since) if not SKU.search(call["prompt"] or "")]
    assert len(prompts) == len(set(prompts)) == len(candidates)  # each call sent once
