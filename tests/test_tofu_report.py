"""npo_trl.tofu.report: the best epoch that kept utility, the spread over seeds, and the files a report writes."""

import csv
import json

import pytest

from npo_trl.tofu.report import (
    best_row,
    format_summary,
    peak_row,
    plot_per_epoch,
    plot_privacy,
    plot_tradeoff,
    seed_spread,
    summarize,
    write_results,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def row(epoch, fq, mu, **extra):
    return {"epoch": epoch, "step": 7 * epoch, "tofu/forget_quality": fq, "tofu/model_utility": mu, **extra}


def test_best_epoch_needs_half_the_utility_and_flags_a_collapsed_model():
    # GA-like: forget quality peaks on a collapsed model; the best epoch is the best one that kept utility
    rows = [row(0, 1e-20, 0.8), row(1, 0.01, 0.6), row(2, 0.3, 0.1), row(3, 0.2, 0.0)]
    best = best_row(rows, finetuned_utility=0.8)
    assert best["epoch"] == 1 and not best["collapsed"]
    # the threshold is half the fine-tuned model's utility, inclusive
    assert best_row([row(0, 1e-20, 0.8), row(1, 0.5, 0.4)], 0.8)["epoch"] == 1
    # every unlearned epoch collapsed: the peak is reported, flagged (the fine-tuned model at step 0 is no candidate)
    collapsed = best_row([row(0, 1e-20, 0.8), row(1, 0.3, 0.1), row(2, 0.2, 0.0)], finetuned_utility=0.8)
    assert collapsed["epoch"] == 1 and collapsed["collapsed"]


def test_forget_quality_peak_is_flagged_when_its_model_collapsed():
    rows = [row(0, 1e-20, 0.8), row(1, 0.01, 0.6), row(2, 0.3, 0.1), row(3, 0.2, 0.0)]
    assert peak_row(rows, 0.8) == {**rows[2], "collapsed": True}
    assert peak_row(rows[:2], 0.8) == {**rows[1], "collapsed": False}
    assert peak_row(rows[:1], 0.8)["epoch"] == 0  # no training evaluation: the only row


def test_seed_spread_gives_median_mean_min_max_per_evaluation():
    runs = {0: [row(0, 1e-9, 0.8), row(1, 0.1, 0.7)],
            1: [row(0, 1e-9, 0.8), row(1, 0.4, 0.5)],
            2: [row(0, 1e-9, 0.8), row(1, 0.01, None)]}
    spread = seed_spread(runs, ["tofu/forget_quality", "tofu/model_utility"])
    assert [(r["epoch"], r["step"]) for r in spread] == [(0, 0), (1, 7)]
    assert spread[0]["tofu/model_utility"] == {"median": 0.8, "mean": pytest.approx(0.8), "min": 0.8, "max": 0.8}
    assert spread[1]["tofu/forget_quality"] == {"median": 0.1, "mean": pytest.approx(0.17), "min": 0.01, "max": 0.4}
    # a seed without a value (None) is left out, not counted as 0
    assert spread[1]["tofu/model_utility"] == {"median": pytest.approx(0.6), "mean": pytest.approx(0.6), "min": 0.5,
                                               "max": 0.7}
    assert seed_spread({0: [row(0, None, 0.8)]}, ["tofu/forget_quality"])[0]["tofu/forget_quality"] is None


def test_seed_spread_refuses_an_unfinished_run():
    with pytest.raises(ValueError, match="different lengths.*Finish"):
        seed_spread({0: [row(0, 1e-9, 0.8), row(1, 0.1, 0.7)], 1: [row(0, 1e-9, 0.8)]}, ["tofu/forget_quality"])


def test_report_files_hold_every_seed(tmp_path):
    privacy = {"privacy/mia_min_k_auc": 0.6, "privacy/privleak": -10.0}
    table = {"npo+rt": {0: [row(0, 1e-9, 0.8, **privacy), row(1, 0.2, 0.78, **privacy)],
                        1: [row(0, 1e-9, 0.8, **privacy), row(1, 0.06, 0.75, **privacy)]},
             "ga": {0: [row(0, 1e-9, 0.8, **privacy), row(1, 0.3, 0.1, **privacy)],
                    1: [row(0, 1e-9, 0.8, **privacy), row(1, 0.5, 0.0, **privacy)]}}
    summary = summarize(table, forget_split="forget10", sanity_check_retain_vs_retain=0.7)
    assert summary["seeds"] == [0, 1] and summary["forget_split"] == "forget10"
    assert summary["finetuned"]["tofu/model_utility"] == 0.8
    assert [summary["best"]["npo+rt"][s]["tofu/forget_quality"] for s in (0, 1)] == [0.2, 0.06]
    assert all(best["epoch"] == 1 and best["collapsed"] for best in summary["best"]["ga"].values())
    assert all(peak["collapsed"] for peak in summary["peak"]["ga"].values())
    assert not any(peak["collapsed"] for peak in summary["peak"]["npo+rt"].values())
    assert summary["spread"]["ga"][1]["tofu/model_utility"]["max"] == 0.1
    write_results(str(tmp_path), table, summary)
    with open(tmp_path / "results.csv") as f:
        lines = list(csv.reader(f))
    assert lines[0][:4] == ["method", "seed", "epoch", "step"] and "privacy/privleak" in lines[0]
    assert len(lines) == 1 + 2 * 2 * 2 and lines[3][:2] == ["npo+rt", "1"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["best"]["npo+rt"]["1"]["tofu/forget_quality"] == 0.06  # JSON keys: the seeds as strings
    for plot, name in ((plot_tradeoff, "fig5.png"), (plot_per_epoch, "fig6.png"), (plot_privacy, "privacy.png")):
        plot(summary, str(tmp_path / name), "TOFU forget10")
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC


def test_format_summary_names_each_seeds_best_epoch_and_the_collapsed_peaks():
    privacy = {"privacy/privleak": -12.5}
    table = {"npo+rt": {0: [row(0, 1e-9, 0.8, **privacy), row(1, 0.2, 0.78, **privacy)],
                        1: [row(0, 1e-9, 0.8, **privacy), row(1, 0.06, 0.75, **privacy)]},
             "ga": {0: [row(0, 1e-9, 0.8), row(1, 0.01, 0.6), row(2, 0.3, 0.1)]}}
    table["ga"][0][1]["privacy/privleak"] = None
    lines = format_summary(summarize(table, sanity_check_retain_vs_retain={0: 0.7, 1: 0.45})).splitlines()
    assert lines[0] == "    npo+rt seed 0: best epoch 1  forget quality 0.2  model utility 0.780  PrivLeak -12.5%"
    assert lines[2] == "    npo+rt over 2 seeds: forget quality 0.06-0.2, model utility 0.750-0.780"
    assert lines[3] == "        ga seed 0: best epoch 1  forget quality 0.01  model utility 0.600"
    assert "its forget-quality peak, 0.3 at epoch 2, is a collapsed model (model utility 0.100)" in lines[4]
    assert lines[5] == "retain model vs another retain model, forget quality: 0.7, 0.45"
    collapsed = format_summary(summarize({"ga": {0: [row(0, 1e-9, 0.8), row(1, 0.3, 0.1)]}}))
    assert collapsed.endswith("(collapsed: model utility < half the fine-tuned model's)")
