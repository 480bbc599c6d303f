"""The flex capacity model: slots, tier priority, the bounded queue, shedding, timeouts (quotas: test_quotas)."""

from __future__ import annotations

import asyncio
import time

import pytest
from google.genai import errors, types

from airflow_provider_flex.emulator.capacity import format_duration


async def _call(client, tier: str, prompt: str, **config) -> tuple[str, int | str]:
    try:
        response = await client.aio.models.generate_content(
            model="gemini-2.5-flash", contents=prompt, config=types.GenerateContentConfig(service_tier=tier, **config)
        )
        return tier, response.sdk_http_response.headers["x-gemini-service-tier"]
    except errors.APIError as error:
        return tier, error.code


def test_flex_is_shed_beyond_slots_and_queue_while_standard_is_served(start_emulator, make_client):
    emulator = start_emulator(slots=2, queue_depth=2, service_time=(0.5, 0.5))
    client = make_client(emulator)

    async def burst():
        standard = [asyncio.create_task(_call(client, "standard", f"std {i}")) for i in range(4)]
        await asyncio.sleep(0.2)  # the standard calls hold both slots and wait in their own queue
        flex = [asyncio.create_task(_call(client, "flex", f"flex {i}")) for i in range(10)]
        return await asyncio.gather(*standard, *flex)

    results = asyncio.run(burst())
    standard = [outcome for tier, outcome in results if tier == "standard"]
    flex = [outcome for tier, outcome in results if tier == "flex"]
    assert standard == ["standard"] * 4
    assert sorted(flex, key=str) == [503] * 8 + ["flex"] * 2

    stats = emulator.admin.stats()
    assert stats["calls"]["flex"] == {"shed": 8, "ok": 2}
    assert stats["peak_in_service"] == 2
    assert stats["queue_depth"] == {"priority": 0, "standard": 0, "flex": 0}
    log = [(c["tier"], c["outcome"]) for c in emulator.admin.calls() if c["outcome"] == "ok"]
    assert log == [("standard", "ok")] * 4 + [("flex", "ok")] * 2, "standard must be served before queued flex"


def test_priority_is_served_before_standard(start_emulator, make_client):
    emulator = start_emulator(slots=1, service_time=(0.3, 0.3))
    client = make_client(emulator)

    async def burst():
        first = asyncio.create_task(_call(client, "flex", "occupies the slot"))
        await asyncio.sleep(0.1)
        standard = asyncio.create_task(_call(client, "standard", "s"))
        await asyncio.sleep(0.05)
        priority = asyncio.create_task(_call(client, "priority", "p"))
        await asyncio.gather(first, standard, priority)

    asyncio.run(burst())
    assert [c["tier"] for c in emulator.admin.calls()] == ["flex", "priority", "standard"]


def test_queued_flex_call_gets_504_when_its_server_timeout_expires(start_emulator, make_client):
    emulator = start_emulator(slots=1, service_time=(2.0, 2.0))
    client = make_client(emulator)
    patient = make_client(emulator, headers={"X-Server-Timeout": "1"})

    async def contend():
        busy = asyncio.create_task(_call(client, "standard", "holds the slot"))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        try:
            await patient.aio.models.generate_content(
                model="gemini-2.5-flash", contents="waits", config=types.GenerateContentConfig(service_tier="flex")
            )
        except errors.ServerError as error:
            return error, time.monotonic() - started, await busy
        raise AssertionError("expected 504")

    error, waited, busy = asyncio.run(contend())
    assert (error.code, error.status) == (504, "DEADLINE_EXCEEDED")
    assert 0.9 <= waited < 1.9
    assert busy == ("standard", "standard")
    assert emulator.admin.stats()["calls"]["flex"] == {"deadline_exceeded": 1}


