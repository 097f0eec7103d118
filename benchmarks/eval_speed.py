"""One TOFU and one MUSE evaluation before and after the evaluation's speed-ups, in one run: the code of a baseline
commit (`git archive`, run from a temporary folder) and the working tree's, each in its own process, alternately,
with the same model, data and settings (each side's own defaults otherwise: the new default generation batch is part
of the change). Every per-row score and metric is compared between the two; the times come from the evaluators' own
timers (`evaluator.timer`: scoring, generation) and the wall clock around the call.

    python -m benchmarks.eval_speed                          # the 135M Llama (random weights) on TOFU and MUSE
    python -m benchmarks.eval_speed --tofu_run /tmp/run      # also a finished examples/tofu.py run's unlearned model
    python -m benchmarks.eval_speed child SPEC OUT           # one measurement (what the parent runs)

Writes benchmarks/eval_speed.json and re-renders RESULTS.md (its targets table gets the two ratios, from
`report.eval_speed_targets`).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BASELINE = "e61b7c3"  # main before the speed-ups (the last commit of the previous release's line)
SPEED_TARGET = 0.5
# A Llama of SmolLM-135M's shape: 30 layers of 576, 9 heads (3 key-value), MLP 1536, a 49152-token vocabulary.
LLAMA_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                  num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, tie_word_embeddings=True)


def _random_135m(tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**LLAMA_135M, pad_token_id=tokenizer.pad_token_id,
                                        bos_token_id=tokenizer.bos_token_id,
                                        eos_token_id=tokenizer.eos_token_id)).eval()


def _tofu_case(spec):
    """(model, evaluator, rows) of a TOFU case: the 135M Llama on TOFU's own rows, or a finished example run."""
    from transformers import AutoTokenizer

    from npo_trl.tofu import TOFUEvalSettings, TOFUEvaluator

    if spec["model"] == "135m":
        from npo_trl.stages import train_tokenizer
        from npo_trl.tofu import tofu_eval_sets

        sets = tofu_eval_sets(spec["tofu_dir"], "forget10", holdout=True)
        tokenizer = train_tokenizer([r["question"] + " " + r["answer"] for s in sets.values() for r in s], 8000)
        settings = TOFUEvalSettings(max_samples=spec["rows"], max_new_tokens=spec["max_new_tokens"])
        return _random_135m(tokenizer), TOFUEvaluator(tokenizer, sets, None, settings)
    from npo_trl.models import load_model
    from npo_trl.tofu import evaluation_sets, load_reference_stats, load_splits

    with open(os.path.join(spec["run"], "arguments.json")) as f:
        arguments = json.load(f)
    script = arguments["script"]
    fields = {k: v for k, v in arguments["settings"].items() if k != "generation_batch_size"}  # each side's default
    splits = load_splits(script["dataset"], script["forget_split"], num_authors=script["num_authors"],
                         qa_per_author=script["qa_per_author"], holdout=script["privacy"])
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(spec["run"], "full"))
    evaluator = TOFUEvaluator(tokenizer, evaluation_sets(splits),
                              load_reference_stats(os.path.join(spec["run"], "retain_stats.json")),
                              TOFUEvalSettings(**fields))
    model = load_model(os.path.join(spec["run"], "unlearn", spec["method"], "final")).eval()
    return model, evaluator


def _muse_case(spec):
    from npo_trl.muse import MUSEEvalSettings, MUSEEvaluator, muse_eval_sets
    from npo_trl.stages import train_tokenizer

    sets = muse_eval_sets("synthetic")
    tokenizer = train_tokenizer([" ".join(v for v in row.values() if isinstance(v, str)) for data in sets.values()
                                 for row in data], 8000)
    settings = MUSEEvalSettings(verbmem_max_new_tokens=spec["max_new_tokens"],
                                knowmem_max_new_tokens=spec["max_new_tokens"])
    return _random_135m(tokenizer), MUSEEvaluator(tokenizer, sets, None, settings)


def child(spec_path: str, out_path: str) -> None:
    """One measurement in this process, with the code on sys.path: a warm-up evaluation of a few rows' worth (or
    none: `warm_up` False), then the timed one; writes its seconds, timer split, metrics and per-row scores."""
    import numpy as np
    import torch

    with open(spec_path) as f:
        spec = json.load(f)
    torch.set_num_threads(spec["threads"])
    model, evaluator = (_tofu_case if spec["benchmark"] == "tofu" else _muse_case)(spec)
    if spec.get("warm_up"):
        evaluator.evaluate(model)
    start = time.perf_counter()
    if spec["benchmark"] == "tofu":  # per-row scores, then the metrics from them (what `evaluate` does)
        from npo_trl.tofu.evaluator import metrics_from_scores

        with torch.no_grad():
            evaluator.timer.reset()
            scores = evaluator.score(model)
        seconds = time.perf_counter() - start
        metrics = metrics_from_scores(scores, evaluator.reference_truth_ratios, *evaluator.reference_privacy)
        rows = {f"{name}/{key}": np.asarray(values, dtype=float).tolist() for name, set_scores in scores.items()
                for key, values in set_scores.items() if not key.startswith("greedy_")}
    else:
        metrics = evaluator.evaluate(model)
        seconds, rows = time.perf_counter() - start, {}
    with open(out_path, "w") as f:
        json.dump({"seconds": seconds, "timer": evaluator.timer.summary(), "metrics": metrics, "rows": rows}, f)


