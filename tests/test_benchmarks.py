"""Smoke test of benchmarks/step_cost.py with a toy model: it runs every configuration and writes a RESULTS-style
markdown with finite ratios. No timing assertions (the numbers of a toy model on a shared CPU mean nothing)."""

import importlib.util
import json
import math
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def step_cost():
    spec = importlib.util.spec_from_file_location("step_cost", os.path.join(ROOT, "benchmarks", "step_cost.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_cost_tiny_run_writes_results(tmp_path, step_cost):
    out = tmp_path / "RESULTS.md"
    # Memory in subprocesses for two configurations only (each subprocess imports torch: seconds apiece).
    results = step_cost.run(step_cost.TINY, out_path=str(out), memory_keys=["sft", "npo_pre"], evaluation=False,
                            profile=["sft", "npo_pre"], workdir=str(tmp_path), log=lambda *a: None)

    steps = results["time"]["steps"]
    assert set(steps) == set(step_cost.CONFIGS)
    for key in step_cost.CONFIGS:
        for base in ("sft", "dpo"):
            r = step_cost.ratio(results, key, "time", base)
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
    r = step_cost.ratio(results, "npo_pre", "peak_rss", "sft")
    assert math.isfinite(r) and r > 0
    assert {t["key"] for t in results["targets"]} >= {"npo_pre", "npo_live", "npo_rt", "npo_kl"}

    text = out.read_text()
    for heading in ("## Machine and versions", "## Step time and peak memory", "## Targets",
                    "## Evaluation (TOFUCallback)", "## Profile"):
        assert heading in text
    for key in step_cost.CONFIGS:
        assert step_cost.CONFIGS[key][0] in text
    assert "torch " in text and "trl " in text and "transformers " in text
    assert json.loads((tmp_path / "results.json").read_text())["sizes"]["batch_size"] == step_cost.TINY.batch_size


def test_render_markdown_marks_missing_measurements(step_cost):
    results = {"date": "2026-01-01", "sizes": {**step_cost.dataclasses.asdict(step_cost.TINY), "seq_len": 16},
               "machine": step_cost.machine_info(),
               "time": {"parameters": 1000, "steps": {"sft": {"median": 1.0, "q1": 0.9, "q3": 1.1},
                                                      "npo_pre": {"median": 1.02, "q1": 1.0, "q3": 1.1}}},
               "evaluation": {"status": "missing", "reason": "examples/tofu.py does not exist yet."}}
    results["targets"] = step_cost.check_targets(results)
    text = step_cost.render_markdown(results)
    assert "| 1.02 | 1.05 | yes |" in text  # NPO precomputed / SFT time
    assert "Not measured: examples/tofu.py does not exist yet." in text


@pytest.mark.slow
def test_evaluation_share_of_the_tofu_example(tmp_path, step_cost):
    """The evaluation part runs examples/tofu.py (toy sizes) in a subprocess, times TOFUCallback inside it, counts
    the least work of an evaluation and of an epoch, and profiles one evaluation of the unlearned model."""
    ev = step_cost.measure_evaluation(step_cost.TINY, str(tmp_path), log=lambda *a: None)
    assert ev["status"] == "ok", ev.get("reason", "") + "\n" + ev.get("stderr", "")
    assert len(ev["evaluations"]) == 2  # before training and after the one epoch
    for key in ("one_evaluation", "train_epoch", "share", "share_run", "share_without_generation"):
        assert math.isfinite(ev[key]) and ev[key] > 0, key
    assert 0 < ev["share"] < 1 and 0 < ev["share_without_generation"] <= ev["share"] + 1e-9
    # The scoring ran through the timed functions, and the toy data's questions are shared by their candidates.
    assert all(e["parts"]["score"] > 0 and e["parts"]["generate"] > 0 for e in ev["evaluations"])
    work = ev["work"]
    assert work["scored"] > 0 and work["generated"] > 0 and work["kl"] > 0  # NPO has a live reference: KL is scored
    assert ev["epoch_work"] == 4 * ev["stages"][-1]["train_tokens_per_epoch"]
    assert 0 < ev["work_share"]["npo+rt"] < ev["work_share"]["npo"] < 1
    assert 0 < ev["work_share_measured_speed"] < 1 and ev["eval_speedup"] > 0
    prof = ev["eval_profile"]
    assert set(prof["parts_ms"]) == {"score", "generate"} and prof["ops_ms"] and prof["total_ms"] > 0
    text = "\n".join(step_cost.evaluation_markdown(ev))
    assert "evaluation share" in text and "the least share" in text and "torch.profiler over one evaluation" in text
