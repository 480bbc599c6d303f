"""What one enrichment asks for, as one checked value: :class:`EnrichRequest`.

The operator builds it once from its rendered arguments; the estimate, the routing, the engine and
the batch route read it instead of long keyword lists. :func:`find_rows_to_do` is the one pass
over the input that checks every row (key, duplicate, prompt) and finds the rows still to do.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any

from airflow_provider_flex.arguments import QuotaLimits
from airflow_provider_flex.enrichment.failures import DeadLetters
from airflow_provider_flex.enrichment.keys import KeySet, key_hash
from airflow_provider_flex.enrichment.records import EnrichInputError, PromptTemplate, iter_rows, row_key
from airflow_provider_flex.enrichment.routing import DEFAULT_BATCH_MAX_WAIT, DEFAULT_BATCH_TURNAROUND
from airflow_provider_flex.enrichment.shared_prompt import SharedPrefix, load_shared_contents
from airflow_provider_flex.hooks.retry import FlexRetryPolicy


@dataclass(frozen=True)
class MediaSettings:
    """Where a row's files are named and how they travel (``media_fields`` and its three companions)."""

    fields: Sequence[str]
    root: str | None
    inline_limit: int
    max_bytes: int


@dataclass(frozen=True)
class EnrichRequest:
    """One enrichment: its rows, the request every row's call makes, and the rules of the run.

    ``model`` is as the task gave it (None: the connection's default model, see :meth:`model_id`).
    ``deadline`` is the absolute ``finish_by`` of a ``route="auto"`` run, else None.
    """

    task: str
    key_field: str
    template: PromptTemplate
    output_path: str
    records: Sequence[Mapping[str, Any]] | None = None
    input_path: str | None = None
    input_sql: str | None = None
    input_conn_id: str | None = None
    model: str | None = None
    system_instruction: str | None = None
    response_schema: Any = None
    generation_config: Mapping[str, Any] | None = None
    service_tier: str = "flex"
    route: str = "flex"
    deadline: datetime | None = None
    max_concurrency: int = 32
    max_failed_fraction: float = 0.0
    max_cost_usd: float | None = None
    estimated_output_tokens: int | None = None
    include_prompt: bool = False
    on_changed_request: str = "fail"
    on_daily_quota: str = "fail"
    media: MediaSettings | None = None
    batch_poll_interval: float = 60.0
    #: How long a batch job may live before the watchdog cancels it and flex serves its rows.
    batch_max_wait: timedelta = DEFAULT_BATCH_MAX_WAIT
    #: The turnaround a batch job is planned with until this output's jobs have shown theirs.
    batch_turnaround: timedelta = DEFAULT_BATCH_TURNAROUND
    on_unreachable_deadline: str = "warn"
    wait_for_batches: bool = True
    gemini_flex_conn_id: str = "gemini_flex_default"
    retry_policy: FlexRetryPolicy | None = None
    timeout: float | None = None
    quotas: QuotaLimits = field(default_factory=QuotaLimits)
    rate_limit_redis_conn_id: str | None = None
    sql_conn_id: str | None = None
    table: str | None = None
    context_cache: str = "auto"
    shared_contents: Any = None
    on_duplicate_key: str = "keep_first"
    on_bad_row: str = "dead_letter"
    #: Ask the API again for rows it refused in an earlier run on this output (see ``failures.is_final``).
    retry_refused: bool = False
    #: Input row numbers the one checking pass set aside (a repeated key, a row whose prompt does not render):
    #: every later pass skips them (see :func:`find_rows_to_do`).
    set_aside: frozenset[int] = frozenset()
    #: Filled by :meth:`resolved` once the connection is read: the model every call names, its config, and
    #: the part every row's prompt starts with (``shared_contents``' files read).
    model_id: str = ""
    config: Any = None
    shared: SharedPrefix = field(default_factory=SharedPrefix)

    def resolved(self, default_model: str) -> EnrichRequest:
        """Return this request with the model every call names, its validated generate config and its shared
        part (files read now: a missing one fails before any call)."""
        from airflow_provider_flex.hooks.request import FlexRequest

        call = FlexRequest(
            system_instruction=self.system_instruction,
            generation_config=self.generation_config,
            response_schema=self.response_schema,
        )
        shared = SharedPrefix(self.system_instruction, load_shared_contents(self.task, self.shared_contents))
        return replace(self, model_id=self.model or default_model, config=call.config(), shared=shared)

    def row_contents(self, prompt: Any) -> Any:
        """Return a row's contents: the shared contents first, then the row's own prompt."""
        return self.shared.row_contents(prompt)

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Return a fresh pass over the input: ``(row number, row)`` pairs, streamed, rows set aside left out."""
        rows = iter_rows(self.records, self.input_path, input_sql=self.input_sql, input_conn_id=self.input_conn_id)
        if not self.set_aside:
            return rows
        return ((number, row) for number, row in rows if number not in self.set_aside)

    def all_rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Return a fresh pass over every input row, those set aside included (the checking pass)."""
        return iter_rows(self.records, self.input_path, input_sql=self.input_sql, input_conn_id=self.input_conn_id)

    @property
    def price_tier(self) -> str:
        """Return the tier the run's calls are priced on (``batch`` for ``route="batch"``)."""
        return "batch" if self.route == "batch" else self.service_tier

    @property
    def loads_table(self) -> bool:
        """Return whether the results go into a SQL table once the run succeeds."""
        return bool(self.sql_conn_id and self.table)


