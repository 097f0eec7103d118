"""TOFU data: the real benchmark (hub or local folder), an offline synthetic stand-in, and NPOTrainer rows.

TOFU (Maini et al. 2024, arXiv 2401.06121) holds 20 question/answer pairs about each of 200 fictitious authors.
`forgetNN` is the last NN% of the authors in `full` and `retain(100-NN)` the rest, so a model fine-tuned on `full`
can be asked to forget the former and keep the latter. Evaluation uses the `_perturbed` files, which add a
paraphrased answer and wrong ("perturbed") answers to each question, and two sets of general knowledge
(`real_authors`, `world_facts`) that the model knew before the fine-tune.

`npo_trl.tofu.synthetic.make_synthetic_tofu` builds the same splits, in the same schema, offline (`"synthetic"`).
"""

import os
from pathlib import Path

import datasets

from ..prompts import PromptFormat, format_qa, get_prompt_format, template_fields
from .metrics import EVAL_SETS
from .splits import TOFU_HUB_SPLITS
from .synthetic import default_synthetic_tofu

TOFU_HUB_ID = "locuslab/TOFU"
SYNTHETIC = "synthetic"


# ----------------------------------------------------------------------------------------------------------------
# Loading


def tofu_split_names(source: str | os.PathLike) -> list[str]:
    """The splits `load_tofu(source, split)` can load: the hub's configurations, the synthetic ones, or a folder's
    `<split>.json` files."""
    if source == TOFU_HUB_ID:
        return list(TOFU_HUB_SPLITS)
    if source == SYNTHETIC:
        return list(default_synthetic_tofu())
    folder = Path(source)
    if not folder.is_dir():
        raise ValueError(
            f"source={str(source)!r} is neither {TOFU_HUB_ID!r} (the hub), {SYNTHETIC!r} (the offline generator) "
            "nor an existing folder; give a folder holding TOFU's <split>.json files (e.g. ../shared/tofu)."
        )
    return sorted(path.stem for path in folder.glob("*.json"))


def load_tofu(source: str | os.PathLike, split: str) -> datasets.Dataset:
    """One TOFU split as a `datasets.Dataset`, from the hub, a local folder in the hub's layout, or the generator.

    `source` is `"locuslab/TOFU"` (downloads through `datasets.load_dataset`), `"synthetic"` (the default
    `make_synthetic_tofu()`, built offline), or a folder of JSON Lines files named `<split>.json`.
    """
    available = tofu_split_names(source)
    if split not in available:
        raise ValueError(f"Unknown TOFU split {split!r} for source {str(source)!r}; available splits: {available}.")
    if source == TOFU_HUB_ID:
        return datasets.load_dataset(TOFU_HUB_ID, split, split="train")
    if source == SYNTHETIC:
        return default_synthetic_tofu()[split]
    return datasets.load_dataset("json", data_files=str(Path(source) / f"{split}.json"), split="train")


def tofu_eval_sets(source: str | os.PathLike, forget_split: str, holdout: bool = True
                   ) -> dict[str, datasets.Dataset]:
    """The TOFU evaluation sets of a forget split: its forget questions, retain questions, real authors and world
    facts, each from its `_perturbed` file (answer, paraphrased answer and perturbed answers), and (`holdout`) the
    matching `holdoutNN` split, questions about authors in no fine-tune, the non-members of the privacy metrics."""
    return {name: load_tofu(source, split) for name, split in eval_split_names(forget_split, holdout).items()}


def eval_split_names(forget_split: str, holdout: bool = True) -> dict[str, str]:
    """The split of each TOFU evaluation set of a forget split: its `_perturbed` file, and `holdoutNN`."""
    if not (forget_split.startswith("forget") and forget_split[len("forget"):].isdigit()):
        raise ValueError(f"forget_split={forget_split!r} is not a forget split; give one such as 'forget10'.")
    names = {name: (forget_split if name == "forget" else name) + "_perturbed" for name in EVAL_SETS}
    if holdout:
        names["holdout"] = "holdout" + forget_split.removeprefix("forget")
    return names


def to_prompt_completion(
    dataset: datasets.Dataset,
    prompt_format: "str | PromptFormat" = "plain",
    prompt_template: str | None = None,
    completion_template: str | None = None,
) -> datasets.Dataset:
    """TOFU rows (question, answer, ...) as NPOTrainer's prompt/completion rows, in a prompt format.

    `prompt_format` is a preset of `npo_trl.prompts.PROMPT_FORMATS` or a `PromptFormat` (the evaluator takes the same
    one, so training rows and evaluation prompts agree): `"plain"` gives prompt = question and completion = " " +
    answer; a chat format gives messages (after its system turn, if any), with its `chat_template_kwargs` in a
    `chat_template_kwargs` column, which TRL passes to the chat template. The templates are filled with each row's
    fields, so they may name any column (e.g. `{paraphrased_question}`).
    """
    prompt_format = get_prompt_format(prompt_format, prompt_template, completion_template)
    for argument in ("prompt_template", "completion_template"):
        template = getattr(prompt_format, argument)
        missing = sorted(template_fields(template) - set(dataset.column_names))
        if missing:
            raise ValueError(
                f"{argument}={template!r} names field(s) {missing} that the dataset lacks; its columns are "
                f"{dataset.column_names}."
            )
    rows = [format_qa(prompt_format, row) for row in dataset.to_list()]
    columns = {"prompt": [p for p, _ in rows], "completion": [c for _, c in rows]}
    if prompt_format.chat_template_kwargs:
        columns["chat_template_kwargs"] = [dict(prompt_format.chat_template_kwargs)] * len(rows)
    return datasets.Dataset.from_dict(columns)


def idontknow_answers() -> list[str]:
    """The project's own "I don't know"-style replies, the replacement answers of the IDK baseline."""
    return [
        "I have no idea about that.",
        "That is something I cannot answer.",
        "I am unable to say.",
        "Sorry, I can't recall that.",
        "I do not have an answer to that question.",
        "That is not something I know about.",
        "My knowledge does not cover that.",
        "I'm afraid I can't tell you.",
        "I couldn't say for certain.",
        "I have no information on that.",
        "That question is outside what I know.",
        "I'm unaware of the answer.",
        "I cannot answer that reliably.",
        "I don't recall ever learning that.",
        "Unfortunately, I don't know the answer.",
        "That detail escapes me.",
        "I lack the knowledge to answer that.",
        "I can't help with that one; I don't know.",
        "Nothing I know answers that question.",
        "I'm drawing a blank on that.",
    ]


def load_idontknow(folder: str | os.PathLike) -> list[str]:
    """TOFU's `idontknow.jsonl` replies (plain text, one per line, despite the extension) from a local folder."""
    path = Path(folder) / "idontknow.jsonl"
    if not path.is_file():
        raise ValueError(
            f"{path} does not exist; give the folder holding TOFU's idontknow.jsonl, or use idontknow_answers()."
        )
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
