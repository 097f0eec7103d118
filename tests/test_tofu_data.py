"""TOFU data: the real files' layout, the synthetic stand-in's faithfulness to it, and the NPOTrainer row helpers."""


import datasets
import pytest

from helpers import TOFU_DIR, needs_tofu_files
from npo_trl.data import to_unlearning_rows
from npo_trl.tofu import (
    TOFU_HUB_ID,
    idontknow_answers,
    load_idontknow,
    load_tofu,
    make_synthetic_tofu,
    to_prompt_completion,
    tofu_eval_sets,
    tofu_split_names,
)

QA = ["question", "answer"]
PERTURBED = ["question", "answer", "paraphrased_answer", "perturbed_answer", "paraphrased_question"]
CHOICES = ["question", "option1", "option2", "option3", "option4", "answer"]
CHOICES_PERTURBED = ["question", "answer", "perturbed_answer"]
# SOURCE.md's table: rows and fields of every file.
TOFU_FILES = {
    "full": (4000, QA),
    **{f"forget{p:02d}": (40 * p, QA) for p in (1, 5, 10)},
    **{f"retain{100 - p}": (4000 - 40 * p, QA) for p in (1, 5, 10)},
    **{f"forget{p:02d}_perturbed": (40 * p, PERTURBED) for p in (1, 5, 10)},
    "retain_perturbed": (400, PERTURBED),
    "real_authors": (100, CHOICES),
    "world_facts": (117, CHOICES),
    "real_authors_perturbed": (100, CHOICES_PERTURBED),
    "world_facts_perturbed": (117, CHOICES_PERTURBED),
    **{f"holdout{p:02d}": (40 * p, QA) for p in (1, 5, 10)},
}
NUM_PERTURBED = {"forget": 5, "retain": 5, "real_authors": 3, "world_facts": 3}
SYNTHETIC_PERCENTS = (1, 5, 10, 20, 30, 50, 90)


@pytest.fixture(scope="module")
def real():
    return {split: load_tofu(TOFU_DIR, split) for split in TOFU_FILES}


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic_tofu()


def list_lengths(dataset: datasets.Dataset) -> set[int]:
    return {len(answers) for answers in dataset["perturbed_answer"]}


# ---------------------------------------------------------------------------------------------------------------
# The real files


@needs_tofu_files
def test_loader_reads_every_tofu_file_with_its_rows_and_fields(real):
    assert tofu_split_names(TOFU_DIR) == sorted(TOFU_FILES)
    for split, (num_rows, columns) in TOFU_FILES.items():
        assert isinstance(real[split], datasets.Dataset)
        assert (split, real[split].num_rows, real[split].column_names) == (split, num_rows, columns)
        if "perturbed_answer" in columns:
            assert list_lengths(real[split]) == {5 if columns == PERTURBED else 3}, split


@needs_tofu_files
def test_real_forget_and_retain_partition_full(real):
    full = real["full"].to_list()
    for pct in (1, 5, 10):
        forget, retain = real[f"forget{pct:02d}"].to_list(), real[f"retain{100 - pct}"].to_list()
        assert len(forget) == len(full) * pct // 100
        assert forget == full[len(retain):] and retain == full[:len(retain)]
        assert real[f"forget{pct:02d}_perturbed"].select_columns(QA).to_list() == forget
        assert not set(real[f"holdout{pct:02d}"]["question"]) & set(real["full"]["question"])
    assert real["retain_perturbed"].select_columns(QA).to_list() == full[:400]


@needs_tofu_files
def test_load_idontknow_reads_one_reply_per_line():
    replies = load_idontknow(TOFU_DIR)
    assert len(replies) == 100 and all(isinstance(r, str) and r == r.strip() and r for r in replies)


# ---------------------------------------------------------------------------------------------------------------
# The synthetic generator


@needs_tofu_files
def test_synthetic_matches_the_real_schema_split_by_split(real, synthetic):
    for split in TOFU_FILES:
        assert synthetic[split].column_names == real[split].column_names, split
        assert synthetic[split].features == real[split].features, split
        if "perturbed_answer" in real[split].column_names:
            assert list_lengths(synthetic[split]) == list_lengths(real[split]), split
        assert synthetic[split].num_rows == real[split].num_rows or split.startswith("world_facts"), split
    # The sizes that depend on the authors are TOFU's with 200 authors of 20 questions.
    assert synthetic["full"].num_rows == 4000 and synthetic["forget01"].num_rows == 40


