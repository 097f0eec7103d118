"""The loss functions against the paper's equations, on hand-computed log-probabilities."""

import math

import pytest
import torch

from npo_trl import losses

LOGPS = torch.tensor([-2.0, -10.0, -0.5])
REF = torch.tensor([-1.0, -3.0, -0.5])


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_ga_is_mean_log_likelihood_eq1():
    assert losses.ga_loss(LOGPS).item() == pytest.approx((-2 - 10 - 0.5) / 3)


def test_npo_matches_eq3_in_both_forms():
    beta = 0.5
    log_form = sum((2 / beta) * math.log(1 + math.exp(beta * (logp - ref_logp)))
                   for logp, ref_logp in zip(LOGPS.tolist(), REF.tolist(), strict=False)) / 3
    sigma_form = sum(-(2 / beta) * math.log(sigmoid(-beta * (logp - ref_logp)))
                     for logp, ref_logp in zip(LOGPS.tolist(), REF.tolist(), strict=False)) / 3
    assert losses.npo_loss(LOGPS, REF, beta).item() == pytest.approx(log_form, rel=1e-6)
    assert log_form == pytest.approx(sigma_form, rel=1e-9)


def test_npo_at_reference_is_2_log2_over_beta():
    assert losses.npo_loss(REF, REF, 0.1).item() == pytest.approx(2 / 0.1 * math.log(2), rel=1e-6)


def test_simnpo_formula():
    beta, gamma, lengths = 2.0, 0.3, torch.tensor([4.0, 5.0, 1.0])
    expected = sum(-(2 / beta) * math.log(sigmoid(beta * (-logp / n - gamma)))
                   for logp, n in zip(LOGPS.tolist(), lengths.tolist(), strict=False)) / 3
    assert losses.simnpo_loss(LOGPS, lengths, beta, gamma).item() == pytest.approx(expected, rel=1e-6)


def test_nll_is_per_token():
    assert losses.nll_loss(LOGPS, torch.tensor([2.0, 5.0, 1.0])).item() == pytest.approx(12.5 / 8)


def test_dpo_eq2():
    beta = 0.1
    chosen, chosen_ref = torch.tensor([-3.0]), torch.tensor([-4.0])
    rejected, rejected_ref = torch.tensor([-5.0]), torch.tensor([-2.0])
    margin = (-3 + 4) - (-5 + 2)
    expected = -(1 / beta) * math.log(sigmoid(beta * margin))
    loss = losses.dpo_loss(chosen, chosen_ref, rejected, rejected_ref, beta)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_kl_is_ref_to_policy_direction():
    p_ref, p = torch.tensor([[0.7, 0.2, 0.1]]), torch.tensor([[0.2, 0.5, 0.3]])
    expected = sum(a * math.log(a / b) for a, b in zip(p_ref[0].tolist(), p[0].tolist(), strict=False))
    reverse = sum(b * math.log(b / a) for a, b in zip(p_ref[0].tolist(), p[0].tolist(), strict=False))
    value = losses.kl_loss(p.log(), p_ref.log()).item()
    assert value == pytest.approx(expected, rel=1e-5)
    assert value != pytest.approx(reverse, rel=1e-2)
    assert losses.kl_loss(p.log(), p.log()).item() == pytest.approx(0.0, abs=1e-7)


def test_npo_is_bounded_below_while_ga_is_not():
    ref = torch.zeros(1)
    for logp in (-1.0, -10.0, -100.0, -1e4):
        assert losses.npo_loss(torch.tensor([logp]), ref, 0.1).item() >= 0.0
    assert losses.npo_loss(torch.tensor([-1e4]), ref, 0.1).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.ga_loss(torch.tensor([-1e4])).item() == -1e4  # keeps falling: no lower bound


def _per_sequence_logps(theta):
    """A differentiable stand-in for log π_θ(y|x) of 4 sequences."""
    x = torch.tensor([[1.0, 0.5], [-0.3, 2.0], [0.7, -1.2], [0.1, 0.1]])
    return torch.nn.functional.logsigmoid(x @ theta) * torch.tensor([3.0, 5.0, 2.0, 4.0])


