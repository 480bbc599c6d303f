"""Row keys by the million in little memory: each key held as its 128-bit hash in flat arrays.

A Python ``set`` of a million short string keys takes about 100 MB (the string objects, the set's
slots); a run must know every key it has seen (to find a repeated one) and, on a rerun, every key
already answered. :class:`KeySet` keeps each key as two 64-bit words of its BLAKE2b digest in
``array`` buckets: 16 bytes a key, 16 MB for a million. Two different keys share a 128-bit digest with
odds of about 10^-27 for a million keys, far below a disk's error rate, so membership is exact in
practice; where a message must name rows (a repeated key), the caller looks the keys up again.
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_left
from collections.abc import Iterable

#: Keys are spread over this many buckets by their hash's first byte; each is sorted on its own, so a
#: sort never holds more than a bucket's worth of Python integers at once.
BUCKETS = 256


def key_hash(key: str) -> tuple[int, int]:
    """Return ``key``'s 128-bit BLAKE2b digest as two 64-bit words (high, low)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:], "big")


class KeySet:
    """A set of row keys held as hashes: ``add``, ``in`` and ``len`` like a set of strings, 16 bytes a key.

    Adding is an append; a bucket is sorted (and its repeats dropped) the first time a lookup or ``len``
    needs it after an add. :meth:`repeated` says which hashes were added more than once.
    """

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._high = [array("Q") for _ in range(BUCKETS)]
        self._low = [array("Q") for _ in range(BUCKETS)]
        self._unsorted: set[int] = set()
        self._repeated: set[tuple[int, int]] = set()
        for key in keys:
            self.add(key)

    def add(self, key: str) -> None:
        """Add ``key``."""
        self.add_hash(key_hash(key))

    def add_hash(self, hashed: tuple[int, int]) -> None:
        """Add a key by its :func:`key_hash`."""
        high, low = hashed
        bucket = high >> 56
        self._high[bucket].append(high)
        self._low[bucket].append(low)
        self._unsorted.add(bucket)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return self.has_hash(key_hash(key))

    def has_hash(self, hashed: tuple[int, int]) -> bool:
        """Return whether a key with this :func:`key_hash` was added."""
        high, low = hashed
        bucket = high >> 56
        self._sort(bucket)
        highs, lows = self._high[bucket], self._low[bucket]
        at = bisect_left(highs, high)
        while at < len(highs) and highs[at] == high:
            if lows[at] == low:
                return True
            at += 1
        return False

    def __len__(self) -> int:
        for bucket in list(self._unsorted):
            self._sort(bucket)
        return sum(len(highs) for highs in self._high)

    def __bool__(self) -> bool:
        return any(self._high)

    def repeated(self) -> set[tuple[int, int]]:
        """Return the hashes added more than once (a key seen twice), once every bucket is sorted."""
        len(self)
        return set(self._repeated)

    def _sort(self, bucket: int) -> None:
        """Sort one bucket by hash and drop its repeats, remembering them."""
        if bucket not in self._unsorted:
            return
        pairs = sorted(zip(self._high[bucket], self._low[bucket], strict=True))
        highs, lows = array("Q"), array("Q")
        previous = None
        for pair in pairs:
            if pair == previous:
                self._repeated.add(pair)
                continue
            highs.append(pair[0])
            lows.append(pair[1])
            previous = pair
        self._high[bucket], self._low[bucket] = highs, lows
        self._unsorted.discard(bucket)
