"""benchmarks/RESULTS.md from the measurements: the machine, the setup, step time and memory against SFT and DPO,
the targets, the evaluation's cost and the profiles. The findings written by hand below the marker line of
RESULTS.md are kept as they are."""

import importlib.metadata
import math
import os
import platform
import statistics

import torch

from benchmarks.evaluation import epochs_per_evaluation, work_shares
from benchmarks.sizes import CONFIGS, EVAL_SHARE_TARGET, TARGETS, on_gpu

FINDINGS_MARKER = "<!-- Written by hand below this line; benchmarks/step_cost.py keeps it. -->"


def write_results(path: str, markdown: str) -> None:
    """Write the measured part of RESULTS.md, keeping what follows FINDINGS_MARKER in the file there."""
    findings = ""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
        if FINDINGS_MARKER in text:
            findings = text[text.index(FINDINGS_MARKER):]
    with open(path, "w") as f:
        f.write(markdown + ("\n" + findings if findings else ""))


def evaluation_markdown(ev: dict) -> list[str]:
    ev = {**ev, **epochs_per_evaluation(ev)}
    evals, stage = ev["evaluations"], ev["stages"][-1]
    first = evals[0]
    rows = ", ".join(f"{name} {n}" for name, n in first["rows"].items())
    parts = ("score", "generate", "kl")
    t_eval, allowed = ev["one_evaluation"], ev["allowed_evaluation"]
    return [
        f"examples/tofu.py in a subprocess (`{ev['argv']}`): its synthetic TOFU, its built-in Llama and its "
        f"stages, with short fine-tunes; then its unlearning stage (`unlearn`, method `npo`, batch "
        f"{stage['batch_size']}, {ev['steps_per_epoch']:.0f} steps per epoch) timed again for {stage['epochs']:.3g} "
        "epoch(s), TOFUCallback evaluating before training and after every epoch and writing each evaluation's timing "
        "into its JSONL. The share at the example's default number of epochs is extrapolated from one evaluation (the "
        "median) and one epoch of training.",
        "",
        "| measure | value |", "|---|---:|",
        f"| one TOFUCallback evaluation ({rows} rows; {first['sequences_scored']} answers scored, greedy answers of "
        f"≤ {first['max_new_tokens']} tokens; batch {first['batch_size']}) | {t_eval:.1f} s |",
        f"| evaluations in this run | {len(evals)}: " + ", ".join(f"{e['seconds']:.1f} s" for e in evals) + " |",
        "| of which (median): scoring the answers (`candidate_logps`) / greedy generation (`generate_answers`) / "
        "forget KL (`reference_kl`) / the rest | "
        + " / ".join(f"{statistics.median(e['parts'].get(k, 0.0) for e in evals):.1f} s" for k in parts)
        + f" / {statistics.median(e['seconds'] - sum(e['parts'].get(k, 0.0) for k in parts) for e in evals):.1f} s |",
        "| tokens generated per row, per evaluation | "
        + ", ".join(f"{e['parts'].get('generated_tokens', 0) / max(1, sum(first['rows'].values())):.0f}"
                    for e in evals) + " |",
        f"| unlearning stage in this run (trainer construction + train) | {stage['seconds']:.1f} s |",
        f"| training alone, per epoch | {ev['train_epoch']:.1f} s |",
        f"| evaluation share in this run | {ev['share_run']:.0%} |",
        f"| evaluation share at the example's default {ev['default_epochs']} epochs ({ev['default_epochs'] + 1} "
        f"evaluations) | **{ev['share']:.0%}** |",
        f"| the same if generation cost nothing (scoring and KL only) | {ev['share_without_generation']:.0%} |",
        f"| one evaluation the {EVAL_SHARE_TARGET:.0%} target allows at one per epoch | {allowed:.2f} s "
        f"({t_eval / allowed:.{0 if t_eval >= 10 * allowed else 1}f}× less than measured) |",
        f"| evaluating every k epochs meets {EVAL_SHARE_TARGET:.0%} from k = | {ev['epochs_per_evaluation']} "
        f"({ev['epochs_per_evaluation_without_generation']} if generation cost nothing) |",
    ] + _privacy_markdown(ev.get("privacy_cost")) + _work_markdown(ev) + _eval_profile_markdown(ev.get("eval_profile"))


