"""Reports of TOFU unlearning runs, method × seed × epoch: the best epoch that kept the model's utility, the spread
over seeds, `results.csv`/`results.json`, and the paper's Figures 5 and 6 (bands over seeds) plus the privacy figure.

Plain data in, files out. A run is the list of `TOFUCallback` rows (`tofu_metrics.jsonl`) of one method and one
seed; a table is `{method: {seed: rows}}`. matplotlib is imported only when a figure is drawn.
"""

import csv
import json
import os
import statistics

from ..plotting import pyplot
from ..stages import read_jsonl

COLLAPSE_FRACTION = 0.5  # a model that kept less than half the fine-tuned model's utility has collapsed
FQ = "tofu/forget_quality"
MU = "tofu/model_utility"


def read_metrics(path: str) -> list[dict]:
    """The rows TOFUCallback wrote to `path`/tofu_metrics.jsonl, one per evaluation."""
    return read_jsonl(os.path.join(path, "tofu_metrics.jsonl"))


def unlearned(rows: list[dict]) -> list[dict]:
    """The evaluations after training started (step > 0): the row at step 0 is the fine-tuned model, no method's
    result. All rows when there is no other."""
    return [r for r in rows if r["step"] > 0] or rows


def collapsed(row: dict, finetuned_utility: float) -> bool:
    """Whether the model kept less than `COLLAPSE_FRACTION` of the fine-tuned model's utility."""
    return (row[MU] or 0.0) < COLLAPSE_FRACTION * finetuned_utility


def best_row(rows: list[dict], finetuned_utility: float) -> dict:
    """The paper's Figure 5 point: among the unlearned epochs, the best forget quality of a model that kept at least
    `COLLAPSE_FRACTION` of the fine-tuned model's utility, so that a forget-quality peak of a collapsed model (GA's)
    does not count. When every epoch's model collapsed, the best forget quality, marked `"collapsed": true`."""
    candidates = unlearned(rows)
    kept = [r for r in candidates if not collapsed(r, finetuned_utility)]
    best = max(kept or candidates, key=lambda r: (r[FQ] or 0.0, r[MU] or 0.0))
    return {**best, "collapsed": not kept}


def peak_row(rows: list[dict], finetuned_utility: float) -> dict:
    """The unlearned epoch with the best forget quality whatever the utility, marked `"collapsed"` when its model
    kept less than `COLLAPSE_FRACTION` of the fine-tuned model's utility (a peak no one should report as
    forgetting)."""
    peak = max(unlearned(rows), key=lambda r: (r[FQ] or 0.0, r[MU] or 0.0))
    return {**peak, "collapsed": collapsed(peak, finetuned_utility)}


def seed_spread(runs: dict, keys: list[str]) -> list[dict]:
    """Per evaluation of runs that share one schedule (the same method over several seeds): for each of `keys`, the
    median, mean, min and max over the seeds (None where no seed has a value), with the first run's epoch and step.
    Raises ValueError when the runs were evaluated a different number of times (an unfinished run)."""
    lengths = {seed: len(rows) for seed, rows in runs.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"Runs of different lengths cannot be aggregated over seeds: {lengths} evaluations per seed. "
                         "Finish (or delete) the shorter runs and report again.")
    spread = []
    for at in zip(*runs.values(), strict=False):
        row = {"epoch": at[0]["epoch"], "step": at[0]["step"]}
        for key in keys:
            values = [r[key] for r in at if r.get(key) is not None]
            row[key] = {"median": statistics.median(values), "mean": statistics.fmean(values), "min": min(values),
                        "max": max(values)} if values else None
        spread.append(row)
    return spread


def summarize(table: dict, **extra) -> dict:
    """results.json's content: `extra` (e.g. the split and the sanity check), the fine-tuned model's row, the seeds,
    every row (`per_epoch`: method → seed → rows), each run's best epoch (`best`: method → seed → row, by
    `best_row`) and forget-quality peak (`peak`, by `peak_row`), and forget quality and model utility over seeds
    (`spread`: method → one entry per evaluation, by `seed_spread`)."""
    first = next(iter(next(iter(table.values())).values()))
    finetuned_utility = first[0][MU] or 0.0

    def per_run(pick):
        return {m: {seed: pick(rows, finetuned_utility) for seed, rows in runs.items()} for m, runs in table.items()}

    return {**extra, "finetuned": first[0], "seeds": list(next(iter(table.values()))), "best": per_run(best_row),
            "peak": per_run(peak_row), "spread": {m: seed_spread(runs, [FQ, MU]) for m, runs in table.items()},
            "per_epoch": table}


