"""The WMDP experiment's report (examples/wmdp.py): for the target model and each method's final models over seeds,
the lm-eval accuracy on the forget questions (WMDP or its stand-in) and on the general ones (MMLU or its stand-in), as
median [min, max] over seeds (`npo_trl.attacks.report.spread`), beside chance. Plain data in, JSON and markdown out;
`import npo_trl.wmdp.report` needs nothing heavy."""

import json
import os

from ..attacks.report import format_spread, spread

CHANCE = 0.25  # four choices


def accuracy_keys(forget_task: str | None = None, general_task: str | None = None) -> dict[str, str]:
    """The metrics of the table: `{"forget": "lm_eval/<forget_task>/acc", "general": "lm_eval/<general_task>/acc"}`,
    the tasks by default the stand-in's (`wmdp_synthetic`, `mmlu_synthetic`)."""
    from .synthetic import FORGET_TASK, GENERAL_TASK

    forget_task, general_task = forget_task or FORGET_TASK, general_task or GENERAL_TASK
    return {"forget": f"lm_eval/{forget_task}/acc", "general": f"lm_eval/{general_task}/acc"}


def summarize(finals: dict, target: dict, keys: dict[str, str] | None = None) -> dict:
    """The report's numbers: `finals` maps method → seed → its final model's metrics, `target` holds the target
    model's. Returns `{"chance": 0.25, "keys": keys, "target": {"forget": ..., "general": ...}, "methods": {method:
    {"seeds": [...], "forget": spread, "general": spread}}}`, each spread the median, min and max over seeds (`None`
    where no seed has the metric)."""
    keys = keys or accuracy_keys()
    methods = {}
    for method, runs in finals.items():
        methods[method] = {"seeds": list(runs), **{column: spread(row.get(key) for row in runs.values())
                                                   for column, key in keys.items()}}
    return {"chance": CHANCE, "keys": keys, "target": {column: target.get(key) for column, key in keys.items()},
            "methods": methods}


def format_table(summary: dict, digits: int = 3) -> str:
    """The summary as a markdown table: one line for the target model, then one per method (its number of seeds and
    each accuracy as "median [min, max]"), chance stated below."""
    columns = list(summary["keys"])
    labels = {"forget": "forget acc (WMDP)", "general": "general acc (MMLU)"}
    lines = ["| model | seeds | " + " | ".join(labels.get(c, c) for c in columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]
    target = summary["target"]
    lines.append("| target | – | " + " | ".join("–" if target[c] is None else f"{target[c]:.{digits}g}"
                                               for c in columns) + " |")
    for method, row in summary["methods"].items():
        lines.append(f"| {method} | {len(row['seeds'])} | "
                     + " | ".join(format_spread(row[c], digits) for c in columns) + " |")
    lines.append(f"\nChance: {summary['chance']:.0%} (four choices). Cells: median [min, max] over seeds.")
    return "\n".join(lines)


def write_report(out: str, finals: dict, target: dict, keys: dict[str, str] | None = None) -> dict:
    """`results.json` (`summarize`'s summary, with every run's metrics under "runs"), `results.md` (`format_table`)
    and `comparison.md` (`npo_trl.comparison.comparison_table` with the two accuracy columns) in `out`. Returns the
    summary."""
    from ..comparison import comparison_table

    summary = summarize(finals, target, keys)
    summary["runs"] = {method: {str(seed): row for seed, row in runs.items()} for method, runs in finals.items()}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(format_table(summary) + "\n")
    columns = [(summary["keys"]["forget"], "WMDP stand-in acc"), (summary["keys"]["general"], "general acc")]
    with open(os.path.join(out, "comparison.md"), "w") as f:
        f.write(comparison_table(finals, columns) + "\n")
    return summary
