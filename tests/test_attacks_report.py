"""npo_trl.attacks.report: the summary over seeds, the CSV's lines, the markdown table and the files of the report,
from hand-made attack_stage results of two methods (values exact in binary, so medians compare exactly)."""

import csv
import json

import pytest

from npo_trl.attacks.report import (
    format_attack_table,
    spread,
    summarize_attacks,
    write_attack_report,
    write_attacks_csv,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PROB, ROUGE = "tofu/forget_prob", "tofu/forget_rouge"
KEYS = [PROB, ROUGE]
ATTACKS = ["relearn2", "quantize4"]
FINETUNED = {PROB: 0.9375, ROUGE: 0.875, "tofu/model_utility": 0.5}
BASELINES = {f"attack/relearn2/retain/{PROB}": 0.375, f"attack/relearn2/retain/{ROUGE}": 0.25,
             f"attack/relearn2/finetuned/{PROB}": 0.875, f"attack/relearn2/finetuned/{ROUGE}": 0.75,
             f"attack/quantize4/retain/{PROB}": 0.0625, f"attack/quantize4/retain/{ROUGE}": 0.125}


def run(unlearned, relearned, recovered, quantized, quantize_recovered, plain=False, baselines=False):
    """An attack_stage result whose `tofu/forget_rouge` values are half the `tofu/forget_prob` ones; with `plain`,
    the unlearned model's metrics are the plain keys (no `attack/none/...`, as when the attacks use the evaluator)."""
    metrics = {"tofu/model_utility": 0.5}
    for key, scale in ((PROB, 1), (ROUGE, 0.5)):
        values = {f"attack/none/{key}" if not plain else key: unlearned, f"attack/relearn2/{key}": relearned,
                  f"attack/relearn2/recovery/{key}": recovered, f"attack/quantize4/{key}": quantized,
                  f"attack/quantize4/recovery/{key}": quantize_recovered}
        metrics.update({name: None if value is None else value * scale for name, value in values.items()})
    if not plain:
        metrics[PROB] = 0.0  # the plain key is shadowed by attack/none/...
    return {"metrics": {**metrics, **(BASELINES if baselines else {})}, "finetuned": FINETUNED,
            "seconds": {"total": 1.0}}


@pytest.fixture
def results():
    return {
        "npo": {"seed0": run(0.125, 0.5, 0.375, 0.25, 0.125, baselines=True),
                "seed1": run(0.25, 0.375, 0.25, None, None, baselines=True),
                "seed2": run(0.375, 0.625, 0.5, 0.5, 0.25, baselines=True)},
        "simnpo": {"seed0": run(0.0625, 0.125, 0.0625, None, None, plain=True),
                   "seed1": run(0.1875, 0.125, 0.0625, None, None, plain=True)},
    }


def test_spread_skips_none_and_gives_none_when_nothing_is_left():
    assert spread([0.5, None, 0.25, 1.0]) == {"median": 0.5, "min": 0.25, "max": 1.0}
    assert spread([0.25, 0.75]) == {"median": 0.5, "min": 0.25, "max": 0.75}
    assert spread([None, None]) is None and spread([]) is None
    assert spread(iter([3])) == {"median": 3, "min": 3, "max": 3}


def test_summary_spreads_each_method_over_its_seeds(results):
    summary = summarize_attacks(results, ATTACKS, KEYS)
    assert (summary["attacks"], summary["keys"]) == (ATTACKS, KEYS)
    assert summary["seeds"] == {"npo": ["seed0", "seed1", "seed2"], "simnpo": ["seed0", "seed1"]}
    assert summary["finetuned"] == {PROB: 0.9375, ROUGE: 0.875}
    assert summary["baselines"] == {
        "relearn2": {"retain": {PROB: 0.375, ROUGE: 0.25}, "finetuned": {PROB: 0.875, ROUGE: 0.75}},
        "quantize4": {"retain": {PROB: 0.0625, ROUGE: 0.125}}}
    npo, simnpo = summary["methods"]["npo"], summary["methods"]["simnpo"]
    assert list(npo) == ["unlearned", *ATTACKS]
    assert npo["unlearned"] == {PROB: {"median": 0.25, "min": 0.125, "max": 0.375},
                                ROUGE: {"median": 0.125, "min": 0.0625, "max": 0.1875}}
    assert npo["relearn2"] == {
        PROB: {"median": 0.5, "min": 0.375, "max": 0.625}, ROUGE: {"median": 0.25, "min": 0.1875, "max": 0.3125},
        f"recovery/{PROB}": {"median": 0.375, "min": 0.25, "max": 0.5},
        f"recovery/{ROUGE}": {"median": 0.1875, "min": 0.125, "max": 0.25}}
    # seed1's quantize4 values are None: the median of the other two
    assert npo["quantize4"][PROB] == {"median": 0.375, "min": 0.25, "max": 0.5}
    assert npo["quantize4"][f"recovery/{PROB}"] == {"median": 0.1875, "min": 0.125, "max": 0.25}
    # without attack/none/<key>, the plain key is the unlearned model's value
    assert simnpo["unlearned"][PROB] == {"median": 0.125, "min": 0.0625, "max": 0.1875}
    assert simnpo["relearn2"][f"recovery/{PROB}"] == {"median": 0.0625, "min": 0.0625, "max": 0.0625}
    assert simnpo["quantize4"] == {PROB: None, ROUGE: None, f"recovery/{PROB}": None, f"recovery/{ROUGE}": None}


def test_summary_without_baselines_or_finetuned_metrics(results):
    bare = {"npo": {"seed0": {"metrics": results["simnpo"]["seed0"]["metrics"], "finetuned": None}}}
    summary = summarize_attacks(bare, ATTACKS, KEYS)
    assert summary["finetuned"] == {PROB: None, ROUGE: None}
    assert summary["baselines"] == {"relearn2": {}, "quantize4": {}}
    assert summary["methods"]["npo"]["unlearned"][PROB] == {"median": 0.0625, "min": 0.0625, "max": 0.0625}


def test_csv_has_a_line_per_method_seed_attack_and_key_then_the_baselines(results, tmp_path):
    path = tmp_path / "attacks.csv"
    write_attacks_csv(path, results, ATTACKS, KEYS)
    lines = list(csv.reader(path.open()))
    assert lines[0] == ["method", "seed", "attack", "metric", "value", "recovery"]
    body = lines[1:]
    assert len(body) == 5 * 2 * (1 + len(ATTACKS)) + 6  # 5 runs × 2 keys × (none + 2 attacks), 6 baseline lines
    assert body[:6] == [["npo", "seed0", "none", PROB, "0.125", ""],
                        ["npo", "seed0", "relearn2", PROB, "0.5", "0.375"],
                        ["npo", "seed0", "quantize4", PROB, "0.25", "0.125"],
                        ["npo", "seed0", "none", ROUGE, "0.0625", ""],
                        ["npo", "seed0", "relearn2", ROUGE, "0.25", "0.1875"],
                        ["npo", "seed0", "quantize4", ROUGE, "0.125", "0.0625"]]
    assert ["npo", "seed1", "quantize4", PROB, "", ""] in body  # None is an empty cell
    assert ["simnpo", "seed1", "none", PROB, "0.1875", ""] in body  # the plain key
    assert [line[0] for line in body].count("simnpo") == 2 * 2 * 3
    assert body[-6:] == [["retain", "", "relearn2", PROB, "0.375", ""], ["retain", "", "relearn2", ROUGE, "0.25", ""],
                         ["retain", "", "quantize4", PROB, "0.0625", ""],
                         ["retain", "", "quantize4", ROUGE, "0.125", ""],
                         ["finetuned", "", "relearn2", PROB, "0.875", ""],
                         ["finetuned", "", "relearn2", ROUGE, "0.75", ""]]


def test_table_cells_give_median_range_and_recovery(results):
    table = format_attack_table(summarize_attacks(results, ATTACKS, KEYS), PROB)
    assert table.splitlines() == [
        f"`{PROB}` (recovery: 0 = nothing back, 1 = the fine-tuned model's value); median [min, max] over seeds",
        "",
        "| model | unlearned | relearn2 | quantize4 |",
        "|---|---:|---:|---:|",
        "| npo | 0.25 [0.125, 0.375] | 0.5 [0.375, 0.625] (rec. 0.38 [0.25, 0.5]) | 0.375 [0.25, 0.5] "
        "(rec. 0.19 [0.12, 0.25]) |",
        "| simnpo | 0.125 [0.0625, 0.188] | 0.125 (rec. 0.062) | – (rec. –) |",
        "| retain model | – | 0.375 | 0.0625 |",
        "| finetuned model | 0.938 | 0.875 | – |"]


def test_table_leaves_out_baselines_that_were_not_attacked(results):
    bare = {method: {seed: {**run, "metrics": {k: v for k, v in run["metrics"].items() if k not in BASELINES}}
                     for seed, run in runs.items()} for method, runs in results.items()}
    lines = format_attack_table(summarize_attacks(bare, ATTACKS, KEYS), ROUGE).splitlines()
    assert len(lines) == 6 and lines[-1].startswith("| simnpo | 0.0625 [0.0312, 0.0938] |")


def test_report_writes_csv_json_and_figure(results, tmp_path):
    summary = write_attack_report(str(tmp_path), results, ATTACKS, KEYS, "TOFU forget10")
    assert summary == summarize_attacks(results, ATTACKS, KEYS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attacks.csv", "attacks.json", "fig_attacks.png"]
    assert json.loads((tmp_path / "attacks.json").read_text()) == summary
    assert (tmp_path / "attacks.csv").read_text().splitlines()[0] == "method,seed,attack,metric,value,recovery"
    assert len((tmp_path / "attacks.csv").read_text().splitlines()) == 1 + 5 * 2 * 3 + 6
    assert (tmp_path / "fig_attacks.png").read_bytes()[:8] == PNG_MAGIC
