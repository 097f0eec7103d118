"""npo_trl.attacks.RobustnessCallback in NPOTrainer (one process): the attacks' metrics at the end of training, in
the trainer's log and the JSONL; the model being trained unchanged by them."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from helpers import toy_eval_sets
from npo_trl import NPOConfig, NPOTrainer
from npo_trl.attacks import QuantizeAttack, RobustnessCallback, RobustnessEvaluator
from npo_trl.tofu import TOFUEvalSettings, TOFUEvaluator


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
