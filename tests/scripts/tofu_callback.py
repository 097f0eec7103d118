"""Runs NPOTrainer with TOFUCallback on a tiny model; launched by tests/test_tofu_callback.py under `accelerate launch`
with 1 CPU process, or 2 under DeepSpeed ZeRO-3.

Usage: tofu_callback.py MODEL_DIR EVAL_SETS_JSON OUTPUT_DIR PER_DEVICE_BATCH_SIZE. The forget set's questions and
answers are the training rows. Rank 0 writes OUTPUT_DIR/result.json: the retain statistics (computed across the
processes) and the TOFU (and, with a "holdout" set, privacy) metrics logged at steps 0, 1 and 2.
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
from npo_trl.tofu import TOFUEvalSettings, compute_reference_stats
from npo_trl.tofu.callback import TOFUCallback


def main(model_dir, sets_path, output_dir, batch_size):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with open(sets_path) as f:
        sets = json.load(f)
    forget = Dataset.from_list([{"prompt": r["question"], "completion": " " + r["answer"]} for r in sets["forget"]])
    # The model before unlearning stands in for the retain model. Loaded before NPOConfig, which (under ZeRO-3) makes
    # later loads partition their weights for a DeepSpeed engine; this one stays whole on every process.
    retain_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    args = NPOConfig(output_dir=output_dir, per_device_train_batch_size=int(batch_size), max_steps=2,
                     learning_rate=2e-3, logging_steps=1, report_to="none", save_strategy="no", seed=0,
                     gradient_checkpointing=False)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    trainer = NPOTrainer(model, args=args, train_dataset=forget, processing_class=tokenizer)

    # Each process scores its half of the rows.
    # Odd batch sizes, so the two runs pad their batches differently.
    settings = TOFUEvalSettings(batch_size=3, max_new_tokens=12)
    stats = compute_reference_stats(retain_model.to(trainer.accelerator.device), tokenizer, sets["forget"], settings,
                                    holdout_eval_set=sets.get("holdout"), accelerator=trainer.accelerator)
    callback = TOFUCallback(tokenizer, sets, reference_stats=stats, settings=settings, eval_steps=1)
    trainer.add_callback(callback)
    callback.bind(trainer)  # NPOTrainer binds the callbacks given to it; one added later is bound by hand
    trainer.train()

    if trainer.accelerator.is_main_process:
        result = {
            "stats": stats,
            "tofu": [h for h in trainer.state.log_history if "tofu/forget_prob" in h],
            "num_processes": trainer.accelerator.num_processes,
            "deepspeed": trainer.is_deepspeed_enabled,
        }
        with open(os.path.join(output_dir, "result.json"), "w") as f:
            json.dump(result, f)
    del trainer  # free the wrappers that hold the process group, then destroy it (see tests/scripts/unlearn.py)
    gc.collect()
    PartialState().destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