def write_results(out: str, table: dict, summary: dict) -> None:
    """results.csv (one line per method, seed and evaluation: every tofu/ and privacy/ metric) and results.json."""
    first = next(iter(next(iter(table.values())).values()))
    keys = [k for k in first[0] if k.startswith(("tofu/", "privacy/"))]
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "seed", "epoch", "step", *keys])
        for method, runs in table.items():
            for seed, rows in runs.items():
                for row in rows:
                    epoch = round(row["epoch"] or 0.0, 3)
                    writer.writerow([method, seed, epoch, row["step"], *(row[k] for k in keys)])
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)


def write_report(out: str, table: dict, title: str, privacy: bool = True, **extra) -> dict:
    """Every file of a report in `out`: `summarize(table, **extra)` as results.json, results.csv (`write_results`),
    Figure 5 (`fig5_tradeoff.png`), Figure 6 (`fig6_per_epoch.png`) and, with `privacy`, `fig_privacy.png`, their
    titles starting with `title`. Returns the summary."""
    summary = summarize(table, **extra)
    write_results(out, table, summary)
    plot_tradeoff(summary, os.path.join(out, "fig5_tradeoff.png"), f"{title}: forget quality vs model utility")
    plot_per_epoch(summary, os.path.join(out, "fig6_per_epoch.png"), title)
    if privacy:
        plot_privacy(summary, os.path.join(out, "fig_privacy.png"), title)
    return summary


def format_summary(summary: dict) -> str:
    """The summary as text: per method, each seed's best epoch (forget quality, model utility, PrivLeak), its
    forget-quality peak when that is a collapsed model's, the range over seeds, and the sanity check's forget quality
    of one retain model against another."""
    lines = []
    for method, best in summary["best"].items():
        for seed, row in best.items():
            leak = f"  PrivLeak {row['privacy/privleak']:.1f}%" if row.get("privacy/privleak") is not None else ""
            mark = "  (collapsed: model utility < half the fine-tuned model's)" if row["collapsed"] else ""
            lines.append(f"{method:>10} seed {seed}: best epoch {row['epoch'] or 0:.0f}  forget quality "
                         f"{row[FQ]:.3g}  model utility {row[MU]:.3f}{leak}{mark}")
            peak = summary["peak"][method][seed]
            if peak["collapsed"] and peak["step"] != row["step"]:
                lines.append(f"{'':>10}   its forget-quality peak, {peak[FQ]:.3g} at epoch {peak['epoch'] or 0:.0f}, "
                             f"is a collapsed model (model utility {peak[MU]:.3f})")
        if len(best) > 1:
            fq, mu = [row[FQ] for row in best.values()], [row[MU] for row in best.values()]
            lines.append(f"{method:>10} over {len(best)} seeds: forget quality {min(fq):.3g}-{max(fq):.3g}, model "
                         f"utility {min(mu):.3f}-{max(mu):.3f}")
    sanity = summary.get("sanity_check_retain_vs_retain")
    if sanity is not None:
        values = sanity.values() if isinstance(sanity, dict) else [sanity]
        lines.append(f"retain model vs another retain model, forget quality: {', '.join(f'{v:.3g}' for v in values)}")
    return "\n".join(lines)


def log_scale(value):
    """A forget quality for a log axis (0 and None drawn at 1e-30)."""
    return max(value or 0.0, 1e-30)


def _band(ax, spread: list[dict], key: str, label: str, color: str, log: bool = False) -> None:
    """The median over seeds as a line, min-max as a band (no band for one seed)."""
    scale = log_scale if log else (lambda v: v)
    points = [(r["epoch"] or 0.0, r[key]) for r in spread if r[key] is not None]
    epochs = [e for e, _ in points]
    ax.plot(epochs, [scale(v["median"]) for _, v in points], marker="o", label=label, color=color)
    if any(v["min"] != v["max"] for _, v in points):
        ax.fill_between(epochs, [scale(v["min"]) for _, v in points], [scale(v["max"]) for _, v in points],
                        color=color, alpha=0.2, lw=0)


