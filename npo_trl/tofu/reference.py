"""The retain model's statistics that forget quality compares with: computed here, or read from published logs.

Forget quality needs, for each forget row, the truth ratio R = (Π_j P(perturbed_j))^(1/n) / P(paraphrased) of a
model never trained on the forget set (the retain model). `load_reference_stats` reads three formats:

- **npo-trl** (`compute_reference_stats(..., cache_path=...)`): R for exactly the rows, format and token boundary
  evaluated, checked by a fingerprint of them.
- **open-unlearning**'s `TOFU_EVAL.json` of a retain model: `forget_truth_ratio.value_by_index["i"].score` is R of
  row i of the forget split (same direction as ours). Its `forget_Q_A_ROUGE.value_by_index["i"].ground_truth`, when
  present, is compared with the forget rows' answers to check the order.
- **TOFU / NPO repositories**' `eval_log_forget.json`, or `eval_log_aggregated.json` holding it: per-row
  length-normalised losses `avg_paraphrased_loss` and `average_perturb_loss` (dicts keyed by row, or lists in the NPO
  repository), from which R = exp(paraphrased loss − mean perturbed loss); `generated_text["i"][2]` (ground truth),
  when present, checks the order.

External logs hold one value per row of the whole forget split, in its order: the evaluated forget set must be that
split (any `max_samples` subset is then taken from them row for row).
"""

import json
import os
from typing import Any

import numpy as np

from ..eval.runner import eval_mode
from ..prompts import get_prompt_format
from .eval_sets import TOFUEvalSet, score_eval_set
from .metrics import truth_ratios

SOURCES = ("npo-trl", "open-unlearning", "tofu")


def _model_id(model) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "_name_or_path", None) or None


def compute_reference_stats(model, processing_class, forget_eval_set, *, max_samples=None, seed=0, batch_size=8,
                            prompt_format="plain", prompt_template=None, completion_template=None,
                            token_boundary="common_prefix", mask_pad_tokens=False, cache_path=None,
                            accelerator=None) -> dict[str, Any]:
    """The retain model's truth ratios on the forget set: what forget quality compares the unlearned model with.

    `model` is the retain model (fine-tuned without the forget set; TOFU publishes one per split), a plain model on
    `accelerator.device` when `accelerator` is given (each process then scores a shard of the rows). Under DeepSpeed
    ZeRO-3, load it before creating the training arguments, or later loads partition it for a DeepSpeed engine.
    Use the evaluation's `max_samples`, `seed`, format (`prompt_format`, templates), `token_boundary` and
    `mask_pad_tokens`. With `cache_path`, statistics saved there for the same rows and model are loaded instead of
    recomputed, and new ones are saved there (JSON).
    """
    forget = TOFUEvalSet("forget", forget_eval_set, processing_class, max_samples, seed,
                         get_prompt_format(prompt_format, prompt_template, completion_template),
                         token_boundary=token_boundary)
    if cache_path is not None and os.path.exists(cache_path):
        stats = load_reference_stats(cache_path)
        if stats.get("fingerprint") == forget.fingerprint and stats.get("model") == _model_id(model) and \
                stats.get("mask_pad_tokens", False) == mask_pad_tokens:
            return stats
    with eval_mode(model):
        scores = score_eval_set(model, processing_class, forget, batch_size=batch_size, generate=False,
                                accelerator=accelerator, mask_pad_tokens=mask_pad_tokens)
    stats = {
        "source": "npo-trl",
        "truth_ratios": scores["truth_ratios"].tolist(),
        "fingerprint": forget.fingerprint,
        "num_rows": len(forget),
        "max_samples": max_samples,
        "seed": seed,
        "prompt_format": forget.prompt_format.to_dict(),
        "token_boundary": token_boundary,
        "mask_pad_tokens": mask_pad_tokens,
        "model": _model_id(model),
    }
    if cache_path is not None and (accelerator is None or accelerator.is_main_process):
        os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
        with open(cache_path, "w") as f:
            json.dump(stats, f, indent=1)
    return stats


def _by_row(values, what: str, path) -> list:
    """Per-row values of a log: a dict keyed by row number ("0", "1", ...) in row order, or a list."""
    if isinstance(values, list):
        return values
    if not isinstance(values, dict) or not all(str(k).isdigit() for k in values):
        raise ValueError(f"{path}: {what} must map row numbers to values (or be a list), got {str(values):.80}.")
    rows = sorted(values, key=int)
    if [int(k) for k in rows] != list(range(len(rows))):
        raise ValueError(f"{path}: {what} has rows {rows[:3]}...{rows[-3:]}, not 0..{len(rows) - 1}: a log of every "
                         "row of the forget split is needed.")
    return [values[k] for k in rows]


def _open_unlearning_stats(log: dict, path) -> dict[str, Any]:
    entries = _by_row(log["forget_truth_ratio"].get("value_by_index"), "forget_truth_ratio.value_by_index", path)
    ratios = [entry.get("score") if isinstance(entry, dict) else None for entry in entries]
    if any(not isinstance(r, (int, float)) for r in ratios):
        raise ValueError(f"{path}: forget_truth_ratio.value_by_index entries need a numeric 'score'.")
    answers = None
    rouge = log.get("forget_Q_A_ROUGE", {}).get("value_by_index") if isinstance(log.get("forget_Q_A_ROUGE"), dict) \
        else None
    if rouge:
        answers = [entry.get("ground_truth") if isinstance(entry, dict) else None
                   for entry in _by_row(rouge, "forget_Q_A_ROUGE.value_by_index", path)]
    return {"source": "open-unlearning", "truth_ratios": [float(r) for r in ratios], "answers": _all_or_none(answers)}


