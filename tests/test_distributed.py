"""Several CPU processes under `accelerate launch` (gloo): DeepSpeed ZeRO-3 trains, shards data and saves."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "unlearn.py"


def launch(config_file: str, num_processes: int, output_dir: Path, model_dir: str, data: tuple[Path, Path], *args):
    """Runs tests/scripts/unlearn.py under accelerate and returns its run.json."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / config_file),
        "--num_processes", str(num_processes), "--mixed_precision", "no", "--main_process_port", "0", str(SCRIPT),
        "--output_dir", str(output_dir), "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1",
        "--learning_rate", "1e-3", "--seed", "0", *args, model_dir, *map(str, data),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return json.loads((output_dir / "run.json").read_text())


@pytest.fixture(scope="module")
def data_files(tmp_path_factory, forget_ds, retain_ds):
    folder = tmp_path_factory.mktemp("data")
    paths = folder / "forget.json", folder / "retain.json"
    for path, dataset in zip(paths, (forget_ds, retain_ds)):
        path.write_text(json.dumps([dict(r) for r in dataset]))
    return paths


@pytest.mark.slow
def test_zero3_on_two_cpu_processes_trains_shards_and_saves(tmp_path, finetuned_dir, data_files):
    run = launch("examples/accelerate_configs/zero3.yaml", 2, tmp_path, finetuned_dir, data_files,
                 "--per_device_train_batch_size", "2", "--max_steps", "3", "--retain_loss", "nll")
    assert run["num_processes"] == 2 and run["deepspeed"]
    losses = [h for h in run["log_history"] if "loss" in h]
    assert len(losses) == 3
    assert losses[0]["forget/log_ratio"] == pytest.approx(0.0, abs=1e-5)  # step 1: the policy is the reference
    assert losses[-1]["forget/log_ratio"] < -0.1 and losses[-1]["loss"] != losses[0]["loss"]

    # each step the two ranks train on different forget rows and draw different retain rows
    for step in range(3):
        rank0, rank1 = (next(s for s in run["seen"] if s["step"] == step and s["rank"] == r) for r in (0, 1))
        assert set(rank0["forget"]).isdisjoint(rank1["forget"])
        assert rank0["retain"] != rank1["retain"]

    # the gathered 16-bit weights load with plain transformers, differ from the start and generate
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    start = AutoModelForCausalLM.from_pretrained(finetuned_dir)
    moved = sum((a - b).abs().sum().item() for a, b in zip(final.parameters(), start.parameters()))
    assert moved > 0
    out = final.generate(torch.tensor([[1, 5, 6]]), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 7)