def plot_tradeoff(summary: dict, path: str, title: str) -> None:
    """Figure 5: forget quality against model utility at each method's best epoch, one point per seed (hollow: every
    epoch of that run collapsed), each forget-quality peak of a collapsed model as a cross, the fine-tuned model as a
    star."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    start = summary["finetuned"]
    ax.scatter(start[MU], log_scale(start[FQ]), marker="*", s=200, c="k", label="fine-tuned (before unlearning)")
    for index, (method, best) in enumerate(summary["best"].items()):
        color = f"C{index}"
        for i, row in enumerate(best.values()):
            ax.scatter(row[MU], log_scale(row[FQ]), s=60, facecolors="none" if row["collapsed"] else color,
                       edgecolors=color, label=None if i else f"{method} (best epoch per seed)")
        peaks = [row for row in summary["peak"][method].values() if row["collapsed"]]
        if peaks:
            ax.scatter([r[MU] for r in peaks], [log_scale(r[FQ]) for r in peaks], s=50, marker="x", color=color,
                       label=f"{method}: forget-quality peak of a collapsed model")
    ax.set_yscale("log"), ax.set_xlabel("model utility"), ax.set_ylabel("forget quality (KS-test p-value)")
    ax.axhline(0.05, ls="--", c="grey", lw=1)
    ax.set_title(f"{title}\ncollapsed (hollow, ×): utility < {COLLAPSE_FRACTION}× the fine-tuned model's", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout(), fig.savefig(path, dpi=120), plt.close(fig)


def plot_per_epoch(summary: dict, path: str, title: str) -> None:
    """Figure 6: forget quality and model utility per epoch, the median over seeds with a min-max band."""
    plt = pyplot()
    fig, (ax_fq, ax_mu) = plt.subplots(1, 2, figsize=(11, 4))
    for index, (method, spread) in enumerate(summary["spread"].items()):
        _band(ax_fq, spread, FQ, method, f"C{index}", log=True)
        _band(ax_mu, spread, MU, method, f"C{index}")
    ax_fq.set_yscale("log"), ax_fq.axhline(0.05, ls="--", c="grey", lw=1)
    ax_fq.set_xlabel("epoch"), ax_fq.set_ylabel("forget quality"), ax_mu.set_xlabel("epoch")
    ax_mu.set_ylabel("model utility"), ax_fq.legend(fontsize=8)
    seeds = len(summary["seeds"])
    fig.suptitle(f"{title}, per epoch" + (f": median and min-max over {seeds} seeds" if seeds > 1 else ""))
    fig.tight_layout(), fig.savefig(path, dpi=120), plt.close(fig)


def plot_privacy(summary: dict, path: str, title: str) -> None:
    """Per epoch and method (median over seeds, min-max band): forget quality, Min-K%'s MIA AUC (the retain model's
    dotted) and PrivLeak (0 = the retain model's leak)."""
    plt = pyplot()
    keys = ["privacy/mia_min_k_auc", "privacy/privleak"]
    fig, (ax_fq, ax_auc, ax_leak) = plt.subplots(1, 3, figsize=(15, 4))
    retain_auc = (summary.get("retain_privacy") or {}).get("auc", {}).get("min_k")
    for index, (method, runs) in enumerate(summary["per_epoch"].items()):
        spread = seed_spread(runs, [FQ, *keys])
        _band(ax_fq, spread, FQ, method, f"C{index}", log=True)
        _band(ax_auc, spread, keys[0], method, f"C{index}")
        _band(ax_leak, spread, keys[1], method, f"C{index}")
    if retain_auc is not None:
        ax_auc.axhline(retain_auc, ls=":", c="k", lw=1, label="retain model")
        ax_auc.legend(fontsize=8)
    ax_fq.set_yscale("log"), ax_fq.axhline(0.05, ls="--", c="grey", lw=1), ax_leak.axhline(0, ls=":", c="k", lw=1)
    ax_fq.set_ylabel("forget quality"), ax_auc.set_ylabel("MIA AUC, Min-K% (forget vs holdout)")
    ax_leak.set_ylabel("PrivLeak %")
    ax_leak.set_title("0 = the retain model; < 0 under-, > 0 over-unlearned", fontsize=9)
    for ax in (ax_fq, ax_auc, ax_leak):
        ax.set_xlabel("epoch")
    ax_fq.legend(fontsize=8)
    fig.suptitle(f"{title}: forgetting and membership leakage, per epoch")
    fig.tight_layout(rect=(0, 0, 1, 0.95)), fig.savefig(path, dpi=120), plt.close(fig)


def write_comparison(out: str, summary: dict, attacks: dict | None = None) -> str:
    """`comparison.md` in `out`: the every-method table (`npo_trl.comparison.comparison_table`) of each method's final
    model over seeds: forget quality, model utility, PrivLeak, how many seeds collapsed (`collapsed`) and, with
    `attacks` (the attack report's summary), each attack's recovery of `tofu/forget_prob`. Returns the table."""
    from ..comparison import comparison_table

    finals = {method: {seed: rows[-1] for seed, rows in runs.items()} for method, runs in summary["per_epoch"].items()}
    utility = summary["finetuned"][MU] or 0.0
    columns = [(FQ, "forget quality"), (MU, "model utility"), ("privacy/privleak", "PrivLeak %")]
    recoveries = [(attack, "tofu/forget_prob") for attack in (attacks or {}).get("attacks", [])]
    text = comparison_table(finals, columns, lambda row: collapsed(row, utility), attacks, recoveries)
    with open(os.path.join(out, "comparison.md"), "w") as f:
        f.write(text + "\n")
    return text
