"""The unlearning objectives: NPO (Zhang, Lin, Bai & Mei 2024, "Negative Preference Optimization", arXiv 2404.05868),
its baselines, and the methods NPO is compared with (UNDIAL, WGA, SatImp, CE-U, PDU, RMU).

Every function is pure and returns a scalar loss to *minimise*. The NPO-paper losses take per-sequence
log-probabilities log π(y|x) (the SUM of the completion tokens' log-probs, prompt and padding masked) or, for the KL
term, per-token log-distributions; their equation numbers refer to the NPO paper. The token-wise losses further down
take the completion tokens flattened in sequence order, shape (num_tokens,) or (num_tokens, vocab), with `lengths`
(batch,) the number of tokens of each sequence, and average each sequence's tokens before averaging sequences:
E_(x,y)[(1/|y|)·Σ_t ℓ_t]. `NPOTrainer`, the TOFU metrics and the examples call these; no formula is written twice.
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


# ---------------------------------------------------------------- token-wise losses (the methods NPO is compared with)
def _check_lengths(lengths: torch.Tensor, num_tokens: int, device) -> torch.Tensor:
    lengths = torch.as_tensor(lengths, device=device).long()
    if lengths.dim() != 1 or bool((lengths < 0).any()) or int(lengths.sum()) != num_tokens:
        raise ValueError(f"lengths must be a 1-d tensor of non-negative token counts summing to the number of tokens "
                         f"({num_tokens}); got {lengths.tolist()}. Pass mask.sum(1) for the mask that selected them.")
    return lengths


def _sequence_mean(per_token: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """E_(x,y)[(1/|y|)·Σ_t ℓ_t] for tokens flattened in sequence order; sequences without tokens are left out."""
    lengths = _check_lengths(lengths, per_token.shape[0], per_token.device)
    sequence = torch.repeat_interleave(torch.arange(len(lengths), device=per_token.device), lengths)
    sums = torch.zeros(len(lengths), dtype=per_token.dtype, device=per_token.device).index_add(0, sequence, per_token)
    present = lengths > 0
    return (sums[present] / lengths[present]).mean() if bool(present.any()) else per_token.sum()


def _target_token_mask(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One-hot (num_tokens, vocab) of each token's label: the token being unlearned."""
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (num_tokens, vocab) and labels (num_tokens,); got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}. Select the completion positions with the mask first.")
    return F.one_hot(labels.long(), logits.shape[-1]).bool()


