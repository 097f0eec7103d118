"""Reports of attacked unlearning runs, method × seed × attack: each forget metric after each attack and its recovery,
median [min, max] over seeds, beside the retain and fine-tuned models under the same attacks; `attacks.csv`,
`attacks.json`, `fig_attacks.png` and a markdown table. Plain data in (`attack_stage`'s results), files out; any
benchmark (the metric keys say which)."""

import csv
import json
import os
import statistics

from ..plotting import pyplot

BASELINES = ("retain", "finetuned")


def spread(values) -> dict | None:
    """Median, min and max of the values that are not None (None when there is none)."""
    values = [v for v in values if v is not None]
    return {"median": statistics.median(values), "min": min(values), "max": max(values)} if values else None


def summarize_attacks(results: dict, attacks: list[str], keys: list[str]) -> dict:
    """`attacks.json`'s content from `results` (method → seed → an `attack_stage` result) for the metric `keys`:
    `finetuned` (recovery's reference), `baselines` (attack → baseline → key → value, the retain and fine-tuned models
    under each attack) and `methods` (method → `"unlearned"` or an attack → key, and `recovery/<key>` under an attack,
    → `spread` over seeds)."""
    first = next(iter(next(iter(results.values())).values()))
    summary = {"attacks": list(attacks), "keys": list(keys), "seeds": {m: list(r) for m, r in results.items()},
               "finetuned": {key: (first.get("finetuned") or {}).get(key) for key in keys}, "baselines": {},
               "methods": {}}
    for attack in attacks:
        summary["baselines"][attack] = {
            baseline: {key: first["metrics"].get(f"attack/{attack}/{baseline}/{key}") for key in keys}
            for baseline in BASELINES if f"attack/{attack}/{baseline}/{keys[0]}" in first["metrics"]}
    for method, runs in results.items():
        metrics = [run["metrics"] for run in runs.values()]
        entry = {"unlearned": {key: spread(m.get(f"attack/none/{key}", m.get(key)) for m in metrics) for key in keys}}
        for attack in attacks:
            entry[attack] = {key: spread(m.get(f"attack/{attack}/{key}") for m in metrics) for key in keys}
            entry[attack].update({f"recovery/{key}": spread(m.get(f"attack/{attack}/recovery/{key}") for m in metrics)
                                  for key in keys})
        summary["methods"][method] = entry
    return summary


