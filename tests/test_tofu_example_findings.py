"""examples/tofu.py's findings over seeds, on a reduced setting (its other runs are in test_tofu_example.py)."""

import json
import subprocess
import sys

import pytest

from helpers import ROOT

SCRIPT = ROOT / "examples" / "tofu.py"

REDUCED = ["--num_authors", "40", "--qa_per_author", "10", "--hidden_size", "64", "--num_layers", "2",
           "--vocab_size", "800", "--pretrain_epochs", "10", "--finetune_epochs", "30", "--finetune_batch_size", "128",
           "--finetune_learning_rate", "5e-3", "--num_train_epochs", "6", "--per_device_train_batch_size", "8",
           "--retain_weight", "3", "--max_new_tokens", "8", "--max_samples", "40", "--privacy", "false",
           "--methods", "npo+rt", "ga", "--seeds", "0", "1", "--disable_tqdm", "true",
           "--attacks", "none"]


@pytest.mark.slow
def test_the_papers_findings_hold_in_every_seed_of_a_reduced_setting(tmp_path):
    """Findings 1-2 of the offline default (docs/tofu/forget10_seeds/README.md) on a smaller model and data, over two
    unlearning seeds: NPO+RT reaches forget quality ≥ 0.05 while keeping ≥ 0.9× the fine-tuned model's utility at
    some epoch of every seed; GA has lost more than half of it by the end of every seed, and the report's best GA
    epoch is one whose model kept half of it."""
    command = [sys.executable, str(SCRIPT), "--output_dir", str(tmp_path), *REDUCED]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    results = json.loads((tmp_path / "results.json").read_text())
    finetuned = results["finetuned"]["tofu/model_utility"]
    assert results["finetuned"]["tofu/forget_quality"] < 0.01 and finetuned > 0.5  # it learned the forget authors
    npo_rt, ga = results["per_epoch"]["npo+rt"], results["per_epoch"]["ga"]
    assert list(npo_rt) == list(ga) == ["0", "1"]
    trajectories = {json.dumps([r["tofu/forget_quality"] for r in rows]) for rows in npo_rt.values()}
    assert len(trajectories) > 1  # the seed reaches the unlearning stage
    for seed, rows in npo_rt.items():
        forgot_and_kept = [r for r in rows if r["tofu/forget_quality"] >= 0.05
                           and r["tofu/model_utility"] >= 0.9 * finetuned]
        assert forgot_and_kept, (seed, [(r["tofu/forget_quality"], r["tofu/model_utility"]) for r in rows])
        assert results["best"]["npo+rt"][seed]["tofu/forget_quality"] >= 0.05
    for seed, rows in ga.items():
        assert rows[-1]["tofu/model_utility"] < 0.5 * finetuned, (seed, rows[-1]["tofu/model_utility"])
        best = results["best"]["ga"][seed]
        assert not best["collapsed"] and best["tofu/model_utility"] >= 0.5 * finetuned and best["step"] > 0
