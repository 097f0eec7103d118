"""Reliability: exact resume, determinism, non-finite losses, process-count invariance, ZeRO-3 checkpoints."""

import json

import pytest
import torch
from scripts.unlearn import RecordingTrainer
from transformers import AutoModelForCausalLM

from helpers import SCRIPT, launch
from npo_trl import NPOConfig, NPOTrainer


def config(output_dir, **kwargs):
    defaults = dict(output_dir=str(output_dir), per_device_train_batch_size=2, learning_rate=1e-3, max_steps=4,
                    logging_steps=1, report_to="none", activation_checkpointing=False, save_strategy="no", seed=0,
                    retain_loss="nll", retain_batch_size=3)
    return NPOConfig(**{**defaults, **kwargs})


def run(model_dir, tokenizer, forget_ds, retain_ds, args, resume=None):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    trainer = RecordingTrainer(model, args=args, train_dataset=forget_ds, retain_dataset=retain_ds,
                               processing_class=tokenizer)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_resume_from_a_checkpoint_ends_with_the_same_weights_and_batches(
    tmp_path, finetuned_dir, tokenizer, forget_ds, retain_ds
):
    whole = run(finetuned_dir, tokenizer, forget_ds, retain_ds,
                config(tmp_path / "whole", save_strategy="steps", save_steps=2))
    resumed = run(finetuned_dir, tokenizer, forget_ds, retain_ds, config(tmp_path / "resumed"),
                  resume=str(tmp_path / "whole" / "checkpoint-2"))
    torch.testing.assert_close(flat(resumed.model), flat(whole.model), rtol=0, atol=1e-6)
    assert [s["step"] for s in resumed.seen] == [2, 3]
    assert resumed.seen == whole.seen[2:]  # the same forget rows and retain rows at steps 2 and 3


def test_same_seed_same_result_other_seed_differs(tmp_path, finetuned_dir, tokenizer, forget_ds, retain_ds):
    first, again, other = (run(finetuned_dir, tokenizer, forget_ds, retain_ds, config(tmp_path / str(i), seed=seed))
                           for i, seed in enumerate((0, 0, 1)))
    assert torch.equal(flat(first.model), flat(again.model))
    assert first.seen == again.seen
    assert [h["loss"] for h in first.state.log_history[:-1]] == [h["loss"] for h in again.state.log_history[:-1]]
    assert not torch.equal(flat(first.model), flat(other.model))
    assert first.seen != other.seen


class PoisonedTrainer(NPOTrainer):
    """Gives forget row 5 a -inf log-probability, as an overflow or a masked-out target would."""

    def _token_logps(self, model, batch, reference=False):
        token_logps, mask = super()._token_logps(model, batch, reference)
        if not reference and "row_index" in batch:
            rows = batch["row_index"].repeat(token_logps.size(0) // batch["row_index"].numel())
            token_logps = token_logps.masked_fill((rows == 5)[:, None] & mask.bool(), float("-inf"))
        return token_logps, mask


def test_nonfinite_rows_stop_training_naming_step_and_rows(tmp_path, finetuned, tokenizer, forget_ds):
    args = config(tmp_path, retain_loss=None, per_device_train_batch_size=8, max_steps=2)
    trainer = PoisonedTrainer(finetuned, args=args, train_dataset=forget_ds, processing_class=tokenizer)
    before = flat(trainer.model).clone()
    with pytest.raises(ValueError, match=r"Non-finite log-probabilities at step 0: 1 forget row.*rows \[5\]"):
        trainer.train()
    assert torch.equal(flat(trainer.model), before)  # nothing reached the weights


def test_nonfinite_rows_are_skipped_and_counted_when_asked(tmp_path, finetuned, tokenizer, forget_ds):
    args = config(tmp_path, retain_loss=None, per_device_train_batch_size=8, max_steps=2, nonfinite_loss="skip")
    trainer = PoisonedTrainer(finetuned, args=args, train_dataset=forget_ds, processing_class=tokenizer)
    before = flat(trainer.model).clone()
    trainer.train()
    after = flat(trainer.model)
    assert torch.isfinite(after).all() and not torch.equal(after, before)
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["nonfinite/rows"] for h in logged] == [1, 1] and all(h["loss"] == h["loss"] for h in logged)


@pytest.mark.slow
@pytest.mark.processes
def test_one_process_with_accumulation_matches_two_processes(tmp_path, finetuned_dir, data_files):
    """1 process × gradient accumulation 2 and 2 processes × 1 see the same rows and track the same losses."""
    import subprocess
    import sys

    common = ["--per_device_train_batch_size", "2", "--max_steps", "3", "--retain_loss", "nll", "--output_dir"]
    single = [sys.executable, str(SCRIPT), *common, str(tmp_path / "one"), "--gradient_accumulation_steps", "2",
              "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1", "--learning_rate", "1e-3",
              "--seed", "0", finetuned_dir, *map(str, data_files)]
    result = subprocess.run(single, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    one = json.loads((tmp_path / "one" / "run.json").read_text())
    two = launch("examples/accelerate_configs/multi_gpu.yaml", 2, tmp_path / "two", finetuned_dir, data_files,
                 *common[:-1])
    assert (one["num_processes"], two["num_processes"], two["deepspeed"]) == (1, 2, False)

    def rows_per_step(seen, key):
        return [sorted(i for s in seen if s["step"] == step for i in s[key]) for step in range(3)]

    assert rows_per_step(one["seen"], "forget") == rows_per_step(two["seen"], "forget")
    assert rows_per_step(one["seen"], "retain") == rows_per_step(two["seen"], "retain")
    for a, b in zip(*(([h for h in r["log_history"] if "loss" in h]) for r in (one, two)), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3), (a, b)
        assert b["forget/logps"] == pytest.approx(a["forget/logps"], rel=1e-3)


@pytest.mark.slow
@pytest.mark.processes
def test_zero3_checkpoint_resumes_through_deepspeed(tmp_path, finetuned_dir, data_files):
    zero3 = "examples/accelerate_configs/zero3.yaml"
    common = ["--per_device_train_batch_size", "2", "--max_steps", "4", "--retain_loss", "nll"]
    whole = launch(zero3, 2, tmp_path / "whole", finetuned_dir, data_files, *common, "--save_strategy", "steps",
                   "--save_steps", "2")
    checkpoint = tmp_path / "whole" / "checkpoint-2"
    assert any(p.name.startswith("global_step") for p in checkpoint.iterdir())  # DeepSpeed's own sharded states
    resumed = launch(zero3, 2, tmp_path / "resumed", finetuned_dir, data_files, *common,
                     "--resume_from_checkpoint", str(checkpoint))
    whole_losses = [h["loss"] for h in whole["log_history"] if "loss" in h]
    resumed_losses = [h["loss"] for h in resumed["log_history"] if "loss" in h]
    assert len(whole_losses) == len(resumed_losses) == 4  # the resumed history holds the checkpoint's steps 1-2
    assert resumed_losses[2:] == pytest.approx(whole_losses[2:], rel=1e-4)
    assert sorted(map(str, resumed["seen"])) == sorted(map(str, [s for s in whole["seen"] if s["step"] >= 2]))
