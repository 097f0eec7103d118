"""MUSE data: the real benchmark (hub or a local folder in its layout), the offline synthetic stand-in, the evaluation
sets, and MUSE's chunking of raw text into training rows.

MUSE (Shi et al. 2025, arXiv 2407.06460) has two corpora, `muse-bench/MUSE-News` (BBC news) and
`muse-bench/MUSE-Books` (Harry Potter), each a hub dataset of subsets ("configurations") and splits; `LAYOUT` lists
them with their columns. Books has no `scal` and `sust`.
"""

import os
from collections.abc import Mapping
from pathlib import Path

import datasets

from ..prompts import tokenizer_of

MUSE_HUB_IDS = {"news": "muse-bench/MUSE-News", "books": "muse-bench/MUSE-Books"}
SYNTHETIC = "synthetic"
FORGET_FOLD_SPLITS = tuple(f"forget_{k}" for k in range(1, 5))  # scal (nested) and sust (disjoint)
# subset → (its splits, the string columns each row has)
LAYOUT = {
    "raw": (("forget", "retain1", "retain2", "holdout"), ("text",)),
    "verbmem": (("forget",), ("prompt", "gt")),
    "knowmem": (("forget_qa", "retain_qa", "forget_qa_icl", "retain_qa_icl"), ("question", "answer")),
    "privleak": (("forget", "retain", "holdout"), ("text",)),
    "scal": (FORGET_FOLD_SPLITS, ("text",)),
    "sust": (FORGET_FOLD_SPLITS, ("text",)),
}
# MUSEEvaluator's sets: name → (subset, split)
EVAL_SETS = {
    "verbmem_forget": ("verbmem", "forget"),
    "knowmem_forget": ("knowmem", "forget_qa"),
    "knowmem_forget_icl": ("knowmem", "forget_qa_icl"),
    "knowmem_retain": ("knowmem", "retain_qa"),
    "knowmem_retain_icl": ("knowmem", "retain_qa_icl"),
    "privleak_forget": ("privleak", "forget"),
    "privleak_holdout": ("privleak", "holdout"),
}
DATA_EXTENSIONS = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}


def _local_files(folder: Path, subset: str, split: str) -> tuple[str, list[str]]:
    """(builder, files) of a split in a local folder: `<subset>/<split>.parquet|.jsonl|.json`, or the hub's parquet
    shards `<subset>/<split>-*.parquet`."""
    for extension, builder in DATA_EXTENSIONS.items():
        path = folder / subset / f"{split}{extension}"
        if path.exists():
            return builder, [str(path)]
    shards = sorted((folder / subset).glob(f"{split}-*.parquet"))
    if shards:
        return "parquet", [str(p) for p in shards]
    raise ValueError(f"MUSE split {subset}/{split} is not in {folder}: write it as {subset}/{split}.parquet, .jsonl "
                     f"or .json (the hub's layout; e.g. `datasets.load_dataset('{MUSE_HUB_IDS['news']}', "
                     f"'{subset}', split='{split}').to_parquet(...)`).")


def load_muse(source: str | os.PathLike | Mapping, subset: str, split: str) -> datasets.Dataset:
    """One MUSE split as a `datasets.Dataset`, checked against `LAYOUT`.

    `source` is `"news"` or `"books"` (MUSE's hub datasets, downloaded by `datasets.load_dataset`), a hub id, a
    local folder in the hub's layout (`<folder>/<subset>/<split>.parquet|.jsonl|.json`), `"synthetic"` (the
    default `make_synthetic_muse()`, built offline), or the subsets themselves (`{subset: {split: rows}}`, e.g.
    `make_synthetic_muse(num_forget=32)`).
    """
    if subset not in LAYOUT:
        raise ValueError(f"Unknown MUSE subset {subset!r}: use one of {list(LAYOUT)}.")
    splits, columns = LAYOUT[subset]
    if split not in splits:
        raise ValueError(f"Unknown split {split!r} of MUSE subset {subset!r}: use one of {list(splits)}.")
    source = MUSE_HUB_IDS.get(source.lower(), source) if isinstance(source, str) else source
    if isinstance(source, Mapping):
        if split not in source.get(subset, {}):
            raise ValueError(f"The MUSE data given has no split {subset}/{split}: it has "
                             f"{ {name: list(splits) for name, splits in source.items()} }.")
        dataset = source[subset][split]
        dataset = dataset if isinstance(dataset, datasets.Dataset) else datasets.Dataset.from_list(list(dataset))
    elif source == SYNTHETIC:
        from .synthetic import default_synthetic_muse

        dataset = default_synthetic_muse()[subset][split]
    elif Path(source).is_dir():
        builder, files = _local_files(Path(source), subset, split)
        dataset = datasets.load_dataset(builder, data_files=files, split="train")
    elif isinstance(source, str) and source.count("/") == 1 and not os.path.exists(source):
        dataset = datasets.load_dataset(source, subset, split=split)
    else:
        raise ValueError(f"source={str(source)!r} is neither 'news'/'books' (MUSE's hub datasets), a hub id, "
                         f"{SYNTHETIC!r} (the offline generator) nor an existing folder in MUSE's layout.")
    check_rows(dataset, subset, split, columns)
    return dataset


