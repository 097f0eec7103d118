"""Running an evaluation on one or several processes: the model in eval mode (unwrapped, every process taking part in
every forward pass under ZeRO-3 and FSDP), each process's shard of the rows in length-sorted batches, a progress bar,
the gather that restores the rows' order, and the time spent in each kind of model pass (the hook benchmarks read)."""

import contextlib
import math
import time
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm


@contextlib.contextmanager
def eval_mode(model):
    """`model` in eval mode; its train/eval mode comes back afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def evaluation_model(model, accelerator=None, gradient_checkpointing_kwargs=None):
    """(model, synced_gpus): `model` unwrapped from DDP, DeepSpeed or FSDP (sharded weights stay sharded) and in eval
    mode, and whether every process must run every forward pass and decoding step (`synced_gpus`): ZeRO-3 and FSDP
    gather each layer's weights from all processes in its forward pass. Under FSDP1 the root module's own weights
    (embeddings, final norm, LM head) are gathered for the duration, as TRL does for generation."""
    if accelerator is None:
        with eval_mode(model):
            yield model, False
        return
    from trl.distributed import DistributedBackend
    from trl.models.utils import unwrap_model_for_generation

    backend = DistributedBackend(accelerator)
    with unwrap_model_for_generation(model, accelerator, gather_deepspeed3_params=False,
                                     gradient_checkpointing_kwargs=gradient_checkpointing_kwargs) as unwrapped, \
            backend.summon_full_params(model, recurse=False), eval_mode(unwrapped):
        yield unwrapped, backend.is_zero3 or backend.is_fsdp


def one_process(accelerator) -> bool:
    """Whether the evaluation runs on one process (no accelerator, or one of a single process): the rows are all
    here, so what one pass computes for a row (a question's cache) can serve a later pass over it."""
    return accelerator is None or accelerator.num_processes == 1


def shard(num_rows: int, accelerator) -> list[int]:
    """This process's rows: equal-sized contiguous blocks, the last padded by repeating the final row, so that
    every process runs the same number of forward passes (ZeRO-3 needs it) and a gather restores the order."""
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    per_process = math.ceil(num_rows / world)
    return [min(i, num_rows - 1) for i in range(rank * per_process, (rank + 1) * per_process)]


def length_sorted(indices: list[int], lengths: list[int]) -> list[int]:
    """Positions into `indices` in order of their rows' length, so that a batch pads little."""
    return sorted(range(len(indices)), key=lambda j: (lengths[indices[j]], j))


def length_groups(lengths: Sequence[int], slack: float = 0.1, min_tokens: int = 128) -> list[list[int]]:
    """Indices of sequences of these `lengths` in sub-batches that pad little: in order of length, each sub-batch
    taking the next sequence while its padded size (count × longest) stays within `1 + slack` of its tokens, or
    while it is under `min_tokens` padded tokens (a forward pass has a cost of its own: a small model's is most of
    it)."""
    groups, tokens = [], 0
    for j in sorted(range(len(lengths)), key=lambda j: (lengths[j], j)):
        padded = (len(groups[-1]) + 1) * lengths[j] if groups else 0
        if groups and (padded <= (1 + slack) * (tokens + lengths[j]) or padded <= min_tokens):
            groups[-1].append(j)
            tokens += lengths[j]
        else:
            groups.append([j])
            tokens = lengths[j]
    return groups


def batches(indices: list[int], order: list[int], size: int, progress: bool = False, description: str = ""):
    """Rows of `indices` in `order`, `size` at a time (with a tqdm bar when `progress`)."""
    starts = range(0, len(order), size)
    for start in tqdm(starts, desc=description, disable=not progress, leave=False):
        yield [indices[j] for j in order[start:start + size]]


def gather_rows(table: torch.Tensor, order: list[int], accelerator, num_rows: int) -> np.ndarray:
    """A (shard rows, columns) table computed in `order` put back in row order, gathered over processes, cut to
    `num_rows` (the last shard's repeats dropped)."""
    table = table[torch.argsort(torch.tensor(order, device=table.device))]
    if accelerator is not None:
        table = accelerator.gather(table)
    return table[:num_rows].cpu().numpy()


class PassTimer:
    """Seconds spent in each kind of model pass (e.g. "score", "generate", "kl") and counts (e.g. generated tokens),
    summed since the last `reset()`. On an accelerator each pass ends with a synchronisation, so a pass's time is the
    device's. Evaluators time their passes with it; `evaluator.timer` is what a benchmark reads."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.seconds, self.counts = defaultdict(float), defaultdict(int)

    @contextlib.contextmanager
    def __call__(self, kind: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            if torch.accelerator.is_available():
                torch.accelerator.synchronize()
            self.seconds[kind] += time.perf_counter() - start

    def count(self, kind: str, n: int):
        self.counts[kind] += int(n)

    def summary(self) -> dict:
        return {"seconds": dict(self.seconds), "counts": dict(self.counts)}