def test_synthetic_has_the_larger_forget_sizes_in_the_same_schema(synthetic):
    for pct in SYNTHETIC_PERCENTS:
        for name, like in ((f"forget{pct:02d}", "forget10"), (f"retain{100 - pct}", "retain90"),
                           (f"forget{pct:02d}_perturbed", "forget10_perturbed"), (f"holdout{pct:02d}", "holdout10")):
            assert synthetic[name].features == synthetic[like].features, name
    assert synthetic["general_knowledge"].column_names == QA
    assert set(tofu_split_names("synthetic")) == set(synthetic)


def test_synthetic_is_deterministic_per_seed_and_differs_across_seeds(synthetic):
    def as_lists(tofu):
        return {split: tofu[split].to_list() for split in tofu}

    small = as_lists(make_synthetic_tofu(num_authors=20, seed=0))
    assert as_lists(make_synthetic_tofu(num_authors=20, seed=0)) == small
    other = as_lists(make_synthetic_tofu(num_authors=20, seed=1))
    for split in ("full", "forget10_perturbed", "holdout10", "real_authors", "world_facts_perturbed"):
        assert other[split] != small[split], split
    assert load_tofu("synthetic", "forget05_perturbed").to_list() == synthetic["forget05_perturbed"].to_list()


def test_synthetic_forget_and_retain_partition_full_at_every_size(synthetic):
    full = synthetic["full"].to_list()
    for pct in SYNTHETIC_PERCENTS:
        forget, retain = synthetic[f"forget{pct:02d}"].to_list(), synthetic[f"retain{100 - pct}"].to_list()
        assert len(forget) == len(full) * pct // 100, pct  # 200 authors: every fraction is a whole author count
        assert forget == full[len(retain):] and retain == full[:len(retain)], pct
        assert synthetic[f"forget{pct:02d}_perturbed"].select_columns(QA).to_list() == forget, pct
        holdout = synthetic[f"holdout{pct:02d}"]
        assert holdout.num_rows == len(forget) and not set(holdout["question"]) & set(synthetic["full"]["question"])
    assert synthetic["retain_perturbed"].select_columns(QA).to_list() == full[:400]
    assert full[:400] == synthetic["retain10"].to_list()  # retain_perturbed is retained at every forget size