def test_npo_gradient_is_ga_gradient_weighted_by_W_eq5():
    beta, theta = 0.7, torch.tensor([0.4, -0.2], requires_grad=True)
    ref = _per_sequence_logps(torch.tensor([1.0, 1.0])).detach()
    logps = _per_sequence_logps(theta)
    (npo_grad,) = torch.autograd.grad(losses.npo_loss(logps, ref, beta), theta)
    weights = losses.npo_weight(logps, ref, beta).detach()
    logps = _per_sequence_logps(theta)
    # E[W · ∇log π]: GA's per-sequence gradients, each scaled by its own W.
    (weighted_ga_grad,) = torch.autograd.grad(losses.ga_loss(weights * logps), theta)
    torch.testing.assert_close(npo_grad, weighted_ga_grad)
    # W matches its definition 2π^β/(π^β + π_ref^β)
    p, p_ref = logps.detach().exp(), ref.exp()
    torch.testing.assert_close(weights, 2 * p**beta / (p**beta + p_ref**beta))


@pytest.mark.parametrize("beta", [1e-2, 1e-4])
def test_npo_gradient_tends_to_ga_as_beta_to_zero_prop1(beta):
    theta = torch.tensor([0.4, -0.2], requires_grad=True)
    ref = _per_sequence_logps(torch.tensor([1.0, 1.0])).detach()
    (npo_grad,) = torch.autograd.grad(losses.npo_loss(_per_sequence_logps(theta), ref, beta), theta)
    (ga_grad,) = torch.autograd.grad(losses.ga_loss(_per_sequence_logps(theta)), theta)
    assert torch.allclose(npo_grad, ga_grad, rtol=50 * beta)
    far = losses.npo_loss(_per_sequence_logps(theta), ref, 1.0)
    (far_grad,) = torch.autograd.grad(far, theta)
    assert not torch.allclose(far_grad, ga_grad, rtol=0.05)


