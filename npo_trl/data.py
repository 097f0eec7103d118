"""Forget/retain data for `NPOTrainer`: accepted formats, collation, and the retain-row stream.

A forget (or retain) dataset is one of TRL's formats, plain or conversational:

- prompt + completion: the completion is the answer to forget (or to keep);
- text (or messages): language-model unlearning of a document, every token counts (for messages, the last
  message is the completion and the earlier ones the prompt);
- prompt + rejected (+ chosen): a preference dataset's rejected answers used as the forget answers; its chosen
  answers serve as replacement answers for `forget_loss="idk"`/`"dpo"`.

Conversational rows may carry a `chat_template_kwargs` column (e.g. a fixed `date_string`), which TRL passes to the
chat template when it tokenizes them.
"""

import random
from dataclasses import dataclass
from typing import Any

import torch
from transformers.data.data_collator import DataCollatorMixin
from trl.trainer.utils import pad

ACCEPTED_FORMATS = "prompt+completion, text, messages, or prompt+rejected (+chosen)"


def _is_messages(value) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)


def _check_field(value, field: str, row: int, conversational: bool, dataset_name: str) -> None:
    """Refuse a value of the wrong type before it reaches the tokenizer (where the error would be opaque)."""
    if value is None:
        raise ValueError(f"{dataset_name} dataset, row {row}: field '{field}' is None; give a string (or messages).")
    if conversational:
        if not _is_messages(value):
            raise ValueError(
                f"{dataset_name} dataset, row {row}: field '{field}' must be a list of {{'role', 'content'}} messages "
                f"like the dataset's first row (conversational), got {type(value).__name__}: {value!r:.80}. Do not "
                "mix plain and conversational rows."
            )
        for message in value:
            if not isinstance(message["content"], str):
                raise ValueError(
                    f"{dataset_name} dataset, row {row}: a message of field '{field}' has non-string content "
                    f"{message['content']!r:.80}."
                )
    elif not isinstance(value, str):
        raise ValueError(
            f"{dataset_name} dataset, row {row}: field '{field}' must be a string like the dataset's first row, "
            f"got {type(value).__name__}: {value!r:.80}. Do not mix plain and conversational rows."
        )


def _is_empty(value) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return not any(m["content"].strip() for m in value)


def _format_columns(rows: list[dict[str, Any]], dataset_name: str) -> tuple[str | None, str]:
    """(prompt column or None, completion column) of a dataset in one of the accepted formats."""
    if not rows:
        raise ValueError(f"The {dataset_name} dataset is empty.")
    columns = set(rows[0])
    if {"prompt", "completion"} <= columns:
        prompt_key, completion_key = "prompt", "completion"
    elif {"prompt", "rejected"} <= columns:
        prompt_key, completion_key = "prompt", "rejected"
    elif "text" in columns:
        prompt_key, completion_key = None, "text"
    elif "messages" in columns:
        prompt_key, completion_key = None, "messages"
    else:
        raise ValueError(
            f"The {dataset_name} dataset has columns {sorted(columns)}; NPOTrainer accepts {ACCEPTED_FORMATS}. "
            "Rename your columns (e.g. `dataset.rename_columns({'question': 'prompt', 'answer': 'completion'})`)."
        )
    return prompt_key, completion_key


