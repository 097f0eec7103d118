"""Forget/retain data: format normalisation, refusal of bad rows, collation, and the retain stream."""

import pytest

from npo_trl.data import DataCollatorForUnlearning, RetainStream, to_unlearning_rows

PLAIN = [{"prompt": "Where?", "completion": " Here."}, {"prompt": "Who?", "completion": " Me."}]


@pytest.mark.parametrize("rows, expected", [
    (PLAIN, [("Where?", " Here."), ("Who?", " Me.")]),
    ([{"text": "A whole document."}], [("", "A whole document.")]),
    ([{"prompt": "Where?", "rejected": " Here.", "chosen": " No idea."}], [("Where?", " Here.")]),
    ([{"messages": [{"role": "user", "content": "Where?"}, {"role": "assistant", "content": "Here."}]}],
     [([{"role": "user", "content": "Where?"}], [{"role": "assistant", "content": "Here."}])]),
])
def test_every_format_becomes_prompt_and_completion(rows, expected):
    out, num_empty = to_unlearning_rows(rows, "forget")
    assert [(r["prompt"], r["completion"]) for r in out] == expected and num_empty == 0
    assert [r["row_index"] for r in out] == list(range(len(rows)))


@pytest.mark.parametrize("bad, message", [
    ({"prompt": None, "completion": " x."}, "row 2: field 'prompt' is None"),
    ({"prompt": "Where?", "completion": 3}, "row 2: field 'completion' must be a string.*got int"),
    ({"prompt": [{"role": "user", "content": "Where?"}], "completion": " x."}, "row 2: field 'prompt' must be a string"
                                                                              ".*Do not mix plain and conversational"),
    ({"prompt": "Where?"}, r"row 2: missing field\(s\) \['completion'\]"),
])
def test_bad_rows_name_the_row_and_field(bad, message):
    with pytest.raises(ValueError, match=message):
        to_unlearning_rows(PLAIN + [bad], "forget")


def test_conversational_content_must_be_text():
    rows = [{"prompt": [{"role": "user", "content": "Where?"}], "completion": [{"role": "assistant", "content": 5}]}]
    with pytest.raises(ValueError, match="row 0: a message of field 'completion' has non-string content"):
        to_unlearning_rows(rows, "forget")


def test_empty_dataset_and_empty_completions():
    with pytest.raises(ValueError, match="The forget dataset is empty"):
        to_unlearning_rows([], "forget")
    out, num_empty = to_unlearning_rows(PLAIN + [{"prompt": "Why?", "completion": " \n"}], "forget")
    assert len(out) == 2 and num_empty == 1


def test_replacements_come_from_the_column_then_chosen_then_the_list():
    column = [dict(r, replacement=" Unknown.") for r in PLAIN]
    assert {r["replacement"] for r in to_unlearning_rows(column, "f", "replacement")[0]} == {" Unknown."}
    chosen = [{"prompt": "Where?", "rejected": " Here.", "chosen": " No idea."}]
    assert to_unlearning_rows(chosen, "f", "replacement")[0][0]["replacement"] == " No idea."
    drawn = to_unlearning_rows(PLAIN * 20, "f", "replacement", ["A.", "B."], seed=3)[0]
    assert {r["replacement"] for r in drawn} == {"A.", "B."}
    assert drawn == to_unlearning_rows(PLAIN * 20, "f", "replacement", ["A.", "B."], seed=3)[0]
    with pytest.raises(ValueError, match="add a 'replacement' column"):
        to_unlearning_rows(PLAIN, "f", "replacement")


def test_collator_stacks_replacements_before_completions_and_masks_prompts():
    examples = [{"prompt_ids": [1, 5], "completion_ids": [6, 7, 2], "replacement_ids": [8, 2], "row_index": 4},
                {"prompt_ids": [1], "completion_ids": [9, 2], "replacement_ids": [8, 8, 8, 2], "row_index": 0}]
    batch = DataCollatorForUnlearning(pad_token_id=0)(examples)
    assert batch["input_ids"].tolist() == [[1, 5, 8, 2, 0], [1, 8, 8, 8, 2], [1, 5, 6, 7, 2], [1, 9, 2, 0, 0]]
    assert batch["completion_mask"].tolist() == [[0, 0, 1, 1, 0], [0, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 1, 1, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1] * 5, [1] * 5, [1, 1, 1, 0, 0]]
    assert batch["row_index"].tolist() == [4, 0]
    truncated = DataCollatorForUnlearning(pad_token_id=0, max_length=3)(examples)
    assert truncated["input_ids"].shape == (4, 3)


def test_retain_stream_is_a_pure_function_of_seed_and_micro_batch():
    stream = RetainStream(num_rows=10, batch_size=4, seed=7)
    again = RetainStream(num_rows=10, batch_size=4, seed=7)
    assert [stream.indices(k) for k in (3, 0, 5)] == [again.indices(k) for k in (3, 0, 5)]
    assert stream.indices(0) != RetainStream(10, 4, seed=8).indices(0)
    # consecutive micro-batches (ranks 0 and 1 of one step) draw different rows; a cycle is a permutation
    assert set(stream.indices(0)).isdisjoint(stream.indices(1))
    first_cycle = [i for k in range(5) for i in stream.indices(k)][:10]
    assert sorted(first_cycle) == list(range(10))
    with pytest.raises(ValueError, match="no rows"):
        RetainStream(0, 4, 0)

