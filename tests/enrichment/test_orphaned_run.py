"""An enrichment whose supervisor dies under it stops calling, so Airflow's retry pays for nothing twice.

A Celery worker killed with ``kill -9`` takes its pool (and Airflow's task supervisors) with it, but
the task runners live on in process groups of their own. Here a parent process starts the
enrichment and is SIGKILLed mid-run: the orphan must start no more rows, let its calls in flight
finish, checkpoint them and exit; a rerun then sends each remaining row once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from airflow_provider_flex.emulator import FlexEmulator
from tests.hooks.conftest import API_KEY

ROWS = 120
CHILD = r"""
import json, sys
from airflow_provider_flex.exceptions import FlexError
from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator
records = [{"id": f"row-{i:04d}", "text": f"text {i}"} for i in range(int(sys.argv[2]))]
operator = GeminiFlexEnrichOperator(task_id="orphan", records=records, key_field="id",
    prompt_template="Label {{ row.id }}", output_path=sys.argv[1], model="gemini-2.5-flash", max_concurrency=4)
try:
    operator.execute(context={})
except FlexError as exc:
    print("STOPPED", exc, flush=True)
"""
PARENT = r"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]], stdout=open(sys.argv[4], "w"),
                         stderr=subprocess.STDOUT, start_new_session=True)
print(child.pid, flush=True)
time.sleep(600)
"""


def _results(output) -> list[str]:
    return [
        json.loads(line)["key"] for path in output.glob("results-*.jsonl") for line in path.read_text().splitlines()
    ]


def test_an_orphaned_run_stops_and_its_rerun_sends_each_row_once(tmp_path):
    output, log = tmp_path / "out", tmp_path / "child.log"
    with FlexEmulator(api_key=API_KEY, seed=4, rps=8, service_time=(0.3, 0.6)) as emulator:
        env = {**os.environ, "AIRFLOW_CONN_GEMINI_FLEX_DEFAULT": emulator.connection_json(API_KEY)}
        parent = subprocess.Popen(
            [sys.executable, "-c", PARENT, CHILD, str(output), str(ROWS), str(log)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        child_pid = int(parent.stdout.readline())
        try:
            deadline = time.monotonic() + 60
            while sum(call["outcome"] == "ok" for call in emulator.admin.calls()) < 15:
                assert time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.05)
        finally:
            parent.send_signal(signal.SIGKILL)
            parent.wait()
        killed_at = time.time()
        deadline = time.monotonic() + 30
        while _alive(child_pid):
            assert time.monotonic() < deadline, "the orphan did not stop"
            time.sleep(0.1)
        stopped_after = time.time() - killed_at
        answered_by_orphan = [call for call in emulator.admin.calls() if call["outcome"] == "ok"]
        checkpointed = _results(output)
        assert "STOPPED" in log.read_text() and "supervisor went away" in log.read_text()
        assert len(answered_by_orphan) < ROWS  # it stopped mid-run
        # every answer it was paid for is in its checkpoints: the rerun sends none of them again
        assert sorted(checkpointed) == sorted({call["prompt"].removeprefix("Label ") for call in answered_by_orphan})
        last_call = max(call["time"] for call in answered_by_orphan)
        assert last_call <= killed_at + 0.5 + 0.6 + 1.0  # no call started after it noticed (check + service + slack)

        rerun = subprocess.run(
            [sys.executable, "-c", CHILD, str(output), str(ROWS)], env=env, capture_output=True, text=True, timeout=120
        )
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        prompts = [call["prompt"] for call in emulator.admin.calls() if call["outcome"] == "ok"]
    assert len(prompts) == len(set(prompts)) == ROWS  # each row paid once over both runs
    assert sorted(_results(output)) == [f"row-{i:04d}" for i in range(ROWS)]
    print(f"orphan stopped {stopped_after:.1f}s after its parent died")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by init) counts as gone
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"
