"""Runs NPOTrainer with MUSECallback on a tiny model; launched by tests/test_muse_evaluator.py under `accelerate
launch` with 1 CPU process, or 2 under DeepSpeed ZeRO-3.

Usage: muse_callback.py MODEL_DIR RETRAIN_DIR MUSE_DATA_DIR OUTPUT_DIR PER_DEVICE_BATCH_SIZE. The raw forget articles,
chunked, are the training rows. Rank 0 writes OUTPUT_DIR/result.json: the retrain model's statistics (computed across
the processes) and the MUSE metrics logged at steps 0, 1 and 2.
"""

import gc
import json
import os
import sys

import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoTokenizer

from npo_trl import NPOConfig, NPOTrainer
from npo_trl.muse import (
    MUSECallback,
    MUSEEvalSettings,
    chunk_texts,
    compute_reference_stats,
    load_muse,
    muse_eval_sets,
)


def main(model_dir, retrain_dir, data_dir, output_dir, batch_size):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    sets = muse_eval_sets(data_dir)
    forget = chunk_texts(load_muse(data_dir, "raw", "forget")["text"], tokenizer, 64)
    # Loaded before NPOConfig, which (under ZeRO-3) makes later loads partition their weights: whole on every process
    retrain_model = AutoModelForCausalLM.from_pretrained(retrain_dir, dtype=torch.float32)
    args = NPOConfig(output_dir=output_dir, per_device_train_batch_size=int(batch_size), max_steps=2,
                     learning_rate=2e-3, logging_steps=1, report_to="none", save_strategy="no", seed=0,
                     gradient_checkpointing=False, max_length=64)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    trainer = NPOTrainer(model, args=args, train_dataset=forget, processing_class=tokenizer)
    # Odd batch sizes, so the two runs pad their batches differently.
    settings = MUSEEvalSettings(batch_size=3, verbmem_max_new_tokens=16, knowmem_max_new_tokens=8,
                                knowmem_trailing_space=False)
    stats = compute_reference_stats(retrain_model.to(trainer.accelerator.device), tokenizer, sets, settings,
                                    accelerator=trainer.accelerator)
    callback = MUSECallback(tokenizer, sets, reference_stats=stats, settings=settings, eval_steps=1)
    trainer.add_callback(callback)
    callback.bind(trainer)
    trainer.train()
    if trainer.accelerator.is_main_process:
        result = {"stats": stats, "muse": [h for h in trainer.state.log_history if "muse/verbmem_forget" in h],
                  "num_processes": trainer.accelerator.num_processes, "deepspeed": trainer.is_deepspeed_enabled}
        with open(os.path.join(output_dir, "result.json"), "w") as f:
            json.dump(result, f)
    del trainer
    gc.collect()
    PartialState().destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