def write_attacks_csv(path: str, results: dict, attacks: list[str], keys: list[str]) -> None:
    """One line per method, seed, attack (`none`: the unlearned model) and key: the value and its recovery; then the
    baselines' lines (method `retain` / `finetuned`, seed empty)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "seed", "attack", "metric", "value", "recovery"])
        for method, runs in results.items():
            for seed, run in runs.items():
                metrics = run["metrics"]
                for key in keys:
                    writer.writerow([method, seed, "none", key, metrics.get(f"attack/none/{key}", metrics.get(key)),
                                     ""])
                    for attack in attacks:
                        writer.writerow([method, seed, attack, key, metrics.get(f"attack/{attack}/{key}"),
                                         metrics.get(f"attack/{attack}/recovery/{key}")])
        first = next(iter(next(iter(results.values())).values()))
        for baseline in BASELINES:
            for attack in attacks:
                for key in keys:
                    name = f"attack/{attack}/{baseline}/{key}"
                    if name in first["metrics"]:
                        writer.writerow([baseline, "", attack, key, first["metrics"][name], ""])


def format_spread(entry: dict | None, digits: int = 3) -> str:
    """A `spread` as a table cell: "median [min, max]" to `digits` significant digits, the median alone when min and
    max agree, "–" for None."""
    if entry is None:
        return "–"
    if entry["min"] == entry["max"]:
        return f"{entry['median']:.{digits}g}"
    return f"{entry['median']:.{digits}g} [{entry['min']:.{digits}g}, {entry['max']:.{digits}g}]"


def format_attack_table(summary: dict, key: str) -> str:
    """A markdown table for one metric `key`: per method, the unlearned value and, per attack, the attacked value with
    its recovery (median [min, max] over seeds); the fine-tuned model's value, and the retain and fine-tuned models'
    under each attack."""
    attacks = summary["attacks"]
    lines = [f"`{key}` (recovery: 0 = nothing back, 1 = the fine-tuned model's value); median [min, max] over seeds",
             "", "| model | unlearned | " + " | ".join(attacks) + " |", "|---|---:|" + "---:|" * len(attacks)]
    for method, entry in summary["methods"].items():
        cells = [f"{format_spread(entry[a][key])} (rec. {format_spread(entry[a][f'recovery/{key}'], 2)})"
                 for a in attacks]
        lines.append(f"| {method} | {format_spread(entry['unlearned'][key])} | " + " | ".join(cells) + " |")
    for baseline in BASELINES:
        values = [summary["baselines"].get(a, {}).get(baseline, {}).get(key) for a in attacks]
        if any(v is not None for v in values):
            plain = summary["finetuned"].get(key) if baseline == "finetuned" else None
            lines.append(f"| {baseline} model | {'–' if plain is None else f'{plain:.3g}'} | "
                         + " | ".join("–" if v is None else f"{v:.3g}" for v in values) + " |")
    return "\n".join(lines)


def plot_attacks(summary: dict, key: str, path: str, title: str) -> None:
    """Per method, `key` for the fine-tuned model, the unlearned model and after each attack (median over seeds,
    min-max bars), with the retain model under the same attacks (grey crosses): an attack leaks where the unlearned
    model's value rises above the retain model's under it."""
    plt = pyplot()
    methods, attacks = list(summary["methods"]), summary["attacks"]
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods) + 1, 3.6), sharey=True, squeeze=False)
    labels = ["fine-tuned", "unlearned", *attacks]
    for index, (ax, method) in enumerate(zip(axes[0], methods, strict=True)):
        entry = summary["methods"][method]
        cells = [entry["unlearned"][key], *(entry[a][key] for a in attacks)]
        xs = [x + 1 for x, c in enumerate(cells) if c is not None]
        cells = [c for c in cells if c is not None]
        medians = [c["median"] for c in cells]
        ax.errorbar(xs, medians, yerr=[[m - c["min"] for m, c in zip(medians, cells, strict=True)],
                                       [c["max"] - m for m, c in zip(medians, cells, strict=True)]],
                    fmt="o-", color=f"C{index}", capsize=3, label=method)
        if summary["finetuned"].get(key) is not None:
            ax.scatter([0], [summary["finetuned"][key]], marker="*", s=120, c="k")
        retain = [(x + 2, summary["baselines"].get(a, {}).get("retain", {}).get(key)) for x, a in enumerate(attacks)]
        retain = [(x, v) for x, v in retain if v is not None]
        if retain:
            ax.scatter(*zip(*retain, strict=True), marker="x", s=50, c="grey", label="retain model, same attack")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_title(method, fontsize=10), ax.legend(fontsize=7)
    axes[0][0].set_ylabel(key)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(), fig.savefig(path, dpi=120), plt.close(fig)


def write_attack_report(out: str, results: dict, attacks: list[str], keys: list[str], title: str) -> dict:
    """attacks.csv, attacks.json (`summarize_attacks`) and fig_attacks.png (`plot_attacks` of the first key) in `out`.
    Returns the summary."""
    summary = summarize_attacks(results, attacks, keys)
    write_attacks_csv(os.path.join(out, "attacks.csv"), results, attacks, keys)
    with open(os.path.join(out, "attacks.json"), "w") as f:
        json.dump(summary, f, indent=1)
    plot_attacks(summary, keys[0], os.path.join(out, "fig_attacks.png"), f"{title}: is it really forgotten?")
    return summary