def _privacy_markdown(cost: dict | None) -> list[str]:
    if not cost:
        return []
    return [f"| the privacy metrics' share of one evaluation (the unlearned model evaluated with and without the "
            f"{cost['holdout_rows']} holdout rows, alternately, median of {cost['repeats']}: "
            f"{cost['with_privacy']:.2f} s / {cost['without_privacy']:.2f} s) | **{cost['share']:.0%}** |"]


def _work_markdown(ev: dict) -> list[str]:
    if "work" not in ev:
        return []
    ev = {**ev, **work_shares(ev)}
    work, share = ev["work"], ev["work_share"]
    return [
        f"| token-passes one evaluation needs at the least: each question once + every candidate answer / the "
        f"reference's pass for the forget KL / prompts + as many greedy tokens as the answers have | "
        f"{work['scored']} / {work['kl']} / {work['generated']} = {ev['eval_work']} |",
        f"| token-passes of one training epoch (forget tokens × 4: forward, backward ≈ 2, reference forward) | "
        f"{ev['epoch_work']} (evaluation / epoch = {ev['eval_work'] / ev['epoch_work']:.1f}) |",
        f"| **the least share** (an estimate, not a bound), evaluation costing only that work: at equal cost per "
        f"token-pass, NPO / NPO+RT (+3 passes over as many retain tokens) | **{share['npo']:.0%} / "
        f"{share['npo+rt']:.0%}** |",
        f"| the same for NPO at the speeds measured here (a scoring token-pass {ev['eval_speedup']:.2f}× as fast as a "
        f"training one: no autograd), with the trainer's construction | {ev['work_share_measured_speed']:.0%} |",
    ]


def _eval_profile_markdown(prof: dict | None) -> list[str]:
    if not prof:
        return []
    parts = ", ".join(f"{name} {ms / 1e3:.2f} s" for name, ms in prof["parts_ms"].items())
    lines = ["", f"torch.profiler over one evaluation of the unlearned model (after a warm-up evaluation; "
                 f"{prof['seconds']:.2f} s under the profiler; {parts}, the rest metrics and bookkeeping). Self CPU "
                 "time of the longest ops:", "", "| op | ms | calls |", "|---|---:|---:|"]
    lines += [f"| `{name}` | {ms:.1f} | {prof['calls'][name]} |" for name, ms in prof["ops_ms"].items()]
    lines.append(f"| all ops | {prof['total_ms']:.1f} | |")
    return lines


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover
        pass
    if on_gpu():
        info["gpu"] = torch.cuda.get_device_name()
    versions = {}
    for package in ("torch", "transformers", "trl", "accelerate", "datasets", "npo-trl"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    info["versions"] = versions
    return info


def ratio(results, key, measure, base):
    def value(k):
        if measure == "time":
            return results.get("time", {}).get("steps", {}).get(k, {}).get("median")
        entry = results.get("memory", {}).get(k, {})
        return entry.get("gpu_max_allocated", entry.get(measure)) if measure == "peak_rss" else entry.get(measure)

    a, b = value(key), value(base)
    return None if a is None or b is None or b == 0 else a / b


def check_targets(results) -> list[dict]:
    out = []
    for key, what, measure, limit, base in TARGETS:
        r = ratio(results, key, measure, base)
        out.append({"key": key, "what": what, "base": base, "limit": limit, "ratio": r,
                    "met": None if r is None else r <= limit})
    share = results.get("evaluation", {}).get("share")
    if share is not None:
        out.append({"key": "evaluation", "what": "share of the unlearning stage", "base": None,
                    "limit": EVAL_SHARE_TARGET, "ratio": share, "met": share <= EVAL_SHARE_TARGET})
    return out


def _fmt(x, spec=".2f", none="—"):
    return none if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def _header_markdown(results: dict) -> list[str]:
    sizes, machine = results["sizes"], results["machine"]
    lines = ["# Step, memory and evaluation cost: NPO against SFT and DPO", "",
             f"Written by `python -m benchmarks.step_cost{' ' + results['argv'] if results.get('argv') else ''}` on "
             f"{results['date']} in {results.get('wall_seconds', 0) / 60:.1f} minutes. Regenerate with "
             "`python -m benchmarks.step_cost` (about 10 minutes on 2 CPU cores).", ""]
    lines += ["## Machine and versions", "",
              f"- {machine['cpu']}, {machine['cpu_count']} CPUs ({machine['torch_threads']} torch "
              f"thread{'' if machine['torch_threads'] == 1 else 's'}), "
              f"{machine.get('memory_gib', '?')} GiB; {machine.get('gpu', 'no GPU')}; {machine['platform']}",
              f"- Python {machine['python']}; " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()), ""]
    params = results.get("time", {}).get("parameters")
    precision = "bf16 autocast on the GPU" if machine.get("gpu") else "fp32 on CPU"
    lines += ["## Setup", "",
              f"- Model: Llama built from a config, {_fmt(params / 1e6 if params else None, '.1f')}M parameters "
              f"(hidden {sizes['hidden_size']}, {sizes['num_layers']} layers, MLP {sizes['intermediate_size']}, "
              f"vocab {sizes['vocab_size']}, untied LM head), {precision}.",
              f"- Batch: {sizes['batch_size']} rows of {sizes['seq_len']} tokens ({sizes['prompt_len']} prompt, "
              f"{sizes['completion_len']} completion + EOS), identical lengths for every trainer (a word-level "
              "tokenizer makes every word one token), no padding; AdamW (torch), lr 1e-5 constant, max_grad_norm 1, "
              "gradient checkpointing off, no logging/eval/saving.",
              f"- Time: wall time from `on_step_begin` to `on_step_end` (forward, backward, clipping, optimizer step; "
              f"batch collation excluded, except NPO's retain batch which is drawn inside the step). All trainers in "
              f"one process, trained round-robin: {sizes['rounds']} rounds × ({sizes['warmup']} warm-up + "
              f"{sizes['steps']} timed steps), the order rotating every round; median of the timed steps.",
              f"- Memory: one subprocess per configuration and repetition ({sizes.get('memory_repeats', 1)}, "
              "interleaved; median), building the model and data, then the trainer (with its "
              f"reference copy or precompute pass) and training {sizes['memory_steps']} steps. *Peak RSS* is the "
              "subprocess's high-water mark (VmHWM; it includes what the process holds before the trainer: libraries, "
              "model, data), *training increase* "
              "the high-water mark from trainer construction on minus the RSS before it (reset through "
              "`/proc/self/clear_refs`): the trainer's own memory (gradients, optimizer state, activations, reference "
              "copy). On a GPU: `torch.cuda.max_memory_allocated`.",
              ""]
    return lines


