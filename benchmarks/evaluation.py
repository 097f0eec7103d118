"""What a TOFU evaluation costs inside examples/tofu.py's unlearning stage, measured through the hooks the code offers:
the example itself (run in a subprocess: every stage, its defaults, the `arguments.json` it writes), the library's
unlearning stage that the example runs (`npo_trl.tofu.stages.tofu_unlearning_stage`, timed here on the example's
models, data and settings), and the timing that TOFUCallback writes into `tofu_metrics.jsonl` with every evaluation
(`eval_timing`: seconds per kind of pass, generated tokens, the time it ended). Nothing is patched.

    python -m benchmarks.evaluation SIZES_JSON WORKDIR      # one measurement (what measure_evaluation runs)
"""

import dataclasses
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

from benchmarks.sizes import EVAL_SHARE_TARGET, Sizes, apply_threads

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXAMPLE = os.path.join(ROOT, "examples", "tofu.py")


def example_argv(sizes: Sizes, workdir: str) -> list[str]:
    """The example's arguments: its defaults, short fine-tunes and `eval_epochs` unlearning epochs of method npo."""
    argv = ["--output_dir", os.path.join(workdir, "tofu"), "--attacks", "none", "--methods", "npo",
            "--num_train_epochs", str(sizes.eval_epochs), "--num_authors", str(sizes.eval_authors),
            "--pretrain_epochs", str(sizes.eval_pretrain_epochs), "--finetune_epochs",
            str(sizes.eval_finetune_epochs), "--max_samples", str(sizes.eval_rows), "--logging_steps", "1000000",
            "--disable_tqdm", "true"]
    if sizes.eval_max_new_tokens:
        argv += ["--max_new_tokens", str(sizes.eval_max_new_tokens)]
    if sizes.eval_batch_size:
        argv += ["--batch_size", str(sizes.eval_batch_size)]
    if sizes.eval_tiny_model:
        argv += ["--hidden_size", "32", "--num_layers", "1", "--vocab_size", "300", "--qa_per_author", "4"]
    return argv