def test_importing_the_losses_needs_torch_only():
    import subprocess
    import sys

    code = ("import sys, npo_trl.losses; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'trl', 'transformers'}))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


# ---------------------------------------------------------------- token-wise losses: UNDIAL, WGA, SatImp, CE-U, PDU
# Two answers, of 3 and 2 tokens, flattened in order, with their token probabilities written out by hand.
TOKEN_P = [[0.5, 0.2, 0.9], [0.6, 0.1]]
TOKEN_LOGPS = torch.tensor([math.log(p) for seq in TOKEN_P for p in seq])
LENGTHS = torch.tensor([3, 2])


def sequence_mean(per_sequence_terms):
    """E_(x,y)[(1/|y|)·Σ_t ℓ_t] written out: per_sequence_terms is a list of lists of ℓ_t."""
    return sum(sum(terms) / len(terms) for terms in per_sequence_terms) / len(per_sequence_terms)


def softmax(row):
    exps = [math.exp(z) for z in row]
    return [e / sum(exps) for e in exps]


def test_wga_weights_each_token_by_its_probability_to_the_alpha():
    for alpha in (1.0, 2.5):
        expected = sequence_mean([[p**alpha * math.log(p) for p in seq] for seq in TOKEN_P])
        assert losses.wga_loss(TOKEN_LOGPS, LENGTHS, alpha).item() == pytest.approx(expected, rel=1e-6)


def test_wga_with_alpha_0_is_token_wise_ga():
    expected = sequence_mean([[math.log(p) for p in seq] for seq in TOKEN_P])
    assert losses.wga_loss(TOKEN_LOGPS, LENGTHS, 0.0).item() == pytest.approx(expected, rel=1e-6)


def test_wga_gradient_is_the_detached_weight_times_ga_gradient():
    alpha = 1.5
    logps = TOKEN_LOGPS.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(losses.wga_loss(logps, LENGTHS, alpha), logps)
    # token-wise GA's gradient for a token of a sequence of n tokens, among 2 sequences, is 1/(2n)
    ga_grad = [1 / (2 * len(seq)) for seq in TOKEN_P for _ in seq]
    probs = [p for seq in TOKEN_P for p in seq]
    expected = [p**alpha * g for p, g in zip(probs, ga_grad, strict=True)]
    torch.testing.assert_close(grad, torch.tensor(expected))
    # were the weight differentiated, d(p^α·log p)/d log p = p^α·(1 + α·log p) would scale it instead
    undetached = [p**alpha * (1 + alpha * math.log(p)) * g for p, g in zip(probs, ga_grad, strict=True)]
    assert not torch.allclose(grad, torch.tensor(undetached), rtol=1e-2)


def test_satimp_weight_is_saturation_times_importance():
    beta1, beta2 = 5.0, 1.0
    expected = sequence_mean([[p**beta1 * (1 - p) ** beta2 * math.log(p) for p in seq] for seq in TOKEN_P])
    assert losses.satimp_loss(TOKEN_LOGPS, LENGTHS).item() == pytest.approx(expected, rel=1e-6)
    beta1, beta2 = 0.3, 2.0
    expected = sequence_mean([[p**beta1 * (1 - p) ** beta2 * math.log(p) for p in seq] for seq in TOKEN_P])
    assert losses.satimp_loss(TOKEN_LOGPS, LENGTHS, beta1, beta2).item() == pytest.approx(expected, rel=1e-6)


def test_satimp_limits_are_wga_and_ga():
    wga = losses.wga_loss(TOKEN_LOGPS, LENGTHS, 2.0).item()
    assert losses.satimp_loss(TOKEN_LOGPS, LENGTHS, 2.0, 0.0).item() == pytest.approx(wga, rel=1e-6)
    ga = sequence_mean([[math.log(p) for p in seq] for seq in TOKEN_P])
    assert losses.satimp_loss(TOKEN_LOGPS, LENGTHS, 0.0, 0.0).item() == pytest.approx(ga, rel=1e-6)


def test_satimp_gradient_is_the_detached_weight_times_ga_gradient():
    beta1, beta2 = 2.0, 1.0
    logps = TOKEN_LOGPS.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(losses.satimp_loss(logps, LENGTHS, beta1, beta2), logps)
    expected = [p**beta1 * (1 - p) ** beta2 / (2 * len(seq)) for seq in TOKEN_P for p in seq]
    torch.testing.assert_close(grad, torch.tensor(expected))


# Three completion tokens over a vocabulary of 3: two of the first answer, one of the second.
LOGITS = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, -2.0]]
REF_LOGITS = [[1.5, 1.0, 0.0], [0.5, 0.5, 2.0], [1.0, 3.0, 0.0]]
LABELS = [1, 2, 0]
VOCAB_LENGTHS = torch.tensor([2, 1])


def test_undial_is_kl_from_the_reference_with_the_forget_logit_lowered_by_gamma():
    gamma = 3.0
    per_token = []
    for z, z_ref, y in zip(LOGITS, REF_LOGITS, LABELS, strict=True):
        q = softmax([zr - (gamma if v == y else 0.0) for v, zr in enumerate(z_ref)])
        p = softmax(z)
        per_token.append(sum(qv * math.log(qv / pv) for qv, pv in zip(q, p, strict=True)))
    expected = sequence_mean([per_token[:2], per_token[2:]])
    value = losses.undial_loss(torch.tensor(LOGITS), torch.tensor(REF_LOGITS), torch.tensor(LABELS), VOCAB_LENGTHS,
                               gamma)
    assert value.item() == pytest.approx(expected, rel=1e-5)
    # logits or log-softmax outputs: the same loss
    log_softmaxed = losses.undial_loss(torch.tensor(LOGITS).log_softmax(-1), torch.tensor(REF_LOGITS).log_softmax(-1),
                                       torch.tensor(LABELS), VOCAB_LENGTHS, gamma)
    assert log_softmaxed.item() == pytest.approx(expected, rel=1e-5)


def test_undial_is_zero_at_the_reference_without_adjustment_and_positive_with_it():
    logits, labels = torch.tensor(LOGITS), torch.tensor(LABELS)
    assert losses.undial_loss(logits, logits, labels, VOCAB_LENGTHS, 0.0).item() == pytest.approx(0.0, abs=1e-7)
    assert losses.undial_loss(logits, logits, labels, VOCAB_LENGTHS, 10.0).item() > 0.1


