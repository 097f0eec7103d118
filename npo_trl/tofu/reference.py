"""The retain model's statistics that forget quality compares with: computed here, or read from published logs.

Forget quality needs, for each forget row, the truth ratio R = (Π_j P(perturbed_j))^(1/n) / P(paraphrased) of a
model never trained on the forget set (the retain model). `load_reference_stats` reads three formats:

- **npo-trl** (`compute_reference_stats(..., cache_path=...)`): R for exactly the rows, format and token boundary
  evaluated, checked by a fingerprint of them, and the fingerprint of the `TOFUEvalSettings` they were computed under
  (an evaluation under other scoring settings refuses them, naming the fields that differ).
- **open-unlearning**'s `TOFU_EVAL.json` of a retain model: `forget_truth_ratio.value_by_index["i"].score` is R of
  row i of the forget split (same direction as ours). Its `forget_Q_A_ROUGE.value_by_index["i"].ground_truth`, when
  present, is compared with the forget rows' answers to check the order.
- **TOFU / NPO repositories**' `eval_log_forget.json`, or `eval_log_aggregated.json` holding it: per-row
  length-normalised losses `avg_paraphrased_loss` and `average_perturb_loss` (dicts keyed by row, or lists in the NPO
  repository), from which R = exp(paraphrased loss − mean perturbed loss); `generated_text["i"][2]` (ground truth),
  when present, checks the order.

External logs hold one value per row of the whole forget split, in its order: the evaluated forget set must be that
split (any `max_samples` subset is then taken from them row for row).

The privacy metrics (`npo_trl.eval.privacy`) need the retain model's membership-inference AUCs (PrivLeak compares with
them) and its per-row losses (the reference attack's calibration): `compute_reference_stats(...,
holdout_eval_set=...)` stores both under `"privacy"`, and open-unlearning's `TOFU_EVAL.json` gives the AUCs when it
holds its `mia_*` metrics (same direction as ours); a published log without them gives no PrivLeak (a warning).
"""

import json
import os
import warnings
from typing import Any

import numpy as np

from ..eval import privacy
from ..eval.runner import eval_mode
from .eval_sets import HOLDOUT, TOFUEvalSet, score_eval_set
from .metrics import truth_ratios
from .settings import TOFUEvalSettings

SOURCES = ("npo-trl", "open-unlearning", "tofu")


def _model_id(model) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "_name_or_path", None) or None


