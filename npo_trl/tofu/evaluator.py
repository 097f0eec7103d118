"""`TOFUEvaluator`: every TOFU metric of a model, on one or several processes."""

import os

import torch

from ..eval import privacy
from ..eval.evaluator import Evaluator
from ..eval.generation import GENERATION_CACHE_TOKENS
from ..eval.runner import one_process
from .eval_sets import HOLDOUT, SET_NAMES, TOFUEvalSet, greedy_rouge, score_eval_set
from .metrics import METRICS, UTILITY_METRICS, UTILITY_SETS, forget_quality, model_utility, set_metrics
from .reference import load_reference_stats, reference_privacy, reference_truth_ratios
from .settings import TOFUEvalSettings


class TOFUEvaluator(Evaluator):
    r"""
    Computes TOFU's metrics for a model: forget quality, model utility and their components, and, given the holdout
    set, the privacy metrics (`npo_trl.eval.privacy`): membership-inference AUCs of forget vs holdout rows, PrivLeak,
    exact memorization and extraction strength.

    Parameters:
        processing_class ([`~transformers.PreTrainedTokenizerBase`]):
            The tokenizer of the model (the one the trainer uses).
        eval_sets (`dict[str, Dataset | list[dict]]`):
            TOFU evaluation sets by name, among `"forget"`, `"retain"`, `"real_authors"`, `"world_facts"` and
            `"holdout"` (e.g. `npo_trl.tofu.tofu_eval_sets(...)`). Forget and retain rows have `question`, `answer`,
            `paraphrased_answer`, `perturbed_answer` (list); real authors and world facts `question`, `answer`,
            `perturbed_answer`; holdout (TOFU's holdoutNN: authors never trained on) `question`, `answer`. Model
            utility needs retain, real authors and world facts; forget quality needs `"forget"` and `reference_stats`;
            the privacy metrics `"forget"` and `"holdout"` (PrivLeak and the reference attack also `reference_stats`
            with the retain model's privacy statistics).
        reference_stats (`dict`, `str` or `None`, *optional*):
            The retain model's statistics: from [`compute_reference_stats`], or the path of that JSON file, of an
            open-unlearning `TOFU_EVAL.json` or of a TOFU/NPO-repository `eval_log_forget.json` /
            `eval_log_aggregated.json` of a retain model (see [`load_reference_stats`]). Without them forget quality
            is `None`.
        settings ([`~npo_trl.tofu.TOFUEvalSettings`] or `None`, *optional*):
            How the sets are selected, formatted, tokenized, scored and generated from (rows per set, prompt format,
            token boundary, batch sizes, greedy-answer length, Min-K% fraction); `None` takes its defaults. The
            statistics of `reference_stats` must have been computed under the same scoring settings.
        progress (`bool`, *optional*, defaults to `False`):
            Show a progress bar over the batches (`TOFUCallback` follows the trainer's `disable_tqdm`).
    """

    name = "tofu"
    metric_names = METRICS + privacy.PRIVACY_METRICS
    higher_is_better = ("tofu/forget_quality", "tofu/model_utility")

    def __init__(self, processing_class, eval_sets, reference_stats=None, settings: TOFUEvalSettings | None = None,
                 progress=False):
        super().__init__(progress)
        if not eval_sets:
            raise ValueError(f"eval_sets is empty: give TOFU evaluation sets by name among {list(SET_NAMES)}.")
        if HOLDOUT in eval_sets and "forget" not in eval_sets:
            raise ValueError("eval_sets has 'holdout' but no 'forget' set: the privacy metrics compare the forget "
                             "rows (members) with the holdout rows (non-members); add 'forget'.")
        self.processing_class, self.settings = processing_class, settings or TOFUEvalSettings()
        if self.settings.max_new_tokens is None:  # a parser's "not given" (the examples resolve it): never a default
            raise ValueError("settings.max_new_tokens is None: set the length limit of the generated answers, e.g. "
                             "TOFUEvalSettings(max_new_tokens=200) (TOFU's).")
        self.sets = {name: TOFUEvalSet(name, rows, processing_class, self.settings)
                     for name, rows in eval_sets.items()}
        if isinstance(reference_stats, (str, os.PathLike)):
            reference_stats = {"path": str(reference_stats), **load_reference_stats(reference_stats)}
        self.reference_stats = reference_stats
        self.reference_truth_ratios, self.reference_privacy = None, (None, None)
        if reference_stats is not None:
            self.reference_truth_ratios = reference_truth_ratios(reference_stats, self.sets.get("forget"),
                                                                 self.settings)
            if HOLDOUT in self.sets:
                self.reference_privacy = reference_privacy(reference_stats, self.sets[HOLDOUT], self.settings)

    def compute(self, model, ref_model, accelerator, synced_gpus) -> dict[str, float | None]:
        return metrics_from_scores(self.score(model, ref_model, accelerator, synced_gpus), self.reference_truth_ratios,
                                   *self.reference_privacy)

    @torch.no_grad()
    def score(self, model, ref_model=None, accelerator=None, synced_gpus=False, generate=True) -> dict[str, dict]:
        """Per-row scores of every set (`npo_trl.tofu.eval_sets.score_eval_set`'s) of an unwrapped model in eval
        mode, from which `evaluate` aggregates."""
        membership = HOLDOUT in self.sets  # the forget pass also scores the privacy attacks; holdout: one pass more
        # the scoring pass's question caches, up to what one generation batch holds, spare generation running them
        budget, scores = (GENERATION_CACHE_TOKENS if generate and one_process(accelerator) else 0), {}
        for name, eval_set in self.sets.items():
            scores[name] = score_eval_set(model, self.processing_class, eval_set, self.settings,
                                          ref_model=ref_model if name == "forget" else None, generate=False,
                                          accelerator=accelerator, synced_gpus=synced_gpus,
                                          membership=membership and name in ("forget", HOLDOUT), timer=self.timer,
                                          progress=self.progress, prompt_cache_tokens=budget)
            budget -= sum(len(c[0]) for c in scores[name].get("greedy_prompt_caches", []) if c is not None)
        if generate:  # every set's greedy answers (not the holdout's) in shared batches
            names = [name for name in self.sets if name != HOLDOUT]
            rouge = greedy_rouge(model, self.processing_class, [self.sets[name] for name in names], self.settings,
                                 [scores[name] for name in names], accelerator=accelerator, synced_gpus=synced_gpus,
                                 timer=self.timer, progress=self.progress)
            for name, values in zip(names, rouge, strict=True):
                scores[name]["rouge"] = values
        for set_scores in scores.values():
            set_scores.pop("greedy_prompt_caches", None)
        return scores

    def check_metric(self, metric: str, has_reference_model: bool) -> None:
        super().check_metric(metric, has_reference_model)
        if metric == "tofu/forget_quality" and self.reference_stats is None:
            raise ValueError("metric_for_best_model='tofu/forget_quality' needs the retain model's statistics: pass "
                             "TOFUCallback(reference_stats=compute_reference_stats(retain_model, tokenizer, forget)).")
        if metric == "tofu/model_utility" and not set(UTILITY_SETS) <= set(self.sets):
            raise ValueError(f"metric_for_best_model='tofu/model_utility' needs the eval sets {list(UTILITY_SETS)}.")
        if metric.startswith(("privacy/mia_", "privacy/privleak")):
            raise ValueError(f"metric_for_best_model={metric!r}: its best value is the retain model's (PrivLeak 0), "
                             "which greater_is_better cannot express; select by another metric and read it beside.")
        if metric.startswith("privacy/") and HOLDOUT not in self.sets:
            raise ValueError(f"metric_for_best_model={metric!r} needs the 'holdout' set in eval_sets "
                             "(npo_trl.tofu.tofu_eval_sets includes it).")
        if metric == "tofu/forget_kl" and not has_reference_model:
            raise ValueError("metric_for_best_model='tofu/forget_kl' needs a reference model (ref_model or PEFT).")


def metrics_from_scores(scores: dict[str, dict], reference_ratios=None, retain_aucs=None, retain_losses=None
                        ) -> dict[str, float | None]:
    """TOFU's aggregate metrics from per-row scores: each set's, forget quality against `reference_ratios` (the retain
    model's forget-set truth ratios, row for row), model utility when the three utility sets are there, and the
    privacy metrics when the holdout set is (PrivLeak against `retain_aucs`, the reference attack with
    `retain_losses`, the retain model's (forget, holdout) losses)."""
    metrics = dict.fromkeys(METRICS + privacy.PRIVACY_METRICS)
    for name, set_scores in scores.items():
        if name != HOLDOUT:
            metrics.update(set_metrics(name, set_scores))
    if reference_ratios is not None and "forget" in scores:
        metrics["tofu/forget_quality"] = forget_quality(scores["forget"]["truth_ratios"], reference_ratios)
    if all(name in scores for name in UTILITY_SETS):
        metrics["tofu/model_utility"] = model_utility([metrics[key] for key in UTILITY_METRICS])
    if HOLDOUT in scores:
        metrics.update(privacy.privacy_metrics(scores["forget"], scores[HOLDOUT], retain_aucs, retain_losses))
    return metrics
