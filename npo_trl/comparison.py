"""The every-method table of a benchmark's runs: each method's final model, median [min, max] over seeds of the chosen
metrics, with how many seeds collapsed and, when the runs were attacked, the recovery after chosen attacks. Plain data
in, markdown out; the benchmarks' reports choose the columns (examples/tofu.py and examples/muse.py write it as
`comparison.md`)."""

from .attacks.report import format_spread, spread

COMPARISON_METHODS = ("npo", "npo+rt", "npo+kl", "ga", "ga+rt", "simnpo", "idk+rt", "dpo+rt", "wga", "satimp",
                      "undial", "ceu", "pdu")  # `--methods all`: the paper's methods, SimNPO and the five newer ones


def comparison_methods(replacement: bool = True) -> list[str]:
    """`--methods all`: `COMPARISON_METHODS`, without the methods that train on a replacement answer (IDK, DPO) when
    `replacement` is False (MUSE's raw-text forget set has none)."""
    from .methods import METHODS, method_losses

    return [m for m in COMPARISON_METHODS if replacement or not METHODS[method_losses(m)[0]].needs_replacement]


def comparison_table(finals: dict, columns: list[tuple[str, str]], collapsed=None, attacks: dict | None = None,
                     recoveries: list[tuple[str, str]] = ()) -> str:
    """A markdown table, one line per method of `finals` (method → seed → its final model's metrics): for each
    `(key, label)` of `columns`, the median [min, max] over seeds; with `collapsed` (a function of a row), how many
    seeds collapsed; with `attacks` (`npo_trl.attacks.report.summarize_attacks`' summary of the same runs), for each
    `(attack, key)` of `recoveries`, that attack's recovery of `key`."""
    header = ["method", "seeds", *(label for _, label in columns)]
    if collapsed is not None:
        header.append("collapsed")
    header += [f"recovery of {key.rsplit('/', 1)[-1]}, {attack}" for attack, key in recoveries]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * (len(header) - 2)]
    for method, runs in finals.items():
        rows = list(runs.values())
        cells = [method, str(len(rows))] + [format_spread(spread(row.get(key) for row in rows)) for key, _ in columns]
        if collapsed is not None:
            cells.append(f"{sum(bool(collapsed(row)) for row in rows)} of {len(rows)}")
        for attack, key in recoveries:
            entry = ((attacks or {}).get("methods", {}).get(method) or {}).get(attack) or {}
            cells.append(format_spread(entry.get(f"recovery/{key}")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
