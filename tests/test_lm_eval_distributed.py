"""LMEvalCallback under 2 CPU processes with DeepSpeed ZeRO-3: every process evaluates every row in the same forward
passes (each layer's weights gathered in them) and logs what 1 process logs."""

import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT
from lm_eval_helpers import memorising_model, small_standin, standin_tokenizer


@pytest.mark.slow
@pytest.mark.processes
def test_two_zero3_processes_give_the_one_process_metrics(tmp_path):
    standin = small_standin(tmp_path / "wmdp", num_forget=4, num_retain=4)
    tokenizer = standin_tokenizer(standin)
    memorising_model(standin, tokenizer, steps=60).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    results = {}
    zero3 = ["--config_file", str(ROOT / "examples" / "accelerate_configs" / "zero3.yaml")]
    for num_processes, launcher in ((1, ["--cpu"]), (2, zero3)):
        out = tmp_path / f"np{num_processes}"
        cmd = [sys.executable, "-m", "accelerate.commands.launch", *launcher, "--num_processes", str(num_processes),
               "--mixed_precision", "no", "--main_process_port", "0", str(ROOT / "tests" / "scripts" /
                                                                          "lm_eval_callback.py"),
               str(tmp_path / "model"), standin.directory, str(out), str(8 // num_processes)]
        proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        results[num_processes] = json.loads((out / "result.json").read_text())
    one, two = results[1], results[2]
    assert two["deepspeed"] and not one["deepspeed"] and two["num_processes"] == 2
    assert [r["step"] for r in one["lm_eval"]] == [r["step"] for r in two["lm_eval"]] == [0, 1, 2]
    assert two["every_process"][0] == two["every_process"][1]  # the same numbers on every process
    for row_one, row_two in zip(one["lm_eval"], two["lm_eval"], strict=True):
        assert row_two == pytest.approx(row_one), row_one["step"]
    assert 0 < one["lm_eval"][0]["lm_eval/wmdp_synthetic/acc"]
