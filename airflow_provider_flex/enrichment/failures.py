"""A row's dead letter, and whether asking again could change it.

A rerun on the same output retries the dead letters that another try may answer (capacity that ran
out, a spent quota day, an answer cut short or off the schema, which the model may write differently
next time). A row the API *refused* as it stands, a 4xx for that row's request or a prompt its safety
filters blocked, gets the same refusal for the same request: its dead letter is ``final`` and a rerun
carries it over without a call (``retry_refused=True`` asks again, say once the API's policy changed).
A changed prompt, model or config changes the request fingerprint, and then every row is asked anew.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from airflow_provider_flex.exceptions import FlexRequestError, FlexResponseError, error_payload

#: Unusable answers that the same request gets again: a prompt blocked by the API's safety filters.
#: (``max_tokens``, ``invalid_json``, ``off_schema``: a model sampling anew may write a usable answer.)
FINAL_RESPONSE_REASONS = frozenset({"blocked"})


def is_final(exc: BaseException) -> bool:
    """Return whether the API refused this row's request as it stands (asking again gets the same answer).

    Only refusals of one row reach here: one about the run (a wrong key, a model that does not exist) stops
    the run instead (see ``engine.refuses_the_run``).
    """
    if isinstance(exc, FlexRequestError):
        return exc.code is not None and 400 <= exc.code < 500 and exc.code not in (408, 429)
    return isinstance(exc, FlexResponseError) and exc.reason in FINAL_RESPONSE_REASONS


def dead_letter(key: str, number: int, exc: BaseException) -> dict[str, Any]:
    """Return a row's dead letter: key, row number, the reason, whether it is ``final``, and for an unusable
    answer what went wrong with it (``error_kind``) and what it cost."""
    payload = error_payload(exc)
    letter = {
        "key": key,
        "row": number,
        "error": payload["message"],
        "error_type": payload["error_type"],
        "final": is_final(exc),
    }
    if isinstance(exc, FlexResponseError):
        letter["error_kind"] = exc.reason
        if exc.spend is not None:
            letter.update(model=exc.spend["model"], cost_usd=exc.spend["cost_usd"], usage=exc.spend["usage"])
    return letter


def refused_rows(letters: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Return the ``final`` dead letters by key: the rows a rerun carries over instead of asking again.

    A letter keeps what its answer cost (the table's ``cost_usd`` for the row); the run that carries it
    over spends nothing on it.
    """
    return {str(letter["key"]): dict(letter) for letter in letters if letter.get("final")}


class DeadLetters:
    """A run's dead letters, written to a temporary file as they come instead of held in memory.

    A million-row run with one row in a hundred refused has 10,000 of them, ten megabytes as dicts that
    would grow with the rows until the run ends; here a run holds a count. Iterating reads them back in
    the order they came (the dead-letter file, the summary's reasons). The file has no name (POSIX): it is
    gone with the process, whatever ends it.
    """

    def __init__(self, letters: Iterable[Mapping[str, Any]] = ()) -> None:
        self._file = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 (lives as long as the letters)
        self._count = 0
        #: Of them, rows an earlier run's refusal set aside without a call (``retry_refused=False``).
        self.carried_over = 0
        self.extend(letters)

    def add(self, letter: Mapping[str, Any]) -> None:
        """Keep one dead letter."""
        self._file.seek(0, 2)  # after a read, at the end again
        self._file.write(json.dumps(letter, ensure_ascii=False) + "\n")
        self._count += 1
        self.carried_over += bool(letter.get("carried_over"))

    def extend(self, letters: Iterable[Mapping[str, Any]]) -> None:
        for letter in letters:
            self.add(letter)

    def withdraw(self, keys: Iterable[str]) -> int:
        """Drop the letters of ``keys`` (rows refused with a 400 that turned out to be about the run, not the
        row); return how many were dropped."""
        keys = set(keys)
        letters = [letter for letter in self if letter["key"] not in keys]
        dropped = self._count - len(letters)
        self._file.seek(0)
        self._file.truncate()
        self._count = self.carried_over = 0
        self.extend(letters)
        return dropped

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._file.flush()
        self._file.seek(0)
        for line in iter(self._file.readline, ""):
            position = self._file.tell()
            yield json.loads(line)
            self._file.seek(position)  # a letter added while the caller held this one went to the end

    def __len__(self) -> int:
        return self._count
