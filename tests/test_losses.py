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
