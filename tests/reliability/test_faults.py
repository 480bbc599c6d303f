"""Faults mid-run: the API going away and coming back, cut connections, slow answers,
non-JSON bodies, 5xx, a worker killed with SIGKILL. Each row still ends exactly once,
every paid answer becomes a result, and nothing is paid twice after a crash.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.exceptions import FlexStreamInterrupted
from airflow_provider_flex.hooks.retry import FlexRetryPolicy
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator, GeminiFlexStreamContentOperator
from tests.deployment import free_port

KEY = "faults-key-0123456789"
TEMPLATE = "Categorise product {{ row.id }}: {{ row.title }}"
PATIENT = FlexRetryPolicy(max_attempts=40, initial_delay=0.1, max_delay=1.0, deadline=120)


def _rows(n: int) -> list[dict]:
    return [{"id": f"p{i:05d}", "title": f"product number {i}"} for i in range(n)]


def _results(output: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(output.glob("results-*.jsonl")) for line in f.read_text().splitlines()]


def _enrich(output: Path, rows: int, **kwargs) -> GeminiFlexEnrichOperator:
    kwargs.setdefault("retry_policy", PATIENT)
    return GeminiFlexEnrichOperator(
        task_id="enrich",
        records=_rows(rows),
        key_field="id",
        prompt_template=TEMPLATE,
        output_path=str(output),
        **kwargs,
    )


def test_enrichment_rides_out_the_api_going_away_and_coming_back(set_connection, tmp_path):
    port = free_port()
    settings = {"port": port, "slots": 4, "service_time": (0.02, 0.05), "seed": 3}
    first = FlexEmulator(**settings).start()
    set_connection(host=first.base_url, password=KEY)
    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(_enrich(tmp_path, 400).execute(context={})))
    worker.start()
    try:
        while first.admin.stats()["calls"].get("flex", {}).get("ok", 0) < 100:
            time.sleep(0.02)
    finally:
        answered_by_first = first.admin.stats()["calls"]["flex"]["ok"]
        first.stop()  # connections refused from here on
    time.sleep(2)
    with FlexEmulator(**settings) as second:
        worker.join(timeout=120)
        answered_by_second = second.admin.stats()["calls"]["flex"]["ok"]
    assert outcome, "the enrichment did not finish"
    summary = outcome[0]
    assert (summary["succeeded"], summary["failed"]) == (400, 0)
    assert sorted(row["key"] for row in _results(tmp_path)) == [row["id"] for row in _rows(400)]
    assert answered_by_first >= 100 and answered_by_second >= 1  # the run really spanned the outage


def test_enrichment_survives_drops_slow_answers_non_json_and_5xx(set_connection, tmp_path):
    faults = {"drop": 15, "slow": 5, "non_json": 10, "internal": 10, "bad_gateway": 5, "deadline_exceeded": 5}
    with FlexEmulator(slots=8, service_time=(0.01, 0.03), seed=4) as emulator:
        set_connection(host=emulator.base_url, password=KEY)
        for kind, count in faults.items():
            emulator.admin.inject(kind, count=count, **({"delay_s": 4.0} if kind == "slow" else {}))
        summary = _enrich(tmp_path, 200, timeout=1.0).execute(context={})
        stats = emulator.admin.stats()
    assert (summary["succeeded"], summary["failed"]) == (200, 0)
    assert sorted(row["key"] for row in _results(tmp_path)) == [row["id"] for row in _rows(200)]
    outcomes = stats["calls"]["flex"]
    assert stats["pending_faults"] == 0
    for kind in ("drop", "non_json", "internal", "bad_gateway", "deadline_exceeded"):
        assert outcomes[f"fault:{kind}"] == faults[kind], kind
    assert outcomes["cancelled"] == faults["slow"]  # timed out after 1 s and retried; the slow answer was never sent
    assert outcomes["ok"] == 200  # every delivered answer is a result; none was paid for and dropped


@pytest.mark.parametrize("kind", ["drop", "stream_cut"])
def test_stream_cut_mid_answer_leaves_no_file_and_the_retry_writes_it_whole(set_connection, tmp_path, kind):
    digest = tmp_path / "digest.md"
    with FlexEmulator(answer_tokens=(200, 240), seed=5) as emulator:
        set_connection(host=emulator.base_url, password=KEY)
        emulator.admin.inject(kind, method="stream", after_chunks=3)

        def stream_task() -> GeminiFlexStreamContentOperator:
            return GeminiFlexStreamContentOperator(
                task_id="digest", contents="Write the weekly digest", output_path=str(digest), retry_policy=PATIENT
            )

        with pytest.raises(FlexStreamInterrupted, match="interrupted"):
            stream_task().execute(context={})
        assert not digest.exists() and list(tmp_path.iterdir()) == []
        result = stream_task().execute(context={})  # Airflow's task retry
    assert digest.read_text() == result["text"] and len(result["text"].split()) > 150


CRASH_SCRIPT = """
import sys
from airflow_provider_flex.hooks.retry import FlexRetryPolicy
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator
rows = [{"id": f"p{i:05d}", "title": f"product number {i}"} for i in range(int(sys.argv[2]))]
GeminiFlexEnrichOperator(
    task_id="enrich", records=rows, key_field="id", prompt_template=sys.argv[3], output_path=sys.argv[1],
    max_concurrency=8, retry_policy=FlexRetryPolicy(initial_delay=0.05, max_delay=0.5, deadline=120),
).execute(context={})
"""


def test_worker_killed_mid_run_then_rerun_resumes_without_paying_twice(set_connection, tmp_path):
    rows = 500
    with FlexEmulator(slots=8, service_time=(0.05, 0.05), rps=50, preempt_rate=0.2, seed=2) as emulator:
        set_connection(host=emulator.base_url, password=KEY)
        worker = subprocess.Popen(
            [sys.executable, "-c", CRASH_SCRIPT, str(tmp_path), str(rows), TEMPLATE], env=os.environ.copy()
        )
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob("results-*.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        assert worker.returncode == -signal.SIGKILL
        written_before = {row["key"] for row in _results(tmp_path)}
        assert 0 < len(written_before) < rows, "the kill must land mid-run"

        summary = _enrich(tmp_path, rows, max_concurrency=8).execute(context={})
        answered = [call["prompt"] for call in emulator.admin.calls() if call["outcome"] == "ok"]
    assert summary["skipped"] == len(written_before)
    assert sorted(row["key"] for row in _results(tmp_path)) == [row["id"] for row in _rows(rows)]
    for key in written_before:
        assert sum(f"product {key}:" in prompt for prompt in answered) == 1, f"{key} was paid for twice"
    assert not list(tmp_path.glob(".*partial"))
