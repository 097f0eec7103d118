"""Smoke test of the benchmarks (python -m benchmarks.step_cost) with a toy model: every configuration runs and a
RESULTS-style markdown with finite ratios is written, the hand-written findings kept. No timing assertions (the
numbers of a toy model on a shared CPU mean nothing)."""

import json
import math

import pytest

from benchmarks import evaluation, report, step_cost
from benchmarks.sizes import CONFIGS, TINY


def test_step_cost_tiny_run_writes_results(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text(f"old tables\n{report.FINDINGS_MARKER}\n\n## Findings\n\nWritten by hand.\n")
    # Memory in subprocesses for two configurations only (each subprocess imports torch: seconds apiece).
    results = step_cost.run(TINY, out_path=str(out), memory_keys=["sft", "npo_pre"], evaluation=False,
                            profile=["sft", "npo_pre"], workdir=str(tmp_path), log=lambda *a: None)

    steps = results["time"]["steps"]
    assert set(steps) == set(CONFIGS)
    for key in CONFIGS:
        for base in ("sft", "dpo"):
            r = report.ratio(results, key, "time", base)
            assert r is not None and math.isfinite(r) and r > 0, (key, base, r)
    # Every trainer sees the same sequences: same length, same completion tokens (DPO twice as many sequences).
    batches = {key: steps[key]["batch"] for key in steps}
    assert len({b["length"] for b in batches.values()}) == 1
    assert batches["dpo"]["sequences"] == 2 * batches["sft"]["sequences"]
    assert batches["dpo"]["scored_tokens"] == 2 * batches["sft"]["scored_tokens"]
    assert all(batches[k]["scored_tokens"] == batches["sft"]["scored_tokens"] for k in batches if k != "dpo")
    assert batches["npo_rt"]["retain_sequences"] == batches["sft"]["sequences"]
    assert steps["npo_pre"]["precompute_seconds"] > 0

    for key in ("sft", "npo_pre"):
        assert results["memory"][key]["peak_rss"] > 0
    r = report.ratio(results, "npo_pre", "peak_rss", "sft")
    assert math.isfinite(r) and r > 0
    assert {t["key"] for t in results["targets"]} >= {"npo_pre", "npo_live", "npo_rt", "npo_kl"}

    text = out.read_text()
    for heading in ("## Machine and versions", "## Step time and peak memory", "## Targets",
                    "## Evaluation (TOFUCallback)", "## Profile"):
        assert heading in text
    for key in CONFIGS:
        assert CONFIGS[key][0] in text
    assert "torch " in text and "trl " in text and "transformers " in text
    assert "old tables" not in text and text.endswith("## Findings\n\nWritten by hand.\n")
    assert json.loads((tmp_path / "results.json").read_text())["sizes"]["batch_size"] == TINY.batch_size


def test_render_markdown_marks_missing_measurements():
    import dataclasses

    results = {"date": "2026-01-01", "sizes": {**dataclasses.asdict(TINY), "seq_len": 16},
               "machine": report.machine_info(),
               "time": {"parameters": 1000, "steps": {"sft": {"median": 1.0, "q1": 0.9, "q3": 1.1},
                                                      "npo_pre": {"median": 1.02, "q1": 1.0, "q3": 1.1}}},
               "evaluation": {"status": "missing", "reason": "examples/tofu.py does not exist yet."}}
    results["targets"] = report.check_targets(results)
    text = report.render_markdown(results)
    assert "| 1.02 | 1.05 | yes |" in text  # NPO precomputed / SFT time
    assert "Not measured: examples/tofu.py does not exist yet." in text


@pytest.mark.slow
def test_evaluation_share_of_the_tofu_example(tmp_path):
    """The evaluation part runs examples/tofu.py (toy sizes) in a subprocess, reads each evaluation's timing from
    TOFUCallback's JSONL, counts the least work of an evaluation and of an epoch, and profiles one evaluation of the
    unlearned model."""
    ev = evaluation.measure_evaluation(TINY, str(tmp_path), log=lambda *a: None)
    assert ev["status"] == "ok", ev.get("reason", "") + "\n" + ev.get("stderr", "")
    assert len(ev["evaluations"]) == 2  # before training and after the one epoch
    assert ev["default_epochs"] == 15  # the example's default --num_train_epochs, which its --help states
    for key in ("one_evaluation", "train_epoch", "share", "share_run", "share_without_generation"):
        assert math.isfinite(ev[key]) and ev[key] > 0, key
    assert 0 < ev["share"] < 1 and 0 < ev["share_without_generation"] <= ev["share"] + 1e-9
    # The evaluator timed its passes; NPO has a live reference, so the forget KL is computed too.
    assert all(e["parts"]["score"] > 0 and e["parts"]["generate"] > 0 and e["parts"]["kl"] > 0
               for e in ev["evaluations"])
    assert all(e["parts"]["generated_tokens"] > 0 for e in ev["evaluations"])
    work = ev["work"]
    assert work["scored"] > 0 and work["generated"] > 0 and work["kl"] > 0  # NPO has a live reference: KL is scored
    assert ev["epoch_work"] == 4 * ev["stages"][-1]["train_tokens_per_epoch"]
    assert 0 < ev["work_share"]["npo+rt"] < ev["work_share"]["npo"] < 1
    assert 0 < ev["work_share_measured_speed"] < 1 and ev["eval_speedup"] > 0
    prof = ev["eval_profile"]
    assert set(prof["parts_ms"]) == {"score", "generate"} and prof["ops_ms"] and prof["total_ms"] > 0
    cost = ev["privacy_cost"]  # the example's default evaluates the holdout set too (--privacy)
    assert cost["holdout_rows"] > 0 and cost["with_privacy"] > 0 and cost["without_privacy"] > 0
    assert cost["share"] == pytest.approx(1 - cost["without_privacy"] / cost["with_privacy"])
    text = "\n".join(report.evaluation_markdown(ev))
    assert "evaluation share" in text and "the least share" in text and "torch.profiler over one evaluation" in text
    assert "the privacy metrics' share of one evaluation" in text


def test_eval_speed_ratios_become_target_rows_and_differences_are_relative_beyond_one(tmp_path):
    from benchmarks import eval_speed

    path = tmp_path / "eval_speed.json"
    path.write_text(json.dumps({"cases": {"tofu_135m": {"ratio": 0.45}, "muse_135m": {"ratio": 0.7}}}))
    rows = report.eval_speed_targets(str(path))
    assert [(r["name"], r["met"]) for r in rows] == [("TOFU evaluation time / before (135M)", True),
                                                     ("MUSE evaluation time / before (135M)", False)]
    before = {"rows": {"forget/min_k": [800.0, 0.5, float("nan")]}, "metrics": {"tofu/forget_prob": 0.25}}
    after = {"rows": {"forget/min_k": [800.004, 0.5000001, float("nan")]}, "metrics": {"tofu/forget_prob": 0.25}}
    assert eval_speed._largest_difference(before, after) == pytest.approx(5e-6, rel=1e-3)
    after["rows"]["forget/min_k"][2] = 1.0  # NaN on one side only
    assert eval_speed._largest_difference(before, after) == float("inf")