def test_preempt_rate_sheds_flex_but_not_standard(start_emulator, make_client):
    emulator = start_emulator(preempt_rate=1.0)
    client = make_client(emulator)
    with pytest.raises(errors.ServerError) as raised:
        client.models.generate_content(model="gemini-2.5-flash", contents="x", config={"service_tier": "flex"})
    assert (raised.value.code, raised.value.status) == (503, "UNAVAILABLE")
    assert client.models.generate_content(model="gemini-2.5-flash", contents="x").text


def test_preempt_rate_sheds_about_that_fraction(start_emulator, make_client):
    emulator = start_emulator(preempt_rate=0.3, seed=42)
    client = make_client(emulator)
    outcomes = [asyncio.run(_call(client, "flex", f"row {i}"))[1] for i in range(200)]
    assert 40 <= outcomes.count(503) <= 80


def test_client_timeout_frees_its_queue_place(start_emulator, make_client):
    emulator = start_emulator(slots=1, service_time=(1.5, 1.5), queue_depth=1)
    client = make_client(emulator)
    impatient = make_client(emulator, timeout_ms=300, headers={"X-Server-Timeout": "60"})

    async def contend():
        busy = asyncio.create_task(_call(client, "standard", "busy"))
        await asyncio.sleep(0.1)
        try:
            await impatient.aio.models.generate_content(
                model="gemini-2.5-flash", contents="x", config={"service_tier": "flex"}
            )
        except Exception as error:  # the SDK's timeout class depends on its transport
            return error, await busy
        raise AssertionError("expected a client timeout")

    error, _ = asyncio.run(contend())
    assert "timeout" in type(error).__name__.lower() or isinstance(error, TimeoutError)
    stats = emulator.admin.stats()
    assert stats["queue_depth"]["flex"] == 0
    assert stats["calls"]["flex"] == {"cancelled": 1}


def test_service_time_holds_slots(start_emulator, make_client):
    emulator = start_emulator(slots=3, service_time=(0.3, 0.3), queue_depth=100)
    client = make_client(emulator)

    async def burst():
        return await asyncio.gather(*[_call(client, "flex", f"r{i}") for i in range(9)])

    started = time.monotonic()
    assert all(outcome == "flex" for _, outcome in asyncio.run(burst()))
    elapsed = time.monotonic() - started
    assert 0.85 <= elapsed < 3.0  # three waves of three
    stats = emulator.admin.stats()
    assert stats["peak_in_service"] == 3
    assert stats["peak_queue_depth"] >= 5
    assert stats["peak_in_flight"] == 9


@pytest.mark.parametrize(("seconds", "text"), [(53, "53s"), (0.25, "0.250s"), (1.0001, "1.001s"), (2.0, "2s")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_a_flex_call_waits_in_the_flex_queue_and_a_standard_call_does_not(start_emulator, make_client):
    emulator = start_emulator(queue_wait=(0.6, 0.6))
    client = make_client(emulator)

    async def one(tier: str) -> tuple[tuple[str, int | str], float]:
        started = time.monotonic()
        return await _call(client, tier, f"{tier} call"), time.monotonic() - started

    (flex, flex_s), (standard, standard_s) = asyncio.run(one("flex")), asyncio.run(one("standard"))
    assert flex == ("flex", "flex") and standard == ("standard", "standard")
    assert flex_s >= 0.6 and standard_s < 0.6 <= flex_s
    # holding no slot while it waits: the peak in service stayed at one call
    assert emulator.admin.stats()["peak_in_service"] == 1


def test_a_queue_wait_past_the_server_timeout_ends_with_504(start_emulator, make_client):
    emulator = start_emulator(queue_wait=(5.0, 5.0))
    client = make_client(emulator, timeout_ms=10_000, headers={"X-Server-Timeout": "1"})  # the server's patience: 1 s
    with pytest.raises(errors.APIError) as ended:
        client.models.generate_content(
            model="gemini-2.5-flash", contents="x", config=types.GenerateContentConfig(service_tier="flex")
        )
    assert ended.value.code == 504
