"""The triggerer's event loop is shared by every trigger: a flex call waiting in the queue must not block it.

The probe runs in a fresh interpreter (so google.genai's first import happens
inside the trigger, as in a new triggerer) and runs our trigger beside Airflow's
own DateTimeTrigger on one event loop while the flex call waits in the
emulator's flex queue (five seconds from its arrival). A watcher measures the
loop's worst stall twice: in wall-clock time, which a busy machine stretches,
and in the loop thread's own CPU time, which only work done on the loop
spends. A blocking wait on the loop (the queue wait is seconds long) shows in
the first; computing on the loop (the SDK's first-use work) in the second.
"""

from __future__ import annotations

import json
import subprocess
import sys

from airflow_provider_flex.emulator import FlexEmulator

QUEUE_WAIT_S = 5.0
PROBE = r"""
import asyncio, gc, json, sys, time
from datetime import datetime, timedelta, timezone

from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow_provider_flex.triggers.gemini_flex import GeminiFlexGenerateContentTrigger

TIMER_S = float(sys.argv[1])
print("ready", flush=True)  # imports done; go when the test says the emulator's slot is taken
sys.stdin.readline()
# A full collection with Airflow loaded pauses every thread ~0.1 s whoever triggers it; measure our code alone.
gc.disable()


async def main():
    loop = asyncio.get_running_loop()
    worst_lag = worst_busy = 0.0

    async def watch_lag():
        nonlocal worst_lag, worst_busy
        while True:
            before, cpu_before = loop.time(), time.thread_time()
            await asyncio.sleep(0.01)
            worst_lag = max(worst_lag, loop.time() - before - 0.01)
            worst_busy = max(worst_busy, time.thread_time() - cpu_before)

    watcher = asyncio.create_task(watch_lag())
    started = time.monotonic()
    flex = GeminiFlexGenerateContentTrigger(contents="a call that waits in the flex queue")
    flex_task = asyncio.create_task(anext(flex.run()))
    moment = datetime.now(timezone.utc) + timedelta(seconds=TIMER_S)
    await anext(DateTimeTrigger(moment=moment).run())
    timer_late = (datetime.now(timezone.utc) - moment).total_seconds()
    timer_fired = time.monotonic() - started
    flex_event = await flex_task
    flex_done = time.monotonic() - started
    watcher.cancel()
    print(json.dumps({"timer_late_s": timer_late, "timer_fired_s": timer_fired, "flex_done_s": flex_done,
                      "worst_lag_s": worst_lag, "worst_busy_s": worst_busy,
                      "flex_status": flex_event.payload["status"]}))


asyncio.run(main())
"""


def test_a_trigger_waiting_in_the_flex_queue_leaves_a_timer_trigger_on_time(set_connection):
    # every flex call waits 5 s in the flex queue from whenever it arrives (the real tier: 1 to 15 minutes),
    # so the call waits through the timer however long this machine takes to start the trigger
    with FlexEmulator(queue_wait=(QUEUE_WAIT_S, QUEUE_WAIT_S)) as emulator:
        set_connection(host=emulator.base_url, password="probe-key")
        probe_process = subprocess.Popen(
            [sys.executable, "-c", PROBE, "1.0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            for line in probe_process.stdout:  # Airflow may log to stdout first
                if line.strip() == "ready":
                    break
            else:
                raise AssertionError(probe_process.communicate()[1][-3000:])
            stdout, stderr = probe_process.communicate("go\n", timeout=120)
        finally:
            probe_process.kill()
        calls = emulator.admin.calls()
    assert probe_process.returncode == 0, stderr[-3000:]
    probe = json.loads(stdout.strip().splitlines()[-1])
    assert probe["flex_status"] == "success"
    assert probe["flex_done_s"] >= QUEUE_WAIT_S > probe["timer_fired_s"] + 1  # the timer fired while the call waited
    assert [(call["tier"], call["outcome"]) for call in calls] == [("flex", "ok")]
    # Blocking on the loop through the queue wait would stall it for seconds; a busy machine adds only fractions.
    assert probe["timer_late_s"] < 0.5, probe
    assert probe["worst_lag_s"] < 0.5, probe
    # No step of ours computes on the loop: the SDK's first-use work (~0.2 s of CPU) runs in a thread
    # (GeminiFlexHook.aprepare), and so do the first imports of ours and of Airflow's async connection read
    # (compat.import_off_the_loop; with those on the loop, 45-60 ms). Measured 6-10 ms, idle or with three
    # CPU burners beside it; with the SDK's work on the loop, ~0.4 s.
    assert probe["worst_busy_s"] < 0.04, probe