def run_example(argv: list[str], sizes: Sizes) -> str:
    """examples/tofu.py in a subprocess (with the benchmark's thread count); its output, or a RuntimeError with its
    error output."""
    env = {**os.environ, **({"OMP_NUM_THREADS": str(sizes.threads)} if sizes.threads else {})}
    proc = subprocess.run([sys.executable, EXAMPLE, *argv], check=False, capture_output=True, text=True, cwd=ROOT,
                          env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"examples/tofu.py {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout


def default_epochs() -> float:
    """The example's default number of unlearning epochs, as its --help states it."""
    text = run_example(["--help"], Sizes(threads=0))
    option = re.search(r"^ +--num_train_epochs NUM_TRAIN_EPOCHS.*?\(default:\s+([0-9.]+)\)", text,
                       re.MULTILINE | re.DOTALL)
    return float(option.group(1))


def tofu_child(sizes: Sizes, workdir: str) -> dict:
    """In a fresh process: examples/tofu.py's stages (a subprocess, method npo once), then its unlearning stage again
    here, on the models, data and settings of the run (its `arguments.json`), once as a warm-up and once timed from
    outside, with each evaluation's timing read from the callback's JSONL."""
    apply_threads(sizes)
    from transformers import AutoTokenizer
    from trl import ModelConfig

    from npo_trl import NPOConfig
    from npo_trl.prompts import tokenize_qa
    from npo_trl.tofu import (
        TOFUEvalSettings,
        TOFUEvaluator,
        evaluation_sets,
        idk_answers,
        load_reference_stats,
        load_splits,
    )
    from npo_trl.tofu.stages import tofu_unlearning_stage

    argv = example_argv(sizes, workdir)
    run_example(argv, sizes)  # every stage, and a first run of the unlearning stage
    out = os.path.join(workdir, "tofu")
    with open(os.path.join(out, "arguments.json")) as f:
        run = json.load(f)
    script, settings = run["script"], TOFUEvalSettings(**run["settings"])  # as the example resolved them
    args, model_args = NPOConfig(**run["training"]), ModelConfig(**run["model"])
    splits = load_splits(script["dataset"], script["forget_split"], num_authors=script["num_authors"],
                         qa_per_author=script["qa_per_author"], holdout=script["privacy"])
    eval_sets = evaluation_sets(splits)  # the example's, holdout included (--privacy)
    stats = load_reference_stats(os.path.join(out, "retain_stats.json"))

    def unlearning_stage(path):
        return tofu_unlearning_stage(os.path.join(out, "full"), args, "npo", path, splits, eval_sets, stats, settings,
                                     model_args=model_args, seed=args.seed,
                                     replacement_answers=idk_answers(script["dataset"]))

    unlearning_stage(os.path.join(workdir, "warm_up"))  # this process's first stage, not timed
    path = os.path.join(out, "unlearn", "npo")
    shutil.rmtree(path)
    start = time.perf_counter()
    unlearning_stage(path)
    stage_seconds = time.perf_counter() - start
    with open(os.path.join(path, "tofu_metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    timings = [row["eval_timing"] for row in rows]
    train_start = timings[0]["end"]  # the first evaluation runs at on_train_begin
    evaluations = [{"seconds": t["seconds"]["total"], "step": row["step"],
                    "parts": {**t["seconds"], **t["counts"]}} for t, row in zip(timings, rows, strict=True)]
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(out, "full"))
    evaluator = TOFUEvaluator(tokenizer, eval_sets, stats, settings)
    without_privacy = TOFUEvaluator(tokenizer, {k: v for k, v in eval_sets.items() if k != "holdout"}, stats,
                                    settings)
    forget_tokens = sum(len(p) + len(c) for p, c in (tokenize_qa(tokenizer, row["question"], row["answer"])
                                                      for row in splits["forget"]))
    first = evaluations[0]
    first.update(rows={name: len(s) for name, s in evaluator.sets.items()},
                 sequences_scored=sum(len(s) * len(s.candidates[0]) for s in evaluator.sets.values()),
                 batch_size=settings.batch_size, max_new_tokens=settings.max_new_tokens)
    batch = args.per_device_train_batch_size
    stage = {"seconds": stage_seconds, "train_seconds": timings[-1]["end"] - train_start + first["seconds"],
             "build_seconds": stage_seconds - (timings[-1]["end"] - train_start + first["seconds"]),
             "train_tokens_per_epoch": forget_tokens, "live_reference": True,
             "epochs": rows[-1]["epoch"], "steps": rows[-1]["step"], "batch_size": batch,
             "forget_loss": "npo", "retain_loss": None}
    return {"evaluations": evaluations, "stages": [stage], "default_epochs": default_epochs(),
            "argv": " ".join(argv).replace(workdir, "<tmp>"), "work": evaluation_work(evaluator, with_kl=True),
            "eval_profile": profile_evaluation(evaluator, os.path.join(path, "final")),
            "privacy_cost": privacy_cost(evaluator, without_privacy, os.path.join(path, "final"))}


def privacy_cost(with_privacy, without_privacy, model_path: str, repeats: int = 3) -> dict:
    """The privacy metrics' share of one evaluation: the unlearned model evaluated (one process, warm) with the holdout
    set and without it, alternately, `repeats` times each; medians of the evaluators' own timers."""
    from npo_trl.models import load_model

    model = load_model(model_path).eval()
    seconds = {"with": [], "without": []}
    for _ in range(repeats):
        for key, evaluator in (("with", with_privacy), ("without", without_privacy)):
            evaluator.evaluate(model)
            seconds[key].append(evaluator.timer.seconds["total"])
    with_seconds, without_seconds = statistics.median(seconds["with"]), statistics.median(seconds["without"])
    return {"with_privacy": with_seconds, "without_privacy": without_seconds, "repeats": repeats,
            "holdout_rows": len(with_privacy.sets["holdout"]),
            "share": (with_seconds - without_seconds) / with_seconds}


def evaluation_work(evaluator, with_kl: bool) -> dict:
    """Tokens one evaluation must run through the model at the least: each question once and every candidate answer
    (what `candidate_logps` runs), the reference model's pass over the forget answers for the KL (the model's own could
    reuse the scoring pass), and, for ROUGE, each prompt and as many greedy tokens as the reference answer has."""
    from npo_trl.eval.scoring import shared_prefix_length

    scored = generated = kl = 0
    for eval_set in evaluator.sets.values():
        for prompt, pairs in zip(eval_set.prompts, eval_set.candidates, strict=True):
            cached = shared_prefix_length([p for p, _ in pairs]) - 1
            scored += cached + sum(len(p) - cached + len(c) for p, c in pairs)
            generated += 0 if eval_set.name == "holdout" else len(prompt) + len(pairs[0][1])  # not generated
            if with_kl and eval_set.name == "forget":
                kl += len(pairs[0][0]) + len(pairs[0][1])
    return {"scored": scored, "generated": generated, "kl": kl}


def profile_evaluation(evaluator, model_path: str, top: int = 12) -> dict:
    """torch.profiler over one evaluation of the unlearned model (one process), after one unprofiled evaluation as
    warm-up: self CPU time of the longest ops, and the evaluator's own time per kind of pass."""
    from torch.profiler import ProfilerActivity, profile

    from npo_trl.models import load_model

    model = load_model(model_path).eval()
    evaluator.evaluate(model)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        evaluator.evaluate(model)
    events = prof.key_averages()
    ops = sorted(events, key=lambda e: -e.self_cpu_time_total)
    return {"seconds": evaluator.timer.seconds["total"],
            "parts_ms": {k: v * 1e3 for k, v in evaluator.timer.seconds.items() if k != "total"},
            "ops_ms": {e.key: e.self_cpu_time_total / 1e3 for e in ops[:top]},
            "calls": {e.key: e.count for e in ops[:top]},
            "total_ms": sum(e.self_cpu_time_total for e in events) / 1e3}


def measure_evaluation(sizes: Sizes, workdir: str, log=print) -> dict:
    """TOFUCallback's time for one evaluation, and its share of examples/tofu.py's unlearning stage (run in a
    subprocess), extrapolated to the example's default number of epochs."""
    cmd = [sys.executable, "-m", "benchmarks.evaluation", json.dumps(dataclasses.asdict(sizes)), workdir]
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("TOFU ")]
    if proc.returncode != 0 or not lines:
        return {"status": "failed", "reason": f"examples/tofu.py failed in the benchmark ({proc.returncode}): "
                                              f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''}",
                "stderr": proc.stderr[-4000:]}
    record = json.loads(lines[-1][len("TOFU "):])
    record["child_seconds"] = time.perf_counter() - start
    evals, stage = record["evaluations"], record["stages"][-1]
    if not evals:
        return {"status": "failed", "reason": "TOFUCallback did not evaluate in examples/tofu.py's unlearning stage."}
    t_eval = statistics.median(e["seconds"] for e in evals)
    t_total_eval = sum(e["seconds"] for e in evals)
    epochs_run = max(stage["epochs"] or 0.0, 1e-9)
    t_epoch = (stage["train_seconds"] - t_total_eval) / epochs_run  # training alone, per epoch
    default_epochs = record["default_epochs"]
    n_evals = default_epochs + 1  # one per epoch, and one before training (eval_on_start)
    share_run = t_total_eval / stage["seconds"]
    share = n_evals * t_eval / (stage["build_seconds"] + default_epochs * t_epoch + n_evals * t_eval)
    steps_per_epoch = stage["steps"] / epochs_run
    t_score = statistics.median(e["parts"].get("score", 0.0) + e["parts"].get("kl", 0.0) for e in evals)
    floor = n_evals * t_score / (stage["build_seconds"] + default_epochs * t_epoch + n_evals * t_score)
    # share ≤ s  ⇔  n·t ≤ s/(1-s)·(build + epochs·t_epoch)
    ratio_needed = EVAL_SHARE_TARGET / (1 - EVAL_SHARE_TARGET)
    allowed = ratio_needed * (stage["build_seconds"] + default_epochs * t_epoch) / n_evals
    record.update(share_without_generation=floor, allowed_evaluation=allowed)
    record.update(status="ok", one_evaluation=t_eval, train_epoch=t_epoch, share_run=share_run, share=share,
                  steps_per_epoch=steps_per_epoch)
    record.update(epochs_per_evaluation(record))
    record.update(work_shares(record))
    log(f"  one evaluation {t_eval:.1f} s; train epoch {t_epoch:.1f} s; share {share:.0%} (run {share_run:.0%})")
    return record


