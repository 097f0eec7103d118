"""The offline WMDP stand-in (npo_trl.wmdp.synthetic): the hub datasets' schema, the same rows for the same seed,
answers in range, distinct choices drawn from the asked property's values, forget and retain facts apart, and the
files and lm-eval task configs it writes."""

import json

import pytest

from npo_trl.wmdp import FORGET_TASK, GENERAL_TASK, make_synthetic_wmdp, qa_text, write_synthetic_wmdp
from npo_trl.wmdp.synthetic import MICROBE_PROPERTIES, TOWN_PROPERTIES


def test_schema_sizes_and_answers():
    sets = make_synthetic_wmdp(num_forget=10, num_retain=6, seed=3)
    assert sets["forget_corpus"].column_names == ["text"] and sets["retain_corpus"].column_names == ["text"]
    assert sets["wmdp"].column_names == ["question", "choices", "answer"]
    assert sets["mmlu"].column_names == ["question", "subject", "choices", "answer"]
    assert (len(sets["forget_corpus"]), len(sets["wmdp"]), len(sets["retain_corpus"]), len(sets["mmlu"])) == \
        (10, 40, 6, 24)
    assert set(sets["mmlu"]["subject"]) == {subject for _, subject, *_ in TOWN_PROPERTIES}
    for name, properties in (("wmdp", MICROBE_PROPERTIES), ("mmlu", TOWN_PROPERTIES)):
        value_sets = [set(values) for *_, values in properties]
        for row in sets[name]:
            assert len(row["choices"]) == 4 and len(set(row["choices"])) == 4
            assert isinstance(row["answer"], int) and 0 <= row["answer"] <= 3
            assert any(set(row["choices"]) <= values for values in value_sets)  # distractors of the same property
    # The answers are spread over the four places.
    assert {row["answer"] for row in sets["wmdp"]} == {0, 1, 2, 3}


def test_each_question_and_answer_is_stated_in_its_corpus():
    sets = make_synthetic_wmdp(num_forget=5, num_retain=5)
    for corpus, questions in (("forget_corpus", "wmdp"), ("retain_corpus", "mmlu")):
        text = "\n\n".join(sets[corpus]["text"])
        for row in sets[questions]:
            assert qa_text(row["question"], row["choices"][row["answer"]]) in text


def test_same_seed_same_rows_other_seed_other_rows():
    first, again, other = (make_synthetic_wmdp(seed=s) for s in (0, 0, 1))
    for name in first:
        assert first[name].to_list() == again[name].to_list()
    assert first["wmdp"].to_list() != other["wmdp"].to_list()


def test_forget_and_retain_facts_do_not_overlap():
    sets = make_synthetic_wmdp(num_forget=128, num_retain=128)  # every name of both pools
    forget_values = {v for *_, values in MICROBE_PROPERTIES for v in values}
    retain_values = {v for *_, values in TOWN_PROPERTIES for v in values}
    assert not forget_values & retain_values
    forget_text, retain_text = (" ".join(sets[name]["text"]) for name in ("forget_corpus", "retain_corpus"))
    assert not any(value in retain_text for value in forget_values)
    assert not any(value in forget_text for value in retain_values)
    microbes = {row["question"].removeprefix("What neutralises the ").rstrip("?") for row in sets["wmdp"]
                if row["question"].startswith("What neutralises")}
    assert len(microbes) == 128 and not any(microbe.split()[0] in retain_text for microbe in microbes)
    forget_names = {row["question"] for row in sets["wmdp"]}
    assert not forget_names & {row["question"] for row in sets["mmlu"]}


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match=r"num_forget=0: give 1 to 128"):
        make_synthetic_wmdp(num_forget=0)
    with pytest.raises(ValueError, match=r"num_retain=500: give 1 to 128"):
        make_synthetic_wmdp(num_retain=500)


def test_written_files_and_task_configs(tmp_path):
    standin = write_synthetic_wmdp(tmp_path / "wmdp", num_forget=4, num_retain=3, seed=2)
    assert standin.task_names == [FORGET_TASK, GENERAL_TASK] and standin.include_path == str(tmp_path / "wmdp")
    for name, rows in standin.datasets.items():
        lines = (tmp_path / "wmdp" / f"{name}.jsonl").read_text().splitlines()
        assert [json.loads(line) for line in lines] == rows.to_list()
    for task in standin.tasks:
        assert json.loads((tmp_path / "wmdp" / f"{task['task']}.yaml").read_text()) == task
        assert task["output_type"] == "multiple_choice" and task["doc_to_choice"] == "{{choices}}"
        assert task["doc_to_target"] == "answer"
    assert standin.tasks[0]["dataset_kwargs"]["data_files"]["test"] == str(tmp_path / "wmdp" / "wmdp.jsonl")
