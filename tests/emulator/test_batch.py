"""The emulator's Batch API through the real google-genai SDK: states, results, files, quota, forced endings."""

from __future__ import annotations

import io
import json
import time

import pytest
from google.genai import errors, types

from airflow_provider_flex.emulator.batch import BatchSettings
from tests.emulator.conftest import sdk_client

MODEL = "gemini-2.5-flash"


def _inline(keys: list[str]) -> list[types.InlinedRequest]:
    return [types.InlinedRequest(contents=f"describe {key}", metadata={"key": key}) for key in keys]


def _wait_done(client, name: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        job = client.batches.get(name=name)
        if job.done:
            return job
        assert time.monotonic() < deadline, f"{name} still {job.state}"
        time.sleep(0.05)


def test_inline_job_moves_from_pending_to_succeeded_with_keyed_answers(start_emulator):
    emulator = start_emulator(batch=BatchSettings(turnaround_s=0.5))
    client = sdk_client(emulator)
    job = client.batches.create(model=MODEL, src=_inline(["a", "b", "c"]), config={"display_name": "mine"})
    assert job.state == types.JobState.JOB_STATE_PENDING and job.display_name == "mine"
    job = _wait_done(client, job.name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    answers = {r.metadata["key"]: r.response for r in job.dest.inlined_responses}
    assert set(answers) == {"a", "b", "c"}
    assert all(r.usage_metadata.prompt_token_count > 0 and r.text for r in answers.values())
    assert "describe a" in answers["a"].text


def test_file_job_results_download_keyed_lines(start_emulator):
    emulator = start_emulator(batch=BatchSettings(turnaround_s=0.2, shuffle=True))
    client = sdk_client(emulator, api_version="v1beta")
    lines = "".join(
        json.dumps({"key": f"k{i}", "request": {"contents": [{"parts": [{"text": f"row {i}"}]}]}}) + "\n"
        for i in range(30)
    )
    uploaded = client.files.upload(file=io.BytesIO(lines.encode()), config={"mime_type": "application/jsonl"})
    job = _wait_done(client, client.batches.create(model=MODEL, src=uploaded.name).name)
    results = [json.loads(line) for line in client.files.download(file=job.dest.file_name).decode().splitlines()]
    keys = [line["key"] for line in results]
    assert sorted(keys) == sorted(f"k{i}" for i in range(30))
    assert keys != [f"k{i}" for i in range(30)], "shuffle=True must be able to reorder results"
    assert all(
        f"row {line['key'][1:]}" in line["response"]["candidates"][0]["content"]["parts"][0]["text"] for line in results
    )


def test_failed_lines_and_dropped_metadata_as_users_report(start_emulator):
    emulator = start_emulator(batch=BatchSettings(turnaround_s=0.1, error_rate=0.3, drop_metadata=True))
    client = sdk_client(emulator)
    job = _wait_done(client, client.batches.create(model=MODEL, src=_inline([f"r{i}" for i in range(40)])).name)
    answers = job.dest.inlined_responses
    assert len(answers) == 40
    assert all(answer.metadata is None for answer in answers)
    failed = [answer for answer in answers if answer.error is not None]
    assert 4 <= len(failed) <= 24 and all(answer.error.message for answer in failed)


def test_enqueued_token_quota_refuses_a_job_that_would_exceed_it(start_emulator):
    emulator = start_emulator(batch=BatchSettings(turnaround_s=30, enqueued_tokens=50))
    client = sdk_client(emulator)
    client.batches.create(model=MODEL, src=_inline([f"r{i}" for i in range(10)]))  # ~20 tokens enqueued
    with pytest.raises(errors.ClientError) as refused:
        client.batches.create(model=MODEL, src=_inline([f"s{i}" for i in range(20)]))
    assert refused.value.code == 429 and "batch_enqueued_tokens" in refused.value.message
    client.batches.create(model="gemini-2.5-pro", src=_inline(["t"]))  # another model has its own quota
    assert emulator.admin.batches()[0]["state"] == "BATCH_STATE_PENDING"


def test_forced_endings_cancel_delete_and_list(start_emulator):
    emulator = start_emulator(batch=BatchSettings(turnaround_s=0.2))
    client = sdk_client(emulator)
    emulator.admin.batch_fate("EXPIRED")
    expired = _wait_done(client, client.batches.create(model=MODEL, src=_inline(["x"])).name)
    assert expired.state == types.JobState.JOB_STATE_EXPIRED and expired.dest is None
    slow = client.batches.create(model=MODEL, src=_inline(["y"]), config={"display_name": "slow"})
    emulator.admin.end_batch(slow.name, "FAILED")
    assert client.batches.get(name=slow.name).state == types.JobState.JOB_STATE_FAILED
    third = client.batches.create(model=MODEL, src=_inline(["z"]))
    client.batches.cancel(name=third.name)
    assert client.batches.get(name=third.name).state == types.JobState.JOB_STATE_CANCELLED
    assert {job.display_name for job in client.batches.list()} >= {"slow"}
    client.batches.delete(name=third.name)
    with pytest.raises(errors.ClientError) as gone:
        client.batches.get(name=third.name)
    assert gone.value.code == 404


def test_a_model_without_batch_support_says_so(start_emulator):
    emulator = start_emulator(batch_models=("gemini-2.5-pro",))
    client = sdk_client(emulator)
    assert "batchGenerateContent" not in client.models.get(model=MODEL).supported_actions
    assert "batchGenerateContent" in client.models.get(model="gemini-2.5-pro").supported_actions
    with pytest.raises(errors.ClientError) as refused:
        client.batches.create(model=MODEL, src=_inline(["a"]))
    assert refused.value.code == 404 and "batchGenerateContent" in refused.value.message