def test_undial_logit_gradient_is_model_minus_adjusted_target():
    gamma, z, z_ref, y = 2.0, LOGITS[0], REF_LOGITS[0], LABELS[0]
    logits = torch.tensor([z], requires_grad=True)
    (grad,) = torch.autograd.grad(
        losses.undial_loss(logits, torch.tensor([z_ref]), torch.tensor([y]), torch.tensor([1]), gamma), logits)
    q = softmax([zr - (gamma if v == y else 0.0) for v, zr in enumerate(z_ref)])
    torch.testing.assert_close(grad[0], torch.tensor([pv - qv for pv, qv in zip(softmax(z), q, strict=True)]))


def ceu_by_hand(z, y):
    """-Σ_(v≠y) q(v)·log p(v), q = softmax over the logits with v = y removed, p = softmax(z)."""
    others = [v for v in range(len(z)) if v != y]
    q = dict(zip(others, softmax([z[v] for v in others]), strict=True))
    p = softmax(z)
    return -sum(q[v] * math.log(p[v]) for v in others)


def test_ceu_is_cross_entropy_to_own_distribution_without_the_true_token():
    per_token = [ceu_by_hand(z, y) for z, y in zip(LOGITS, LABELS, strict=True)]
    value = losses.ceu_loss(torch.tensor(LOGITS), torch.tensor(LABELS), VOCAB_LENGTHS, skip_first=0)
    assert value.item() == pytest.approx(sequence_mean([per_token[:2], per_token[2:]]), rel=1e-5)


def test_ceu_skips_the_first_answer_token_by_default():
    # the first answer keeps only its second token; the second answer (one token) drops out of the mean
    expected = ceu_by_hand(LOGITS[1], LABELS[1])
    assert losses.ceu_loss(torch.tensor(LOGITS), torch.tensor(LABELS), VOCAB_LENGTHS).item() == pytest.approx(
        expected, rel=1e-5)


def test_ceu_target_is_detached_and_the_true_token_is_pushed_down_by_its_probability():
    z, y = LOGITS[0], LABELS[0]
    logits = torch.tensor([z], requires_grad=True)
    (grad,) = torch.autograd.grad(losses.ceu_loss(logits, torch.tensor([y]), torch.tensor([1]), 0), logits)
    others = [v for v in range(3) if v != y]
    q = [0.0] * 3
    for v, qv in zip(others, softmax([z[v] for v in others]), strict=True):
        q[v] = qv
    p = softmax(z)
    torch.testing.assert_close(grad[0], torch.tensor([pv - qv for pv, qv in zip(p, q, strict=True)]))
    assert grad[0, y].item() == pytest.approx(p[y], rel=1e-5)  # bounded by 1, where GA's is 1/p


def test_ceu_stays_finite_when_the_true_token_is_certain():
    logits = torch.tensor([[0.0, 200.0, -1.0]], requires_grad=True)
    loss = losses.ceu_loss(logits, torch.tensor([1]), torch.tensor([1]), 0)
    (grad,) = torch.autograd.grad(loss, logits)
    assert math.isfinite(loss.item()) and torch.isfinite(grad).all()


def test_logit_margin_is_squared_gap_between_max_and_mean_logit():
    per_token = [(max(z) - sum(z) / len(z)) ** 2 for z in LOGITS]
    expected = sequence_mean([per_token[:2], per_token[2:]])
    assert losses.logit_margin_loss(torch.tensor(LOGITS), VOCAB_LENGTHS).item() == pytest.approx(expected, rel=1e-6)
    log_softmaxed = losses.logit_margin_loss(torch.tensor(LOGITS).log_softmax(-1), VOCAB_LENGTHS)
    assert log_softmaxed.item() == pytest.approx(expected, rel=1e-5)
    flat = torch.full((3, 5), 0.7)
    assert losses.logit_margin_loss(flat, VOCAB_LENGTHS).item() == 0.0


def test_pdu_lagrangian_and_retain_bound():
    forget, retain = torch.tensor(0.7), torch.tensor(2.5, requires_grad=True)
    bound = losses.pdu_retain_bound(2.0, slack=0.25)
    assert bound == pytest.approx(2.5)
    value = losses.pdu_lagrangian(forget, retain, dual=0.5, retain_bound=2.0)
    assert value.item() == pytest.approx(0.7 + 0.5 * (2.5 - 2.0))
    (grad,) = torch.autograd.grad(value, retain)
    assert grad.item() == pytest.approx(0.5)  # the retain loss is weighted by λ


