#!/usr/bin/env python
"""NPO's step and memory cost against trl's SFTTrainer and DPOTrainer, side by side, and what a TOFU evaluation costs.

One run measures, on one Llama built from a config (no download; fp32 on CPU, bf16 autocast on a GPU), the same
batch of identical token sequences and the same optimizer, for SFT (trl SFTTrainer, the baseline), NPO with a live
reference, NPO with precompute_ref_log_probs=True, NPO+RT, NPO+KL, SimNPO and DPO (trl DPOTrainer):

- the median time of an optimizer step after warm-up, the trainers trained round-robin (`timing.py`);
- the peak memory of each, each in its own subprocess (`memory.py`);
- TOFUCallback's time for one evaluation and its share of examples/tofu.py's unlearning stage (`evaluation.py`);
- torch.profiler tables of the steps (`timing.py`);

and writes benchmarks/RESULTS.md (`report.py`; the findings written by hand in it are kept) and results.json.

    python -m benchmarks.step_cost               # the full run (~10 min on a 2-core CPU)
    python -m benchmarks.step_cost --tiny        # a smoke run with a toy model (seconds)
    python -m benchmarks.step_cost --only sft npo_pre --no-eval   # a subset
"""

import argparse
import dataclasses
import datetime
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from benchmarks.evaluation import measure_evaluation  # noqa: E402
from benchmarks.memory import measure_memory  # noqa: E402
from benchmarks.report import check_targets, machine_info, render_markdown, write_results  # noqa: E402
from benchmarks.sizes import CONFIGS, DEFAULT, TINY, Sizes, apply_threads  # noqa: E402
from benchmarks.timing import measure_step_times, profile_steps  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def run(sizes: Sizes = DEFAULT, keys=None, out_path: str | None = None, memory: bool = True, memory_keys=None,
        evaluation: bool = True, profile=None, workdir: str | None = None, argv: str = "", log=print) -> dict:
    """Measure and write RESULTS.md (and results.json beside it); returns the results."""
    apply_threads(sizes)
    keys = list(keys or CONFIGS)
    if "sft" not in keys:
        keys.insert(0, "sft")
    out_path = out_path or os.path.join(HERE, "RESULTS.md")
    results = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "argv": argv,
               "sizes": {**dataclasses.asdict(sizes), "seq_len": sizes.seq_len}, "machine": machine_info()}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        start = time.perf_counter()
        log(f"step time: {keys}")
        results["time"] = measure_step_times(keys, sizes, tmp, log)
        if memory:
            log("peak memory")
            results["memory"] = measure_memory([k for k in keys if k in (memory_keys or keys)], sizes, tmp, log)
        if evaluation:
            log("evaluation")
            results["evaluation"] = measure_evaluation(sizes, tmp, log)
        if profile is None:  # SFT against NPO with the precomputed reference, and whatever misses a time target
            missed = {t["key"] for t in check_targets(results) if t["what"] == "time" and t["met"] is False}
            profile = [k for k in keys if k in {"sft", "npo_pre"} | missed]
        if profile:
            log(f"profile: {profile}")
            results["profile"] = profile_steps(list(profile), sizes, tmp)
        results["wall_seconds"] = time.perf_counter() - start
    results["targets"] = check_targets(results)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    write_results(out_path, render_markdown(results))
    with open(os.path.join(os.path.dirname(os.path.abspath(out_path)), "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    log(f"wrote {out_path} ({results['wall_seconds']:.0f} s)")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a toy model and few steps (smoke run)")
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS), help="configurations to run (SFT always runs)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--steps", type=int, help="timed steps per round")
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default 1; 0 for torch's default)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-eval", action="store_true")
    parser.add_argument("--profile", nargs="*", choices=list(CONFIGS),
                        help="profile these configurations (with no names: sft npo_pre). By default sft, npo_pre "
                             "and the configurations that miss a time target are profiled")
    parser.add_argument("--no-profile", action="store_true", help="profile nothing, even where a target is missed")
    parser.add_argument("--out", help="RESULTS.md path (default benchmarks/RESULTS.md)")
    parser.add_argument("--render", action="store_true",
                        help="only re-write RESULTS.md from the results.json beside it (no measurement)")
    args = parser.parse_args(argv)
    if args.render:
        out_path = args.out or os.path.join(HERE, "RESULTS.md")
        with open(os.path.join(os.path.dirname(os.path.abspath(out_path)), "results.json")) as f:
            write_results(out_path, render_markdown(json.load(f)))
        return
    sizes = TINY if args.tiny else DEFAULT
    overrides = {k: getattr(args, k) for k in ("rounds", "steps", "warmup", "threads") if getattr(args, k) is not None}
    sizes = dataclasses.replace(sizes, **overrides)
    profile = [] if args.no_profile else None if args.profile is None else (args.profile or ["sft", "npo_pre"])
    run(sizes, args.only, args.out, memory=not args.no_memory, evaluation=not args.no_eval, profile=profile,
        argv=" ".join(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