def _table_markdown(results: dict) -> list[str]:
    sizes, machine = results["sizes"], results["machine"]
    steps = results.get("time", {}).get("steps", {})
    memory = results.get("memory", {})
    lines = []
    peak_name = "peak GPU memory (MiB)" if machine.get("gpu") else "peak RSS (MiB)"
    lines += ["## Step time and peak memory", "",
              f"| configuration | per step | median step (s) | IQR (s) | × SFT | × DPO | {peak_name} | × SFT | "
              "training increase (MiB) | × SFT |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    gpu = bool(machine.get("gpu"))
    for key, (label, *_rest) in CONFIGS.items():
        if key not in steps and key not in memory:
            continue
        s, m = steps.get(key, {}), memory.get(key, {})
        b = s.get("batch", {})
        shape = f"{b['sequences']}×{b['length']}" if b else "—"
        if "retain_sequences" in b:
            shape += f" + {b['retain_sequences']}×{b['retain_length']} retain"
        peak = m.get("gpu_max_allocated") if gpu else m.get("peak_rss")
        lines.append(
            f"| {label} | {shape} | {_fmt(s.get('median'), '.3f')} | "
            f"{_fmt(s.get('q1'), '.3f')}–{_fmt(s.get('q3'), '.3f')} | "
            f"{_fmt(ratio(results, key, 'time', 'sft'))} | {_fmt(ratio(results, key, 'time', 'dpo'))} | "
            f"{_fmt(peak / 2**20 if peak else None, '.0f')} | {_fmt(ratio(results, key, 'peak_rss', 'sft'))} | "
            f"{_fmt(m['train_rss_increase'] / 2**20 if m.get('train_rss_increase') else None, '.0f')} | "
            f"{_fmt(ratio(results, key, 'train_rss_increase', 'sft'))} |")
    pre = steps.get("npo_pre", {}).get("precompute_seconds")
    if pre is not None:
        lines += ["", f"One-off reference precompute pass of NPO (not counted per step): {pre:.2f} s for "
                      f"{sizes['num_rows']} rows ({pre / max(1, sizes['num_rows'] // sizes['batch_size']):.3f} s per "
                      "batch of forward only)."]
    return lines


EVAL_SPEED_CASES = {"tofu_135m": "TOFU evaluation time / before (135M)",
                    "muse_135m": "MUSE evaluation time / before (135M)",
                    "tofu_example": "TOFU evaluation time / before (examples/tofu.py's model)"}


def eval_speed_targets(path: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), "eval_speed.json")
                       ) -> list[dict]:
    """The evaluation speed-up's targets, from `python -m benchmarks.eval_speed`'s measurement (its JSON), if any:
    each case's time after / before, against 0.5."""
    if not os.path.exists(path):
        return []
    import json

    from benchmarks.eval_speed import SPEED_TARGET

    with open(path) as f:
        cases = json.load(f)["cases"]
    return [{"name": EVAL_SPEED_CASES.get(key, key), "limit": SPEED_TARGET, "ratio": case["ratio"],
             "met": case["ratio"] <= SPEED_TARGET} for key, case in cases.items()]


