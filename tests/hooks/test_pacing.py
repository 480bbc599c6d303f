"""The start rules of ``hooks/pacing``: each small, combined with ``&``, and the one queue callers wait in."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_flex.hooks.pacing import (
    RATE_DECREASE,
    ConcurrencyLimit,
    LearnedRate,
    ServerPause,
    StartRule,
    TurnQueue,
    cubic_rate,
)
from airflow_provider_flex.hooks.retry import Failure

NO_LIMIT_429 = Failure(True, 429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).")
RETRY_INFO_429 = Failure(True, 429, "RESOURCE_EXHAUSTED", "quota", server_delay_s=2.0)


def test_rules_combine_with_and_a_start_waits_for_the_longest_and_every_rule_hears_every_outcome():
    pause, slots = ServerPause(), ConcurrencyLimit(maximum=8, current=2)
    rules = pause & slots & StartRule()
    assert len(rules.rules) == 3 and rules.wait_before_start(0.0) == 0.0
    rules.record_outcome(RETRY_INFO_429, now=10.0)
    assert rules.wait_before_start(10.5) == pytest.approx(1.5)  # the server's pause holds every start
    rules.record_outcome(None, now=11.0)
    assert slots.current == pytest.approx(2.5)  # an answer grows the calls allowed in flight


def test_a_cut_gives_new_turns_at_the_new_rate_instead_of_after_the_old_ones():
    rate = LearnedRate()
    for i in range(20):
        rate.record_start(10.0 + i * 0.04)
    rate.record_outcome(NO_LIMIT_429, now=10.8)
    turns = [rate.reserve_start(10.8) for _ in range(18)]  # a second of turns handed out at 18/s
    assert turns[-1] > 11.7 and rate.cuts == 1
    for i in range(18):
        rate.record_start(10.8 + i / 18)
    rate.record_outcome(NO_LIMIT_429, now=12.0)
    assert rate.cuts == 2  # callers holding a turn from before this see it and take a new one
    assert rate.reserve_start(12.0) == 12.0, "the schedule restarts now at the new rate, not after the old turns"
    assert rate.max_rate < 18.0


def test_the_cubic_curve_starts_at_the_cut_and_meets_the_plateau_at_the_recovery_time():
    assert cubic_rate(20.0, 0.0) == pytest.approx(20.0 * RATE_DECREASE)
    assert cubic_rate(0.5, 0.0) == 1.0  # never below one start a second


def test_turns_are_handed_out_in_arrival_order_and_a_cancelled_holder_passes_its_turn_on():
    async def scenario() -> list[str]:
        queue, order = TurnQueue(), []

        async def caller(name: str) -> None:
            await queue.wait()
            order.append(name)

        first, second, third = (asyncio.create_task(caller(name)) for name in ("first", "second", "third"))
        await asyncio.sleep(0)
        assert len(queue) == 3
        assert queue.wake() == 1
        second.cancel()  # woken next, it is cancelled before it runs: its turn must not be lost
        queue.wake()
        await asyncio.sleep(0)
        await asyncio.gather(first, third, return_exceptions=True)
        return order

    assert asyncio.run(scenario()) == ["first", "third"]
