"""npo_trl.tofu.experiment_data: an experiment's TOFU splits (synthetic and TOFU's own files), the authors kept, the
evaluation sets, what each fine-tune trains on (the real-author and world-fact evaluation rows only for the built-in
model), the IDK replies and the tokenizer's corpus."""

import pytest

from helpers import TOFU_DIR, needs_tofu_files
from npo_trl.stages import train_tokenizer
from npo_trl.tofu import (
    evaluation_sets,
    fine_tune_rows,
    idk_answers,
    idontknow_answers,
    keep_authors,
    known_facts,
    load_splits,
    tokenizer_corpus,
)

EVAL_KEYS = {"eval_forget", "eval_retain", "eval_real_authors", "eval_world_facts", "eval_holdout"}


@pytest.fixture(scope="module")
def synthetic():
    return load_splits("synthetic", "forget10", num_authors=20, qa_per_author=5)


def test_synthetic_splits(synthetic):
    assert set(synthetic) == {"full", "forget", "retain", "general_knowledge"} | EVAL_KEYS
    assert (len(synthetic["full"]), len(synthetic["forget"]), len(synthetic["retain"])) == (100, 10, 90)
    assert set(synthetic["full"]["question"]) == set(synthetic["forget"]["question"]) | set(
        synthetic["retain"]["question"])
    assert "eval_holdout" not in load_splits("synthetic", "forget10", num_authors=20, qa_per_author=5, holdout=False)
    sets = evaluation_sets(synthetic)
    assert list(sets) == ["forget", "retain", "real_authors", "world_facts", "holdout"]
    assert sets["forget"] is synthetic["eval_forget"]
    with pytest.raises(ValueError, match="forget_split='retain90' is not a forget split"):
        load_splits("synthetic", "retain90")


@pytest.mark.parametrize("built_in", [False, True])
def test_a_real_base_is_never_fine_tuned_on_the_fact_evaluation_rows(synthetic, built_in):
    """Model utility scores the real-author and world-fact sets: only the built-in tiny model, which would otherwise
    lose those facts, trains on them; a real base model's fine-tunes (full and retain) hold none of them."""
    facts = set(synthetic["eval_real_authors"]["question"]) | set(synthetic["eval_world_facts"]["question"])
    assert facts == set(known_facts(synthetic)["question"])
    for authors in ("full", "retain"):
        rows = fine_tune_rows(synthetic[authors], synthetic, built_in=built_in)
        assert rows.column_names == ["question", "answer"]
        assert list(rows["question"][:len(synthetic[authors])]) == list(synthetic[authors]["question"])
        trained = set(rows["question"])
        if built_in:
            assert facts <= trained and len(rows) == len(synthetic[authors]) + len(known_facts(synthetic))
        else:
            assert not facts & trained and len(rows) == len(synthetic[authors])


@needs_tofu_files
def test_tofus_own_files():
    splits = load_splits(str(TOFU_DIR), "forget01")
    sizes = {key: len(split) for key, split in splits.items()}
    assert sizes == {"full": 4000, "forget": 40, "retain": 3960, "eval_forget": 40, "eval_retain": 400,
                     "eval_real_authors": 100, "eval_world_facts": 117, "eval_holdout": 40, "general_knowledge": 217}
    assert list(splits["general_knowledge"]["question"]) == list(known_facts(splits)["question"])
    facts = set(known_facts(splits)["question"])
    assert not facts & set(fine_tune_rows(splits["full"], splits, built_in=False)["question"])
    assert facts <= set(fine_tune_rows(splits["retain"], splits, built_in=True)["question"])
    subset = {key: split.select(range(min(len(split), 40))) for key, split in splits.items()}
    tokenizer = train_tokenizer(tokenizer_corpus(*subset.values()), vocab_size=400)
    question = splits["forget"][0]["question"]
    assert tokenizer.decode(tokenizer(question)["input_ids"], skip_special_tokens=True) == question


@needs_tofu_files
def test_num_authors_cuts_tofus_files_consistently():
    splits = load_splits(str(TOFU_DIR), "forget05", num_authors=14)
    # forget05 = the last 10 authors, kept whole; the first 4 authors of `full` are the retain authors.
    assert {k: len(splits[k]) for k in ("full", "forget", "retain", "eval_forget", "eval_retain")} == {
        "full": 280, "forget": 200, "retain": 80, "eval_forget": 200, "eval_retain": 80}
    assert set(splits["eval_retain"]["question"]) <= set(splits["retain"]["question"])
    assert list(splits["full"]["question"]) == list(splits["retain"]["question"]) + list(splits["forget"]["question"])
    wide = load_splits(str(TOFU_DIR), "forget01", num_authors=30)
    assert len(wide["eval_retain"]) == 400  # TOFU's retain evaluation set covers the first 20 authors of `full`
    with pytest.raises(ValueError, match="num_authors=10 must exceed the forget split's 10 authors"):
        keep_authors(load_splits(str(TOFU_DIR), "forget05"), 10, 20)


def test_idk_answers_come_from_the_folder_when_it_has_them(tmp_path):
    assert idk_answers("synthetic") == idk_answers("locuslab/TOFU") == idontknow_answers()
    (tmp_path / "idontknow.jsonl").write_text("Not a clue.\n\nNo idea at all.\n")
    assert idk_answers(str(tmp_path)) == ["Not a clue.", "No idea at all."]


def test_tokenizer_corpus_holds_every_string_of_every_row(synthetic):
    rows = synthetic["eval_forget"].select(range(2))
    texts = tokenizer_corpus(rows, synthetic["forget"].select(range(1)))
    first = rows[0]
    assert texts[:4] == [first["question"], first["answer"], first["paraphrased_answer"],
                         first["paraphrased_question"]]
    assert texts[4:4 + len(first["perturbed_answer"])] == first["perturbed_answer"]
    per_row = 4 + len(first["perturbed_answer"])
    assert len(texts) == 2 * per_row + 2 and texts[-2:] == [synthetic["forget"][0]["question"],
                                                             synthetic["forget"][0]["answer"]]
