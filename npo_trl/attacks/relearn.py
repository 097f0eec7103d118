"""The relearning attack (Hu et al. 2024, "Jogging the memory of unlearned LLMs", arXiv 2406.13356; Fan et al. ICML
2025, arXiv 2502.05374): a few fine-tuning steps on part of the forget set, after which the forget metrics are measured
on the other part, which the attack never trained on. Unlearning that only hid the knowledge gives it back.

Relearning also teaches a model that never saw the data, so an attack is a leak only where the unlearned model
recovers more than the retain model under the same attack: run it on that model too (issue 24's baselines). The
benign variant relearns on retain or unrelated rows only: pass those as `rows`."""

import copy
import gc
import os
import tempfile
from collections.abc import Callable, Hashable

import numpy as np
import torch
from datasets import Dataset

# The papers relearn 7B models briefly (tens of steps, or a few epochs over a small relearn set) at learning rates of
# the order of their fine-tuning's; these defaults keep that order: 20 steps at 1e-5, TOFU's fine-tuning learning rate
# for Llama-2-7B. A smaller model (the offline tiny default) needs the learning rate it was fine-tuned at.
RELEARN_STEPS = 20
RELEARN_LEARNING_RATE = 1e-5
RELEARN_FRACTION = 0.5


def split_forget_rows(rows, fraction: float = RELEARN_FRACTION, seed: int = 0,
                      group_key: str | Callable[[int, dict], Hashable] | None = None):
    """(relearn rows, evaluation rows): a seeded split of the forget rows into two disjoint parts, the first with
    about `fraction` of them.

    With `group_key` the split is made within each group, so that the attack relearns some questions of every author
    (TOFU) or document (MUSE) and is evaluated on the others: `group_key` is a column name, or a function of (row
    index, row) giving the group (TOFU's files hold each author's 20 questions in a row: `lambda i, row: i // 20`). A
    group of n ≥ 2 rows gives round(fraction · n) of them, at least 1 and at most n − 1, to relearning; a group of one
    row goes to relearning if fraction ≥ 0.5. `rows` is a `datasets.Dataset` or a list of dicts; both parts are of
    the same kind, in the rows' order.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction={fraction!r}: the relearn part's share of the forget rows must lie strictly "
                         "between 0 and 1 (default 0.5), so that both the relearn and the evaluation part have rows.")
    rows_list = list(rows)
    groups: dict[Hashable, list[int]] = {}
    for index, row in enumerate(rows_list):
        if group_key is None:
            group = None
        elif callable(group_key):
            group = group_key(index, row)
        else:
            if group_key not in row:
                raise ValueError(f"group_key={group_key!r} is not a column of the rows ({sorted(row)}): name a column "
                                 "that gives each row's group, or pass a function of (index, row).")
            group = row[group_key]
        groups.setdefault(group, []).append(index)
    rng = np.random.default_rng(seed)
    relearn = []
    for indices in groups.values():
        shuffled = [indices[j] for j in rng.permutation(len(indices))]
        count = int(np.floor(fraction * len(indices) + 0.5))
        if len(indices) >= 2:
            count = min(max(count, 1), len(indices) - 1)
        relearn += shuffled[:count]
    relearn = sorted(relearn)
    chosen = set(relearn)
    evaluate = [i for i in range(len(rows_list)) if i not in chosen]
    for name, part in (("relearn", relearn), ("evaluation", evaluate)):
        if not part:
            raise ValueError(f"The {name} part of the split of {len(rows_list)} forget rows is empty (fraction="
                             f"{fraction}, {len(groups)} groups): give more rows, a fraction nearer 0.5, or groups of "
                             "at least 2 rows.")
    if isinstance(rows, Dataset):
        return rows.select(relearn), rows.select(evaluate)
    return [rows_list[i] for i in relearn], [rows_list[i] for i in evaluate]


def relearn_copy(model, tokenizer, rows, steps: int = RELEARN_STEPS, learning_rate: float = RELEARN_LEARNING_RATE,
                 batch_size: int = 4, seed: int = 0, peft_config=None, **sft_kwargs):
    """A copy of `model` fine-tuned with TRL's `SFTTrainer` for `steps` optimizer steps at a constant `learning_rate`
    on `rows`, in eval mode; the input model is never changed.

    `model` is a model in memory (deep-copied: one extra copy, which the caller frees by dropping the result) or a
    saved model's folder (loaded by the trainer). `rows` are prompt/completion rows (a `Dataset` or a list of dicts)
    in the evaluation's prompt format, e.g. `npo_trl.tofu.to_prompt_completion` of a `split_forget_rows` relearn part
    (the loss is on the completion, as TRL does for such rows), or text rows (`text`: raw documents such as MUSE's,
    every token trained on). Batches of `batch_size` rows, cycled over `rows` for as
    many epochs as `steps` need, in float32, without activation checkpointing; `peft_config` relearns LoRA adapters
    instead of all the weights (they are merged into the returned copy). `sft_kwargs` override `SFTConfig`'s fields.

    Defaults (`RELEARN_STEPS` = 20, `RELEARN_LEARNING_RATE` = 1e-5): Hu et al. 2024 (arXiv 2406.13356) and Fan et
    al. 2025 (arXiv 2502.05374) relearn 7B models briefly, at learning rates of the order of their fine-tuning's; 1e-5
    is TOFU's fine-tuning learning rate for Llama-2-7B. Scale the learning rate to the model: a tiny model fine-tuned
    at 1e-3 relearns at 1e-3 (the tests relearn one in 10 steps).

    The trainer runs on this process alone: call it outside a multi-process launch (`RobustnessEvaluator` refuses it
    under several processes).
    """
    from trl import SFTConfig, SFTTrainer

    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps={steps!r}: relearning needs a whole number of optimizer steps >= 1.")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate={learning_rate!r}: use a positive learning rate, e.g. the model's "
                         "fine-tuning learning rate.")
    dataset = rows if isinstance(rows, Dataset) else Dataset.from_list(list(rows))
    if len(dataset) == 0 or not ({"prompt", "completion"} <= set(dataset.column_names)
                                 or "text" in dataset.column_names):
        raise ValueError(f"rows ({len(dataset)} rows, columns {dataset.column_names}) must be non-empty prompt/"
                         "completion rows (convert TOFU rows with npo_trl.tofu.to_prompt_completion) or text rows "
                         "(a `text` column: raw documents, every token trained on).")
    copied = os.fspath(model) if isinstance(model, (str, os.PathLike)) else copy.deepcopy(model)
    with tempfile.TemporaryDirectory(prefix="npo_trl_relearn_") as output_dir:
        config = SFTConfig(**{
            "output_dir": output_dir, "max_steps": steps, "learning_rate": learning_rate,
            "lr_scheduler_type": "constant", "warmup_steps": 0, "per_device_train_batch_size": batch_size,
            "gradient_accumulation_steps": 1, "seed": seed, "bf16": False, "fp16": False,
            "activation_checkpointing": False, "save_strategy": "no", "report_to": "none", "logging_steps": steps,
            "dataloader_pin_memory": torch.accelerator.is_available(),
            "disable_tqdm": True, "model_init_kwargs": {"dtype": "float32"} if isinstance(copied, str) else None,
            **sft_kwargs})
        trainer = SFTTrainer(copied, args=config, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=peft_config)
        with torch.enable_grad():  # also when called inside an evaluation
            trainer.train()
        relearned = trainer.accelerator.unwrap_model(trainer.model)
        del trainer, copied
    if peft_config is not None:
        relearned = relearned.merge_and_unload()
    gc.collect()
    if torch.accelerator.is_available():
        torch.accelerator.empty_cache()
    return relearned.eval()


class RelearnAttack:
    r"""
    The relearning attack as `RobustnessEvaluator` runs it: `attack(model)` is `relearn_copy(model, ...)`.

    Parameters:
        processing_class ([`~transformers.PreTrainedTokenizerBase`]):
            The model's tokenizer.
        rows (`Dataset` or `list[dict]`):
            Prompt/completion relearn rows (see `relearn_copy`); evaluate on rows disjoint from them
            (`split_forget_rows`). Retain or unrelated rows make the benign variant.
        steps (`int`, *optional*, defaults to `RELEARN_STEPS`), learning_rate (`float`, *optional*, defaults to
        `RELEARN_LEARNING_RATE`):
            The relearning budget (`relearn_copy` says where the defaults come from).
        name (`str`, *optional*, defaults to `"relearn"`):
            The attack's name in the metric keys (`attack/<name>/...`), e.g. `"relearn_benign"`.
        relearn_kwargs:
            More arguments of `relearn_copy` (batch_size, seed, peft_config, SFTConfig fields).
    """

    runs_under_several_processes = False

    def __init__(self, processing_class, rows, steps: int = RELEARN_STEPS,
                 learning_rate: float = RELEARN_LEARNING_RATE, name: str = "relearn", **relearn_kwargs):
        self.processing_class, self.rows, self.name = processing_class, rows, name
        self.kwargs = {"steps": steps, "learning_rate": learning_rate, **relearn_kwargs}

    def __call__(self, model):
        return relearn_copy(model, self.processing_class, self.rows, **self.kwargs)