def to_unlearning_rows(
    rows: list[dict[str, Any]],
    dataset_name: str,
    replacement_column: str | None = None,
    replacement_answers: list[str] | None = None,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """Normalise rows of any accepted format to `prompt`, `completion` (+ `replacement`) and their row index.

    Rows whose completion is empty are left out; their count is returned so that the caller warns once.
    With `replacement_column` set, every kept row gets a replacement answer: from that column, a preference
    dataset's `chosen`, or `replacement_answers` (one drawn per row, seeded by `seed` and the row index).
    """
    prompt_key, completion_key = _format_columns(rows, dataset_name)
    conversational = _is_messages(rows[0][completion_key])
    if replacement_column is not None:
        source = next((c for c in (replacement_column, "chosen") if c in rows[0]), None)
        if source is None and not replacement_answers:
            raise ValueError(
                f"forget_loss needs a replacement answer for each {dataset_name} row: add a "
                f"'{replacement_column}' column (NPOConfig.replacement_column), use a preference dataset with "
                "'chosen', or set NPOConfig.replacement_answers (e.g. the lines of TOFU's idontknow.jsonl)."
            )
        answers = [a for a in (replacement_answers or []) if a and a.strip()]

    out, num_empty = [], 0
    for index, row in enumerate(rows):
        missing = [k for k in (prompt_key, completion_key) if k is not None and k not in row]
        if missing:
            raise ValueError(f"{dataset_name} dataset, row {index}: missing field(s) {missing}.")
        completion = row[completion_key]
        _check_field(completion, completion_key, index, conversational, dataset_name)
        if completion_key == "messages":
            prompt, completion = completion[:-1], completion[-1:]
        elif prompt_key is None:
            prompt = ""
        else:
            prompt = row[prompt_key]
            _check_field(prompt, prompt_key, index, conversational, dataset_name)
        if _is_empty(completion):
            num_empty += 1
            continue
        new = {"prompt": prompt, "completion": completion, "row_index": index}
        if conversational and row.get("chat_template_kwargs"):  # TRL passes them to the chat template
            new["chat_template_kwargs"] = row["chat_template_kwargs"]
        if replacement_column is not None:
            if source is not None:
                replacement = row[source]
                _check_field(replacement, source, index, conversational, dataset_name)
            else:
                replacement = random.Random(f"{seed}-{index}").choice(answers)
                if conversational:
                    replacement = [{"role": "assistant", "content": replacement}]
            new["replacement"] = replacement
        out.append(new)
    return out, num_empty


@dataclass
class DataCollatorForUnlearning(DataCollatorMixin):
    """Pads tokenized forget or retain rows into one batch, like TRL's `DataCollatorForPreference`.

    Each example holds `prompt_ids` and `completion_ids`, and optionally `replacement_ids`. The batch stacks the
    replacement sequences first (when present), then the completion sequences, as DPO stacks [chosen; rejected]:
    the forget answer plays DPO's rejected answer, the replacement its chosen one. Precomputed reference log-probs
    (`ref_chosen_logps` for replacements, `ref_rejected_logps` for completions, TRL's column names) and
    `row_index` pass through.
    """

    pad_token_id: int
    max_length: int | None = None
    truncation_mode: str = "keep_start"
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        keys = [k for k in ("replacement_ids", "completion_ids") if k in examples[0]]
        sequences = [ex["prompt_ids"] + ex[k] for k in keys for ex in examples]
        masks = [[0] * len(ex["prompt_ids"]) + [1] * len(ex[k]) for k in keys for ex in examples]
        if self.max_length is not None:
            if self.truncation_mode == "keep_start":
                sl = slice(None, self.max_length)
            elif self.truncation_mode == "keep_end":
                sl = slice(-self.max_length, None)
            else:
                raise ValueError(f"truncation_mode={self.truncation_mode!r}: use 'keep_start' or 'keep_end'.")
            sequences, masks = [s[sl] for s in sequences], [m[sl] for m in masks]

        def padded(rows, value):
            tensors = [torch.tensor(r, dtype=torch.long) for r in rows]
            return pad(tensors, padding_value=value, padding_side="right", pad_to_multiple_of=self.pad_to_multiple_of)

        batch = {
            "input_ids": padded(sequences, self.pad_token_id),
            "attention_mask": padded([[1] * len(s) for s in sequences], 0),
            "completion_mask": padded(masks, 0),
        }
        for key in ("ref_chosen_logps", "ref_rejected_logps", "row_index"):
            if key in examples[0]:
                batch[key] = torch.tensor([ex[key] for ex in examples])
        return batch


def unstack(values: torch.Tensor, paired: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(replacements, completions) of a per-sequence tensor of a batch that `DataCollatorForUnlearning` stacked as
    [replacements; completions] (`paired`, rows with `replacement_ids`), else (None, the completions)."""
    return tuple(values.chunk(2)) if paired else (None, values)


class RetainStream:
    """The retain rows every micro-batch sees: a pure function of (seed, global micro-batch index).

    The rows form one endless stream of seeded permutations of the retain set. Micro-batch k takes the k-th
    block of `batch_size` rows, with k numbered as the forget batches are dealt by accelerate: k = (step ·
    grad_accum + micro) · world_size + rank. So ranks draw different rows, a resumed run draws exactly what an
    uninterrupted one would, and 1 process × grad_accum 2 sees the same rows per optimizer step as 2 processes.
    """

    def __init__(self, num_rows: int, batch_size: int, seed: int):
        if num_rows < 1:
            raise ValueError("The retain dataset has no rows left after preparation.")
        self.num_rows, self.batch_size, self.seed = num_rows, batch_size, seed
        self._cycle, self._perm = None, None

    def _row(self, position: int) -> int:
        cycle, offset = divmod(position, self.num_rows)
        if cycle != self._cycle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + cycle)
            self._cycle, self._perm = cycle, torch.randperm(self.num_rows, generator=generator).tolist()
        return self._perm[offset]

    def indices(self, micro_batch: int) -> list[int]:
        start = micro_batch * self.batch_size
        return [self._row(p) for p in range(start, start + self.batch_size)]
