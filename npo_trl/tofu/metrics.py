"""TOFU's metrics (Maini et al. 2024, arXiv 2401.06121), as the NPO paper reports them.

The definitions are those of TOFU's evaluation code, which the papers' numbers come from:

- **Probability** P(y|x) is length-normalised: exp of the mean log-prob of the answer tokens, averaged over rows.
  On real authors and world facts it is normalised over the options: P(a) / (P(a) + Σ_j P(perturbed_j)).
- **ROUGE** is the ROUGE-L recall (with stemming) of the greedy answer against the true answer.
- **Truth ratio** R = (Π_j P(perturbed_j))^(1/n) / P(correct), all length-normalised; "correct" is the paraphrased
  answer on forget/retain, the answer on real authors/world facts. The forget set reports mean(min(R, 1/R)), the
  others mean(max(0, 1 − R)).
- **Forget quality** is the p-value of the two-sample KS test between the forget-set truth ratios of the unlearned
  model and of the retain model (a model never trained on the forget set). The paper reads ≥ 0.05 as forgotten.
- **Model utility** is the harmonic mean of the 9 retain / real-authors / world-facts numbers above.

This module holds those formulas as pure functions of per-row scores (like `npo_trl.losses`); `eval_sets.py` turns
TOFU's rows into scores with the evaluation core (`npo_trl.eval`), `evaluator.py` puts them together and
`reference.py` reads the retain model's statistics.
"""

from collections.abc import Sequence

import numpy as np
from rouge_score import rouge_scorer
from scipy.special import softmax
from scipy.stats import hmean, ks_2samp

EVAL_SETS = ("forget", "retain", "real_authors", "world_facts")
UTILITY_SETS = ("retain", "real_authors", "world_facts")
PARAPHRASED_SETS = ("forget", "retain")  # sets whose truth ratio compares with the paraphrased answer
# The 9 numbers whose harmonic mean is the model utility.
UTILITY_METRICS = tuple(f"tofu/{name}_{m}" for name in UTILITY_SETS for m in ("prob", "rouge", "truth_ratio"))
METRICS = ("tofu/forget_quality", "tofu/model_utility", "tofu/forget_prob", "tofu/forget_rouge",
           "tofu/forget_truth_ratio", "tofu/forget_kl") + UTILITY_METRICS


# ---------------------------------------------------------------- metrics on scores
def truth_ratios(correct_logps, perturbed_logps) -> np.ndarray:
    """Per row R = (Π_j P(perturbed_j))^(1/n) / P(correct), from length-normalised log-probs.

    `correct_logps` is (rows,), `perturbed_logps` (rows, n). Computed in log space, so nothing underflows.
    """
    return np.exp(np.mean(perturbed_logps, axis=-1) - np.asarray(correct_logps))


def truth_ratio_score(ratios, forget: bool) -> float:
    """TOFU's aggregate: mean(min(R, 1/R)) on the forget set (1 = no preference left), else mean(max(0, 1 − R))."""
    ratios = np.asarray(ratios, dtype=np.float64)
    if forget:
        return float(np.mean(np.minimum(ratios, 1.0 / ratios)))
    return float(np.mean(np.maximum(0.0, 1.0 - ratios)))


def option_probs(answer_logps, perturbed_logps) -> np.ndarray:
    """Per row P(a) / (P(a) + Σ_j P(perturbed_j)), the answer's share among the options (length-normalised P)."""
    logps = np.concatenate([np.asarray(answer_logps)[:, None], np.asarray(perturbed_logps)], axis=1)
    return softmax(logps, axis=1)[:, 0]


def rouge_l_recall(generations: Sequence[str], answers: Sequence[str]) -> np.ndarray:
    """ROUGE-L recall of each generation against its answer, with stemming (what `evaluate`'s rouge wraps)."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return np.array([scorer.score(answer, generation)["rougeL"].recall
                     for generation, answer in zip(generations, answers, strict=True)])


def forget_quality(ratios, reference_ratios) -> float:
    """p-value of the KS test between the unlearned model's and the retain model's forget-set truth ratios."""
    return float(ks_2samp(ratios, reference_ratios).pvalue)


def model_utility(components: Sequence[float]) -> float:
    """Harmonic mean of the utility numbers (TOFU: the 9 of `UTILITY_METRICS`); 0 if any of them is 0."""
    values = np.asarray(list(components), dtype=np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"model_utility needs finite, non-negative components, got {values.tolist()}.")
    return float(hmean(values))


def set_metrics(name: str, scores: dict[str, np.ndarray]) -> dict[str, float | None]:
    """A set's probability, ROUGE and truth-ratio score (and, on the forget set, the KL) from its per-row scores
    (`npo_trl.tofu.eval_sets.score_eval_set`'s, truth ratios included)."""
    if name in PARAPHRASED_SETS:
        prob = float(np.mean(np.exp(scores["answer_logps"])))
    else:
        prob = float(np.mean(option_probs(scores["answer_logps"], scores["perturbed_logps"])))
    ratios = scores["truth_ratios"]
    metrics = {
        f"tofu/{name}_prob": prob,
        f"tofu/{name}_rouge": float(np.mean(scores["rouge"])),
        f"tofu/{name}_truth_ratio": truth_ratio_score(ratios, forget=name == "forget"),
    }
    if name == "forget":
        kl = scores["kl"]
        metrics["tofu/forget_kl"] = None if np.isnan(kl).all() else float(np.mean(kl))
    return metrics


