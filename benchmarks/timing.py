"""Step time (the trainers trained round-robin) and a torch.profiler table per step, through TrainerCallbacks."""

import copy
import gc
import os
import statistics
import time
from collections import defaultdict

import torch
from transformers import TrainerCallback

from benchmarks.fixtures import batch_shape, build_model, build_tokenizer, build_trainer, make_rows, parameter_count
from benchmarks.sizes import Sizes, on_gpu


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (forward, backward, clipping, optimizer step), step begin to step end."""

    def __init__(self):
        self.times, self._start = [], None

    @staticmethod
    def _sync():
        if on_gpu():
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.times.append(time.perf_counter() - self._start)


def measure_step_times(keys, sizes: Sizes, workdir: str, log=print) -> dict:
    """Median step time per configuration, the trainers trained round-robin (the order rotates every round)."""
    tokenizer = build_tokenizer(sizes.vocab_size)
    rows, retain_rows = make_rows(sizes, seed=1), make_rows(sizes, seed=2)
    base = build_model(sizes)
    trainers, timers, info = {}, {}, {}
    for key in keys:
        timers[key] = StepTimer()
        start = time.perf_counter()
        trainers[key] = build_trainer(key, copy.deepcopy(base), tokenizer, rows, retain_rows, sizes,
                                      os.path.join(workdir, key), callbacks=[timers[key]])
        info[key] = {"build_seconds": time.perf_counter() - start, "batch": batch_shape(key, trainers[key]),
                     "precompute_seconds": getattr(trainers[key], "precompute_seconds", None)}
        log(f"  built {key}: {info[key]['batch']} in {info[key]['build_seconds']:.1f} s")
    samples = defaultdict(list)
    for r in range(sizes.rounds):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for key in order:
            timer, trainer = timers[key], trainers[key]
            timer.times.clear()
            trainer.args.max_steps = sizes.warmup + sizes.steps
            trainer.train()
            samples[key].extend(timer.times[sizes.warmup:])
        log(f"  round {r + 1}/{sizes.rounds}: " + ", ".join(f"{k} {statistics.median(samples[k]):.3f}s" for k in keys))
    out = {}
    for key in keys:
        s = sorted(samples[key])
        out[key] = {**info[key], "median": statistics.median(s), "min": s[0], "max": s[-1],
                    "q1": s[len(s) // 4], "q3": s[(3 * len(s)) // 4], "n": len(s)}
    del trainers
    gc.collect()
    return {"steps": out, "parameters": parameter_count(base)}


class StepProfiler(TrainerCallback):
    """torch.profiler over the steps `first`..`last` (global step numbers, 0-based) of one `train()`, nothing else;
    adds each op's self time (ms) and calls to `times` and `calls`."""

    def __init__(self, first: int, last: int, times, calls):
        self.first, self.last, self.times, self.calls, self.prof = first, last, times, calls, None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.first:
            from torch.profiler import ProfilerActivity, profile

            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu() else [])
            self.prof = profile(activities=activities)
            self.prof.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        if self.prof is not None and state.global_step == self.last + 1:
            self.prof.__exit__(None, None, None)
            for event in self.prof.key_averages():
                self_time = event.self_device_time_total if on_gpu() else event.self_cpu_time_total
                self.times[event.key] += self_time / 1e3
                self.calls[event.key] += event.count
            self.prof = None


def profile_steps(keys, sizes: Sizes, workdir: str, rounds: int = 2) -> dict:
    """torch.profiler over `profile_steps` steps per configuration and round, after warm-up, the configurations
    interleaved round-robin: each op's self time (ms) and number of calls, per step."""
    tokenizer = build_tokenizer(sizes.vocab_size)
    rows, retain_rows = make_rows(sizes, seed=1), make_rows(sizes, seed=2)
    base = build_model(sizes)
    times, calls, trainers = {}, {}, {}
    for key in keys:
        times[key], calls[key] = defaultdict(float), defaultdict(int)
        profiler = StepProfiler(sizes.warmup, sizes.warmup + sizes.profile_steps - 1, times[key], calls[key])
        trainers[key] = build_trainer(key, copy.deepcopy(base), tokenizer, rows, retain_rows, sizes,
                                      os.path.join(workdir, "profile-" + key), callbacks=[profiler])
    for _ in range(rounds):
        for key in keys:
            trainers[key].args.max_steps = sizes.warmup + sizes.profile_steps
            trainers[key].train()
    n = rounds * sizes.profile_steps
    return {key: {"ms": {op: t / n for op, t in times[key].items()},
                  "calls": {op: c / n for op, c in calls[key].items()}} for key in keys}