def test_pdu_dual_update_ascends_on_violation_and_clamps_at_zero():
    assert losses.pdu_dual_update(0.5, retain_loss=2.5, retain_bound=2.0, dual_step=2.0) == pytest.approx(1.5)
    assert losses.pdu_dual_update(0.5, retain_loss=2.25, retain_bound=2.0) == pytest.approx(0.75)
    assert losses.pdu_dual_update(0.5, retain_loss=1.75, retain_bound=2.0) == pytest.approx(0.25)
    assert losses.pdu_dual_update(0.5, retain_loss=1.0, retain_bound=2.0) == 0.0  # 0.5 - 1.0 clamps at 0
    assert losses.pdu_dual_update(0.0, retain_loss=torch.tensor(0.5), retain_bound=2.0) == 0.0


@pytest.mark.parametrize("call, field", [
    (lambda: losses.wga_loss(TOKEN_LOGPS, torch.tensor([3, 3])), "lengths"),
    (lambda: losses.ceu_loss(torch.tensor(LOGITS), torch.tensor([1, 2]), VOCAB_LENGTHS), "labels"),
    (lambda: losses.ceu_loss(torch.tensor(LOGITS), torch.tensor(LABELS), VOCAB_LENGTHS, -1), "skip_first"),
    (lambda: losses.logit_margin_loss(torch.zeros(2, 3, 4), torch.tensor([3])), "logits"),
    (lambda: losses.pdu_dual_update(1.0, 2.0, 1.0, dual_step=-0.1), "dual_step"),
    (lambda: losses.pdu_lagrangian(torch.tensor(0.0), torch.tensor(0.0), -1.0, 0.0), "dual"),
    (lambda: losses.pdu_retain_bound(1.0, -0.5), "slack"),
])
def test_token_wise_losses_refuse_bad_input_naming_the_field(call, field):
    with pytest.raises(ValueError, match=field):
        call()


def test_rmu_terms_are_the_mean_squared_distance_per_coordinate_on_hand_made_activations():
    """RMU (WMDP, Algorithm 1): forget = mean over tokens of ||h − c·u||²/d, retain = the same against the frozen
    model's activations."""
    activations = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]])
    target = torch.tensor([3.0, 4.0])  # c = 5, u = (0.6, 0.8)
    # per token ||h − c·u||²: (4 + 4), 0, (9 + 16); / d = 2, mean over 3 tokens
    assert losses.activation_mse(activations, target).item() == pytest.approx((8 + 0 + 25) / 2 / 3)
    frozen = torch.tensor([[1.0, 2.0], [3.0, 5.0], [2.0, 0.0]])
    assert losses.activation_mse(activations, frozen).item() == pytest.approx((0 + 1 + 4) / 2 / 3)
    assert losses.activation_mse(activations, activations).item() == 0.0
    with pytest.raises(ValueError, match=r"activations must be \(num_tokens, hidden\)"):
        losses.activation_mse(activations[None], target)


def test_rmu_control_vector_is_a_seeded_uniform_direction_of_norm_c():
    vector = losses.rmu_control_vector(16, 6.5, seed=42)
    assert vector.shape == (16,) and vector.norm().item() == pytest.approx(6.5, rel=1e-6)
    assert (vector >= 0).all()  # the paper's code: uniform [0, 1) entries, normalised
    assert torch.equal(vector, losses.rmu_control_vector(16, 6.5, seed=42))
    assert not torch.equal(vector, losses.rmu_control_vector(16, 6.5, seed=43))
    uniform = torch.rand(16, generator=torch.Generator().manual_seed(42))
    torch.testing.assert_close(vector, 6.5 * uniform / uniform.norm())
    assert losses.activation_mse(vector[None], vector).item() == 0.0


def test_median_token_norm():
    activations = torch.tensor([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]])  # norms 5, 1, 10
    assert losses.median_token_norm(activations).item() == 5.0
