"""Why the quota limiter is our own: aiolimiter, limits and pyrate-limiter beside it, at 100 starts/s.

Each paces 300 starts to 100 per 1-second window. A flex quota wants starts spread
evenly (no burst at the top of each window, which a fixed-window server counts and
a shedding server sheds), a start *time* to reserve (the hook sleeps its own way, on
a worker thread or a triggerer's loop), refunds for refused calls and token
corrections after the answer: none of the three offers those, and all three let the
whole window's quota through at once. Needs the three libraries:

    .venv/bin/pip install -e '.[bench]' && .venv/bin/python benchmarks/limiter_choice.py
"""

import asyncio
import time

N = 300
RATE = 100


def burst(starts: list[float]) -> int:
    """The most starts in any 100 ms."""
    starts = sorted(starts)
    worst = 0
    for i, start in enumerate(starts):
        j = i
        while j < len(starts) and starts[j] < start + 0.1:
            j += 1
        worst = max(worst, j - i)
    return worst


def report(name: str, starts: list[float], cpu: float) -> None:
    span = max(starts) - min(starts)
    print(
        f"{name:<16} {N} starts in {span:5.2f}s  most in any 100 ms: {burst(starts):3d} (even: 10)  "
        f"CPU per start {cpu / N * 1e6:6.1f} us"
    )


def bench_limits():
    from limits import RateLimitItemPerSecond
    from limits.storage import MemoryStorage
    from limits.strategies import MovingWindowRateLimiter

    lim = MovingWindowRateLimiter(MemoryStorage())
    item = RateLimitItemPerSecond(RATE)
    starts = []
    c0 = time.process_time()
    while len(starts) < N:
        if lim.hit(item, "k"):
            starts.append(time.monotonic())
        else:
            reset, _ = lim.get_window_stats(item, "k")
            time.sleep(max(0.001, reset - time.time()))
    report("limits (moving)", starts, time.process_time() - c0)


def bench_pyrate():
    from pyrate_limiter import Duration, Limiter, Rate

    lim = Limiter(Rate(RATE, Duration.SECOND))
    starts = []
    c0 = time.process_time()
    while len(starts) < N:
        lim.try_acquire("k", blocking=True)
        starts.append(time.monotonic())
    report("pyrate-limiter", starts, time.process_time() - c0)


def bench_aiolimiter():
    from aiolimiter import AsyncLimiter

    async def run():
        lim = AsyncLimiter(RATE, 1)
        starts = []
        for _ in range(N):
            async with lim:
                starts.append(time.monotonic())
        return starts

    c0 = time.process_time()
    starts = asyncio.run(run())
    report("aiolimiter", starts, time.process_time() - c0)


def bench_ours():
    from airflow_provider_flex.hooks.quota import WindowPace

    pace = WindowPace(1.0, configured=RATE)
    starts = []
    c0 = time.process_time()
    for _ in range(N):
        now = time.monotonic()
        pace.prune(now)
        start = pace.earliest(now, 1)
        pace.take(start, 1)
        if start > now:
            time.sleep(start - now)
        starts.append(time.monotonic())
    report("ours (GCRA+log)", starts, time.process_time() - c0)


for fn in (bench_limits, bench_pyrate, bench_aiolimiter, bench_ours):
    fn()