def request_of_task(
    op: Any, context: Mapping[str, Any], deadline: datetime | None, quotas: QuotaLimits
) -> EnrichRequest:
    """Return a ``GeminiFlexEnrichOperator``'s rendered arguments as one request (``deadline`` already absolute).

    Names in ``sql_conn_id``'s table are checked here, before any call.
    """
    task = f"Task {op.task_id!r}"
    if op.sql_conn_id and op.table:  # bad names fail before any call
        from airflow_provider_flex.enrichment.sql import check_identifiers, schema_columns

        check_identifiers(task, op.table, [op.key_field, *schema_columns(op.response_schema)])
    media = MediaSettings(op.media_fields, op.media_root or None, op.inline_media_bytes, op.max_media_bytes)
    return EnrichRequest(
        task=task,
        template=PromptTemplate(op.prompt_template, dict(context)),
        deadline=deadline,
        media=media if op.media_fields else None,
        wait_for_batches=not op.deferrable,
        quotas=quotas,
        **{name: getattr(op, name) for name in _SAME_NAME_ON_THE_TASK},
    )


#: The request's fields the operator holds under the same name (the others are built from the task above).
_SAME_NAME_ON_THE_TASK = tuple(
    f.name
    for f in fields(EnrichRequest)
    if f.name
    not in {
        "task",
        "template",
        "deadline",
        "media",
        "wait_for_batches",
        "quotas",
        "model_id",
        "config",
        "shared",
        "set_aside",
    }
)


@dataclass
class RowsToDo:
    """What the one pass over the input found.

    ``todo`` counts the rows without a result. With ``keep_positions`` (a run that may route rows to
    batch) ``positions`` and ``keys`` hold those rows' input positions and keys, in order.
    """

    total: int = 0
    todo: int = 0
    positions: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    #: Rows set aside (``on_duplicate_key``, ``on_bad_row``): their numbers, and the dead letters of those
    #: that become one (a repeated key kept first is only skipped, with a warning).
    set_aside: set[int] = field(default_factory=set)
    dead_letters: DeadLetters = field(default_factory=DeadLetters)
    duplicates_skipped: int = 0

    @property
    def refused_earlier(self) -> int:
        """Return how many rows the API refused in an earlier run, not asked again (``retry_refused=False``):
        their dead letters, carried over, are among ``dead_letters``."""
        return self.dead_letters.carried_over

    def without(self, keys: set[str]) -> None:
        """Drop ``keys`` (rows already in batch jobs) from the positions and keys still to do."""
        if not keys:
            return
        kept = [(p, k) for p, k in zip(self.positions, self.keys, strict=True) if k not in keys]
        self.positions = [p for p, _ in kept]
        self.keys = [k for _, k in kept]


def find_rows_to_do(
    request: EnrichRequest,
    done: Collection[str],
    *,
    keep_positions: bool,
    refused: Mapping[str, Mapping[str, Any]] | None = None,
) -> RowsToDo:
    """Return the rows still to do, in one pass that also checks every row.

    A missing key raises :class:`EnrichInputError` naming the row, before any call. A repeated key and a
    prompt that does not render fail the same way, or set the row aside as ``on_duplicate_key`` and
    ``on_bad_row`` say (its number in ``set_aside``; a dead letter naming the row and the reason). A key in
    ``refused`` (the API refused it in an earlier run: its dead letter) is set aside too, its dead letter
    carried over. Only hashes of the keys are held (see :class:`~.keys.KeySet`); when a key repeats, a second
    pass finds its rows, so the first pass never keeps the keys themselves.
    """
    seen = KeySet()
    found = _check_rows(request, done, refused or {}, keep_positions=keep_positions, seen=seen)
    repeated = seen.repeated()
    if repeated:
        found = _check_rows(request, done, refused or {}, keep_positions=keep_positions, repeated=repeated)
    return found


def _check_rows(
    request: EnrichRequest,
    done: Collection[str],
    refused: Mapping[str, Mapping[str, Any]],
    *,
    keep_positions: bool,
    seen: KeySet | None = None,
    repeated: set[tuple[int, int]] | None = None,
) -> RowsToDo:
    """Return the rows to do from one pass: every key's hash goes into ``seen``; a key whose hash is in
    ``repeated`` is looked for again (its first row kept, the later ones set aside)."""
    found = RowsToDo()
    first_seen: dict[str, int] = {}
    position = 0
    for number, row in request.all_rows():
        key = row_key(row, request.key_field, number)
        problem = None
        if seen is not None:
            seen.add(key)
        elif repeated and key_hash(key) in repeated:
            if key in first_seen:
                problem = f"duplicate key {key!r} in rows {first_seen[key]} and {number}"
                if request.on_duplicate_key == "fail":
                    raise EnrichInputError(problem)
                found.set_aside.add(number)
                if request.on_duplicate_key == "dead_letter" and key not in done:
                    found.dead_letters.add(_set_aside_letter(key, number, problem, "DuplicateKey"))
                    found.total += 1
                found.duplicates_skipped += request.on_duplicate_key == "keep_first"
                continue
            first_seen[key] = number
        found.total += 1
        try:
            request.template.render(row, number=number, key=key)
        except EnrichInputError as bad:
            if request.on_bad_row == "fail":
                raise
            problem = str(bad)
        if problem is not None:
            found.set_aside.add(number)
            if key not in done:
                found.dead_letters.add(_set_aside_letter(key, number, problem, "BadRow"))
            continue
        if key in refused and key not in done:
            found.set_aside.add(number)
            found.dead_letters.add({**refused[key], "row": number, "carried_over": True})
            continue
        if key not in done:
            found.todo += 1
            if keep_positions:
                found.positions.append(position)
                found.keys.append(key)
        position += 1
    return found


def _set_aside_letter(key: str, number: int, reason: str, kind: str) -> dict[str, Any]:
    """Return the dead letter of a row set aside before any call (no call was made for it, nothing spent)."""
    return {"key": key, "row": number, "error": reason, "error_type": kind, "error_kind": "input"}
