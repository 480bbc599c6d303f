"""Everything this provider keeps for the life of a process, in one object with one reset.

A worker or triggerer process shares, across every hook, operator and trigger in it: the
google-genai clients (one per key and endpoint), whether the SDK's one-time work is done,
the quota limiters (one per connection, project and model), the links to shared quotas in
Redis, the request configs already built, the start gates of each event loop and which
(model, tier) pairs were already reported unpriced, and the generate configs already validated
(an ``lru_cache`` in ``hooks/request``, cleared by the same reset). The modules that use them
(``hooks/clients``, ``hooks/quota``, ``hooks/shared_quota``, ``hooks/call``) keep their logic;
the state lives here, so :meth:`ProcessState.reset` forgets all of it at once (tests, or a
long-lived process that rotates keys).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Any


class ProcessState:
    """The provider's process-wide state; :data:`PROCESS` is the one instance."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: (project and base URL, API version) -> google-genai client.
        self.clients: dict[tuple[str, str | None], Any] = {}
        #: google-genai's one-time work (imports, pydantic schema building) is done.
        self.sdk_warm = False
        #: (connection id, project, model) -> QuotaLimiter.
        self.limiters: dict[tuple[str, str, str], Any] = {}
        #: (redis connection id, project, model) -> SharedQuotaLink.
        self.shared_links: dict[tuple[str, str, str], Any] = {}
        #: (id of the caller's config, tier, timeout, Vertex mode) -> (that config, the request config built).
        self.request_configs: dict[tuple[int, str, int, str | None], tuple[Any, Any]] = {}
        #: event loop -> its StartGate (at most one call start per loop pass).
        self.start_gates: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        #: (model, tier) pairs already logged as having no price.
        self.warned_unpriced: set[tuple[str, str]] = set()
        #: model -> the context-cache minimum the API stated in a "too small" refusal (it beats the data).
        self.cache_minimums: dict[str, int] = {}
        #: (prices_file setting, its contents' fingerprint) -> the merged price table (read once).
        self.price_tables: dict[tuple[str, bool], Any] = {}
        #: The opt-in ``[gemini_flex] triggerer_freeze_gc`` was looked at (and acted on) in this process.
        self.gc_freeze_checked = False
        #: glibc's mmap threshold was fixed for this process (see :func:`fix_mmap_threshold_once`).
        self.mmap_threshold_checked = False

    def reset(self) -> None:
        """Forget everything: clients are closed (calls in flight keep theirs), limiters forget what they learned."""
        with self.lock:
            clients = list(self.clients.values())
            self.clients.clear()
            self.sdk_warm = False
            self.limiters.clear()
            self.shared_links.clear()
            self.request_configs.clear()
            self.warned_unpriced.clear()
            self.cache_minimums.clear()
            self.price_tables.clear()
            self.gc_freeze_checked = False
            self.mmap_threshold_checked = False
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()
        from airflow_provider_flex.hooks.request import validated_configs

        validated_configs.cache_clear()


PROCESS = ProcessState()


def freeze_startup_heap_once() -> bool:
    """Honour ``[gemini_flex] triggerer_freeze_gc`` once per process; True if the heap was frozen now.

    A waiting flex call keeps ~180 objects alive (~100 of them google-genai's and aiohttp's), so a
    thousand of them set off CPython's full collections, and each full pass scans every object in the
    process, Airflow's included: ~150 ms with the loop stopped. ``gc.freeze()`` after a collection
    moves what exists at the first trigger (the triggerer's start-up objects) out of those passes for
    good. Process-wide and irreversible here, hence an opt-in.
    """
    if PROCESS.gc_freeze_checked:
        return False
    PROCESS.gc_freeze_checked = True
    from airflow_provider_flex.compat import conf

    if not conf.getboolean("gemini_flex", "triggerer_freeze_gc", fallback=False):
        return False
    import gc

    gc.collect()
    gc.freeze()
    return True


#: glibc's ``M_MMAP_THRESHOLD`` (malloc.h), and the size from which blocks get mappings of their own.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024


def fix_mmap_threshold_once() -> bool:
    """Fix glibc's mmap threshold at 128 KiB for this process, once; True if it was set now.

    glibc starts by giving a block of 128 KiB or more a mapping of its own, returned to the system when
    freed, but raises that threshold each time such a block is freed; from then on the large buffers of a
    long enrichment land in the heap between small long-lived blocks, and the heap's free space only
    grows: +52 MB of peak RSS over a million rows (``benchmarks/enrich_memory.py``), with Python's own
    objects flat. A fixed threshold (what ``MALLOC_MMAP_THRESHOLD_=131072`` does) keeps the run flat.
    Only on Linux with glibc (elsewhere nothing happens); ``[gemini_flex] fix_mmap_threshold = False``
    leaves the process as it is.
    """
    if PROCESS.mmap_threshold_checked:
        return False
    PROCESS.mmap_threshold_checked = True
    import sys

    if not sys.platform.startswith("linux"):
        return False
    from airflow_provider_flex.compat import conf

    if not conf.getboolean("gemini_flex", "fix_mmap_threshold", fallback=True):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl has no libc.so.6 of this kind)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
