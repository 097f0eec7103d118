"""examples/tofu.py, run as a script: the whole pipeline on a tiny configuration, its ZeRO-3 unlearning stage, given
models and published statistics on the real files, and the arguments it refuses. Its library functions are tested with
their modules (test_stages.py, test_tofu_experiment_data.py, test_tofu_report.py)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from unittest.mock import ANY

import pytest
from helpers import refusals

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "tofu.py"
TOFU_DIR = Path(os.environ.get("TOFU_DIR", ROOT.parent / "shared" / "tofu"))
TINY = ["--num_authors", "20", "--qa_per_author", "5", "--hidden_size", "64", "--num_layers", "2",
        "--vocab_size", "600", "--pretrain_epochs", "1", "--finetune_epochs", "1", "--num_train_epochs", "1",
        "--max_samples", "10", "--max_new_tokens", "8", "--batch_size", "16", "--disable_tqdm", "true"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_example(output_dir: Path, *args: str, launcher=(sys.executable,)) -> None:
    command = [*launcher, str(SCRIPT), "--output_dir", str(output_dir), *TINY, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("tofu")
    run_example(output_dir, "--sanity_check", "true")
    return output_dir


def test_every_stage_writes_its_outputs(tiny_run):
    for stage in ("base", "full", "retain", "retain_seed2"):
        assert (tiny_run / stage / "config.json").exists(), stage
    assert json.loads((tiny_run / "retain_stats.json").read_text())["num_rows"] == 10
    methods = ["npo", "npo+rt", "ga", "ga+rt"]
    for method in methods:
        rows = [json.loads(line) for line in (tiny_run / "unlearn" / method / "tofu_metrics.jsonl").open()]
        assert [r["step"] for r in rows][0] == 0 and len(rows) == 2  # before training, then after the one epoch
        for row in rows:
            for key, value in row.items():
                if key == "tofu/forget_kl" and method.startswith("ga"):
                    assert value is None  # GA loads no reference model to compare with
                elif key.startswith("tofu/") or (key.startswith("privacy/") and key != "privacy/privleak"):
                    assert value is not None and math.isfinite(value), (method, key, value)
            assert 0 <= row["privacy/mia_min_k_auc"] <= 1 and row["privacy/privleak"] is not None
    results = json.loads((tiny_run / "results.json").read_text())
    assert set(results["best"]) == set(methods) and results["seeds"] == [42]  # one run with --seed
    assert all("collapsed" in row for best in results["best"].values() for row in best.values())
    assert all(len(spread) == 2 for spread in results["spread"].values())
    assert 0.0 <= results["sanity_check_retain_vs_retain"] <= 1.0
    assert set(results["retain_privacy"]["auc"]) == {"loss", "zlib", "min_k", "min_k_plus_plus"}
    assert "privacy/privleak" in (tiny_run / "results.csv").read_text().splitlines()[0]
    assert len((tiny_run / "results.csv").read_text().splitlines()) == 1 + 2 * len(methods)
    for figure in ("fig5_tradeoff.png", "fig6_per_epoch.png", "fig_privacy.png"):
        assert (tiny_run / figure).read_bytes()[:8] == PNG_MAGIC
    samples = json.loads((tiny_run / "samples.json").read_text())
    assert set(samples) == {"forget", "retain", "real_authors", "world_facts"}
    assert all(len(samples["forget"][m]) == 3 for m in ["finetuned", *methods])
    arguments = json.loads((tiny_run / "arguments.json").read_text())  # this run's defaults, resolved once
    assert arguments["settings"]["max_new_tokens"] == 8 and arguments["settings"]["generation_batch_size"] == 7 * 16
    assert arguments["tiny_model"] == {"hidden_size": 64, "num_layers": 2, "vocab_size": 600}


def test_a_second_run_skips_finished_stages(tiny_run):
    before = {p: p.stat().st_mtime_ns for p in tiny_run.rglob("model.safetensors")}
    run_example(tiny_run, "--sanity_check", "true")
    assert {p: p.stat().st_mtime_ns for p in tiny_run.rglob("model.safetensors")} == before


@pytest.mark.slow
def test_zero3_unlearning_stage_on_two_cpu_processes(tiny_run):
    """The cached stages are reused; one more method is unlearned under ZeRO-3 and evaluated on two processes."""
    launcher = (sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(ROOT / "examples" / "accelerate_configs" / "zero3.yaml"), "--num_processes", "2",
                "--mixed_precision", "no", "--main_process_port", "0")
    run_example(tiny_run, "--methods", "npo+kl", launcher=launcher)
    rows = [json.loads(line) for line in (tiny_run / "unlearn" / "npo+kl" / "tofu_metrics.jsonl").open()]
    assert len(rows) == 2 and all(math.isfinite(r["tofu/forget_quality"]) for r in rows)
    assert (tiny_run / "unlearn" / "npo+kl" / "final" / "model.safetensors").exists()


def run_published(output_dir: Path, *args: str) -> list[dict]:
    """examples/tofu.py on TOFU's own files (2 forget + 2 retain authors) from given models; the unlearning log."""
    command = [sys.executable, str(SCRIPT), "--output_dir", str(output_dir), "--dataset", str(TOFU_DIR),
               "--forget_split", "forget01", "--num_authors", "4", "--methods", "npo", "--num_train_epochs", "1",
               "--max_samples", "6", "--max_new_tokens", "4", "--max_length", "512", "--batch_size", "8",
               "--prompt_format", "tofu_phi", "--disable_tqdm", "true", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return [json.loads(line) for line in (output_dir / "unlearn" / "npo" / "tofu_metrics.jsonl").open()]


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


def test_stage_arguments_that_cannot_run_are_refused(tmp_path):
    """Refused with the fix before anything trains."""
    refused = {"pass one": ["--retain_model", "r", "--reference_stats", "s.json"],
               "--finetuned_model skips the base model": ["--finetuned_model", "f"],
               "leave --seed out of --seeds": ["--seeds", "0", "42", "--sanity_check", "true"],
               "give distinct seeds": ["--seeds", "0", "1", "0"]}
    messages = refusals(SCRIPT, [["--output_dir", str(tmp_path), *args] for args in refused.values()])
    for expected, message in zip(refused, messages, strict=True):
        assert message is not None and expected in message, (expected, message)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_lora_unlearning_stage_saves_adapters_and_reports(tiny_run):
    """ModelConfig's --use_peft flags reach the unlearning stage; the report loads the adapters onto `full`."""
    run_example(tiny_run, "--methods", "simnpo", "--use_peft", "true", "--lora_r", "4", "--lora_target_modules",
                "q_proj", "v_proj")
    final = tiny_run / "unlearn" / "simnpo" / "final"
    assert (final / "adapter_config.json").exists() and not (final / "config.json").exists()
    rows = [json.loads(line) for line in (tiny_run / "unlearn" / "simnpo" / "tofu_metrics.jsonl").open()]
    assert len(rows) == 2 and all(math.isfinite(r["tofu/forget_quality"]) for r in rows)
    assert len(json.loads((tiny_run / "samples.json").read_text())["forget"]["simnpo"]) == 3


def test_seeds_unlearn_once_per_seed_and_report_the_spread(tiny_run):
    """--seeds: one run per method and seed in unlearn/<method>/seed<k>/, the report over seeds, and with
    --sanity_check one more retain model per seed, each scored against the first."""
    run_example(tiny_run, "--methods", "npo+rt", "ga", "--seeds", "0", "1", "--sanity_check", "true")
    runs = {method: [[json.loads(line) for line in (tiny_run / "unlearn" / method / f"seed{seed}" /
                                                    "tofu_metrics.jsonl").open()] for seed in (0, 1)]
            for method in ("npo+rt", "ga")}
    for first, second in runs.values():
        assert len(first) == len(second) == 2 and first[0] == {**second[0], "eval_timing": ANY}  # one start
    first, second = runs["npo+rt"]
    assert first[1]["tofu/retain_prob"] != second[1]["tofu/retain_prob"]  # the seed drew other retain rows
    results = json.loads((tiny_run / "results.json").read_text())
    assert results["seeds"] == [0, 1] and set(results["best"]["ga"]) == {"0", "1"}
    spread = results["spread"]["ga"][1]["tofu/forget_quality"]
    fqs = [rows[1]["tofu/forget_quality"] for rows in runs["ga"]]
    assert (spread["min"], spread["max"]) == (min(fqs), max(fqs))
    assert set(results["sanity_check_retain_vs_retain"]) == {"0", "1"}
    assert all((tiny_run / f"retain_sanity_seed{seed}" / "config.json").exists() for seed in (0, 1))
    lines = (tiny_run / "results.csv").read_text().splitlines()
    assert lines[0].startswith("method,seed,epoch,step,") and len(lines) == 1 + 2 * 2 * 2


REDUCED = ["--num_authors", "40", "--qa_per_author", "10", "--hidden_size", "64", "--num_layers", "2",
           "--vocab_size", "800", "--pretrain_epochs", "10", "--finetune_epochs", "30", "--finetune_batch_size", "128",
           "--finetune_learning_rate", "5e-3", "--num_train_epochs", "6", "--per_device_train_batch_size", "8",
           "--retain_weight", "3", "--max_new_tokens", "8", "--privacy", "false", "--methods", "npo+rt", "ga",
           "--seeds", "0", "1", "--disable_tqdm", "true"]


@pytest.mark.slow
def test_the_papers_findings_hold_in_every_seed_of_a_reduced_setting(tmp_path):
    """Findings 1-2 of the offline default (README, "Results over seeds") on a smaller model and data, over two
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
