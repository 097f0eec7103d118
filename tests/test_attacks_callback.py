"""npo_trl.attacks.RobustnessCallback in NPOTrainer: the attacks' metrics at the end of training, in the trainer's log
and the JSONL, the model being trained unchanged by them; under 2 ZeRO-3 processes, the main process's metrics on
every process."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from helpers import toy_eval_sets
from npo_trl import NPOConfig, NPOTrainer
from npo_trl.attacks import QuantizeAttack, RobustnessCallback, RobustnessEvaluator
from npo_trl.tofu import TOFUEvalSettings, TOFUEvaluator

ROOT = Path(__file__).resolve().parents[1]


def test_callback_logs_the_attacks_at_the_end_of_training(tmp_path, finetuned_dir, tokenizer, forget_ds):
    evaluator = TOFUEvaluator(tokenizer, {"forget": toy_eval_sets()["forget"]},
                              settings=TOFUEvalSettings(max_new_tokens=4))
    with pytest.raises(ValueError, match="needs a RobustnessEvaluator.*RobustnessEvaluator\\(evaluator, attacks\\)"):
        RobustnessCallback(evaluator)
    callback = RobustnessCallback(RobustnessEvaluator(evaluator, [QuantizeAttack(8)]))
    args = NPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, learning_rate=1e-3, max_steps=2,
                     logging_steps=1, report_to="none", activation_checkpointing=False, save_strategy="no", seed=0)
    trainer = NPOTrainer(AutoModelForCausalLM.from_pretrained(finetuned_dir), args=args, train_dataset=forget_ds,
                         processing_class=tokenizer, callbacks=[callback])
    trainer.train()

    logged = [h for h in trainer.state.log_history if "attack/quantize8/tofu/forget_prob" in h]
    assert [h["step"] for h in logged] == [2]  # at the end of training only
    rows = [json.loads(line) for line in (tmp_path / "tofu_robustness_metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [2]
    key = "attack/quantize8/tofu/forget_prob"
    assert rows[0][key] == pytest.approx(logged[0][key])
    assert rows[0]["attack/quantize8/recovery/tofu/forget_prob"] is None  # no fine-tuned model's metrics given
    # the trained model is a float model still, whose own metrics the quantized copy's are close to
    assert type(trainer.model.model.layers[0].mlp.up_proj).__name__ == "Linear"
    assert trainer.model.dtype == torch.float32
    assert rows[0][key] == pytest.approx(rows[0]["tofu/forget_prob"], abs=0.05)


@pytest.mark.slow
@pytest.mark.processes
def test_two_zero3_processes_quantize_on_the_main_process_and_share_its_metrics(tmp_path, finetuned_dir):
    sets_path = tmp_path / "sets.json"
    sets_path.write_text(json.dumps({"forget": toy_eval_sets()["forget"]}))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "examples" / "accelerate_configs" / "zero3.yaml"), "--num_processes", "2",
               "--mixed_precision", "no", "--main_process_port", "0", str(ROOT / "tests" / "scripts" /
                                                                          "robustness_callback.py"),
               finetuned_dir, str(sets_path), str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(r["deepspeed"] and r["num_processes"] == 2 for r in ranks)
    logged = [r["logged"] for r in ranks]
    assert [h["step"] for h in logged[0]] == [1]
    key = "attack/quantize8/tofu/forget_prob"
    assert logged[0][0][key] == logged[1][0][key]  # the main process's metrics, sent to the other
    assert logged[0][0][key] == pytest.approx(logged[0][0]["tofu/forget_prob"], abs=0.05)