def compute_reference_stats(model, processing_class, forget_eval_set, settings: TOFUEvalSettings | None = None, *,
                            holdout_eval_set=None, cache_path=None, accelerator=None) -> dict[str, Any]:
    """The retain model's truth ratios on the forget set: what forget quality compares the unlearned model with; with
    `holdout_eval_set` (TOFU's holdoutNN rows), also its membership-inference AUCs and per-row losses on the forget
    and holdout sets, what the privacy metrics compare with (`"privacy"`).

    `model` is the retain model (fine-tuned without the forget set; TOFU publishes one per split), a plain model on
    `accelerator.device` when `accelerator` is given (each process then scores a shard of the rows). Under DeepSpeed
    ZeRO-3, load it before creating the training arguments, or later loads partition it for a DeepSpeed engine.
    Use the evaluation's `settings` ([`TOFUEvalSettings`], by default its defaults): the statistics store their
    `fingerprint` (`"settings_fingerprint"`, with `"settings"` for a reader), and an evaluation under other scoring
    settings refuses them. With `cache_path`, statistics saved there for the same rows, settings and model are loaded
    instead of recomputed, statistics of other rows or another model are recomputed and saved there (JSON), and
    statistics saved under other settings raise a ValueError naming the fields that differ.
    """
    settings = settings or TOFUEvalSettings()
    forget = TOFUEvalSet("forget", forget_eval_set, processing_class, settings)
    holdout = None if holdout_eval_set is None else TOFUEvalSet(HOLDOUT, holdout_eval_set, processing_class, settings)
    if cache_path is not None and os.path.exists(cache_path):
        stats = load_reference_stats(cache_path)
        if "settings_fingerprint" in stats:  # npo-trl's; an older file without it is recomputed
            settings.check_stats(stats, cache_path)
            if stats.get("fingerprint") == forget.fingerprint and stats.get("model") == _model_id(model) and \
                    (holdout is None or _privacy_matches(stats.get("privacy"), holdout)):
                return stats
    passes = {"generate": False, "accelerator": accelerator, "membership": holdout is not None}
    with eval_mode(model):
        scores = score_eval_set(model, processing_class, forget, settings, **passes)
        holdout_scores = None if holdout is None else score_eval_set(model, processing_class, holdout, settings,
                                                                     **passes)
    stats = {
        "source": "npo-trl",
        "truth_ratios": scores["truth_ratios"].tolist(),
        "fingerprint": forget.fingerprint,
        "num_rows": len(forget),
        "settings_fingerprint": settings.fingerprint(),
        "settings": settings.to_dict(),
        "model": _model_id(model),
    }
    if holdout is not None:
        stats["privacy"] = {  # its AUCs of every attack but the reference one, whose reference it is itself
            "auc": privacy.mia_aucs(scores, holdout_scores),
            "forget_losses": scores["loss"].tolist(), "holdout_losses": holdout_scores["loss"].tolist(),
            "holdout_fingerprint": holdout.fingerprint,
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
    stats = {"source": "open-unlearning", "truth_ratios": [float(r) for r in ratios], "answers": _all_or_none(answers)}
    # its mia_* metrics: forget (label 0) vs holdout (label 1) AUCs of loss-like scores, our direction
    aucs = {attack: log[f"mia_{attack}"]["agg_value"] for attack in privacy.ATTACKS
            if isinstance(log.get(f"mia_{attack}"), dict) and isinstance(log[f"mia_{attack}"].get("agg_value"),
                                                                         (int, float))}
    if aucs:
        stats["privacy"] = {"auc": aucs}
    return stats


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


def reference_truth_ratios(stats: dict[str, Any], forget: TOFUEvalSet | None, settings: TOFUEvalSettings
                           ) -> np.ndarray:
    """The reference truth ratios row for row with the evaluated forget set, or a ValueError saying what differs:
    npo-trl's statistics must hold `settings`' fingerprint and the forget set's rows."""
    where = stats.get("path", "reference_stats")
    if forget is None:
        raise ValueError("reference_stats are given but eval_sets has no 'forget' set to compare them with.")
    if stats.get("source", "npo-trl") == "npo-trl":
        settings.check_stats(stats, stats.get("path"))
        if stats.get("fingerprint") != forget.fingerprint:
            raise ValueError(
                f"{where} was computed on other forget rows than this forget set ({len(forget)} rows): recompute it "
                "with compute_reference_stats(retain_model, tokenizer, forget_set, settings) on these rows."
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


def _privacy_matches(stats_privacy, holdout: TOFUEvalSet) -> bool:
    return isinstance(stats_privacy, dict) and stats_privacy.get("holdout_fingerprint") == holdout.fingerprint


def reference_privacy(stats: dict[str, Any], holdout: TOFUEvalSet, settings: TOFUEvalSettings
                      ) -> tuple[dict[str, float] | None, tuple[np.ndarray, np.ndarray] | None]:
    """(the retain model's AUCs, its (forget, holdout) per-row losses) for the evaluated holdout set. npo-trl's own
    statistics must hold them for these rows (else a ValueError naming the fix: they are recomputed from the retain
    model); a published log may lack them (then a warning, and no PrivLeak) and never has the losses (no reference
    attack). Call after `reference_truth_ratios`, which checks the forget rows and the settings."""
    where = stats.get("path", "reference_stats")
    section = stats.get("privacy")
    external = stats.get("source", "npo-trl") != "npo-trl"
    if external:
        aucs = dict(section["auc"]) if isinstance(section, dict) and section.get("auc") else {}
        if aucs and settings.min_k_fraction != privacy.MIN_K_FRACTION:  # open-unlearning's Min-K% and ++ use 0.4
            aucs.pop("min_k", None), aucs.pop("min_k_plus_plus", None)
        if privacy.PRIVLEAK_ATTACK not in aucs:
            warnings.warn(f"{where} holds no Min-K% membership-inference AUC of the retain model (k = "
                          f"{privacy.MIN_K_FRACTION}): the privacy metrics are reported without PrivLeak.")
        return aucs or None, None
    if not isinstance(section, dict) or not section.get("auc"):
        raise ValueError(
            f"{where} holds no membership-inference AUCs of the retain model, which PrivLeak compares with: recompute "
            "them with compute_reference_stats(retain_model, tokenizer, forget, holdout_eval_set=eval_sets['holdout'],"
            " ...) (examples/tofu.py does with --privacy true), or leave 'holdout' out of eval_sets (--privacy false)."
        )
    if not _privacy_matches(section, holdout):
        raise ValueError(
            f"{where} was computed on other holdout rows than this holdout set ({len(holdout)} rows): recompute it "
            "with compute_reference_stats(..., holdout_eval_set=...) on these rows."
        )
    return section["auc"], (np.asarray(section["forget_losses"]), np.asarray(section["holdout_losses"]))
