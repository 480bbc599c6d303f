"""One project's quotas shared by every process through Redis: one Lua script, atomic on the server.

The Gemini API counts a quota per project and model, whichever worker sends the
call. Four processes pacing alone send four times the quota; pacing through one
Redis state (a ``redis`` connection of apache-airflow-providers-redis) keeps their
sum to it. The script is the local limiter's even spacing (GCRA) with the
theoretical arrival time kept in Redis and Redis's own clock, so workers with
skewed clocks agree. Keys are ``flex:quota:<project fingerprint>:<model>:...``;
the API key itself never reaches Redis.

If Redis goes away after it has worked, the process carries on alone at a safe
share of each quota (the quota divided by the processes last seen sharing it),
says so once, and returns to shared pacing when Redis answers again. If it never
worked (a wrong URL or password), the first call fails with a clear error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_flex.exceptions import FlexError
from airflow_provider_flex.process_state import PROCESS

log = logging.getLogger(__name__)

#: Seconds a Redis call may take before the process paces alone.
REDIS_TIMEOUT_S = 0.5
#: After Redis failed, seconds before trying it again.
REDIS_RETRY_S = 5.0
#: Seconds a process counts as sharing a quota after its last call.
PROCESS_TTL_S = 30.0

# KEYS[1]: the key prefix. ARGV: process id, seconds to the day's reset, requests per day (0 = none),
# then per pace: name, window seconds, configured limit (0 = none), units.
# Returns {"ok", wait seconds, processes sharing} or {"day", seconds to the reset}.
RESERVE = """
local prefix = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', prefix .. 'procs', now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', prefix .. 'procs', '-inf', now - tonumber(ARGV[4]))
redis.call('EXPIRE', prefix .. 'procs', math.ceil(tonumber(ARGV[4]) * 4))
local procs = redis.call('ZCARD', prefix .. 'procs')
local blocked = redis.call('GET', prefix .. 'day_blocked')
if blocked then return {'day', tostring(redis.call('TTL', prefix .. 'day_blocked'))} end
local rpd = tonumber(ARGV[3])
if rpd > 0 then
  local used = redis.call('INCR', prefix .. 'day_count')
  if used == 1 then redis.call('EXPIRE', prefix .. 'day_count', math.max(1, math.ceil(tonumber(ARGV[2])))) end
  if used > rpd then
    redis.call('DECR', prefix .. 'day_count')
    return {'day', tostring(math.ceil(tonumber(ARGV[2])))}
  end
end
local start = math.max(now, tonumber(redis.call('GET', prefix .. 'paused_until') or '0'))
local paces = {}
local i = 5
while i <= #ARGV do
  local name, window, configured, units = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local learned = tonumber(redis.call('HGET', prefix .. 'learned', name) or '0')
  local limit = configured
  if learned > 0 and (limit == 0 or learned < limit) then limit = learned end
  if limit > 0 then
    local tat = tonumber(redis.call('GET', prefix .. 'tat:' .. name) or '0')
    if tat > start then start = tat end
    table.insert(paces, {name, window, limit, units})
  end
  i = i + 4
end
for _, pace in ipairs(paces) do
  local key = prefix .. 'tat:' .. pace[1]
  local tat = math.max(tonumber(redis.call('GET', key) or '0'), start)
  redis.call('SET', key, tostring(tat + pace[4] * pace[2] / pace[3]), 'EX', math.ceil(pace[2] * 4))
end
return {'ok', tostring(start - now), procs}
"""

# KEYS[1]: the prefix. ARGV: name, window seconds, configured limit, units to add (negative: a refund).
ADJUST = """
local prefix = KEYS[1]
local learned = tonumber(redis.call('HGET', prefix .. 'learned', ARGV[1]) or '0')
local limit = tonumber(ARGV[3])
if learned > 0 and (limit == 0 or learned < limit) then limit = learned end
if limit <= 0 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local key = prefix .. 'tat:' .. ARGV[1]
local tat = tonumber(redis.call('GET', key) or '0')
if tat <= now and tonumber(ARGV[4]) < 0 then return 0 end
tat = math.max(now, tat + tonumber(ARGV[4]) * tonumber(ARGV[2]) / limit)
redis.call('SET', key, tostring(tat), 'EX', math.ceil(tonumber(ARGV[2]) * 4))
return 1
"""

# KEYS[1]: the prefix. ARGV: pause seconds (0 = none), seconds the day stays blocked (0 = not), then
# name, learned limit pairs.
LEARN = """
local prefix = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local pause = tonumber(ARGV[1])
if pause > 0 then
  local until_ = now + pause
  local current = tonumber(redis.call('GET', prefix .. 'paused_until') or '0')
  if until_ > current then redis.call('SET', prefix .. 'paused_until', tostring(until_), 'EX', math.ceil(pause) + 1) end
