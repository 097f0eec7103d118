"""Reports of MUSE unlearning runs (examples/muse.py): MUSE's Table 3 (a row per model: VerbMem and KnowMem on the
forget set, PrivLeak, KnowMem on the retain set), `results.csv`/`results.json`, the criteria per epoch and the C5/C6
figure.

Plain data in, files out. A run is the list of `MUSECallback` rows (`muse_metrics.jsonl`) of one method; a table is
`{method: rows}`; the reference rows (`{"target": metrics, "retrain": metrics}`) are `MUSEEvaluator`'s metrics of the
models before unlearning; the criteria are `{"c5": {method: rows}, "c6": {method: rows}}` as
`npo_trl.muse.scalability` and `sustainability` return them. matplotlib is imported only when a figure is drawn.
"""

import csv
import json
import os

from ..plotting import pyplot
from ..stages import read_jsonl

TABLE_COLUMNS = {"muse/verbmem_forget": "VerbMem D_f (lower)", "muse/knowmem_forget": "KnowMem D_f (lower)",
                 "muse/privleak": "PrivLeak (near 0)", "muse/knowmem_retain": "KnowMem D_r (higher)"}
CRITERIA_CURVES = {"muse/knowmem_retain": "o-", "muse/knowmem_forget": "s--", "muse/verbmem_forget": "^:"}


def read_metrics(path: str) -> list[dict]:
    """The rows MUSECallback wrote to `path`/muse_metrics.jsonl, one per evaluation."""
    return read_jsonl(os.path.join(path, "muse_metrics.jsonl"))


def table3(rows: dict[str, dict]) -> str:
    """MUSE's Table 3 as Markdown: a row per model (`rows`: name → metrics), its four criteria to one decimal (an empty
    cell where a criterion is `None`)."""
    def cell(value):
        return "" if value is None else f"{value:.1f}"

    lines = ["| model | " + " | ".join(TABLE_COLUMNS.values()) + " |", "|---" * (len(TABLE_COLUMNS) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(cell(row.get(key)) for key in TABLE_COLUMNS) + " |"
              for name, row in rows.items()]
    return "\n".join(lines) + "\n"


def summarize(table: dict[str, list[dict]], reference: dict[str, dict], criteria: dict | None = None,
              **extra) -> dict:
    """results.json's content: `extra` (e.g. the dataset), Table 3's rows (`table3`: the reference models', then each
    method's last evaluation), every row (`per_epoch`: method → rows) and the C5/C6 rows (`criteria`, or None)."""
    final = {**reference, **{method: rows[-1] for method, rows in table.items()}}
    return {**extra, "table3": final, "per_epoch": table, "criteria": criteria}


def write_results(out: str, summary: dict) -> None:
    """results.csv (one line per method and evaluation: every muse/ metric), table3.md and results.json."""
    table = summary["per_epoch"]
    keys = [key for key in next(iter(table.values()))[0] if key.startswith("muse/")]
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "epoch", "step", *keys])
        for method, rows in table.items():
            for row in rows:
                writer.writerow([method, round(row["epoch"] or 0.0, 3), row["step"], *(row[key] for key in keys)])
    with open(os.path.join(out, "table3.md"), "w") as f:
        f.write(table3(summary["table3"]))
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)


def plot_per_epoch(summary: dict, path: str) -> None:
    """Table 3's criteria per epoch, a line per method, the retrain model's value dotted."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(TABLE_COLUMNS), figsize=(18, 4))
    for method, rows in summary["per_epoch"].items():
        epochs = [row["epoch"] or 0.0 for row in rows]
        for ax, key in zip(axes, TABLE_COLUMNS, strict=True):
            values = [float("nan") if row[key] is None else row[key] for row in rows]
            ax.plot(epochs, values, marker="o", label=method)
    retrain = summary["table3"]["retrain"]
    for ax, (key, label) in zip(axes, TABLE_COLUMNS.items(), strict=True):
        ax.axhline(retrain[key] or 0.0, ls=":", c="k", lw=1)
        ax.set_xlabel("epoch"), ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.suptitle("MUSE, per epoch (dotted: the retrain model)")
    fig.tight_layout(rect=(0, 0, 1, 0.94)), fig.savefig(path, dpi=110), plt.close(fig)


def plot_criteria(criteria: dict, path: str) -> None:
    """C5 (against the number of forget articles) and C6 (against the number of unlearning requests): KnowMem on the
    retain set, KnowMem and VerbMem on the forget set, a curve per method and criterion."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (name, xlabel) in zip(axes, (("c5", "forget articles (scal forget_k)"),
                                         ("c6", "unlearning requests (sust forget_1..k)")), strict=True):
        for method, rows in criteria[name].items():
            x = [row["forget_rows"] if name == "c5" else row["forget_set"] for row in rows]
            for key, style in CRITERIA_CURVES.items():
                ax.plot(x, [row[key] for row in rows], style, label=f"{method} {TABLE_COLUMNS[key]}")
        ax.set_xlabel(xlabel), ax.set_ylabel("×100")
    axes[0].set_title("C5 scalability"), axes[1].set_title("C6 sustainability"), axes[0].legend(fontsize=7)
    fig.tight_layout(), fig.savefig(path, dpi=110), plt.close(fig)


def write_report(out: str, table: dict[str, list[dict]], reference: dict[str, dict], criteria: dict | None = None,
                 **extra) -> dict:
    """Every file of a report in `out`: `summarize(table, reference, criteria, **extra)` as results.json, with
    results.csv and table3.md (`write_results`), `fig_per_epoch.png` and, with `criteria`, `fig_c5_c6.png`. Returns
    the summary."""
    summary = summarize(table, reference, criteria, **extra)
    write_results(out, summary)
    plot_per_epoch(summary, os.path.join(out, "fig_per_epoch.png"))
    if criteria:
        plot_criteria(criteria, os.path.join(out, "fig_c5_c6.png"))
    return summary


def write_comparison(out: str, table: dict[str, list[dict]], attacks: dict | None = None) -> str:
    """`comparison.md` in `out`: the every-method table (`npo_trl.comparison.comparison_table`) of each method's final
    model over seeds (`table`'s `<method>/seed<k>` rows, or one run per method): MUSE's four criteria and, with
    `attacks` (the attack report's summary), each attack's recovery of `muse/verbmem_forget`. Returns the table."""
    from ..comparison import comparison_table

    finals: dict[str, dict] = {}
    for name, rows in table.items():
        method, _, seed = name.partition("/")
        finals.setdefault(method, {})[seed or "0"] = rows[-1]
    recoveries = [(attack, "muse/verbmem_forget") for attack in (attacks or {}).get("attacks", [])]
    text = comparison_table(finals, list(TABLE_COLUMNS.items()), attacks=attacks, recoveries=recoveries)
    with open(os.path.join(out, "comparison.md"), "w") as f:
        f.write(text + "\n")
    return text
