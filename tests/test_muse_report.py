"""npo_trl.muse.report: Table 3, the results files and the figures, from hand-made rows."""

import csv
import json

import pytest

from npo_trl.muse.report import plot_criteria, plot_per_epoch, read_metrics, summarize, table3, write_results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def metrics(verbmem, knowmem_forget, privleak, knowmem_retain, **extra):
    return {"muse/verbmem_forget": verbmem, "muse/knowmem_forget": knowmem_forget, "muse/privleak": privleak,
            "muse/knowmem_retain": knowmem_retain, "muse/mia_min_k_auc": 0.5, **extra}


def run(*rows):
    return [{"epoch": epoch or None, "step": 4 * epoch, **values} for epoch, values in enumerate(rows)]


@pytest.fixture
def summary():
    reference = {"target": metrics(58.4, 63.9, -99.8, 55.2), "retrain": metrics(20.8, 33.1, 0.0, 55.0)}
    table = {"npo": run(metrics(58.4, 63.9, -99.8, 55.2), metrics(0.0, 0.0, 24.4, 0.0)),
             "npo+rt": run(metrics(58.4, 63.9, -99.8, 55.2), metrics(1.2, 54.6, None, 40.5))}
    criteria = {"c5": {"npo": [{"forget_set": k, "forget_rows": 5 * k, "model": f"c5/forget_{k}",
                                **metrics(10.0 / k, 20.0, -5.0, 30.0 + k)} for k in (1, 2)]},
                "c6": {"npo": [{"forget_set": k, "forget_rows": 5, "model": f"c6/forget_{k}",
                                **metrics(9.0, 19.0 - k, -4.0, 31.0 - k)} for k in (1, 2)]}}
    return summarize(table, reference, criteria, dataset="synthetic")


def test_table3_has_a_row_per_model_and_leaves_missing_criteria_empty():
    text = table3({"target": metrics(58.44, 63.9, -99.81, 55.2), "npo": metrics(0.0, 1.25, None, 40.0)})
    assert text.splitlines() == [
        "| model | VerbMem D_f (lower) | KnowMem D_f (lower) | PrivLeak (near 0) | KnowMem D_r (higher) |",
        "|---|---|---|---|---|",
        "| target | 58.4 | 63.9 | -99.8 | 55.2 |",
        "| npo | 0.0 | 1.2 |  | 40.0 |",
    ]


def test_summary_takes_the_reference_models_then_each_methods_last_evaluation(summary):
    assert list(summary) == ["dataset", "table3", "per_epoch", "criteria"] and summary["dataset"] == "synthetic"
    assert list(summary["table3"]) == ["target", "retrain", "npo", "npo+rt"]
    assert summary["table3"]["npo+rt"]["muse/knowmem_retain"] == 40.5 and summary["table3"]["npo"]["step"] == 4
    assert summarize(summary["per_epoch"], {}, dataset="books")["criteria"] is None


def test_results_files_and_figures(tmp_path, summary):
    write_results(str(tmp_path), summary)
    with open(tmp_path / "results.csv") as f:
        lines = list(csv.reader(f))
    assert lines[0] == ["method", "epoch", "step", "muse/verbmem_forget", "muse/knowmem_forget", "muse/privleak",
                        "muse/knowmem_retain", "muse/mia_min_k_auc"]
    assert len(lines) == 1 + 2 * 2 and lines[1][:3] == ["npo", "0.0", "0"] and lines[4][5] == ""
    assert (tmp_path / "table3.md").read_text() == table3(summary["table3"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["criteria"]["c5"]["npo"][1]["forget_rows"] == 10 and saved["table3"] == summary["table3"]
    plot_per_epoch(summary, str(tmp_path / "per_epoch.png"))
    plot_criteria(summary["criteria"], str(tmp_path / "c5_c6.png"))
    for name in ("per_epoch.png", "c5_c6.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC


def test_read_metrics_reads_the_callbacks_rows(tmp_path):
    rows = run(metrics(58.4, 63.9, -99.8, 55.2), metrics(0.0, 0.0, 24.4, 0.0))
    (tmp_path / "muse_metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert read_metrics(str(tmp_path)) == rows
