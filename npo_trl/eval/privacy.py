"""Membership inference and memorization: can an attacker tell that the forget rows were trained on?

Pure functions (like `npo_trl.losses`), each citing its source, on the per-token statistics of one scoring pass
(`npo_trl.eval.scoring.token_statistics`: (rows, width) tensors, left-aligned, with `mask` 1 on a row's answer
tokens), or on per-row scores. The definitions follow open-unlearning (locuslab/open-unlearning, src/evals/metrics),
the reference implementation of the field's numbers, so that ours compare with its tables:

- **Attack scores are non-membership scores**, like a loss: higher = the row looks less like training data.
- **AUC** = P(score(non-member) > score(member)) + ½·P(tie): the probability that an attack ranks a random member
  (forget row) as more trained-on than a random non-member (holdout row). 1 = every forget row stands out; 0.5 = no
  attack can tell them apart (what a model never trained on either gives, up to sampling noise); below 0.5 the forget
  rows look *less* familiar than unseen text, which is itself a trace of unlearning. A good unlearned model has the
  retain model's AUC.
- **Token-level measures skip each answer's last token** (the end-of-answer token the template adds), as
  open-unlearning's `tokenwise_logprobs` does; the loss (LOSS, ZLib, reference) averages over every answer token.
"""

import zlib
from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import mannwhitneyu

MIN_K_FRACTION = 0.4  # Min-K%'s k (Shi et al. 2024 report k = 20%; MUSE and open-unlearning use 40%)
ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus", "reference")
MEMORIZATION = ("exact_memorization", "extraction_strength")
ROW_SCORES = ("loss", "min_k", "min_k_plus_plus") + MEMORIZATION  # what one pass's token statistics give per row
PRIVLEAK_ATTACK = "min_k"  # MUSE's PrivLeak is Min-K%'s
PRIVACY_METRICS = tuple(f"privacy/mia_{attack}_auc" for attack in ATTACKS) + ("privacy/privleak",) + tuple(
    f"privacy/{name}_{measure}" for name in ("forget", "holdout") for measure in MEMORIZATION)


# ---------------------------------------------------------------- token statistics → per-row scores
def without_last_token(mask: torch.Tensor) -> torch.Tensor:
    """`mask` with each row's last token dropped (rows of one token keep it): the tokens open-unlearning's
    token-level measures read (its `tokenwise_logprobs` ignores the end-of-answer prediction)."""
    lengths = mask.sum(1)
    rows = torch.nonzero(lengths > 1).squeeze(1)
    out = mask.clone()
    out[rows, lengths[rows] - 1] = 0
    return out


