"""Runs NPOTrainer with a RobustnessCallback (TOFU's forget set, the 8-bit quantization attack) on a tiny model;
launched by tests/test_attacks_callback.py under `accelerate launch` with 2 processes under DeepSpeed ZeRO-3.

Usage: robustness_callback.py MODEL_DIR EVAL_SETS_JSON OUTPUT_DIR. Each process writes OUTPUT_DIR/rank<i>.json: its
logged robustness metrics and whether the model it trained is still a float model.
"""

import gc
import json
import os
import sys

import torch
from accelerate import PartialState
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from npo_trl import NPOConfig, NPOTrainer
from npo_trl.attacks import QuantizeAttack, RobustnessCallback, RobustnessEvaluator
from npo_trl.tofu import TOFUEvalSettings, TOFUEvaluator


def main(model_dir, sets_path, output_dir):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with open(sets_path) as f:
        sets = json.load(f)
    forget = Dataset.from_list([{"prompt": r["question"], "completion": " " + r["answer"]} for r in sets["forget"]])
    args = NPOConfig(output_dir=output_dir, per_device_train_batch_size=2, max_steps=1, learning_rate=2e-3,
                     logging_steps=1, report_to="none", save_strategy="no", seed=0, activation_checkpointing=False)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    evaluator = TOFUEvaluator(tokenizer, {"forget": sets["forget"]}, settings=TOFUEvalSettings(max_new_tokens=4))
    callback = RobustnessCallback(RobustnessEvaluator(evaluator, [QuantizeAttack(8)]))
    trainer = NPOTrainer(model, args=args, train_dataset=forget, processing_class=tokenizer, callbacks=[callback])
    trainer.train()

    rank = trainer.accelerator.process_index
    with open(os.path.join(output_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"logged": [h for h in trainer.state.log_history if "attack/quantize8/tofu/forget_prob" in h],
                   "deepspeed": trainer.is_deepspeed_enabled, "num_processes": trainer.accelerator.num_processes},
                  f)
    del trainer
    gc.collect()
    PartialState().destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
