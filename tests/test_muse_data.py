"""npo_trl.muse.data and synthetic: the layout, the loader on local files in the hub's layout, the generator, MUSE's
chunking of raw text, and bad input."""

import json

import pytest
from datasets import Dataset

from helpers import build_tokenizer
from npo_trl import NPOConfig, NPOTrainer
from npo_trl.muse import chunk_texts, load_muse, make_synthetic_muse, muse_eval_sets
from npo_trl.muse.data import EVAL_SETS, LAYOUT
from npo_trl.muse.synthetic import NUM_ICL


@pytest.fixture(scope="module")
def data():
    return make_synthetic_muse(num_forget=6, seed=1)


@pytest.fixture(scope="module")
def muse_tokenizer(data):
    return build_tokenizer([t for subset in ("raw",) for split in data[subset].values() for t in split["text"]])


def test_generator_has_muses_layout_and_proportions(data):
    assert {subset: tuple(data[subset]) for subset in data} == {s: splits for s, (splits, _) in LAYOUT.items()}
    for subset, (_, columns) in LAYOUT.items():
        for split in data[subset].values():
            assert split.column_names == list(columns)
    n = 6
    assert [len(data["raw"][s]) for s in ("forget", "retain1", "retain2", "holdout")] == [n, 2 * n, 2 * n, 2 * n]
    assert [len(data["scal"][f"forget_{k}"]) for k in range(1, 5)] == [n, 2 * n, 3 * n, 4 * n]
    assert len(data["knowmem"]["forget_qa"]) == n and len(data["knowmem"]["forget_qa_icl"]) == NUM_ICL
    # scal is nested, sust disjoint, forget_1 = raw forget in both, scal forget_4 = the union of the sust folds
    scal = [set(data["scal"][f"forget_{k}"]["text"]) for k in range(1, 5)]
    sust = [set(data["sust"][f"forget_{k}"]["text"]) for k in range(1, 5)]
    assert all(a < b for a, b in zip(scal, scal[1:], strict=False))
    assert all(not a & b for i, a in enumerate(sust) for b in sust[i + 1:])
    assert scal[0] == sust[0] == set(data["raw"]["forget"]["text"]) and scal[3] == set.union(*sust)
    # the holdout articles are in no training set; privleak's forget texts are the raw forget articles
    trained = scal[3] | set(data["raw"]["retain1"]["text"]) | set(data["raw"]["retain2"]["text"])
    assert not set(data["raw"]["holdout"]["text"]) & trained
    assert set(data["privleak"]["forget"]["text"]) == scal[0]
    # every KnowMem answer is in its article; every VerbMem prompt + continuation is an article
    for row, text in zip(data["knowmem"]["forget_qa"], data["raw"]["forget"]["text"], strict=False):
        assert row["answer"] in text
    assert ([p + " " + g for p, g in zip(*data["verbmem"]["forget"][:].values(), strict=False)]
            == data["raw"]["forget"]["text"])
    assert make_synthetic_muse(6, seed=1)["raw"]["forget"]["text"] == data["raw"]["forget"]["text"]  # seeded


@pytest.mark.parametrize("extension", ["parquet", "jsonl", "json", "shards"])
def test_load_muse_reads_a_local_folder_in_the_hub_layout(tmp_path, data, extension):
    for subset, splits in data.items():
        (tmp_path / subset).mkdir()
        for split, rows in splits.items():
            if extension == "parquet":
                rows.to_parquet(tmp_path / subset / f"{split}.parquet")
            elif extension == "shards":  # the hub's converted files: <split>-00000-of-00001.parquet
                rows.to_parquet(tmp_path / subset / f"{split}-00000-of-00001.parquet")
            elif extension == "jsonl":
                rows.to_json(tmp_path / subset / f"{split}.jsonl", lines=True)
            else:
                (tmp_path / subset / f"{split}.json").write_text(json.dumps(list(rows)))
    for subset, splits in data.items():
        for split, rows in splits.items():
            assert load_muse(str(tmp_path), subset, split).to_list() == rows.to_list(), (subset, split)
    sets = muse_eval_sets(tmp_path)
    assert set(sets) == set(EVAL_SETS) and sets["knowmem_retain"].to_list() == data["knowmem"]["retain_qa"].to_list()
    assert set(muse_eval_sets(data, privleak=False)) == set(EVAL_SETS) - {"privleak_forget", "privleak_holdout"}


