"""A team's own prices, merged over the shipped ``prices.json``: Airflow config ``[gemini_flex] prices_file``.

The file has the shipped file's layout (JSON, or TOML by its ``.toml`` suffix), local or on object storage
(any fsspec URL Airflow can open: ``s3://``, ``gs://``...). It is merged field by field: an entry that names
only ``standard.output`` keeps every other figure of the shipped entry; a new model needs ``standard.input``
and ``standard.output``. Read once per process; errors name the setting, the file and the entry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow_provider_flex.exceptions import FlexError
from airflow_provider_flex.pricing import SHIPPED, VERTEX_PRICES, PriceMap, parse_price_data
from airflow_provider_flex.process_state import PROCESS

SETTING = "[gemini_flex] prices_file"


def merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``override`` merged in field by field (mappings recursively, the rest replaced)."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def read_price_file(path: str) -> dict[str, Any]:
    """Return the document in ``path`` (JSON, or TOML by suffix); FlexError naming the setting when unreadable."""
    try:
        import fsspec

        with fsspec.open(path, "rb") as handle:
            data = handle.read()
        if path.lower().endswith(".toml"):
            import tomllib

            document = tomllib.loads(data.decode("utf-8"))
        else:
            document = json.loads(data)
    except Exception as exc:
        raise FlexError(f"{SETTING} = {path!r} could not be read: {type(exc).__name__}: {exc}") from None
    if not isinstance(document, Mapping):
        raise FlexError(f"{SETTING} = {path!r}: the file must hold an object with 'models' (the layout of prices.json)")
    return dict(document)


def price_table(*, vertex: bool = False) -> PriceMap:
    """Return the prices calls are costed at: the shipped table, with the team's ``prices_file`` merged over it."""
    from airflow_provider_flex.compat import conf

    path = (conf.get("gemini_flex", "prices_file", fallback="") or "").strip()
    if not path:
        return VERTEX_PRICES if vertex else SHIPPED.prices
    key = (path, vertex)
    table = PROCESS.price_tables.get(key)
    if table is None:
        document = merged(SHIPPED.raw, read_price_file(path))
        try:
            table = parse_price_data(document, where=f"{SETTING} {path!r} merged over prices.json").prices
        except ValueError as exc:
            raise FlexError(str(exc)) from None
        PROCESS.price_tables[key] = table
    return table