def _all_or_none(answers):
    """The logged answers, if the log holds every row's as text (then they check the row order); else None."""
    return answers if answers is not None and all(isinstance(a, str) for a in answers) else None


def _tofu_stats(log: dict, path) -> dict[str, Any]:
    paraphrased = np.asarray(_by_row(log["avg_paraphrased_loss"], "avg_paraphrased_loss", path), dtype=np.float64)
    perturbed = np.asarray(_by_row(log["average_perturb_loss"], "average_perturb_loss", path), dtype=np.float64)
    if perturbed.ndim != 2 or len(perturbed) != len(paraphrased):
        raise ValueError(f"{path}: average_perturb_loss must hold one list of losses per row of avg_paraphrased_loss "
                         f"({len(paraphrased)} rows), got shape {perturbed.shape}.")
    answers = None
    if isinstance(log.get("generated_text"), (dict, list)):
        answers = [entry[2] if isinstance(entry, list) and len(entry) > 2 else None
                   for entry in _by_row(log["generated_text"], "generated_text", path)]
    # Losses are negated length-normalised log-probs: R = exp(mean_j log P(perturbed_j) − log P(paraphrased)).
    return {"source": "tofu", "truth_ratios": truth_ratios(-paraphrased, -perturbed).tolist(),
            "answers": _all_or_none(answers)}


def load_reference_stats(path) -> dict[str, Any]:
    """Reference statistics from `path`: npo-trl's JSON, open-unlearning's `TOFU_EVAL.json`, or a TOFU/NPO repository
    `eval_log_forget.json` / `eval_log_aggregated.json` (detected from their keys; see the module docstring)."""
    with open(path) as f:
        log = json.load(f)
    if isinstance(log, dict) and "eval_log_forget.json" in log:  # eval_log_aggregated.json
        log = log["eval_log_forget.json"]
    if isinstance(log, dict) and {"truth_ratios", "fingerprint"} <= set(log):
        stats = {"source": "npo-trl", **log}
    elif isinstance(log, dict) and isinstance(log.get("forget_truth_ratio"), dict):
        stats = _open_unlearning_stats(log, path)
    elif isinstance(log, dict) and {"avg_paraphrased_loss", "average_perturb_loss"} <= set(log):
        stats = _tofu_stats(log, path)
    else:
        raise ValueError(
            f"{path} holds no reference statistics: give npo-trl's JSON (compute_reference_stats(..., "
            "cache_path=...)), an open-unlearning TOFU_EVAL.json of the retain model (with forget_truth_ratio), or a "
            "TOFU/NPO-repository eval_log_forget.json / eval_log_aggregated.json (with avg_paraphrased_loss and "
            "average_perturb_loss)."
        )
    if stats["source"] != "npo-trl":
        stats.update(num_rows=len(stats["truth_ratios"]), path=str(path))
    return stats


def _normalised(text) -> str:
    return " ".join(str(text).split())


def reference_truth_ratios(stats: dict[str, Any], forget: TOFUEvalSet | None, mask_pad_tokens: bool = False
                           ) -> np.ndarray:
    """The reference truth ratios row for row with the evaluated forget set, or a ValueError saying what differs."""
    where = stats.get("path", "reference_stats")
    if forget is None:
        raise ValueError("reference_stats are given but eval_sets has no 'forget' set to compare them with.")
    if stats.get("source", "npo-trl") == "npo-trl":
        if stats.get("fingerprint") != forget.fingerprint or stats.get("mask_pad_tokens", False) != mask_pad_tokens:
            raise ValueError(
                f"{where} was computed on other forget rows, another format or another token boundary than this "
                f"forget set ({len(forget)} rows, prompt_format={forget.prompt_format}, token_boundary="
                f"{forget.token_boundary!r}, mask_pad_tokens={mask_pad_tokens}): recompute it with "
                "compute_reference_stats(retain_model, tokenizer, forget_set, ...) and the same settings."
            )
        return np.asarray(stats["truth_ratios"], dtype=np.float64)
    if stats["num_rows"] != forget.num_source_rows:
        raise ValueError(
            f"{where} ({stats['source']} log) holds truth ratios of {stats['num_rows']} forget rows, but the forget "
            f"set given has {forget.num_source_rows}: use the retain model's log of the same forget split (all of "
            "its rows, e.g. forget10_perturbed: 400), or recompute with --retain_model."
        )
    if stats.get("answers") is not None:
        for i, (logged, answer) in enumerate(zip(stats["answers"], forget.source_answers, strict=True)):
            if _normalised(logged) != _normalised(answer):
                raise ValueError(
                    f"{where}: row {i} of the log answers {logged!r:.80} but row {i} of the forget set answers "
                    f"{answer!r:.80}: the log is of another split or another row order."
                )
    return np.asarray(stats["truth_ratios"], dtype=np.float64)[forget.indices]
