"""npo_trl.attacks.RobustnessEvaluator around TOFUEvaluator: the wrapped metrics, each attack's metrics and
recoveries under its keys, the unlearned values on the attack evaluator's rows, a baseline model under the same
attacks (once), and its refusals."""

import math
from types import SimpleNamespace

import pytest

from helpers import fine_tune, toy_eval_sets, toy_qa
from npo_trl.attacks import QuantizeAttack, RelearnAttack, RobustnessEvaluator
from npo_trl.tofu import TOFUEvalSettings, TOFUEvaluator


def test_robustness_evaluator_reports_each_attack_and_its_recovery(finetuned, finetuned_dir, tokenizer):
    settings = TOFUEvalSettings(max_new_tokens=4)
    forget = toy_eval_sets()["forget"]  # agents 0-3: their city rows, then their colour rows
    evaluator = TOFUEvaluator(tokenizer, {"forget": forget}, settings=settings)
    held_out = TOFUEvaluator(tokenizer, {"forget": forget[4:]}, settings=settings)  # the colour rows
    finetuned_metrics = held_out.evaluate(finetuned)
    fine_tune(finetuned, tokenizer, toy_qa(0, 4), steps=8, lr=1e-3, ascent=True)  # a crude unlearning
    relearn_rows = toy_qa(0, 4).filter(lambda row: "live" in row["prompt"])  # the city rows only
    robust = RobustnessEvaluator(
        evaluator, [QuantizeAttack(8), RelearnAttack(tokenizer, relearn_rows, steps=10, learning_rate=1e-3)],
        finetuned_metrics=finetuned_metrics, attack_evaluator=held_out, baselines={"finetuned": finetuned_dir})
    assert robust.name == "tofu_robustness"
    metrics = robust.evaluate(finetuned)

    assert set(metrics) == set(robust.metric_names)
    assert metrics["tofu/forget_prob"] == evaluator.evaluate(finetuned)["tofu/forget_prob"]
    unlearned = metrics["attack/none/tofu/forget_prob"]
    assert unlearned < finetuned_metrics["tofu/forget_prob"]
    for attack in ("quantize8", "relearn"):
        value = metrics[f"attack/{attack}/tofu/forget_prob"]
        found = metrics[f"attack/{attack}/recovery/tofu/forget_prob"]
        assert found == pytest.approx((value - unlearned) / (finetuned_metrics["tofu/forget_prob"] - unlearned))
        assert metrics[f"attack/{attack}/tofu/forget_kl"] is None  # no reference model for an attacked copy
        assert math.isfinite(metrics[f"attack/{attack}/tofu/forget_truth_ratio"])
    assert abs(metrics["attack/quantize8/recovery/tofu/forget_prob"]) < 0.2  # rounding alone brings little back
    assert metrics["attack/relearn/recovery/tofu/forget_prob"] > 0.2  # relearning the cities brings the colours back
    assert set(robust.timer.seconds) >= {"plain", "attack/relearn", "attack/quantize8/evaluate", "total",
                                         "attack/relearn/finetuned"}
    # the baseline under each attack: the fine-tuned model (a stand-in for the retain model here) keeps its facts
    for attack in ("quantize8", "relearn"):
        assert metrics[f"attack/{attack}/finetuned/tofu/forget_prob"] == pytest.approx(
            finetuned_metrics["tofu/forget_prob"], abs=0.05)
    # the baselines are attacked once: a second evaluation reuses their metrics
    again = robust.evaluate(finetuned)
    assert "attack/relearn/finetuned" not in robust.timer.seconds
    assert all(again[key] == metrics[key] for key in metrics if "/finetuned/" in key)


def test_robustness_evaluator_refusals(tokenizer):
    evaluator = TOFUEvaluator(tokenizer, {"forget": toy_eval_sets()["forget"]})
    with pytest.raises(ValueError, match="attacks is empty"):
        RobustnessEvaluator(evaluator, [])
    with pytest.raises(ValueError, match="named 'none'.*rename"):
        RobustnessEvaluator(evaluator, {"none": QuantizeAttack(8)})
    with pytest.raises(ValueError, match="baseline is named 'recovery'.*rename"):
        RobustnessEvaluator(evaluator, [QuantizeAttack(8)], baselines={"recovery": "path"})
    robust = RobustnessEvaluator(evaluator, [QuantizeAttack(4)])
    with pytest.raises(ValueError, match="select by a benchmark metric"):
        robust.check_metric("attack/quantize4/tofu/forget_prob", has_reference_model=False)
    robust.check_metric("tofu/forget_prob", has_reference_model=False)
    # under several processes relearning is refused at once, before any evaluation
    robust = RobustnessEvaluator(evaluator, [QuantizeAttack(4), RelearnAttack(tokenizer, toy_qa(0, 1))])
    with pytest.raises(ValueError, match=r"\['relearn'\] cannot run under 2 processes.*run them on one process"):
        robust.evaluate(None, accelerator=SimpleNamespace(num_processes=2))
