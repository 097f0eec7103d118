"""`TOFUEvaluator`: every TOFU metric of a model, on one or several processes."""

import os

import torch

from ..eval import privacy
from ..eval.evaluator import Evaluator
from ..prompts import TOKEN_BOUNDARIES
from .eval_sets import HOLDOUT, SET_NAMES, TOFUEvalSet, score_eval_set
from .metrics import METRICS, UTILITY_METRICS, UTILITY_SETS, forget_quality, model_utility, set_metrics
from .reference import load_reference_stats, reference_privacy, reference_truth_ratios


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
        max_samples (`int` or `None`, *optional*, defaults to `None`):
            Rows scored per set: `None` scores every row, as the reference evaluator (open-unlearning) does; a number
            draws a fixed subset with `seed` (TOFU's original code took the first 300).
        seed (`int` or `None`, *optional*, defaults to `0`):
            Seed of that subset; `None` takes the first rows.
        batch_size (`int`, *optional*, defaults to `8`):
            Rows per forward pass per process; each pass scores all of their candidate answers
            (`batch_size × (2 + 5)` sequences on the forget set), running each question once.
        generation_batch_size (`int`, *optional*):
            Rows per greedy-generation batch per process; by default `batch_size`. On a CPU, or a GPU with memory to
            spare, several times `batch_size` cuts the decoding steps (the key-value cache grows with it: rows ×
            (prompt + `max_new_tokens`) tokens).
        max_new_tokens (`int`, *optional*, defaults to `200`):
            Length limit of the greedy answers that ROUGE scores.
        prompt_format (`str` or [`~npo_trl.prompts.PromptFormat`], *optional*, defaults to `"plain"`):
            A preset of `npo_trl.prompts.PROMPT_FORMATS` (`"plain"`, `"chat"`, `"chat_system"`, `"llama3_instruct"`,
            `"tofu_llama2"`, `"tofu_phi"`) or a `PromptFormat`: the format the model was trained on.
        prompt_template, completion_template (`str`, *optional*):
            Replace the format's templates (as `npo_trl.tofu.to_prompt_completion` takes them), naming `{question}`
            and `{answer}`.
        token_boundary (`str`, *optional*, defaults to `"common_prefix"`):
            Where the scored answer starts: `"common_prefix"` (where the tokenized prompt and prompt+answer diverge,
            as NPOTrainer trains) or `"prompt_length"` (after `len(prompt_ids)` tokens, the reference evaluator's
            rule, which skips a first answer token that merged with the prompt's trailing space). See
            `npo_trl.prompts`.
        mask_pad_tokens (`bool`, *optional*, defaults to `False`):
            Hide every token equal to the pad token inside the text from attention, in scoring and in generation, as
            the reference evaluator's collator does. It matters for a chat model whose pad token is its end-of-turn
            token (Llama-3.x-Instruct with pad = EOS): its turn separators are then invisible to the model. Off by
            default because it changes what the model sees; the README gives its measured effect.
        min_k_fraction (`float`, *optional*, defaults to `0.4`):
            The k of the Min-K% and Min-K%++ attacks (MUSE's and open-unlearning's 40%).
        progress (`bool`, *optional*, defaults to `False`):
            Show a progress bar over the batches (`TOFUCallback` follows the trainer's `disable_tqdm`).
    """

    name = "tofu"
    metric_names = METRICS + privacy.PRIVACY_METRICS
    higher_is_better = ("tofu/forget_quality", "tofu/model_utility")

    def __init__(self, processing_class, eval_sets, reference_stats=None, max_samples=None, seed=0, batch_size=8,
                 max_new_tokens=200, prompt_format="plain", prompt_template=None, completion_template=None,
                 generation_batch_size=None, token_boundary="common_prefix", mask_pad_tokens=False,
                 min_k_fraction=privacy.MIN_K_FRACTION, progress=False):
        super().__init__(progress)
        if not eval_sets:
            raise ValueError(f"eval_sets is empty: give TOFU evaluation sets by name among {list(SET_NAMES)}.")
        if HOLDOUT in eval_sets and "forget" not in eval_sets:
            raise ValueError("eval_sets has 'holdout' but no 'forget' set: the privacy metrics compare the forget rows "
                             "(members) with the holdout rows (non-members); add 'forget'.")
        if not 0 < min_k_fraction <= 1:
            raise ValueError(f"min_k_fraction must be in (0, 1], got {min_k_fraction}.")
        if token_boundary not in TOKEN_BOUNDARIES:
            raise ValueError(f"token_boundary={token_boundary!r} is unknown: use one of {list(TOKEN_BOUNDARIES)}.")
        if batch_size < 1 or max_new_tokens < 1 or (generation_batch_size is not None and generation_batch_size < 1):
            raise ValueError(f"batch_size, max_new_tokens and generation_batch_size must be >= 1 (got {batch_size}, "
                             f"{max_new_tokens}, {generation_batch_size}).")
        self.processing_class, self.batch_size, self.max_new_tokens = processing_class, batch_size, max_new_tokens
        self.generation_batch_size = generation_batch_size or batch_size
        self.mask_pad_tokens, self.min_k_fraction = mask_pad_tokens, min_k_fraction
        self.sets = {name: TOFUEvalSet(name, rows, processing_class, max_samples, seed, prompt_format,
                                       prompt_template, completion_template, token_boundary)
                     for name, rows in eval_sets.items()}
        if isinstance(reference_stats, (str, os.PathLike)):
            reference_stats = load_reference_stats(reference_stats)
        self.reference_stats = reference_stats
        self.reference_truth_ratios, self.reference_privacy = None, (None, None)
        if reference_stats is not None:
            self.reference_truth_ratios = reference_truth_ratios(reference_stats, self.sets.get("forget"),
                                                                 mask_pad_tokens)
            if HOLDOUT in self.sets:
                self.reference_privacy = reference_privacy(reference_stats, self.sets[HOLDOUT], min_k_fraction)

    def compute(self, model, ref_model, accelerator, synced_gpus) -> dict[str, float | None]:
        return metrics_from_scores(self.score(model, ref_model, accelerator, synced_gpus), self.reference_truth_ratios,
                                   *self.reference_privacy)

    @torch.no_grad()
    def score(self, model, ref_model=None, accelerator=None, synced_gpus=False, generate=True) -> dict[str, dict]:
        """Per-row scores of every set (`npo_trl.tofu.eval_sets.score_eval_set`'s) of an unwrapped model in eval
        mode, from which `evaluate` aggregates."""
        membership = HOLDOUT in self.sets  # the forget pass also scores the privacy attacks; holdout: one pass more
        return {
            name: score_eval_set(model, self.processing_class, eval_set, batch_size=self.batch_size,
                                 ref_model=ref_model if name == "forget" else None,
                                 max_new_tokens=self.max_new_tokens, accelerator=accelerator, synced_gpus=synced_gpus,
                                 generation_batch_size=self.generation_batch_size,
                                 generate=generate and name != HOLDOUT,
                                 mask_pad_tokens=self.mask_pad_tokens, timer=self.timer, progress=self.progress,
                                 membership=membership and name in ("forget", HOLDOUT),
                                 min_k_fraction=self.min_k_fraction)
            for name, eval_set in self.sets.items()
        }

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