end
local day = tonumber(ARGV[2])
if day > 0 then redis.call('SET', prefix .. 'day_blocked', '1', 'EX', math.ceil(day)) end
local i = 3
while i <= #ARGV do
  redis.call('HSET', prefix .. 'learned', ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('EXPIRE', prefix .. 'learned', 7 * 86400)
return 1
"""


@dataclass(frozen=True)
class SharedPace:
    """One quota as the script sees it."""

    name: str
    window_s: float
    configured: int | None
    units: float


@dataclass(frozen=True)
class SharedReservation:
    wait_s: float
    processes: int


@dataclass(frozen=True)
class SharedDayBlocked:
    reset_in_s: float


class RedisQuotaState:
    """The shared quota state of one (project, model) in Redis."""

    def __init__(self, client: Any, *, redis_conn_id: str, project: str, model: str) -> None:
        self.client = client
        self.redis_conn_id = redis_conn_id
        self.prefix = f"flex:quota:{project}:{model}:"
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._scripts = {name: client.register_script(body) for name, body in _SCRIPTS.items()}

    def reserve(
        self, paces: Sequence[SharedPace], *, requests_per_day: int | None, reset_in_s: float
    ) -> SharedReservation | SharedDayBlocked:
        args: list[Any] = [self.process_id, reset_in_s, requests_per_day or 0, PROCESS_TTL_S]
        for pace in paces:
            args += [pace.name, pace.window_s, pace.configured or 0, pace.units]
        outcome = self._scripts["reserve"](keys=[self.prefix], args=args)
        kind, value = _text(outcome[0]), float(_text(outcome[1]))
        if kind == "day":
            return SharedDayBlocked(reset_in_s=max(value, 0.0))
        return SharedReservation(wait_s=max(value, 0.0), processes=int(outcome[2]))

    def adjust(self, pace: SharedPace, units: float) -> None:
        """Add ``units`` to a quota's spacing (negative: a refund of a call the server did not count)."""
        self._scripts["adjust"](keys=[self.prefix], args=[pace.name, pace.window_s, pace.configured or 0, units])

    def learn(self, *, pause_s: float, day_blocked_s: float, limits: dict[str, int]) -> None:
        args: list[Any] = [pause_s, day_blocked_s]
        for name, limit in limits.items():
            args += [name, limit]
        self._scripts["learn"](keys=[self.prefix], args=args)


_SCRIPTS = {"reserve": RESERVE, "adjust": ADJUST, "learn": LEARN}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SharedQuotaLink:
    """A process's link to the shared state: healthy, failed (pacing alone until a retry), or never worked."""

    def __init__(self, state: RedisQuotaState) -> None:
        self.state = state
        self.worked = False
        self.down_since: float | None = None
        self.retry_at = 0.0
        self.processes = 1
        self._lock = threading.Lock()
        self._background: concurrent.futures.ThreadPoolExecutor | None = None

    def post(self, action: str, *args: Any, **kwargs: Any) -> None:
        """Run a state update whose result nobody waits for (a correction, a refund, what a 429 taught).

        On a thread that runs an event loop (a triggerer, the enrichment engine) it goes to this
        link's own background thread, in order, so no Redis round trip (or a stalled Redis's
        timeout) holds the loop; elsewhere it runs at once.
        """
        if not _on_event_loop():
            self.call(action, *args, **kwargs)
            return
        with self._lock:
            if self._background is None:
                self._background = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="flex-redis")
        self._background.submit(self.call, action, *args, **kwargs)

    @property
    def usable(self) -> bool:
        return self.down_since is None or time.monotonic() >= self.retry_at

    def call(self, action: str, *args: Any, **kwargs: Any) -> Any:
        """Run one state operation; None when Redis is down (the caller paces alone)."""
        from redis.exceptions import RedisError

        if not self.usable:
            return None
        try:
            result = getattr(self.state, action)(*args, **kwargs)
        except RedisError as exc:
            return self._failed(exc)
        with self._lock:
            if self.down_since is not None:
                log.warning(
                    "Redis connection %r is back after %.0fs: pacing quotas with the other processes again.",
                    self.state.redis_conn_id,
                    time.monotonic() - self.down_since,
                )
            self.down_since = None
            self.worked = True
            if isinstance(result, SharedReservation):
                self.processes = max(1, result.processes)
        return result

    def _failed(self, exc: Exception) -> None:
        detail = f"{type(exc).__name__}: {exc}"
        if not self.worked:
            raise FlexError(
                f"Shared quota pacing needs Redis connection {self.state.redis_conn_id!r}, which failed: {detail}. "
                "Check its host, port and password, or remove rate_limit_redis_conn_id to pace in this process only."
            ) from None
        with self._lock:
            first = self.down_since is None
            if first:
                self.down_since = time.monotonic()
            self.retry_at = time.monotonic() + REDIS_RETRY_S
        if first:
            log.warning(
                "Redis connection %r failed (%s): pacing alone at 1/%d of each quota (the processes last seen "
                "sharing it) until it answers again.",
                self.state.redis_conn_id,
                detail,
                self.processes,
            )
        return None


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def redis_client(redis_conn_id: str) -> Any:
    """Return a Redis client from an Airflow ``redis`` connection, with short timeouts and no retries of its own.

    A down Redis must not hold calls (or a triggerer's loop) for redis-py's seconds of retries.
    """
    try:
        from airflow.providers.redis.hooks.redis import RedisHook
    except ImportError:
        raise FlexError(
            f"rate_limit_redis_conn_id={redis_conn_id!r} needs apache-airflow-providers-redis: "
            "pip install 'airflow-provider-flex[redis]'"
        ) from None
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = RedisHook(redis_conn_id).get_conn()
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        # No blocking retries inside redis-py: a call that fails paces alone at once and Redis is tried again later.
        pool.connection_kwargs.update(
            socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S, retry=Retry(NoBackoff(), 0)
        )
    return client


def shared_quota_link(redis_conn_id: str, project: str, model: str) -> SharedQuotaLink:
    """Return the process's link to the shared state of (project, model) through ``redis_conn_id``."""
    key = (redis_conn_id, project, model)
    with PROCESS.lock:
        link = PROCESS.shared_links.get(key)
        if link is None:
            state = RedisQuotaState(
                redis_client(redis_conn_id), redis_conn_id=redis_conn_id, project=project, model=model
            )
            link = PROCESS.shared_links[key] = SharedQuotaLink(state)
        return link