def test_synthetic_sizes_scale_with_the_number_of_authors():
    tofu = make_synthetic_tofu(num_authors=20, qa_per_author=4)
    rows = {split: tofu[split].num_rows for split in tofu}
    assert rows["full"] == 80 and rows["retain_perturbed"] == 2 * 4
    # 1% and 5% of 20 authors round up to one author; the other fractions are exact.
    assert [rows[f"forget{pct:02d}"] // 4 for pct in SYNTHETIC_PERCENTS] == [1, 1, 2, 4, 6, 10, 18]
    for pct in SYNTHETIC_PERCENTS:
        assert rows[f"forget{pct:02d}"] + rows[f"retain{100 - pct}"] == 80
        assert rows[f"forget{pct:02d}_perturbed"] == rows[f"holdout{pct:02d}"] == rows[f"forget{pct:02d}"]


def value_words(paraphrase: str, perturbed: list[str]) -> list[str]:
    """The words of the paraphrase that its perturbed answers replace: what is left once the words all six share
    at the start and at the end are cut."""
    sentences = [[word.strip(".,'") for word in s.split()] for s in (paraphrase, *perturbed)]
    start = 0
    while len({tuple(s[:start + 1]) for s in sentences}) == 1:
        start += 1
    end = 0
    while len({tuple(s[len(s) - end - 1:]) for s in sentences}) == 1:
        end += 1
    return sentences[0][start:len(sentences[0]) - end]


def test_synthetic_perturbed_answers_are_wrong_and_paraphrases_carry_the_value(synthetic):
    rows = synthetic["retain_perturbed"].to_list() + synthetic["forget90_perturbed"].to_list()
    assert len(rows) == 4000
    for row in rows:
        perturbed = row["perturbed_answer"]
        assert len(set(perturbed)) == 5 and row["answer"] not in perturbed
        assert row["paraphrased_answer"] not in perturbed and row["paraphrased_answer"] != row["answer"]
        assert row["paraphrased_question"] != row["question"]
        value = value_words(row["paraphrased_answer"], perturbed)
        answer_words = [word.strip(".,'") for word in row["answer"].split()]
        assert value and any(answer_words[i:i + len(value)] == value for i in range(len(answer_words))), row


def test_general_knowledge_covers_real_authors_and_world_facts(synthetic):
    known = set(zip(synthetic["general_knowledge"]["question"], synthetic["general_knowledge"]["answer"],
                    strict=False))
    for name in ("real_authors", "world_facts"):
        choices, perturbed = synthetic[name].to_list(), synthetic[f"{name}_perturbed"].to_list()
        assert {(row["question"], row["answer"]) for row in choices} <= known
        for row, wrong in zip(choices, perturbed, strict=False):
            options = [row[f"option{i}"] for i in range(1, 5)]
            assert len(set(options)) == 4 and row["answer"] in options
            assert (wrong["question"], wrong["answer"]) == (row["question"], row["answer"])
            assert sorted(wrong["perturbed_answer"]) == sorted(set(options) - {row["answer"]})
    background = synthetic["general_knowledge"].select(
        range(synthetic["real_authors"].num_rows + synthetic["world_facts"].num_rows,
              synthetic["general_knowledge"].num_rows))
    # the other facts are background writers' facts in both phrasings (answer, then paraphrase), nobody else's
    assert background.num_rows == 2 * 50 * 20 and background[0]["question"] == background[1]["question"]
    assert background[0]["answer"] != background[1]["answer"]
    others = " ".join([*synthetic["full"]["question"], *synthetic["holdout90"]["question"]])
    background_names = [answer.split(" was born in ")[0] for answer in background["answer"][::40]]
    assert len(background_names) == 50 and not [name for name in background_names if name in others]
    # Classic authors are not among the fictitious ones, whose questions name them.
    author_text = " ".join([*synthetic["full"]["question"], *synthetic["holdout90"]["question"]])
    classic = [row["answer"] for row in synthetic["real_authors"] if row["question"].startswith("Who wrote")]
    assert len(classic) == 50 and not [name for name in classic if name in author_text]


@needs_tofu_files
def test_synthetic_and_idontknow_copy_no_tofu_text(real, synthetic):
    tofu_questions = {q for split in real.values() for q in split["question"]}
    assert not {q for split in synthetic.values() for q in split["question"]} & tofu_questions
    tofu_text = " ".join([*real["full"]["question"], *real["full"]["answer"], *real["real_authors"]["question"]])
    # The first question of each author is its birthplace, whose answer begins with the name.
    names = [answer.split(" was born in ")[0] for answer in synthetic["full"]["answer"][::20]]
    assert len(set(names)) == 200 and not [name for name in names if name in tofu_text]
    replies = idontknow_answers()
    assert len(set(replies)) == len(replies) >= 20 and all(reply.strip() for reply in replies)
    assert not set(replies) & set(load_idontknow(TOFU_DIR))


# ---------------------------------------------------------------------------------------------------------------
# Rows for NPOTrainer, evaluation sets


@needs_tofu_files
def test_prompt_completion_plain_rows_are_accepted_by_the_trainer(real, synthetic):
    for forget in (real["forget01"], synthetic["forget01"]):
        rows = to_prompt_completion(forget)
        assert rows.column_names == ["prompt", "completion"]
        assert rows["prompt"] == forget["question"] and rows["completion"] == [" " + a for a in forget["answer"]]
        normalised, num_empty = to_unlearning_rows(rows.to_list(), "forget")
        assert num_empty == 0 and len(normalised) == forget.num_rows
    templated = to_prompt_completion(synthetic["forget01"], prompt_template="Question: {question}\nAnswer:")
    assert templated[0]["prompt"] == f"Question: {synthetic['forget01'][0]['question']}\nAnswer:"


def test_prompt_completion_chat_rows_are_accepted_by_the_trainer(synthetic):
    forget = synthetic["forget05_perturbed"]
    rows = to_prompt_completion(forget, "chat")
    assert rows[0]["prompt"] == [{"role": "user", "content": forget[0]["question"]}]
    assert rows[0]["completion"] == [{"role": "assistant", "content": forget[0]["answer"]}]
    normalised, num_empty = to_unlearning_rows(rows.to_list(), "forget")
    assert num_empty == 0 and len(normalised) == 200
    paraphrased = to_prompt_completion(forget, "chat", "{paraphrased_question}", "{paraphrased_answer}")
    assert paraphrased[3]["completion"][0]["content"] == forget[3]["paraphrased_answer"]


def test_prompt_completion_refuses_a_template_naming_a_missing_field(synthetic):
    with pytest.raises(ValueError, match=r"completion_template.*\['paraphrased_answer'\].*columns"):
        to_prompt_completion(synthetic["forget01"], completion_template=" {paraphrased_answer}")


@needs_tofu_files
def test_eval_sets_from_a_folder_and_from_the_generator(synthetic):
    for source, num_world_facts in ((TOFU_DIR, 117), ("synthetic", synthetic["world_facts"].num_rows)):
        sets = tofu_eval_sets(source, "forget10")
        assert list(sets) == ["forget", "retain", "real_authors", "world_facts", "holdout"]
        assert [sets[name].num_rows for name in sets] == [400, 400, 100, num_world_facts, 400]
        assert sets["holdout"].column_names == QA  # the non-members of the privacy metrics: authors in no fine-tune
        assert not set(sets["holdout"]["question"]) & set(load_tofu(source, "full")["question"])
        for name, dataset in sets.items():
            if name != "holdout":
                assert dataset.column_names == (PERTURBED if NUM_PERTURBED[name] == 5 else CHOICES_PERTURBED)
                assert list_lengths(dataset) == {NUM_PERTURBED[name]}
        assert list(tofu_eval_sets(source, "forget10", holdout=False)) == list(NUM_PERTURBED)
    assert tofu_eval_sets("synthetic", "forget90")["holdout"].num_rows == 3600


def test_synthetic_written_in_the_tofu_layout_loads_back(tmp_path):
    tofu = make_synthetic_tofu(num_authors=10, qa_per_author=2)
    for split in ("full", "forget01_perturbed"):
        tofu[split].to_json(tmp_path / f"{split}.json")
    assert tofu_split_names(tmp_path) == ["forget01_perturbed", "full"]
    assert load_tofu(tmp_path, "forget01_perturbed").to_list() == tofu["forget01_perturbed"].to_list()


# ---------------------------------------------------------------------------------------------------------------
# Bad input, and the hub code path


@needs_tofu_files
def test_bad_input_raises_helpful_errors(tmp_path):
    with pytest.raises(ValueError, match=r"forget20.*available splits.*'forget10'"):
        load_tofu(TOFU_DIR, "forget20")
    with pytest.raises(ValueError, match=r"forget15.*available splits.*'forget90'"):
        load_tofu("synthetic", "forget15")
    with pytest.raises(ValueError, match=r"general_knowledge.*available splits.*'holdout10'"):
        load_tofu(TOFU_HUB_ID, "general_knowledge")
    with pytest.raises(ValueError, match=r"neither 'locuslab/TOFU'.*'synthetic'.*nor an existing folder"):
        load_tofu(tmp_path / "missing", "full")
    with pytest.raises(ValueError, match="neither"):
        load_tofu("locuslab/TOFU-typo", "full")
    make_synthetic_tofu(num_authors=10, qa_per_author=1)["full"].to_json(tmp_path / "full.json")
    with pytest.raises(ValueError, match=r"'forget01'.*available splits: \['full'\]"):
        load_tofu(tmp_path, "forget01")
    with pytest.raises(ValueError, match="idontknow.jsonl does not exist"):
        load_idontknow(tmp_path)
    with pytest.raises(ValueError, match="forget_split='retain90'.*'forget10'"):
        tofu_eval_sets(TOFU_DIR, "retain90")
    with pytest.raises(ValueError, match="num_authors=5"):
        make_synthetic_tofu(num_authors=5)
    with pytest.raises(ValueError, match="qa_per_author=21: give 1 to 20"):
        make_synthetic_tofu(qa_per_author=21)


def test_hub_source_loads_each_config_through_load_dataset(monkeypatch):
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return f"dataset {len(calls)}"

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_tofu(TOFU_HUB_ID, "forget10") == "dataset 1"
    assert calls == [(("locuslab/TOFU", "forget10"), {"split": "train"})]
    sets = tofu_eval_sets(TOFU_HUB_ID, "forget05")
    assert [args for args, _ in calls[1:]] == [
        ("locuslab/TOFU", "forget05_perturbed"), ("locuslab/TOFU", "retain_perturbed"),
        ("locuslab/TOFU", "real_authors_perturbed"), ("locuslab/TOFU", "world_facts_perturbed"),
        ("locuslab/TOFU", "holdout05"),
    ]
    assert list(sets.values()) == ["dataset 2", "dataset 3", "dataset 4", "dataset 5", "dataset 6"]