def _targets_and_evaluation_markdown(results: dict) -> list[str]:
    lines = []
    lines += ["", "## Targets", "", "| target | ratio | limit | met |", "|---|---:|---:|:---:|"]
    for t in results.get("targets", []) + eval_speed_targets():
        name = t.get("name") or (
            f"{CONFIGS[t['key']][0]} {t['what']} / {CONFIGS[t['base']][0].split(' (')[0]}" if t["base"]
            else f"TOFU evaluation, {t['what']}")
        met = "—" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {name} | {_fmt(t['ratio'])} | {t['limit']:.2f} | {met} |")

    lines += ["", "## Evaluation (TOFUCallback)", ""]
    ev = results.get("evaluation", {})
    if ev.get("status") == "ok":
        lines += evaluation_markdown(ev)
    elif ev:
        lines += [f"Not measured: {ev.get('reason', ev.get('status'))}"]
    else:
        lines += ["Not measured in this run (`--no-eval`)."]
    return lines


def _profile_markdown(results: dict) -> list[str]:
    machine, sizes, lines = results["machine"], results["sizes"], []
    prof = results.get("profile")
    if prof:
        keys = list(prof)
        ms = {k: prof[k]["ms"] for k in keys}
        calls = {k: prof[k]["calls"] for k in keys}
        lines += ["", "## Profile (torch.profiler, per step)", "",
                  f"Self {'GPU' if machine.get('gpu') else 'CPU'} time per op, ms per step "
                  f"({2 * sizes['profile_steps']} steps per configuration after warm-up, in two interleaved rounds); "
                  "the 15 ops that take longest.", "",
                  "| op | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
        names = sorted({n for k in keys for n in ms[k]}, key=lambda n: -max(ms[k].get(n, 0) for k in keys))
        for name in names[:15]:
            lines.append(f"| `{name}` | " + " | ".join(_fmt(ms[k].get(name, 0.0), '.1f') for k in keys) + " |")
        lines.append("| **total** | " + " | ".join(_fmt(sum(ms[k].values()), '.1f') for k in keys) + " |")
        heavy = [n for n in sorted({n for k in keys for n in calls[k]})
                 if n in ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::linear")
                 or "scaled_dot_product" in n or n.startswith("ChunkedLogProbFunction")]
        for name in heavy:  # the heavy work, counted: the same counts mean the same matmuls and attention
            lines.append(f"| calls of `{name}` | " + " | ".join(_fmt(calls[k].get(name, 0.0), '.0f') for k in keys)
                         + " |")
        lines.append("| calls of all ops | " + " | ".join(_fmt(sum(calls[k].values()), '.0f') for k in keys) + " |")
        if "sft" in prof and len(keys) > 1:
            for other in [k for k in keys if k != "sft"]:
                diff = sorted(((ms[other].get(n, 0) - ms["sft"].get(n, 0), n) for n in names), reverse=True)
                lines.append("")
                lines.append(f"`{other}` against `sft`: {sum(ms[other].values()) - sum(ms['sft'].values()):+.1f} ms "
                             "per step; most extra time in "
                             + ", ".join(f"`{n}` {d:+.1f} ms" for d, n in diff[:4]) + ".")
    return lines


def render_markdown(results: dict) -> str:
    """The measured part of RESULTS.md."""
    lines = (_header_markdown(results) + _table_markdown(results) + _targets_and_evaluation_markdown(results)
             + _profile_markdown(results))
    return "\n".join(lines) + "\n"
