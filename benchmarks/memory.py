"""Peak memory of each configuration, each in a fresh subprocess (RSS high-water mark on CPU, max allocated on a GPU).

    python -m benchmarks.memory KEY SIZES_JSON WORKDIR      # one measurement (what measure_memory runs)
"""

import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
from collections import defaultdict

import torch

from benchmarks.fixtures import build_model, build_tokenizer, build_trainer, make_rows
from benchmarks.sizes import Sizes, apply_threads, on_gpu

HERE = os.path.dirname(os.path.abspath(__file__))


def _rss_now() -> int:
    """Resident set size of this process now, bytes."""
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:  # pragma: no cover
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_rss_peak() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) of this process (Linux ≥ 4.0); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_peak() -> int | None:
    """The kernel's RSS high-water mark (VmHWM) of this process's address space, bytes; None without /proc.

    Unlike `getrusage(...).ru_maxrss`, it starts afresh at `exec`: Linux carries ru_maxrss over from the parent across
    fork and exec, so a subprocess of a large parent would report the parent's size."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def memory_child(key: str, sizes: Sizes, workdir: str) -> dict:
    """In a fresh process: build the model and data, then the trainer (reference copy, precompute), train a few steps;
    report the process's peak RSS (or the GPU's max allocated) and its increase over the state before the trainer."""
    apply_threads(sizes)
    tokenizer = build_tokenizer(sizes.vocab_size)
    rows, retain_rows = make_rows(sizes, seed=1), make_rows(sizes, seed=2)
    model = build_model(sizes)
    gpu = on_gpu()
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    before, peak_before = _rss_now(), _rss_peak()
    reset = _reset_rss_peak()
    trainer = build_trainer(key, model, tokenizer, rows, retain_rows, sizes, os.path.join(workdir, key))
    trainer.args.max_steps = sizes.memory_steps
    trainer.train()
    peak_after = _rss_peak()
    if peak_before is not None and peak_after is not None:
        peak = max(peak_before, peak_after)
    else:  # no /proc (macOS): getrusage, in bytes on macOS
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    out = {"key": key, "rss_before_trainer": before, "peak_rss": peak,
           "train_rss_increase": peak_after - before if reset and peak_after is not None else None}
    if gpu:
        out["gpu_max_allocated"] = torch.cuda.max_memory_allocated()
    return out


def measure_memory(keys, sizes: Sizes, workdir: str, log=print) -> dict:
    """One subprocess per configuration and repetition, one after the other (so no configuration's allocations mask
    another's), the configurations interleaved; the median over `memory_repeats` repetitions (RSS varies ~2 %)."""
    runs = defaultdict(list)
    for _ in range(sizes.memory_repeats):
        for key in keys:
            cmd = [sys.executable, "-m", "benchmarks.memory", key, json.dumps(dataclasses.asdict(sizes)), workdir]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(HERE))
            lines = [line for line in proc.stdout.splitlines() if line.startswith("MEMORY ")]
            if proc.returncode != 0 or not lines:
                raise RuntimeError(f"memory subprocess for {key} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            runs[key].append(json.loads(lines[-1][len("MEMORY "):]))
    out = {}
    for key in keys:
        out[key] = {"key": key, "runs": runs[key]}
        for field in ("peak_rss", "train_rss_increase", "rss_before_trainer", "gpu_max_allocated"):
            values = [r[field] for r in runs[key] if r.get(field) is not None]
            if values:
                out[key][field] = statistics.median(values)
        out[key].setdefault("train_rss_increase", None)
        peaks = ", ".join(f"{r['peak_rss'] / 2**20:.0f}" for r in runs[key])
        log(f"  memory {key}: peak RSS {out[key]['peak_rss'] / 2**20:.0f} MiB"
            + (f", +{out[key]['train_rss_increase'] / 2**20:.0f} MiB over the model"
               if out[key]["train_rss_increase"] is not None else "")
            + f" (runs: {peaks} MiB)")
    return out


if __name__ == "__main__":
    key, sizes_json, workdir = sys.argv[1:4]
    print("MEMORY " + json.dumps(memory_child(key, Sizes(**json.loads(sizes_json)), workdir)), flush=True)
