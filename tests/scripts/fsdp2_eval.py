"""TOFU's evaluation of FSDP2-sharded weights on 2 CPU processes; launched by tests/test_distributed.py with
`python -m torch.distributed.run --nproc_per_node 2`.

accelerate turns FSDP on only on GPU-like devices, so this script shards the model with torch's `fully_shard` itself
and gives the evaluator a minimal accelerator over the gloo process group (what the runner reads of one: the device,
the process index and count, and `gather`). Each process scores its shard of the rows, every process runs every
forward pass and decoding step (`synced_gpus`, as `evaluation_model` decides under FSDP), and the metrics are
compared with one unsharded process's.

Usage: fsdp2_eval.py MODEL_DIR EVAL_SETS_JSON OUTPUT_JSON
"""

import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from transformers import AutoModelForCausalLM, AutoTokenizer

from npo_trl.eval.runner import eval_mode
from npo_trl.tofu import TOFUEvalSettings, TOFUEvaluator, compute_reference_stats


class ProcessGroupAccelerator:
    """The parts of an accelerate `Accelerator` the evaluation runner uses, on the default process group."""

    device = torch.device("cpu")

    def __init__(self):
        self.process_index, self.num_processes = dist.get_rank(), dist.get_world_size()
        self.is_main_process = self.process_index == 0

    def gather(self, tensor):
        parts = [torch.empty_like(tensor) for _ in range(self.num_processes)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)


def main(model_dir, sets_path, output_path):
    dist.init_process_group("gloo")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with open(sets_path) as f:
        sets = json.load(f)
    whole = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(0)  # an untrained model of the same shape stands in for the retain model
    retain = AutoModelForCausalLM.from_config(whole.config)
    settings = TOFUEvalSettings(batch_size=3, max_new_tokens=6)
    stats = compute_reference_stats(retain, tokenizer, sets["forget"], settings, holdout_eval_set=sets["holdout"])
    evaluator = TOFUEvaluator(tokenizer, sets, stats, settings)
    one_process = evaluator.evaluate(whole)

    sharded = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    for layer in sharded.model.layers:
        fully_shard(layer)
    fully_shard(sharded)
    kind = type(sharded.model.layers[0].self_attn.q_proj.weight).__name__  # before any forward pass unshards it
    with eval_mode(sharded):
        two_processes = evaluator.compute(sharded, None, ProcessGroupAccelerator(), synced_gpus=True)
    if dist.get_rank() == 0:
        with open(output_path, "w") as f:
            json.dump({"one": one_process, "two": two_processes,
                       "sharded": kind}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
