"""npo_trl.attacks.metrics: the recovery formula on hand values, its refusal, and its use over metric dicts."""

import subprocess
import sys

import pytest

from npo_trl.attacks import is_forget_metric, recoveries, recovery


def test_recovery_on_hand_values_and_its_refusal():
    # forget probability: 0.9 fine-tuned, 0.1 unlearned
    assert recovery(0.1, 0.1, 0.9) == 0.0  # nothing back
    assert recovery(0.9, 0.1, 0.9) == 1.0  # all back
    assert recovery(0.5, 0.1, 0.9) == pytest.approx(0.5)
    assert recovery(0.05, 0.1, 0.9) == pytest.approx(-0.0625)  # the attack forgets more
    # a metric that unlearning raises (TOFU's forget truth ratio score): same formula, same reading
    assert recovery(0.4, 0.8, 0.2) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=r"m_finetuned != m_unlearned \(both 0.5\).*metric that unlearning changed"):
        recovery(0.7, 0.5, 0.5)


def test_recoveries_cover_the_forget_metrics_and_skip_missing_values():
    assert [key for key in ("tofu/forget_prob", "tofu/retain_prob", "muse/verbmem_forget", "muse/privleak",
                            "privacy/mia_loss_auc", "privacy/forget_exact_memorization",
                            "privacy/holdout_exact_memorization", "tofu/model_utility")
            if is_forget_metric(key)] == ["tofu/forget_prob", "muse/verbmem_forget", "muse/privleak",
                                          "privacy/mia_loss_auc", "privacy/forget_exact_memorization"]
    finetuned = {"tofu/forget_prob": 0.9, "tofu/forget_rouge": 1.0, "tofu/forget_kl": None, "tofu/retain_prob": 0.9,
                 "tofu/forget_quality": 0.5}
    unlearned = {"tofu/forget_prob": 0.1, "tofu/forget_rouge": 0.2, "tofu/forget_kl": 0.3, "tofu/retain_prob": 0.8,
                 "tofu/forget_quality": 0.5}
    attacked = {"tofu/forget_prob": 0.5, "tofu/forget_rouge": 0.2, "tofu/forget_kl": None, "tofu/retain_prob": 0.7,
                "tofu/forget_quality": 0.6}
    assert recoveries(attacked, unlearned, finetuned) == pytest.approx(
        {"tofu/forget_prob": 0.5, "tofu/forget_rouge": 0.0, "tofu/forget_kl": None, "tofu/forget_quality": None})


def test_the_package_imports_light_and_recovery_needs_no_torch():
    code = ("import sys, npo_trl.attacks as attacks; from npo_trl.attacks import recovery; "
            "heavy = [m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules]; "
            "assert not heavy, heavy; assert 'RobustnessEvaluator' in dir(attacks); print(recovery(0.5, 0.1, 0.9))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout) == pytest.approx(0.5)
