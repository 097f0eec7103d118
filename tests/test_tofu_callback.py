"""TOFUCallback in NPOTrainer: logging, the JSONL, best-model selection by forget quality, and 2 processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from helpers import toy_eval_sets
from npo_trl import NPOConfig, NPOTrainer
from npo_trl.eval.privacy import PRIVACY_METRICS
from npo_trl.tofu import TOFUEvalSettings, compute_reference_stats
from npo_trl.tofu.callback import TOFUCallback
from npo_trl.tofu.metrics import METRICS

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "tests" / "scripts" / "tofu_callback.py")


def config(tmp_path, **kwargs):
    defaults = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, learning_rate=2e-3, logging_steps=1,
                    report_to="none", activation_checkpointing=False, save_strategy="no", seed=0)
    return NPOConfig(**{**defaults, **kwargs})


def tofu_rows(trainer):
    return [h for h in trainer.state.log_history if "tofu/forget_prob" in h]


def jsonl(tmp_path):
    with open(tmp_path / "tofu_metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def test_best_checkpoint_by_forget_quality(tmp_path, finetuned_dir, tokenizer, forget_ds):
    sets = toy_eval_sets()
    # The model before unlearning stands in for the retain model: forget quality is 1 at step 0, then drops.
    stats = compute_reference_stats(AutoModelForCausalLM.from_pretrained(finetuned_dir), tokenizer, sets["forget"])
    callback = TOFUCallback(tokenizer, sets, reference_stats=stats, settings=TOFUEvalSettings(max_new_tokens=12))
    args = config(tmp_path, num_train_epochs=3, learning_rate=5e-4, eval_strategy="epoch",
                  save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="tofu/forget_quality",
                  greater_is_better=True)
    trainer = NPOTrainer(AutoModelForCausalLM.from_pretrained(finetuned_dir), args=args, train_dataset=forget_ds,
                         eval_dataset=forget_ds, processing_class=tokenizer, callbacks=[callback])
    assert callback.trainer is trainer  # bound by NPOTrainer
    trainer.train()

    logged = tofu_rows(trainer)
    assert [h["step"] for h in logged] == [0, 2, 4, 6]  # before training, then each epoch
    assert all(set(METRICS) <= set(h) for h in logged)
    assert logged[0]["tofu/forget_quality"] == 1.0 and logged[0]["tofu/forget_kl"] == pytest.approx(0, abs=1e-6)
    assert logged[-1]["tofu/forget_kl"] > 0 and logged[-1]["tofu/forget_prob"] < logged[0]["tofu/forget_prob"]
    assert [r["step"] for r in jsonl(tmp_path)] == [0, 2, 4, 6]
    assert all(r[k] == pytest.approx(h[k]) for r, h in zip(jsonl(tmp_path), logged, strict=False) for k in METRICS)
    # The trainer's own logging is untouched: every step logged its loss.
    assert [h["step"] for h in trainer.state.log_history if "loss/forget" in h] == [1, 2, 3, 4, 5, 6]

    # The trainer's best-model bookkeeping read tofu/forget_quality at each epoch.
    by_epoch = [(h["tofu/forget_quality"], h["step"]) for h in logged[1:]]
    best, best_step = max(by_epoch, key=lambda x: (x[0], -x[1]))  # the first of equal values wins
    assert len({q for q, _ in by_epoch}) > 1, f"no selection to check: {by_epoch}"
    assert trainer.state.best_metric == best
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best_step}")
    # load_best_model_at_end restored that checkpoint: evaluating now gives its forget quality again.
    assert trainer.evaluate()["eval_tofu/forget_quality"] == pytest.approx(best)


def test_without_eval_dataset_the_callback_evaluates_at_its_own_steps(tmp_path, finetuned, tokenizer, forget_ds):
    callback = TOFUCallback(tokenizer, toy_eval_sets(), settings=TOFUEvalSettings(max_new_tokens=8), eval_steps=2)
    trainer = NPOTrainer(finetuned, args=config(tmp_path, forget_loss="ga", max_steps=4), train_dataset=forget_ds,
                         processing_class=tokenizer, callbacks=[callback])
    trainer.train()
    logged = tofu_rows(trainer)
    assert [h["step"] for h in logged] == [0, 2, 4]
    # No retain statistics and no reference model (GA loads none): those metrics are absent, and null in the JSONL.
    assert all("tofu/forget_quality" not in h and "tofu/forget_kl" not in h for h in logged)
    rows = jsonl(tmp_path)
    assert [r["step"] for r in rows] == [0, 2, 4]
    assert all(r["tofu/forget_quality"] is None and r["tofu/forget_kl"] is None for r in rows)
    assert all(0 <= r["tofu/model_utility"] <= 1 for r in rows)
    # Logging TOFU's metrics between logging steps took none of the training metrics away.
    assert [h["step"] for h in trainer.state.log_history if "loss/forget" in h] == [1, 2, 3, 4]


def test_misconfigurations_are_refused_before_training(tmp_path, finetuned, tokenizer, forget_ds):
    sets = toy_eval_sets()
    with pytest.raises(ValueError, match="eval_steps"):
        TOFUCallback(tokenizer, sets, eval_steps=0)
    best = dict(eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True)
    cases = [
        ("tofu/forget_quality", "needs the retain model's statistics"),
        ("tofu/forget_qualty", "is not a tofu metric"),
        ("tofu/forget_kl", "needs a reference model"),  # GA loads none
        ("privacy/privleak", "best value is the retain model's"),
        ("privacy/forget_exact_memorization", "needs the 'holdout' set"),
    ]
    short = TOFUEvalSettings(max_new_tokens=4)
    for metric, message in cases:
        args = config(tmp_path, forget_loss="ga", max_steps=1, metric_for_best_model=metric, **best)
        trainer = NPOTrainer(finetuned, args=args, train_dataset=forget_ds, eval_dataset=forget_ds,
                             processing_class=tokenizer, callbacks=[TOFUCallback(tokenizer, sets, settings=short)])
        with pytest.raises(ValueError, match=message):
            trainer.train()
        assert trainer.state.global_step == 0


@pytest.mark.slow
@pytest.mark.processes
def test_two_zero3_processes_give_the_one_process_metrics(tmp_path, finetuned_dir):
    """The callback on 2 CPU processes under DeepSpeed ZeRO-3 (each scores half the rows, generation with
    synced_gpus, the reference model a DeepSpeed engine) logs what 1 process logs, privacy metrics included."""
    sets_path = tmp_path / "sets.json"
    sets_path.write_text(json.dumps(toy_eval_sets(holdout=True)))
    results = {}
    zero3 = ["--config_file", str(ROOT / "examples" / "accelerate_configs" / "zero3.yaml")]
    for num_processes, launcher in ((1, ["--cpu"]), (2, zero3)):
        out = tmp_path / f"np{num_processes}"
        cmd = [sys.executable, "-m", "accelerate.commands.launch", *launcher, "--num_processes", str(num_processes),
               "--mixed_precision", "no", "--main_process_port", "0", SCRIPT, finetuned_dir, str(sets_path), str(out),
               str(4 // num_processes)]
        proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        results[num_processes] = json.loads((out / "result.json").read_text())
        assert results[num_processes]["num_processes"] == num_processes

    one, two = results[1], results[2]
    assert two["deepspeed"] and not one["deepspeed"]
    assert two["stats"]["fingerprint"] == one["stats"]["fingerprint"]
    assert two["stats"]["truth_ratios"] == pytest.approx(one["stats"]["truth_ratios"], rel=1e-5)
    assert two["stats"]["privacy"]["auc"] == pytest.approx(one["stats"]["privacy"]["auc"], abs=1e-6)
    assert [r["step"] for r in one["tofu"]] == [r["step"] for r in two["tofu"]] == [0, 1, 2]
    for row_one, row_two in zip(one["tofu"], two["tofu"], strict=False):
        assert set(PRIVACY_METRICS) <= set(row_one)
        # PrivLeak is NaN: the stand-in retain model was trained on the forget rows (its Min-K% AUC is 1). At step 0
        # the model is that retain model, so the reference attack ranks float noise: compared from step 1 on.
        for key in METRICS + PRIVACY_METRICS:
            if key == "privacy/mia_reference_auc" and row_one["step"] == 0:
                continue
            assert row_two.get(key) == pytest.approx(row_one.get(key), rel=1e-4, abs=1e-6, nan_ok=True), \
                (row_one["step"], key)
    assert one["tofu"][0]["tofu/forget_quality"] == 1.0 and one["tofu"][-1]["tofu/forget_kl"] > 0