def test_load_muse_bad_input_names_the_fix(tmp_path, data):
    with pytest.raises(ValueError, match="Unknown MUSE subset 'rawz'"):
        load_muse(data, "rawz", "forget")
    with pytest.raises(ValueError, match="Unknown split 'forget_5' of MUSE subset 'scal'"):
        load_muse(data, "scal", "forget_5")
    with pytest.raises(ValueError, match="has no split scal/forget_1"):
        load_muse({"raw": data["raw"]}, "scal", "forget_1")  # e.g. MUSE-Books, which has no scal
    (tmp_path / "knowmem").mkdir()
    with pytest.raises(ValueError, match=r"knowmem/forget_qa is not in .* write it as knowmem/forget_qa.parquet"):
        load_muse(tmp_path, "knowmem", "forget_qa")
    wrong = {"knowmem": {"forget_qa": Dataset.from_dict({"q": ["Who?"], "answer": ["Alma"]})}}
    with pytest.raises(ValueError, match=r"has columns \['answer', 'q'\] but needs \['question', 'answer'\]"):
        load_muse(wrong, "knowmem", "forget_qa")
    empty = {"raw": {"forget": Dataset.from_dict({"text": []})}}
    with pytest.raises(ValueError, match="raw/forget is empty"):
        load_muse(empty, "raw", "forget")
    blank = {"raw": {"forget": [{"text": "An article."}, {"text": "  "}]}}
    with pytest.raises(ValueError, match="raw/forget, row 1: column 'text' must be a non-empty string"):
        load_muse(blank, "raw", "forget")
    with pytest.raises(ValueError, match="neither 'news'/'books'"):
        load_muse(str(tmp_path / "missing" / "folder"), "raw", "forget")


def test_chunk_texts_follows_muses_rule(muse_tokenizer, data):
    texts = data["raw"]["forget"]["text"]
    ids = muse_tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    longest = max(len(muse_tokenizer(t)["input_ids"]) for t in texts)
    max_length = 32
    assert longest > max_length  # documents longer than max_length span several rows
    rows = chunk_texts(texts, muse_tokenizer, max_length)
    assert all(p == [muse_tokenizer.bos_token_id] for p in rows["prompt_ids"])
    pieces = rows["completion_ids"]
    assert all(len(p) == max_length - 1 for p in pieces[:-1]) and 0 < len(pieces[-1]) <= max_length - 1
    assert sum(pieces, []) == ids  # every token once, in order, the last piece short (no wrap-around)
    per_text = chunk_texts(texts[:2], muse_tokenizer, max_length, join=False)  # no row spans two documents
    first, second = (muse_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts[:2])
    n = -(-len(first) // (max_length - 1))
    assert sum(per_text["completion_ids"][:n], []) == first and sum(per_text["completion_ids"][n:], []) == second
    with pytest.raises(ValueError, match="non-empty strings"):
        chunk_texts(["an article", ""], muse_tokenizer, 32)
    with pytest.raises(ValueError, match="max_length=2"):
        chunk_texts(texts, muse_tokenizer, 2)


def test_npo_trainer_trains_on_chunked_forget_and_retain_text(tmp_path, muse_tokenizer, data):
    """Chunked rows go into NPOTrainer as they are (every token of a long document counted, none cut at max_length),
    and the retain stream draws among the retain chunks."""
    from helpers import tiny_llama

    max_length = 48
    forget = chunk_texts(data["raw"]["forget"]["text"], muse_tokenizer, max_length)
    retain = chunk_texts(data["raw"]["retain1"]["text"], muse_tokenizer, max_length)
    args = NPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=3, retain_loss="nll",
                     learning_rate=1e-3, report_to="none", save_strategy="no", logging_steps=1, max_length=max_length,
                     activation_checkpointing=False)
    tiny_llama(len(muse_tokenizer)).save_pretrained(tmp_path / "model")
    trainer = NPOTrainer(str(tmp_path / "model"), args=args, train_dataset=forget, retain_dataset=retain,
                         processing_class=muse_tokenizer)
    assert trainer.train_dataset["completion_ids"] == forget["completion_ids"]
    assert len(trainer.retain_dataset) == len(retain)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    assert batch["completion_mask"].sum().item() == sum(len(forget[i]["completion_ids"]) for i in range(2))
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss/retain" in h]
    assert len(logged) == 3 and all(h["loss/retain"] > 0 for h in logged)
