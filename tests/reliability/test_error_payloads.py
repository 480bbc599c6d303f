"""Every FlexError subclass crosses a trigger event whole: to_payload, JSON, from_payload, the same error."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_flex.exceptions import (
    FlexCapacityError,
    FlexError,
    FlexQuotaExhausted,
    FlexRequestError,
    FlexResponseError,
    FlexStreamInterrupted,
    error_from_payload,
    error_payload,
)
from airflow_provider_flex.hooks.batch import BatchEnqueueRefused

text = st.text(max_size=40)
small = st.integers(min_value=0, max_value=10_000)
seconds = st.floats(min_value=0, max_value=1e6, allow_nan=False)
status = st.none() | st.integers(min_value=100, max_value=599)
moments = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)).map(
    lambda moment: moment + timedelta(microseconds=0)
)

ERRORS = st.one_of(
    st.builds(FlexError, text),
    st.builds(BatchEnqueueRefused, text),
    st.builds(
        FlexCapacityError,
        attempts=small,
        waited_s=seconds,
        last_status=status,
        last_api_status=st.none() | text,
        last_message=text,
        fallback_tried=st.booleans(),
    ),
    st.builds(
        FlexQuotaExhausted,
        model=text,
        quota_id=text,
        quota=text,
        limit=st.none() | small,
        reset_at=moments,
        attempts=small,
        waited_s=seconds,
        last_message=text,
    ),
    st.builds(FlexRequestError, status, st.none() | text, text),
    st.builds(FlexResponseError, text, text),
    st.builds(FlexStreamInterrupted, text, chars_received=small, attempts=small),
)
COVERED = {
    FlexError,
    BatchEnqueueRefused,
    FlexCapacityError,
    FlexQuotaExhausted,
    FlexRequestError,
    FlexResponseError,
    FlexStreamInterrupted,
}


def test_every_subclass_has_a_strategy_here():
    assert set(FlexError._by_name.values()) == COVERED, "a new FlexError subclass needs a strategy above"


@given(ERRORS)
def test_an_error_round_trips_through_json_as_the_same_class_with_the_same_fields(error):
    payload = json.loads(json.dumps(error.to_payload()))
    again = FlexError.from_payload(payload)
    assert type(again) is type(error)
    assert str(again) == str(error)
    for name in type(error).payload_fields:
        assert getattr(again, name) == getattr(error, name), name
    assert type(error_from_payload(error_payload(error))) is type(error)


def test_an_unknown_or_broken_payload_becomes_a_plain_flex_error():
    assert type(FlexError.from_payload({"error_type": "KeyError", "message": "x"})) is FlexError
    broken = FlexError.from_payload({"error_type": "FlexRequestError", "message": "m", "fields": {"nope": 1}})
    assert type(broken) is FlexError and "m" in str(broken)
    assert error_payload(ValueError("bad"))["error_type"] == "ValueError"
