"""examples/tofu.py, run as a script: the whole pipeline on a tiny configuration, its ZeRO-3 and LoRA unlearning
stages, --seeds, and the arguments it refuses. Given models and published statistics: test_tofu_example_published.py;
the findings over seeds: test_tofu_example_findings.py. Its library functions are tested with their modules
(test_stages.py, test_tofu_experiment_data.py, test_tofu_report.py)."""

import json
import math
import shutil
import subprocess
import sys
from unittest.mock import ANY

import pytest

from helpers import ROOT, refusals

SCRIPT = ROOT / "examples" / "tofu.py"
TINY = ["--num_authors", "20", "--qa_per_author", "5", "--hidden_size", "64", "--num_layers", "2",
        "--vocab_size", "600", "--pretrain_epochs", "1", "--finetune_epochs", "1", "--num_train_epochs", "1",
        "--max_samples", "10", "--max_new_tokens", "8", "--batch_size", "16", "--disable_tqdm", "true",
        "--attacks", "none"]
ATTACKS = ["--attacks", "relearn", "quantize4", "--relearn_steps", "2"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_example(output_dir, *args: str, launcher=(sys.executable,)) -> None:
    command = [*launcher, str(SCRIPT), "--output_dir", str(output_dir), *TINY, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("tofu")
    run_example(output_dir, "--sanity_check", "true", *ATTACKS)
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
    assert arguments["settings"]["max_new_tokens"] == 8 and arguments["settings"]["generation_batch_size"] is None
    assert arguments["tiny_model"] == {"hidden_size": 64, "num_layers": 2, "vocab_size": 600}


def test_attacks_write_their_table_and_files(tiny_run):
    """--attacks (the default run's: relearning and quantization, here 2 relearning steps and 4 bits): each unlearned
    model attacked once, beside it, and the report's table, CSV, JSON and figure; the baselines under the attacks."""
    methods, keys = ["npo", "npo+rt", "ga", "ga+rt"], ["forget_prob", "forget_rouge", "forget_truth_ratio"]
    for method in methods:
        metrics = json.loads((tiny_run / "unlearn" / method / "robustness.json").read_text())["metrics"]
        for attack in ("relearn2", "quantize4"):
            assert all(math.isfinite(metrics[f"attack/{attack}/tofu/{key}"]) for key in keys), (method, attack)
            assert f"attack/{attack}/recovery/tofu/forget_prob" in metrics
            assert metrics[f"attack/{attack}/retain/tofu/forget_quality"] is not None
    summary = json.loads((tiny_run / "attacks.json").read_text())
    assert summary["attacks"] == ["relearn2", "quantize4"] and list(summary["methods"]) == methods
    assert set(summary["baselines"]["quantize4"]) == {"retain", "finetuned"}
    assert json.loads((tiny_run / "results.json").read_text())["attacks"] == summary
    lines = (tiny_run / "attacks.csv").read_text().splitlines()
    assert lines[0] == "method,seed,attack,metric,value,recovery"
    assert len(lines) == 1 + len(methods) * 4 * 3 + 2 * 2 * 4  # method × key × (none + attacks), then baselines
    assert (tiny_run / "fig_attacks.png").read_bytes()[:8] == PNG_MAGIC
    comparison = (tiny_run / "comparison.md").read_text().splitlines()  # the every-method table, with recoveries
    assert comparison[0].startswith("| method | seeds | forget quality | model utility | PrivLeak % | collapsed |")
    assert comparison[0].endswith("| recovery of forget_prob, relearn2 | recovery of forget_prob, quantize4 |")
    assert [line.split(" | ")[0] for line in comparison[2:]] == [f"| {m}" for m in methods]


def test_robustness_benchmark_measures_a_finished_run(tiny_run, tmp_path):
    """benchmarks/robustness.py (a robustness evaluation's cost against a plain one) on this run's models; no timing
    assertion (a toy model on a shared CPU), only that every part was measured and written."""
    from benchmarks import robustness

    out = tmp_path / "robustness.json"
    result = robustness.main(["--run", str(tiny_run), "--method", "npo", "--repeats", "1", "--attacks", "quantize8",
                              "relearn", "--relearn_steps", "1", "--output", str(out)])
    assert set(result["ratio_to_plain"]) == {
        "robustness evaluation (every attack)", "held-out forget rows, unattacked", "relearn1: the attack",
        "relearn1: its evaluation", "quantize8: the attack", "quantize8: its evaluation"}
    assert all(ratio > 0 for ratio in result["ratio_to_plain"].values())
    assert result["attacked_rows"] < result["rows"]["forget"] + result["rows"]["retain"]
    assert json.loads(out.read_text())["median"] == result["median"]


def test_a_second_run_skips_finished_stages(tiny_run):
    before = {p: p.stat().st_mtime_ns for p in tiny_run.rglob("model.safetensors")}
    run_example(tiny_run, "--sanity_check", "true")
    assert {p: p.stat().st_mtime_ns for p in tiny_run.rglob("model.safetensors")} == before


@pytest.mark.slow
@pytest.mark.processes
def test_zero3_unlearning_stage_on_two_cpu_processes(tiny_run, tmp_path):
    """The cached stages are reused (in a copy of the run, whatever order the tests run in); one more method is
    unlearned under ZeRO-3 and evaluated on two processes."""
    run = shutil.copytree(tiny_run, tmp_path / "run")
    launcher = (sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(ROOT / "examples" / "accelerate_configs" / "zero3.yaml"), "--num_processes", "2",
                "--mixed_precision", "no", "--main_process_port", "0")
    run_example(run, "--methods", "npo+kl", launcher=launcher)
    rows = [json.loads(line) for line in (run / "unlearn" / "npo+kl" / "tofu_metrics.jsonl").open()]
    assert len(rows) == 2 and all(math.isfinite(r["tofu/forget_quality"]) for r in rows)
    assert (run / "unlearn" / "npo+kl" / "final" / "model.safetensors").exists()
    assert not (run / "full" / "model.safetensors").stat().st_mtime_ns > (tiny_run / "full" / "model.safetensors"
                                                                          ).stat().st_mtime_ns  # not retrained


@pytest.mark.parametrize("config", ["tofu_llama2.yaml", "tofu_llama3.2_1b.yaml"])
def test_the_real_settings_parse(config):
    """The configs of the real setting parse with the example's parser: their attacks are the quantization ones (they
    run under several processes) at the models' relearning learning rate."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tofu_example", SCRIPT)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    parsed = example.make_parser().parse_args_and_config(  # bf16 off: a CPU machine refuses it
        args=["--config", str(ROOT / "examples/configs" / config), "--bf16", "false"])
    attack_args = next(p for p in parsed if type(p).__name__ == "AttackArguments")
    assert attack_args.attacks == ["quantize8", "quantize4"] and attack_args.relearn_learning_rate == 1e-5


def test_stage_arguments_that_cannot_run_are_refused(tmp_path):
    """Refused with the fix before anything trains."""
    refused = {"pass one": ["--retain_model", "r", "--reference_stats", "s.json"],
               "--finetuned_model skips the base model": ["--finetuned_model", "f"],
               "leave --seed out of --seeds": ["--seeds", "0", "42", "--sanity_check", "true"],
               "give distinct seeds": ["--seeds", "0", "1", "0"],
               "method 'xyz': use <forget_loss>[+rt|+kl] with forget_loss among ['npo', 'ga'": ["--methods", "xyz"]}
    messages = refusals(SCRIPT, [["--output_dir", str(tmp_path), *args] for args in refused.values()])
    for expected, message in zip(refused, messages, strict=True):
        assert message is not None and expected in message, (expected, message)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_lora_unlearning_stage_saves_adapters_and_reports(tiny_run):
    """ModelConfig's --use_peft flags reach the unlearning stage; the report loads the adapters onto `full`; the
    attack stage merges them into it."""
    run_example(tiny_run, "--methods", "simnpo", "--use_peft", "true", "--lora_r", "4", "--lora_target_modules",
                "q_proj", "v_proj", "--attacks", "quantize4")
    final = tiny_run / "unlearn" / "simnpo" / "final"
    assert (final / "adapter_config.json").exists() and not (final / "config.json").exists()
    rows = [json.loads(line) for line in (tiny_run / "unlearn" / "simnpo" / "tofu_metrics.jsonl").open()]
    assert len(rows) == 2 and all(math.isfinite(r["tofu/forget_quality"]) for r in rows)
    assert len(json.loads((tiny_run / "samples.json").read_text())["forget"]["simnpo"]) == 3
    robustness = json.loads((tiny_run / "unlearn" / "simnpo" / "robustness.json").read_text())["metrics"]
    assert math.isfinite(robustness["attack/quantize4/tofu/forget_prob"])  # the adapters merged, then quantized


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
