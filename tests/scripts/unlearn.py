"""Runs NPOTrainer on JSON forget/retain rows; launched by the tests under `accelerate launch` (gloo: DDP, ZeRO-3,
FSDP).

Saves the final model to <output_dir>/final and writes <output_dir>/run.json from rank 0: the log history, the
forget and retain rows each micro-batch saw on each rank, and each rank's state of a stateful method (PDU's λ).
"""

import gc
import json
import os
import sys

import torch
from accelerate import PartialState
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import TrlParser

from npo_trl import NPOConfig, NPOTrainer


class RecordingTrainer(NPOTrainer):
    """Records which forget and retain rows each micro-batch trains on."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def training_step(self, model, inputs, num_items_in_batch=None):
        step = self.state.global_step
        result = super().training_step(model, inputs, num_items_in_batch)
        retain = self._last_retain_rows if self.retain_dataset is not None else []
        self.seen.append({"step": step, "forget": inputs["row_index"].tolist(), "retain": retain})
        return result

    def _next_retain_batch(self):
        batch = super()._next_retain_batch()
        self._last_retain_rows = batch["row_index"].tolist()
        return batch


def main():
    args, extra = TrlParser((NPOConfig,)).parse_args_and_config(return_remaining_strings=True)
    model_dir, forget_path, retain_path = extra[-3:]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    forget = Dataset.from_list(json.load(open(forget_path)))
    retain = Dataset.from_list(json.load(open(retain_path))) if args.retain_loss else None
    trainer = RecordingTrainer(model, args=args, train_dataset=forget, retain_dataset=retain,
                               processing_class=tokenizer)
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model(os.path.join(args.output_dir, "final"))
    seen = [dict(s, rank=PartialState().process_index) for s in trainer.seen]
    method_states = [trainer._method_state()]
    if torch.distributed.is_initialized():
        gathered = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, (seen, method_states[0]))
        seen = [s for rank_seen, _ in gathered for s in rank_seen]
        method_states = [state for _, state in gathered]
    if PartialState().is_main_process:
        result = {
            "log_history": trainer.state.log_history,
            "seen": seen,
            "method_states": method_states,
            "num_processes": PartialState().num_processes,
            "deepspeed": trainer.is_deepspeed_enabled,
            "fsdp": trainer.is_fsdp_enabled,
        }
        with open(os.path.join(args.output_dir, "run.json"), "w") as f:
            json.dump(result, f)
    # Free the DDP/DeepSpeed wrappers (they hold the process group) and destroy it while the interpreter is whole:
    # left to its teardown, gloo's worker threads sometimes abort the exit ("terminate called without an active
    # exception") after a finished run.
    del trainer
    gc.collect()
    PartialState().destroy_process_group()
    # Even so, one finished 2-process ZeRO-3 run in several still aborted there (2026-12-05: 2 of 8): every output is
    # written and closed by now, so leave without the interpreter's teardown.
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