def wga_loss(token_logps: torch.Tensor, lengths: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """WGA, weighted gradient ascent (Wang, Zhou, Zhou, Shin, Han & Weinberger, "Rethinking LLM unlearning objectives:
    a gradient perspective and go beyond", ICLR 2025, arXiv 2502.19301): token-wise GA with each token weighted by
    its own probability, L = E[(1/|y|)·Σ_t sg(p_t^α)·log p_t], p_t = π_θ(y_t|x, y_<t), sg = stop-gradient.

    GA's token gradient carries the inverse confidence 1/p_t, which explodes once a token is forgotten; the weight
    p_t^α (α ≥ 0) tempers it. α = 0 is token-wise GA. `token_logps` (num_tokens,) are log p_t of the forget answers'
    tokens. open-unlearning averages over all tokens of the batch instead of per sequence.
    """
    return _sequence_mean(token_logps.detach().mul(alpha).exp() * token_logps, lengths)


def satimp_loss(
    token_logps: torch.Tensor, lengths: torch.Tensor, beta1: float = 5.0, beta2: float = 1.0
) -> torch.Tensor:
    """SatImp (Yang, Wang, Huang, Liu, Zhang & Han, "Exploring criteria of loss reweighting to enhance LLM
    unlearning", ICML 2025, arXiv 2505.11953): token-wise GA weighted by saturation × importance,
    L = E[(1/|y|)·Σ_t sg(p_t^β1·(1 - p_t)^β2)·log p_t].

    p_t^β1 (saturation) lowers the weight of tokens already forgotten; (1 - p_t)^β2 (importance) that of tokens the
    model finds near-certain. β2 = 0 is WGA with α = β1; β1 = β2 = 0 is token-wise GA. Defaults are open-unlearning's
    (β1 = 5, β2 = 1). open-unlearning (and the authors' code) average over all tokens of the batch, not per sequence.
    """
    p = token_logps.detach().exp()
    return _sequence_mean(p.pow(beta1) * (1 - p).pow(beta2) * token_logps, lengths)


def undial_loss(
    logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor, gamma: float = 10.0
) -> torch.Tensor:
    """UNDIAL (Dong, Lin, Belkin, Huerta & Vulić, "UNDIAL: self-distillation with adjusted logits for robust unlearning
    in large language models", NAACL 2025, arXiv 2402.10052): distil π_θ towards the frozen reference's next-token
    distribution with the forget token's logit lowered by γ, q_t = softmax(z_ref,t - γ·e_(y_t)),
    L = E[(1/|y|)·Σ_t KL(q_t ‖ π_θ,t)].

    `logits`, `ref_logits` (num_tokens, vocab) are the model's and the reference's at the completion positions (logits
    or log-softmax outputs give the same loss), `labels` (num_tokens,) the forget tokens. The authors' and
    open-unlearning's cross-entropy H(q_t, π_θ,t) differs from this KL by H(q_t), constant in θ: the same gradient,
    and here the loss is 0 at its minimum (γ = 0 with π_θ = π_ref). open-unlearning distils every position (prompt and
    padding too, where label -100 lowers the logit of token vocab-100); this distils the completion tokens only.
    """
    target = torch.log_softmax(ref_logits.detach().float() - gamma * _target_token_mask(ref_logits, labels), dim=-1)
    kl = F.kl_div(torch.log_softmax(logits.float(), dim=-1), target, reduction="none", log_target=True).sum(-1)
    return _sequence_mean(kl, lengths)


def ceu_loss(logits: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor, skip_first: int = 1) -> torch.Tensor:
    """CE-U, cross entropy unlearning (Yang 2025, "CE-U: cross entropy unlearning", arXiv 2503.01224): cross entropy
    towards the model's own distribution with the true token's logit set to -∞, q_t = softmax(sg(z_t), z_t[y_t] = -∞),
    L = E[(1/|y|)·Σ_t H(q_t, π_θ,t)] = E[(1/|y|)·Σ_t -Σ_(v≠y_t) q_t(v)·log π_θ(v|x, y_<t)].

    Its logit gradient π_θ,t - q_t lowers the true token by p_t: bounded, unlike GA's 1/p_t. No reference model.
    `logits` (num_tokens, vocab) at the completion positions, `labels` (num_tokens,). `skip_first` leaves out each
    answer's first tokens (1 in the paper's TOFU training settings, a footnote; open-unlearning's
    `ignore_first_n_answer_tokens`). open-unlearning averages over all tokens of the batch instead of per sequence.
    """
    if skip_first < 0:
        raise ValueError(f"skip_first must be >= 0 (tokens left out at the start of each answer); got {skip_first}.")
    is_target = _target_token_mask(logits, labels)
    lengths = _check_lengths(lengths, logits.shape[0], logits.device)
    starts = torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
    keep = torch.arange(logits.shape[0], device=logits.device) - starts >= skip_first
    target = torch.softmax(logits.detach().float().masked_fill(is_target, float("-inf")), dim=-1)
    cross_entropy = -(target * torch.log_softmax(logits.float(), dim=-1)).masked_fill(is_target, 0.0).sum(-1)
    return _sequence_mean(cross_entropy[keep], (lengths - skip_first).clamp(min=0))


def logit_margin_loss(logits: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """PDU's forget objective, logit-margin flattening (Entesari, Hatami, Khaziev, Ramakrishna & Fazlyab, "Constrained
    entropic unlearning: a primal-dual framework for large language models", arXiv 2506.05314):
    L = E[(1/|y|)·Σ_t (max_v z_t(v) - (1/V)·Σ_v z_t(v))²].

    0 exactly when the logits are flat (a uniform next-token distribution); softmax-free, so its gradient does not
    vanish near uniformity as the entropy's does. Adding a constant to a row changes nothing, so logits or log-softmax
    outputs, (num_tokens, vocab) at the completion positions, give the same loss. open-unlearning averages over all
    tokens of the batch, and pairs the logits at t with the label mask at t (not t + 1): one position off.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be (num_tokens, vocab) at the completion positions; got {tuple(logits.shape)}.")
    logits = logits.float()
    return _sequence_mean((logits.amax(-1) - logits.mean(-1)).pow(2), lengths)


def pdu_retain_bound(ref_retain_loss: float, slack: float) -> float:
    """PDU's constraint level (Entesari et al. 2025): ε = (1 + slack)·L_retain(π_ref), the retain loss the unlearned
    model may reach, a fraction `slack` above the reference model's own."""
    if slack < 0:
        raise ValueError(f"slack must be >= 0 (the allowed relative rise of the retain loss); got {slack}.")
    return (1.0 + slack) * float(ref_retain_loss)


def pdu_lagrangian(
    forget_loss: torch.Tensor, retain_loss: torch.Tensor, dual: float, retain_bound: float
) -> torch.Tensor:
    """PDU's primal objective (Entesari et al. 2025): the Lagrangian of min L_forget s.t. L_retain ≤ ε,
    L(θ, λ) = L_forget + λ·(L_retain - ε), minimised over θ at the current dual variable λ = `dual` ≥ 0.

    open-unlearning's PDU is this with λ stored as GradDiff's retain weight (`alpha`, 1 at the start) and ε as
    `retain_loss_eps`.
    """
    if dual < 0:
        raise ValueError(f"dual (the multiplier λ) must be >= 0; got {dual}.")
    return forget_loss + dual * (retain_loss - retain_bound)


def pdu_dual_update(dual: float, retain_loss: float, retain_bound: float, dual_step: float = 1.0) -> float:
    """PDU's projected dual ascent step (Entesari et al. 2025): λ ← max(0, λ + η_λ·(L_retain - ε)).

    λ grows while the retain constraint is violated and shrinks, never below 0, once it holds. `retain_loss` is a
    float (no gradient flows into λ). η_λ = 1 is open-unlearning's `dual_step_size`.
    """
    if dual_step < 0:
        raise ValueError(f"dual_step (the dual learning rate η_λ) must be >= 0; got {dual_step}.")
    return max(0.0, float(dual) + dual_step * (float(retain_loss) - retain_bound))


# ---------------------------------------------------------------- RMU (activations, not log-probabilities)
def activation_mse(activations: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Both terms of RMU (Li et al. 2024, "The WMDP Benchmark", arXiv 2403.03218, Algorithm 1): the mean over tokens
    of ||h - t||² / d, for `activations` h (num_tokens, d) at layer ℓ and `targets` t of the same shape or
    broadcastable to it.

    The forget term takes t = c·u (`rmu_control_vector`), the retain term t = the frozen model's activations at the
    same tokens (weighted by α). The paper's code averages over every position of the padded batch; here the tokens
    are the rows' own (no padding).
    """
    if activations.dim() != 2:
        raise ValueError(f"activations must be (num_tokens, hidden); got {tuple(activations.shape)}.")
    return (activations.float() - targets.float()).pow(2).mean()


def rmu_control_vector(hidden_size: int, steering_coeff: float, seed: int) -> torch.Tensor:
    """RMU's target c·u (Li et al. 2024, Algorithm 1): u a random unit vector, fixed for the whole run, c the steering
    coefficient. As the paper's code draws it: entries uniform in [0, 1), normalised; here from a generator seeded with
    `seed`, so that every process and every step draws the same u. Shape (hidden_size,), float32, on the CPU."""
    generator = torch.Generator().manual_seed(int(seed))
    direction = torch.rand(hidden_size, generator=generator)
    return float(steering_coeff) * direction / direction.norm()


def median_token_norm(activations: torch.Tensor) -> torch.Tensor:
    """The median over tokens of ||h||, for `activations` (num_tokens, d): the scale from which npo-trl derives RMU's
    default steering coefficient (the median, not the mean: a language model's first token often has an activation
    many times the others' norm)."""
    return activations.detach().float().norm(dim=-1).median()
