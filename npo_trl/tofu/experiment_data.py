"""The TOFU data of one experiment (examples/tofu.py): the splits of a forget split, from the offline generator, a
local folder in TOFU's layout or the hub, optionally cut to fewer authors; the evaluation sets among them; what each
stage trains on (the base model's general knowledge, the fine-tunes' rows); the IDK baseline's replies; and the text a
tokenizer built for the data is trained on.

`load_splits` names the splits by their role: `full`, `forget`, `retain` (training), `eval_forget`, `eval_retain`,
`eval_real_authors`, `eval_world_facts` and `eval_holdout` (the evaluation sets, `evaluation_sets` strips the prefix),
and `general_knowledge` (what a base model built here is pre-trained on).
"""

import os

import datasets

from .data import eval_split_names, idontknow_answers, load_idontknow, load_tofu
from .synthetic import make_synthetic_tofu

FACT_SETS = ("real_authors", "world_facts")  # the knowledge a pre-trained model has before the fine-tune


def load_splits(dataset: str = "synthetic", forget_split: str = "forget10", *, num_authors: int | None = None,
                qa_per_author: int = 20, holdout: bool = True) -> dict[str, datasets.Dataset]:
    """The splits of `forget_split` (see the module docstring for their names), from `dataset`: `"synthetic"` (the
    offline generator, with `num_authors` authors, default 100, of `qa_per_author` questions), a local folder in
    TOFU's layout, or `"locuslab/TOFU"`. On TOFU's own files, `num_authors` cuts them with `keep_authors`, and
    `general_knowledge` is `known_facts`. `holdout` adds `eval_holdout`, the privacy metrics' non-members."""
    names = {f"eval_{key}": name for key, name in eval_split_names(forget_split, holdout).items()}
    names.update(full="full", forget=forget_split, retain=f"retain{100 - int(forget_split.removeprefix('forget'))}")
    if dataset == "synthetic":
        data = make_synthetic_tofu(num_authors or 100, qa_per_author, seed=0)
        splits = {key: data[name] for key, name in names.items()}
        splits["general_knowledge"] = data["general_knowledge"]
        return splits
    splits = {key: load_tofu(dataset, name) for key, name in names.items()}
    if num_authors is not None:
        splits = keep_authors(splits, num_authors, qa_per_author)
    return {**splits, "general_knowledge": known_facts(splits)}


def keep_authors(splits: dict[str, datasets.Dataset], num_authors: int, qa_per_author: int
                 ) -> dict[str, datasets.Dataset]:
    """TOFU's files (200 authors of `qa_per_author` questions, `full` in author order, the forget split its last
    authors) cut to `num_authors` authors: every forget author, then the first `num_authors` − forget authors of
    `full`, so that full = retain + forget stays consistent. `full`, `retain` and `eval_retain` are cut alike (the
    retain evaluation set keeps its rows of the authors kept: it covers the first 20 authors of `full`); the forget
    sets are kept whole."""
    num_forget = len(splits["forget"]) // qa_per_author
    if not num_forget < num_authors <= len(splits["full"]) // qa_per_author:
        raise ValueError(f"num_authors={num_authors} must exceed the forget split's {num_forget} authors and be at "
                         f"most the {len(splits['full']) // qa_per_author} of `full`.")
    retain = splits["retain"].select(range((num_authors - num_forget) * qa_per_author))
    kept = set(retain["question"])
    return {**splits, "retain": retain, "full": datasets.concatenate_datasets([retain, splits["forget"]]),
            "eval_retain": splits["eval_retain"].filter(lambda row: row["question"] in kept)}


def evaluation_sets(splits: dict[str, datasets.Dataset]) -> dict[str, datasets.Dataset]:
    """The evaluation sets among `splits`, by the names `TOFUEvaluator` takes (`forget`, `retain`, `real_authors`,
    `world_facts`, and `holdout` when loaded)."""
    return {key.removeprefix("eval_"): split for key, split in splits.items() if key.startswith("eval_")}


def known_facts(splits: dict[str, datasets.Dataset]) -> datasets.Dataset:
    """The real-author and world-fact questions and answers of the evaluation sets: what a pre-trained model knows
    before the fine-tune, and what model utility's `real_authors` and `world_facts` components measure."""
    return datasets.concatenate_datasets([splits[f"eval_{name}"].select_columns(["question", "answer"])
                                          for name in FACT_SETS])


def fine_tune_rows(authors: datasets.Dataset, splits: dict[str, datasets.Dataset], built_in: bool
                   ) -> datasets.Dataset:
    """The rows of a fine-tune on `authors` (e.g. `full`, or `retain` for the retain model): their questions and
    answers. With `built_in` (the base is a tiny model built here, which would otherwise lose them in the fine-tune)
    also `known_facts`, so that its model utility has something to measure. A real base model keeps its own
    knowledge: its fine-tunes never see the real-author and world-fact evaluation rows, which model utility scores."""
    rows = authors.select_columns(["question", "answer"])
    return datasets.concatenate_datasets([rows, known_facts(splits)]) if built_in else rows


def idk_answers(dataset: str) -> list[str]:
    """The replacement answers of the IDK baseline: TOFU's `idontknow.jsonl` when `dataset` is a folder holding it,
    else the project's own replies (`idontknow_answers`)."""
    if os.path.isfile(os.path.join(dataset, "idontknow.jsonl")):
        return load_idontknow(dataset)
    return idontknow_answers()


def tokenizer_corpus(*splits: datasets.Dataset) -> list[str]:
    """Every string of every row of `splits` (questions, answers, and each string of a list column such as
    `perturbed_answer`): the text a tokenizer built for the data (`npo_trl.stages.train_tokenizer`) is trained on."""
    texts = []
    for split in splits:
        for row in split:
            texts += [value for value in row.values() if isinstance(value, str)]
            texts += [v for values in row.values() if isinstance(values, list) for v in values if isinstance(v, str)]
    return texts
