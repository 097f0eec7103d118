"""The unlearning objectives of Zhang, Lin, Bai & Mei (2024), "Negative Preference Optimization" (arXiv 2404.05868).

Every function is pure: it takes per-sequence log-probabilities log π(y|x) (the SUM of the completion tokens'
log-probs, prompt and padding masked) or, for the KL term, per-token log-distributions, and returns a scalar loss
to *minimise*. `NPOTrainer`, the TOFU metrics and the examples call these; no formula is written twice.
Equation numbers refer to the NPO paper.
"""

import torch
import torch.nn.functional as F


def ga_loss(logps: torch.Tensor) -> torch.Tensor:
    """Gradient ascent, eq. (1): L_GA = E[log π_θ(y|x)]. Unbounded below: it diverges linearly."""
    return logps.mean()


def npo_loss(logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO, eq. (3): L = -(2/β)·E[log σ(-β·log(π_θ/π_ref))] = (2/β)·E[log(1 + (π_θ/π_ref)^β)] ≥ 0.

    Its gradient is GA's weighted per sequence by `npo_weight` (eq. 5), and tends to GA's as β → 0 (Proposition 1).
    """
    return -(2.0 / beta) * F.logsigmoid(-beta * (logps - ref_logps)).mean()


def npo_weight(logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """The adaptive weight of eq. (5): W = 2π_θ^β / (π_θ^β + π_ref^β) = 2σ(β·log(π_θ/π_ref)), per sequence.

    ∇L_NPO = E[W·∇log π_θ(y|x)]: W → 0 once a sample is forgotten, which is why NPO diverges only logarithmically.
    """
    return 2.0 * torch.sigmoid(beta * (logps - ref_logps))


def simnpo_loss(logps: torch.Tensor, lengths: torch.Tensor, beta: float, gamma: float = 0.0) -> torch.Tensor:
    """SimNPO (Fan et al. 2024, arXiv 2410.07163): reference-free and length-normalised NPO,
    L = -(2/β)·E[log σ(β·(-log π_θ(y|x)/|y| - γ))]."""
    return -(2.0 / beta) * F.logsigmoid(beta * (-logps / lengths - gamma)).mean()


def nll_loss(logps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood per token, -Σ log π(y|x) / Σ|y|: the +RT retain term and the IDK baseline's loss."""
    return -logps.sum() / lengths.sum().clamp(min=1)


def dpo_loss(
    chosen_logps: torch.Tensor,
    chosen_ref_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    rejected_ref_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """DPO, eq. (2), with a replacement answer (e.g. "I don't know") as y_w and the forget answer as y_l:
    L = -(1/β)·E[log σ(β·log(π_θ(y_w)/π_ref(y_w)) - β·log(π_θ(y_l)/π_ref(y_l)))]. NPO is this with y_w dropped."""
    margin = (chosen_logps - chosen_ref_logps) - (rejected_logps - rejected_ref_logps)
    return -(1.0 / beta) * F.logsigmoid(beta * margin).mean()


def kl_loss(token_logprobs: torch.Tensor, ref_token_logprobs: torch.Tensor) -> torch.Tensor:
    """The +KL retain term: KL(π_ref ‖ π_θ) per completion token, averaged over tokens.

    Inputs are log-distributions over the vocabulary, shape (num_tokens, vocab), for the retain completion tokens
    only. The direction is the one the paper's authors used (TOFU's code: `kl_div(current, ref, log_target=True)`):
    Σ_v π_ref(v)·(log π_ref(v) - log π_θ(v)).
    """
    kl = F.kl_div(token_logprobs, ref_token_logprobs, reduction="none", log_target=True).sum(-1)
    return kl.mean() if kl.numel() else kl.sum()
