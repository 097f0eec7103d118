"""Several CPU processes under `accelerate launch` (gloo): DeepSpeed ZeRO-3 trains, shards data and saves; DDP and
ZeRO-3 give the same weights, with the forget and retain terms backpropagated apart or together."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from helpers import launch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.processes
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
    moved = sum((a - b).abs().sum().item() for a, b in zip(final.parameters(), start.parameters(), strict=False))
    assert moved > 0
    out = final.generate(torch.tensor([[1, 5, 6]]), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 7)


@pytest.mark.slow
@pytest.mark.processes
def test_ddp_and_zero3_give_the_same_weights_with_separate_or_joint_backward(tmp_path, finetuned_dir, data_files):
    """NPO+RT, 2 processes, 2 optimizer steps of 2 accumulated micro-batches, SGD with lr 1 (each weight moves by its
    gradient): DDP with the forget term backpropagated before the retain pass (the default) and ZeRO-3 with one
    backward of the sum end at the same weights. (One process: test_trainer.py checks that the two backward modes give
    the same gradients.)"""
    args = ("--per_device_train_batch_size", "2", "--max_steps", "2", "--gradient_accumulation_steps", "2",
            "--retain_loss", "nll", "--optim", "sgd", "--learning_rate", "1.0", "--max_grad_norm", "0")
    runs = {("ddp", "true"): "examples/accelerate_configs/multi_gpu.yaml",
            ("zero3", "false"): "examples/accelerate_configs/zero3.yaml"}
    weights = {}
    for (name, separate), config_file in runs.items():
        out = tmp_path / f"{name}_{separate}"
        run = launch(config_file, 2, out, finetuned_dir, data_files, *args, "--separate_backward", separate)
        assert run["num_processes"] == 2 and run["deepspeed"] == (name == "zero3")
        weights[name] = list(AutoModelForCausalLM.from_pretrained(out / "final").parameters())
    start = AutoModelForCausalLM.from_pretrained(finetuned_dir).parameters()
    assert sum((a - b).abs().sum().item() for a, b in zip(weights["ddp"], start, strict=True)) > 1.0  # they moved
    for param, expected in zip(weights["zero3"], weights["ddp"], strict=True):
        torch.testing.assert_close(param, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.processes
def test_pdu_on_two_zero3_processes_is_one_process(tmp_path, finetuned_dir, tokenizer, forget_ds, retain_ds,
                                                   data_files):
    """The stateful PDU, 2 optimizer steps: ZeRO-3 on 2 processes of 2 rows each, and one process here with 2
    accumulated micro-batches of 2 rows (the same forget and retain rows per step), log the same losses and end with
    the same λ and ε, identical on both ranks, and the same weights."""
    from npo_trl import NPOConfig, NPOTrainer

    flags = {"forget_loss": "pdu", "retain_loss": "nll", "per_device_train_batch_size": 2, "max_steps": 2,
             "pdu_dual_step": 20.0, "pdu_slack": 0.05}
    run = launch("examples/accelerate_configs/zero3.yaml", 2, tmp_path / "zero3", finetuned_dir, data_files,
                 *[str(item) for pair in flags.items() for item in (f"--{pair[0]}", pair[1])])
    assert run["num_processes"] == 2 and run["deepspeed"]
    args = NPOConfig(output_dir=str(tmp_path / "one"), report_to="none", save_strategy="no", logging_steps=1,
                     learning_rate=1e-3, seed=0, gradient_accumulation_steps=2, **flags)
    one = NPOTrainer(AutoModelForCausalLM.from_pretrained(finetuned_dir, dtype=torch.float32), args=args,
                     train_dataset=forget_ds, retain_dataset=retain_ds, processing_class=tokenizer)
    one.train()

    first, second = run["method_states"]
    assert first == second and first["steps"] == 2.0 and first["dual"] != 1.0  # every rank holds the same state
    assert first == pytest.approx(one._method_state(), rel=1e-5)  # float32 sums in another order, times η_λ
    logs = [[h for h in history if "loss/retain" in h] for history in (run["log_history"], one.state.log_history)]
    for key in ("loss/forget", "loss/retain", "pdu/dual"):
        assert [h[key] for h in logs[0]] == pytest.approx([h[key] for h in logs[1]], rel=1e-5), key
    assert logs[0][1]["pdu/retain_bound"] == pytest.approx(1.05 * logs[0][0]["loss/retain"], rel=1e-6)
    sharded = AutoModelForCausalLM.from_pretrained(tmp_path / "zero3" / "final").parameters()
    for param, expected in zip(sharded, one.model.parameters(), strict=True):
        torch.testing.assert_close(param, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.processes
def test_rmu_on_two_zero3_processes_is_one_process(tmp_path, finetuned_dir, tokenizer, forget_ds, retain_ds,
                                                   data_files):
    """RMU, 2 optimizer steps: ZeRO-3 on 2 processes of 2 rows each (the parameters frozen before DeepSpeed starts,
    layer ℓ's output caught by a hook on the partitioned model) and one process with 2 accumulated micro-batches of 2
    rows log the same losses, measure the same c, and end with the same weights, of which only layer 0's
    mlp.down_proj moved."""
    from npo_trl import NPOConfig, NPOTrainer

    flags = {"forget_loss": "rmu", "retain_loss": "activations", "per_device_train_batch_size": 2, "max_steps": 2,
             "rmu_alpha": 10.0}
    run = launch("examples/accelerate_configs/zero3.yaml", 2, tmp_path / "zero3", finetuned_dir, data_files,
                 *[str(item) for pair in flags.items() for item in (f"--{pair[0]}", pair[1])])
    assert run["num_processes"] == 2 and run["deepspeed"]
    args = NPOConfig(output_dir=str(tmp_path / "one"), report_to="none", save_strategy="no", logging_steps=1,
                     learning_rate=1e-3, seed=0, gradient_accumulation_steps=2, **flags)
    one = NPOTrainer(AutoModelForCausalLM.from_pretrained(finetuned_dir, dtype=torch.float32), args=args,
                     train_dataset=forget_ds, retain_dataset=retain_ds, processing_class=tokenizer)
    one.train()

    first, second = run["method_states"]
    assert first == second and first["steps"] == 2.0 and first["steering_coeff"] > 0
    assert first == pytest.approx(one._method_state(), rel=1e-5)
    logs = [[h for h in history if "loss/retain" in h] for history in (run["log_history"], one.state.log_history)]
    assert logs[0][0]["loss/retain"] == 0.0 and logs[0][1]["loss/retain"] > 0
    for key in ("loss/forget", "loss/retain", "rmu/activation_norm", "rmu/steering_coeff"):
        assert [h[key] for h in logs[0]] == pytest.approx([h[key] for h in logs[1]], rel=1e-5, abs=1e-9), key
    sharded = AutoModelForCausalLM.from_pretrained(tmp_path / "zero3" / "final").named_parameters()
    start = dict(AutoModelForCausalLM.from_pretrained(finetuned_dir).named_parameters())
    moved = []
    for (name, param), expected in zip(sharded, one.model.parameters(), strict=True):
        torch.testing.assert_close(param, expected, atol=1e-5, rtol=1e-4)
        moved += [name] if not torch.equal(param, start[name]) else []
    assert moved == ["model.layers.0.mlp.down_proj.weight"]


@pytest.mark.slow
@pytest.mark.processes
def test_fsdp2_sharded_weights_evaluate_like_one_process(tmp_path, finetuned_dir):
    """accelerate runs FSDP only on GPU-like devices (docs/guides/distributed.md), so torch's own FSDP2 shards the
    model here, on 2 CPU processes: TOFU's and the privacy metrics of the sharded model, each process scoring half the
    rows with synced generation, equal one unsharded process's."""
    from helpers import toy_eval_sets
    from npo_trl.eval.privacy import PRIVACY_METRICS
    from npo_trl.tofu.metrics import METRICS

    sets_path, out = tmp_path / "sets.json", tmp_path / "result.json"
    sets_path.write_text(json.dumps(toy_eval_sets(holdout=True)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(ROOT / "tests" / "scripts" / "fsdp2_eval.py"), finetuned_dir, str(sets_path), str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    run = json.loads(out.read_text())
    assert run["sharded"] == "DTensor"  # each process holds a shard of the weights
    assert run["one"]["tofu/forget_kl"] is None  # no reference model here; every other metric is computed
    for key in METRICS + PRIVACY_METRICS:
        if key != "tofu/forget_kl":
            assert run["two"][key] == pytest.approx(run["one"][key], rel=1e-5, abs=1e-6, nan_ok=True), key
