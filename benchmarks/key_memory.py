"""Memory of a million row keys: a Python set of the strings beside ``KeySet`` (128-bit hashes in arrays).

The enrichment holds every key it has seen (to find a repeated one) and, on a rerun, every key already
answered. Measured with tracemalloc in this one process, side by side, and the lookups timed:

    .venv/bin/python benchmarks/key_memory.py [--keys 1000000]
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from collections.abc import Callable, Container, Iterator

from airflow_provider_flex.enrichment.keys import KeySet


def key(i: int) -> str:
    return f"sku-{i:07d}"


def measure(build: Callable[[Iterator[str]], Container[str]], count: int) -> tuple[float, float]:
    """Return (MB held by what ``build`` makes of ``count`` fresh keys, microseconds per lookup of each)."""
    gc.collect()
    tracemalloc.start()
    held = build(key(i) for i in range(count))  # fresh strings, owned by what is built, as rows' keys are
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    started = time.perf_counter()
    found = sum(key(i) in held for i in range(count))
    elapsed = time.perf_counter() - started
    if found != count:
        raise AssertionError(f"{type(held).__name__} lost {count - found} keys")
    return size / 2**20, elapsed / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    args = parser.parse_args()
    strings_mb, strings_us = measure(set, args.keys)
    hashed_mb, hashed_us = measure(KeySet, args.keys)
    print(f"{args.keys:,} keys like {key(0)!r}")
    print(f"  set of strings: {strings_mb:7.1f} MB, {strings_us:.2f} us a lookup (key formatting included)")
    print(f"  KeySet:         {hashed_mb:7.1f} MB, {hashed_us:.2f} us a lookup")
    print(
        f"  KeySet holds {hashed_mb / strings_mb:.2f}x the set's memory; a lookup takes {hashed_us / strings_us:.1f}x"
    )


if __name__ == "__main__":
    main()