def loss_score(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """LOSS attack (Yeom et al. 2018, "Privacy Risk in Machine Learning"): the mean negative log-likelihood of a
    row's tokens; training rows have lower loss."""
    return -(token_logps * mask).sum(1) / mask.sum(1)


def min_k_score(token_logps: torch.Tensor, mask: torch.Tensor, k: float = MIN_K_FRACTION) -> torch.Tensor:
    """Min-K% Prob (Shi et al. 2024, "Detecting Pretraining Data from Large Language Models"): minus the mean of the
    lowest k% of a row's token log-probs (at least one token): an unseen text has a few very unlikely tokens."""
    mask = mask.bool()
    num_k = (k * mask.sum(1)).floor().clamp(min=1)
    lowest = token_logps.masked_fill(~mask, float("inf")).sort(dim=1).values
    taken = torch.arange(mask.size(1), device=mask.device)[None] < num_k[:, None]
    return -torch.where(taken, lowest, 0).sum(1) / num_k


def min_k_plus_plus_score(token_logps: torch.Tensor, expected_logps: torch.Tensor, logp_variance: torch.Tensor,
                          mask: torch.Tensor, k: float = MIN_K_FRACTION) -> torch.Tensor:
    """Min-K%++ (Zhang et al. 2024, "Min-K%++: Improved Baseline for Detecting Pre-Training Data from Large Language
    Models"): Min-K% of each token's log-prob standardised by the mean and standard deviation of the log-probs over the
    vocabulary at its position, (log p(x_t) − μ_t) / σ_t (σ_t² floored at 1e-6, as open-unlearning does)."""
    z = (token_logps - expected_logps) / logp_variance.clamp(min=1e-6).sqrt()
    return min_k_score(z, mask, k)


def zlib_score(loss, texts: Sequence[str]) -> np.ndarray:
    """ZLib attack (Carlini et al. 2021, "Extracting Training Data from Large Language Models"): the loss
    divided by the zlib-compressed length in bytes of the row's text, which discounts text that is merely simple."""
    entropy = np.array([len(zlib.compress(text.encode("utf-8"))) for text in texts], dtype=np.float64)
    return np.asarray(loss, dtype=np.float64) / entropy


def reference_score(loss, reference_loss) -> np.ndarray:
    """Reference-model attack (Carlini et al. 2021, comparing with another model; Mireshghallah et al. 2022): the loss
    minus a reference model's loss on the same row, calibrating away how hard the row is for any model. The reference
    here is the retain model (never trained on the forget set), as in open-unlearning's TOFU configuration."""
    return np.asarray(loss, dtype=np.float64) - np.asarray(reference_loss, dtype=np.float64)


def exact_memorization(is_argmax: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Exact memorization (Tirumala et al. 2022, "Memorization Without Overfitting"): the share of a row's tokens that
    are the model's most likely next token given the true prefix (teacher-forced)."""
    return (is_argmax.bool() & mask.bool()).sum(1) / mask.sum(1)


def extraction_strength(is_argmax: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Extraction strength (Wang et al. 2025, "Towards Effective Evaluations and Comparisons for LLM Unlearning
    Methods"): 1 − the smallest share k/n of a row's n tokens after which greedy decoding from the true prefix
    reproduces the rest, i.e. (the length of the row's trailing run of argmax tokens) / n. As in open-unlearning, k
    stops at n − 1, so a row none of whose suffixes is reproduced scores 1/n, not 0."""
    mask = mask.bool()
    positions = torch.arange(1, mask.size(1) + 1, device=mask.device)[None]
    after_last_miss = torch.where(mask & ~is_argmax.bool(), positions, 0).max(1).values
    lengths = mask.sum(1)
    return (lengths - after_last_miss).clamp(min=1) / lengths


def row_scores(statistics: dict[str, torch.Tensor], k: float = MIN_K_FRACTION) -> dict[str, torch.Tensor]:
    """`ROW_SCORES` of each row from its token statistics (`npo_trl.eval.scoring`'s `logps`, `expected_logps`,
    `logp_variance`, `is_argmax`, `mask`): the loss over every answer token, the rest without the last one."""
    mask, tokens = statistics["mask"], without_last_token(statistics["mask"])
    logps = statistics["logps"]
    return {
        "loss": loss_score(logps, mask),
        "min_k": min_k_score(logps, tokens, k),
        "min_k_plus_plus": min_k_plus_plus_score(logps, statistics["expected_logps"], statistics["logp_variance"],
                                                 tokens, k),
        "exact_memorization": exact_memorization(statistics["is_argmax"], tokens),
        "extraction_strength": extraction_strength(statistics["is_argmax"], tokens),
    }


# ---------------------------------------------------------------- per-row scores → metrics
def mia_auc(member_scores, nonmember_scores) -> float:
    """AUC of an attack separating members from non-members (see the module docstring for the direction), from the
    Mann-Whitney U statistic: U(non-members over members) / (n_members · n_non-members)."""
    member, nonmember = np.asarray(member_scores, np.float64), np.asarray(nonmember_scores, np.float64)
    if member.size == 0 or nonmember.size == 0:
        raise ValueError(f"mia_auc needs members and non-members, got {member.size} and {nonmember.size} scores.")
    return float(mannwhitneyu(nonmember, member).statistic / (member.size * nonmember.size))


def privleak(auc: float, retain_auc: float) -> float:
    """PrivLeak (Shi et al. 2025, "MUSE: Machine Unlearning Six-Way Evaluation for Language Models"): the relative gap
    between the unlearned and the retain model's MIA AUC, in percent:
    (AUC_unlearned − AUC_retain) / AUC_retain · 100 with MUSE's AUC, which is 1 − ours (MUSE ranks the other way
    round; open-unlearning converts its AUCs the same way). 0 = the forget rows leak as little as the retain model's;
    negative = they still stand out (under-unlearned; a model that never unlearned scores near −100); positive = they
    look less familiar than unseen text (over-unlearned)."""
    muse_auc, muse_retain_auc = 1.0 - auc, 1.0 - retain_auc
    return float("nan") if muse_retain_auc == 0 else (muse_auc - muse_retain_auc) / muse_retain_auc * 100.0


def attack_scores(rows: dict[str, np.ndarray], reference_losses=None) -> dict[str, np.ndarray]:
    """Every attack's per-row scores from a set's per-row scores (`ROW_SCORES` and `zlib`); `reference` only with
    the reference model's `reference_losses` on the same rows."""
    scores = {attack: rows[attack] for attack in ATTACKS if attack in rows}
    if reference_losses is not None:
        scores["reference"] = reference_score(rows["loss"], reference_losses)
    return scores


def mia_aucs(forget: dict[str, np.ndarray], holdout: dict[str, np.ndarray], reference_losses=None
             ) -> dict[str, float]:
    """Each attack's AUC of forget (members) vs holdout (non-members) rows; `reference_losses` = (forget, holdout)
    losses of the reference model, for the reference attack."""
    forget_losses, holdout_losses = reference_losses if reference_losses is not None else (None, None)
    forget, holdout = attack_scores(forget, forget_losses), attack_scores(holdout, holdout_losses)
    return {attack: mia_auc(forget[attack], holdout[attack]) for attack in ATTACKS if attack in forget}


def privacy_metrics(forget: dict[str, np.ndarray], holdout: dict[str, np.ndarray], retain_aucs=None,
                    reference_losses=None) -> dict[str, float | None]:
    """`PRIVACY_METRICS` from the forget and holdout sets' per-row scores: each attack's AUC, PrivLeak (of Min-K%,
    against the retain model's `retain_aucs`), and each set's mean exact memorization and extraction strength. None
    where an input is missing (the reference attack without `reference_losses`, PrivLeak without `retain_aucs`)."""
    metrics = dict.fromkeys(PRIVACY_METRICS)
    aucs = mia_aucs(forget, holdout, reference_losses)
    metrics.update({f"privacy/mia_{attack}_auc": auc for attack, auc in aucs.items()})
    if retain_aucs is not None and retain_aucs.get(PRIVLEAK_ATTACK) is not None:
        metrics["privacy/privleak"] = privleak(aucs[PRIVLEAK_ATTACK], retain_aucs[PRIVLEAK_ATTACK])
    for name, rows in (("forget", forget), ("holdout", holdout)):
        for measure in MEMORIZATION:
            metrics[f"privacy/{name}_{measure}"] = float(np.mean(rows[measure]))
    return metrics