def _run_child(code_dir: str, spec: dict, workdir: str, label: str) -> dict:
    spec_path, out_path = (os.path.join(workdir, f"{label}.{kind}.json") for kind in ("spec", "out"))
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    env = {**os.environ, "PYTHONPATH": code_dir, "OMP_NUM_THREADS": str(spec["threads"])}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.eval_speed", "child", spec_path, out_path],
                          cwd=code_dir, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{label} failed:\n{proc.stderr[-4000:]}")
    with open(out_path) as f:
        return json.load(f)


def _largest_difference(before: dict, after: dict) -> float:
    """The largest difference between two runs' per-row scores and metrics, |a − b| / max(1, |a|): absolute for
    values up to 1 (probabilities, ROUGE, AUCs), relative beyond (Min-K%++ scores in the hundreds, float32's
    rounding). NaN on both sides counts as equal."""
    import numpy as np

    worst = 0.0
    for a, b in [(before["rows"][k], after["rows"][k]) for k in before["rows"]] + \
            [([before["metrics"][k]], [after["metrics"][k]]) for k in before["metrics"]]:
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
            return float("inf")
        worst = max(worst, float(np.nanmax(np.abs(a - b) / np.maximum(1.0, np.abs(a)), initial=0.0)))
    return worst


def measure(cases: list[dict], baseline: str, repeats: int, log=print) -> dict:
    """Every case before (`baseline`'s code) and after (the working tree's), `repeats` times each, alternately (the
    order swapped every repeat); medians, ratios and the largest per-row difference."""
    results = {"baseline": baseline, "repeats": repeats, "cases": {}}
    with tempfile.TemporaryDirectory() as workdir:
        old = os.path.join(workdir, "baseline")
        os.makedirs(old)
        archive = subprocess.run(["git", "archive", baseline], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
        subprocess.run(["cp", os.path.join(HERE, "eval_speed.py"), os.path.join(old, "benchmarks")], check=True)
        for spec in cases:
            runs = {"before": [], "after": []}
            for r in range(repeats):
                for side in (("before", "after") if r % 2 == 0 else ("after", "before")):
                    code = old if side == "before" else ROOT
                    runs[side].append(_run_child(code, spec, workdir, f"{spec['name']}.{side}.{r}"))
                    log(f"{spec['name']} {side} {r}: {runs[side][-1]['seconds']:.1f} s "
                        f"{json.dumps(runs[side][-1]['timer']['seconds'])}")
            median = {side: statistics.median(run["seconds"] for run in runs[side]) for side in runs}
            parts = {side: {kind: statistics.median(run["timer"]["seconds"].get(kind, 0.0) for run in runs[side])
                            for kind in ("score", "generate", "kl")} for side in runs}
            results["cases"][spec["name"]] = {
                "spec": spec, "seconds": median, "ratio": median["after"] / median["before"], "parts": parts,
                "generated_tokens": {side: runs[side][0]["timer"]["counts"].get("generated_tokens") for side in runs},
                "largest_difference": max(_largest_difference(runs["before"][0], run) for run in runs["after"]),
                "metrics": runs["after"][0]["metrics"]}
    return results


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        return child(*argv[1:3])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=BASELINE, help="the commit measured as 'before'")
    parser.add_argument("--rows", type=int, default=20, help="TOFU rows per set (135M)")
    parser.add_argument("--max_new_tokens", type=int, default=32,
                        help="greedy tokens per answer (random weights: every answer runs to this length)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tofu_run", help="a finished examples/tofu.py run: its unlearned model too")
    parser.add_argument("--method", default="npo+rt", help="the method of --tofu_run whose model is evaluated")
    parser.add_argument("--only", nargs="*", help="case names to run")
    parser.add_argument("--out", default=os.path.join(HERE, "eval_speed.json"))
    args = parser.parse_args(argv)
    tofu_dir = os.environ.get("TOFU_DIR", os.path.join(ROOT, "..", "shared", "tofu"))
    common = {"threads": args.threads, "max_new_tokens": args.max_new_tokens}
    cases = [dict(common, name="tofu_135m", benchmark="tofu", model="135m", rows=args.rows, tofu_dir=tofu_dir),
             dict(common, name="muse_135m", benchmark="muse", model="135m")]
    if args.tofu_run:
        cases.append(dict(common, name="tofu_example", benchmark="tofu", model="run", run=args.tofu_run,
                          method=args.method, warm_up=True))
    cases = [c for c in cases if not args.only or c["name"] in args.only]
    results = measure(cases, args.baseline, args.repeats)
    if args.only and os.path.exists(args.out):  # the cases not run keep their last measurement
        with open(args.out) as f:
            earlier = json.load(f)
        if earlier.get("baseline") == args.baseline:
            results["cases"] = {**earlier["cases"], **results["cases"]}
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    if args.out == os.path.join(HERE, "eval_speed.json"):  # RESULTS.md's targets table reads it
        from benchmarks.step_cost import main as step_cost_main

        step_cost_main(["--render"])
    for name, case in results["cases"].items():
        print(f"{name}: {case['seconds']['before']:.1f} s -> {case['seconds']['after']:.1f} s "
              f"(ratio {case['ratio']:.2f}), largest per-row difference {case['largest_difference']:.1e}")


if __name__ == "__main__":
    main()
