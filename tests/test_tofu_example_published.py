"""examples/tofu.py from given models and published statistics, on TOFU's own files (its other runs are in
test_tofu_example.py)."""

import json
import math
import subprocess
import sys

import pytest

from helpers import ROOT, TOFU_DIR, needs_tofu_files

SCRIPT = ROOT / "examples" / "tofu.py"


def run_published(output_dir, *args: str) -> list[dict]:
    """examples/tofu.py on TOFU's own files (2 forget + 2 retain authors) from given models; the unlearning log."""
    command = [sys.executable, str(SCRIPT), "--output_dir", str(output_dir), "--dataset", str(TOFU_DIR),
               "--forget_split", "forget01", "--num_authors", "4", "--methods", "npo", "--num_train_epochs", "1",
               "--max_samples", "6", "--max_new_tokens", "4", "--max_length", "512", "--batch_size", "8",
               "--prompt_format", "tofu_phi", "--disable_tqdm", "true", "--attacks", "none", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return [json.loads(line) for line in (output_dir / "unlearn" / "npo" / "tofu_metrics.jsonl").open()]


@needs_tofu_files
def test_published_models_and_logs_skip_the_training_stages(tmp_path, finetuned_dir, tokenizer):
    """--finetuned_model and --retain_model (here one tiny model for both: forget quality 1 before unlearning), then
    the retain model's open-unlearning log instead of the model."""
    rows = run_published(tmp_path / "models", "--finetuned_model", finetuned_dir, "--retain_model", finetuned_dir)
    assert not any((tmp_path / "models" / stage).exists() for stage in ("base", "full", "retain"))
    stats = json.loads((tmp_path / "models" / "retain_stats.json").read_text())
    assert stats["model"] == finetuned_dir and stats["num_rows"] == 6
    assert stats["settings"]["token_boundary"] == "common_prefix"
    assert len(rows) == 2 and rows[0]["tofu/forget_quality"] == 1.0 and math.isfinite(rows[1]["tofu/forget_quality"])

    from transformers import AutoModelForCausalLM

    from npo_trl.tofu import TOFUEvalSettings, TOFUEvaluator, compute_reference_stats, load_reference_stats, load_tofu

    settings = TOFUEvalSettings(prompt_format="tofu_phi")
    forget = load_tofu(TOFU_DIR, "forget01_perturbed")
    every_row = compute_reference_stats(AutoModelForCausalLM.from_pretrained(finetuned_dir), tokenizer, forget,
                                        settings)["truth_ratios"]
    log = tmp_path / "TOFU_EVAL.json"  # open-unlearning's layout, as its evaluator writes it for a retain model
    log.write_text(json.dumps({"forget_truth_ratio": {"value_by_index": {str(i): {"score": r}
                                                                         for i, r in enumerate(every_row)}}}))
    # This log holds no membership-inference AUCs, which PrivLeak needs: said when the example checks it (before
    # anything trains) ...
    eval_sets = {"forget": forget, "holdout": load_tofu(TOFU_DIR, "holdout01")}
    with pytest.warns(UserWarning, match="no Min-K% membership-inference AUC.*without PrivLeak"):
        TOFUEvaluator(tokenizer, eval_sets, load_reference_stats(str(log)), settings)
    # ... and the log is used, here without the privacy metrics (--privacy false).
    rows = run_published(tmp_path / "log", "--finetuned_model", finetuned_dir, "--reference_stats", str(log),
                         "--privacy", "false")
    assert rows[0]["tofu/forget_quality"] == pytest.approx(1.0) and rows[0]["privacy/mia_loss_auc"] is None
    assert not (tmp_path / "log" / "retain_stats.json").exists()
