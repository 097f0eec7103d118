"""TOFU's formulas (npo_trl.tofu.metrics) on hand-computed inputs."""

import numpy as np
import pytest

from npo_trl.tofu.metrics import (
    forget_quality,
    model_utility,
    option_probs,
    rouge_l_recall,
    truth_ratio_score,
    truth_ratios,
)


def test_truth_ratio_and_its_aggregates_on_known_probabilities():
    correct = np.log([0.5, 0.2])
    perturbed = np.log([[0.1, 0.4], [0.4, 0.4]])  # geometric means 0.2 and 0.4
    ratios = truth_ratios(correct, perturbed)
    np.testing.assert_allclose(ratios, [0.4, 2.0])
    assert truth_ratio_score(ratios, forget=True) == pytest.approx((0.4 + 0.5) / 2)  # mean(min(R, 1/R))
    assert truth_ratio_score(ratios, forget=False) == pytest.approx((0.6 + 0.0) / 2)  # mean(max(0, 1 - R))


def test_truth_ratio_does_not_underflow_for_long_improbable_answers():
    ratios = truth_ratios(np.array([-800.0]), np.array([[-801.0, -799.0, -800.0]]))
    np.testing.assert_allclose(ratios, [1.0])


def test_option_probs_normalise_over_the_answer_and_its_perturbations():
    answer = np.log([0.5, 0.6])
    perturbed = np.log([[0.25, 0.25, 0.5], [0.2, 0.1, 0.1]])
    np.testing.assert_allclose(option_probs(answer, perturbed), [0.5 / 1.5, 0.6 / 1.0])


def test_forget_quality_is_one_for_identical_samples_and_tiny_for_separated_ones():
    ratios = np.linspace(0.1, 3.0, 20)
    assert forget_quality(ratios, ratios.copy()) == 1.0
    assert forget_quality(ratios, ratios + 100.0) < 1e-9


def test_model_utility_is_the_harmonic_mean_and_zero_with_a_zero_component():
    assert model_utility([1.0, 0.5]) == pytest.approx(2 / (1 / 1.0 + 1 / 0.5))
    assert model_utility([0.5] * 9) == pytest.approx(0.5)
    assert model_utility([0.9] * 8 + [0.0]) == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        model_utility([0.5, float("nan")])


def test_rouge_l_recall_with_stemming():
    recall = rouge_l_recall(["the cat sat", "cats running home", ""], ["the cat sat on the mat", "cat runs", "a b"])
    np.testing.assert_allclose(recall, [3 / 6, 1.0, 0.0])
