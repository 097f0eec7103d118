"""examples/tofu.py: the whole pipeline on a tiny configuration, its ZeRO-3 unlearning stage, and the real files."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "tofu.py"
TOFU_DIR = Path(os.environ.get("TOFU_DIR", ROOT.parent / "shared" / "tofu"))
TINY = ["--num_authors", "20", "--qa_per_author", "5", "--hidden_size", "64", "--num_layers", "2",
        "--vocab_size", "600", "--pretrain_epochs", "1", "--finetune_epochs", "1", "--num_train_epochs", "1",
        "--max_samples", "10", "--max_new_tokens", "8", "--eval_batch_size", "16", "--disable_tqdm", "true"]
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
                elif key.startswith("tofu/"):
                    assert value is not None and math.isfinite(value), (method, key, value)
    results = json.loads((tiny_run / "results.json").read_text())
    assert set(results["best"]) == set(methods)
    assert 0.0 <= results["sanity_check_retain_vs_retain"] <= 1.0
    assert len((tiny_run / "results.csv").read_text().splitlines()) == 1 + 2 * len(methods)
    for figure in ("fig5_tradeoff.png", "fig6_per_epoch.png"):
        assert (tiny_run / figure).read_bytes()[:8] == PNG_MAGIC
    samples = json.loads((tiny_run / "samples.json").read_text())
    assert set(samples) == {"forget", "retain", "real_authors", "world_facts"}
    assert all(len(samples["forget"][m]) == 3 for m in ["finetuned", *methods])


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


def test_the_real_tofu_files_feed_the_data_stages(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import tofu
    finally:
        sys.path.remove(str(SCRIPT.parent))
    script_args = tofu.TOFUScriptArguments(dataset=str(TOFU_DIR), forget_split="forget01")
    splits = tofu.load_splits(script_args)
    sizes = {k: len(v) for k, v in splits.items()}
    assert sizes == {"full": 4000, "forget": 40, "retain": 3960, "eval_forget": 40, "eval_retain": 400,
                     "eval_real_authors": 100, "eval_world_facts": 117, "eval_facts": 217, "general_knowledge": 217}
    subset = {k: v.select(range(min(len(v), 40))) for k, v in splits.items()}
    tokenizer = tofu.train_tokenizer(tofu.corpus(subset), vocab_size=400)
    question = splits["forget"][0]["question"]
    assert tokenizer.decode(tokenizer(question)["input_ids"], skip_special_tokens=True) == question
