"""Keys held as hashes (a million in 16 MB), and which dead letters a rerun carries over instead of asking again."""

from __future__ import annotations

import pytest

from airflow_provider_flex.enrichment.failures import DeadLetters, dead_letter, is_final, refused_rows
from airflow_provider_flex.enrichment.keys import KeySet, key_hash
from airflow_provider_flex.enrichment.records import PromptTemplate
from airflow_provider_flex.enrichment.request import EnrichRequest, find_rows_to_do
from airflow_provider_flex.exceptions import (
    FlexCapacityError,
    FlexRequestError,
    FlexResponseError,
)


def test_a_key_set_answers_like_a_set_of_strings():
    keys = KeySet(f"sku-{i}" for i in range(5000))
    assert len(keys) == 5000 and "sku-0" in keys and "sku-4999" in keys and "sku-5000" not in keys
    assert 17 not in keys and not KeySet() and keys
    keys.add("sku-5000")  # an add after lookups sorts that bucket again
    assert "sku-5000" in keys and len(keys) == 5001
    assert keys.repeated() == set()
    keys.add("sku-7")
    assert keys.repeated() == {key_hash("sku-7")} and len(keys) == 5001
    assert key_hash("é") != key_hash("e") and all(0 <= word < 2**64 for word in key_hash("x"))


def test_dead_letters_kept_in_a_file_come_back_in_order_and_a_withdrawn_key_is_gone():
    letters = DeadLetters([{"key": "a", "row": 1, "error": "blocked", "carried_over": True}])
    letters.add({"key": "b", "row": 2, "error": "é, not ASCII"})
    read = []
    for letter in letters:  # a letter added while reading goes to the end, and is read too
        read.append(letter["key"])
        if letter["key"] == "a":
            letters.add({"key": "c", "row": 3, "error": "400"})
    assert read == ["a", "b", "c"] and len(letters) == 3 and letters.carried_over == 1
    assert [letter["error"] for letter in letters] == ["blocked", "é, not ASCII", "400"]  # read again, whole
    assert letters.withdraw(["a", "c", "zz"]) == 2
    assert list(letters) == [{"key": "b", "row": 2, "error": "é, not ASCII"}]
    assert len(letters) == 1 and letters.carried_over == 0 and letters
    assert not DeadLetters() and list(DeadLetters()) == []


def test_refusals_of_the_row_are_final_and_capacity_or_a_sampled_answer_is_not():
    assert is_final(FlexRequestError(400, "INVALID_ARGUMENT", "Request contains an invalid argument."))
    assert is_final(FlexRequestError(413, None, "too large"))
    assert is_final(FlexResponseError("blocked", "the prompt was blocked (blockReason SAFETY)"))
    assert not is_final(FlexRequestError(429, "RESOURCE_EXHAUSTED", "quota"))
    assert not is_final(FlexRequestError(None, None, "no code"))
    assert not is_final(FlexResponseError("off_schema", "$.label: 3 is not of type 'string'"))
    assert not is_final(FlexResponseError("max_tokens", "cut"))
    shed = FlexCapacityError(attempts=8, waited_s=60.0, last_status=503, last_api_status="UNAVAILABLE",
                             last_message="The model is overloaded.")  # fmt: skip
    assert not is_final(shed)
    assert not is_final(ValueError("a media file is missing"))
    letter = dead_letter("k1", 4, FlexResponseError("blocked", "the prompt was blocked (blockReason SAFETY)"))
    assert letter == {"key": "k1", "row": 4, "error": letter["error"], "error_type": "FlexResponseError",
                      "final": True, "error_kind": "blocked"}  # fmt: skip
    letters = [letter, dead_letter("k2", 5, shed)]
    assert list(refused_rows(letters)) == ["k1"]


def _request(**kwargs) -> EnrichRequest:
    rows = [{"id": str(i), "text": f"row {i}"} for i in range(6)]
    return EnrichRequest(task="Task 't'", key_field="id", template=PromptTemplate("{{ row.text }}", {}),
                         output_path="unused", **{"records": rows, **kwargs})  # fmt: skip


def test_a_refused_row_is_set_aside_with_its_letter_carried_over_and_the_rest_still_to_do():
    earlier = {"2": {"key": "2", "row": 3, "error": "blocked", "final": True}, "9": {"key": "9", "final": True}}
    found = find_rows_to_do(_request(), KeySet(["0"]), keep_positions=True, refused=earlier)
    assert (found.total, found.todo, found.refused_earlier) == (6, 4, 1), "a key no longer in the input is dropped"
    assert found.set_aside == {3} and found.keys == ["1", "3", "4", "5"]
    assert list(found.dead_letters) == [{"key": "2", "row": 3, "error": "blocked", "final": True, "carried_over": True}]


def test_repeated_keys_are_found_by_hash_then_named_by_a_second_pass():
    rows = [{"id": k, "text": "x"} for k in ["a", "b", "a", "c", "b", "a"]]
    found = find_rows_to_do(_request(records=rows, on_duplicate_key="dead_letter"), KeySet(), keep_positions=True)
    assert found.set_aside == {3, 5, 6} and found.keys == ["a", "b", "c"] and found.total == 6
    assert [letter["error"] for letter in found.dead_letters] == [
        "duplicate key 'a' in rows 1 and 3", "duplicate key 'b' in rows 2 and 5", "duplicate key 'a' in rows 1 and 6"
    ]  # fmt: skip
    kept = find_rows_to_do(_request(records=rows), KeySet(), keep_positions=False)
    assert (kept.total, kept.todo, kept.duplicates_skipped) == (3, 3, 3)
    with pytest.raises(Exception, match="duplicate key 'a' in rows 1 and 3"):
        find_rows_to_do(_request(records=rows, on_duplicate_key="fail"), KeySet(), keep_positions=False)