def check_rows(rows, subset: str, split: str, columns=None) -> None:
    """Refuse a MUSE split without rows or whose rows lack one of its `LAYOUT` columns (or hold a non-string or empty
    value there), naming the row, the column and the fix."""
    columns = columns or LAYOUT[subset][1]
    if len(rows) == 0:
        raise ValueError(f"MUSE split {subset}/{split} is empty: give its rows in MUSE's layout (columns "
                         f"{list(columns)}).")
    names = rows.column_names if isinstance(rows, datasets.Dataset) else list(rows[0])
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(f"MUSE split {subset}/{split} has columns {sorted(names)} but needs {list(columns)}: rename "
                         f"them (e.g. `dataset.rename_column('{names[0]}', '{missing[0]}')`).")
    for index, row in enumerate(rows):
        for column in columns:
            if not isinstance(row[column], str) or not row[column].strip():
                raise ValueError(f"MUSE split {subset}/{split}, row {index}: column {column!r} must be a non-empty "
                                 f"string, got {row[column]!r:.80}.")


def muse_eval_sets(source: str | os.PathLike | Mapping, privleak: bool = True) -> dict[str, datasets.Dataset]:
    """The evaluation sets `MUSEEvaluator` takes (`EVAL_SETS`: VerbMem's forget prompts, KnowMem's forget and retain
    questions with their few-shot examples, PrivLeak's forget and holdout texts), read from `source` as `load_muse`
    reads it; `privleak=False` leaves out the PrivLeak sets."""
    return {name: load_muse(source, subset, split) for name, (subset, split) in EVAL_SETS.items()
            if privleak or subset != "privleak"}


def chunk_texts(texts, processing_class, max_length: int, join: bool = True) -> datasets.Dataset:
    """Raw documents as NPOTrainer's training rows, by MUSE's rule: the texts joined with a blank line ("\\n\\n"),
    tokenized once without special tokens, and cut into consecutive pieces of `max_length` − 1 tokens, each behind
    the tokenizer's BOS token (a piece of `max_length` when it has none). Every token is trained on, once: the
    last piece is kept short (MUSE's own code fills it by wrapping around to the first tokens; open-unlearning, like
    this, does not). A text longer than `max_length` thus spans several rows, where NPOTrainer would cut a `text`
    row at `max_length` (its `truncation_mode`). `join=False` cuts each text on its own, so that no row spans two
    documents (for a model trained on one document per sequence).

    The rows are tokenized already (`prompt_ids` = [BOS], `completion_ids` = the piece), which NPOTrainer takes as
    they are for the forget and the retain set, and the retain stream draws among them like any rows.
    """
    tokenizer = tokenizer_of(processing_class)
    texts = list(texts)
    if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
        raise ValueError("chunk_texts needs non-empty strings (a MUSE raw split's `text` column).")
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    if max_length < len(bos) + 2:
        raise ValueError(f"max_length={max_length} leaves no room for a piece of >= 2 tokens after the BOS token: "
                         f"use >= {len(bos) + 2}.")
    size = max_length - len(bos)
    pieces = []
    for ids in tokenizer(["\n\n".join(texts)] if join else texts, add_special_tokens=False)["input_ids"]:
        pieces += [ids[start:start + size] for start in range(0, len(ids), size)]
    return datasets.Dataset.from_dict({"prompt_ids": [bos] * len(pieces), "completion_ids": pieces})
