"""Runs NPOTrainer with LMEvalCallback on a tiny model; launched by tests/test_lm_eval_distributed.py under
`accelerate launch` with 1 CPU process, or 2 under DeepSpeed ZeRO-3.

Usage: lm_eval_callback.py MODEL_DIR STANDIN_DIR OUTPUT_DIR PER_DEVICE_BATCH_SIZE. The stand-in's forget questions
with their answers (prompt, completion) are the training rows. Rank 0 writes OUTPUT_DIR/result.json: the lm-eval
metrics logged at steps 0, 1 and 2 (every process's, to compare them).
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
from npo_trl.lm_eval import LMEvalCallback
from npo_trl.wmdp.synthetic import FORGET_TASK, GENERAL_TASK


def main(model_dir, standin_dir, output_dir, batch_size):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with open(os.path.join(standin_dir, "wmdp.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    forget = Dataset.from_list([{"prompt": f"Question: {r['question']}\nAnswer:",
                                 "completion": " " + r["choices"][r["answer"]]} for r in rows])
    args = NPOConfig(output_dir=output_dir, per_device_train_batch_size=int(batch_size), max_steps=2,
                     learning_rate=1e-2, logging_steps=1, report_to="none", save_strategy="no", seed=0,
                     activation_checkpointing=False, disable_tqdm=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    # An odd batch size, so that lm-eval pads its batches.
    callback = LMEvalCallback([FORGET_TASK, GENERAL_TASK], tokenizer, batch_size=5, include_path=standin_dir,
                              eval_steps=1)
    trainer = NPOTrainer(model, args=args, train_dataset=forget, processing_class=tokenizer, callbacks=[callback])
    trainer.train()
    logged = [{k: v for k, v in h.items() if k.startswith("lm_eval/") or k == "step"}
              for h in trainer.state.log_history if f"lm_eval/{FORGET_TASK}/acc" in h]
    every_process = trainer.accelerator.gather_for_metrics([logged], use_gather_object=True)
    if trainer.accelerator.is_main_process:
        result = {"lm_eval": logged, "every_process": every_process,
                  "num_processes": trainer.accelerator.num_processes, "deepspeed": trainer.is_deepspeed_enabled}
        with open(os.path.join(output_dir, "result.json"), "w") as f:
            json.dump(result, f)
    del trainer
    gc.collect()
    PartialState().destroy_process_group()
    # As tests/scripts/unlearn.py: a finished 2-process ZeRO-3 run can still abort in gloo's teardown ("terminate
    # called without an active exception", seen in CI on 2026-12-05); every output is written and closed by now.
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