def work_shares(ev: dict) -> dict:
    """The share evaluation would take if it cost only its least work (`evaluation_work`, in token-passes) against
    an epoch's (a backward ≈ 2 forwards, a live reference 1 more; NPO+RT as many retain tokens again, 3 passes each):
    at equal cost per token-pass, and at the speeds measured here (scoring's token-passes per second against
    training's), with the trainer's construction time."""
    stage, work = ev["stages"][-1], ev["work"]
    tokens, n, epochs = stage["train_tokens_per_epoch"], ev["default_epochs"] + 1, ev["default_epochs"]
    eval_work = work["scored"] + work["generated"] + work["kl"]
    epoch_work = (4 if stage["live_reference"] else 3) * tokens
    scoring_seconds = statistics.median(e["parts"].get("score", 0.0) for e in ev["evaluations"])
    speedup = (work["scored"] / scoring_seconds) / (epoch_work / ev["train_epoch"])  # eval vs training token-passes
    least_seconds = eval_work / work["scored"] * scoring_seconds
    return {"eval_work": eval_work, "epoch_work": epoch_work, "eval_speedup": speedup,
            "work_share": {method: n * eval_work / (n * eval_work + epochs * w)
                           for method, w in (("npo", epoch_work), ("npo+rt", epoch_work + 3 * tokens))},
            "work_share_measured_speed": n * least_seconds / (stage["build_seconds"] + epochs * ev["train_epoch"]
                                                              + n * least_seconds)}


def epochs_per_evaluation(ev: dict) -> dict:
    """Evaluating once every k epochs meets the target when t_eval ≤ s/(1-s)·k·t_epoch: the smallest such k, with
    the evaluation as measured and with its generation left out."""
    ratio_needed = EVAL_SHARE_TARGET / (1 - EVAL_SHARE_TARGET)
    t_score = statistics.median(e["parts"].get("score", 0.0) + e["parts"].get("kl", 0.0) for e in ev["evaluations"])
    return {"epochs_per_evaluation": math.ceil(ev["one_evaluation"] / (ratio_needed * ev["train_epoch"])),
            "epochs_per_evaluation_without_generation": math.ceil(t_score / (ratio_needed * ev["train_epoch"]))}


if __name__ == "__main__":
    print("TOFU " + json.dumps(tofu_child(Sizes(**json.loads(sys.argv[1])), sys.argv[2])), flush=True)
