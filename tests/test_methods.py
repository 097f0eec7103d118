"""The method registry: every row trains through NPOTrainer, NPOConfig refuses what no row allows, the docs' table is
the registry's, and the hooks for per-token and stateful methods work (rows added here, for the test only)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from npo_trl import NPOConfig, NPOTrainer, losses
from npo_trl.methods import DISTRIBUTIONS, METHODS, TOKENS, Method, markdown_table, method_losses, method_names

ROOT = Path(__file__).resolve().parents[1]


def config(tmp_path, **kwargs):
    defaults = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, learning_rate=1e-3, max_steps=2,
                    logging_steps=1, report_to="none", activation_checkpointing=False, save_strategy="no",
                    replacement_answers=["I don't know.", "I have no idea."], seed=0)
    return NPOConfig(**{**defaults, **kwargs})


def train(tmp_path, model_dir, tokenizer, forget_ds, retain_ds=None, **kwargs):
    from transformers import AutoModelForCausalLM

    trainer = NPOTrainer(AutoModelForCausalLM.from_pretrained(model_dir), args=config(tmp_path, **kwargs),
                         train_dataset=forget_ds, retain_dataset=retain_ds, processing_class=tokenizer)
    trainer.train()
    return trainer, [row for row in trainer.state.log_history if "loss/forget" in row]


@pytest.mark.parametrize("name", list(METHODS))
def test_every_row_trains_two_steps(tmp_path, finetuned_dir, tokenizer, forget_ds, retain_ds, name):
    row = METHODS[name]
    retain_loss = "kl" if "kl" in row.retain_losses else row.retain_losses[-1]
    trainer, logs = train(tmp_path, finetuned_dir, tokenizer, forget_ds, retain_ds if retain_loss else None,
                          forget_loss=name, retain_loss=retain_loss)
    assert trainer.state.global_step == 2 and len(logs) == 2
    assert all(torch.isfinite(torch.tensor(row["loss/forget"])) for row in logs)
    assert (trainer.ref_model is not None) == (row.needs_reference or retain_loss in ("kl", "activations"))
    assert ("forget/ref_logps" in logs[0]) == row.needs_reference


def test_rows_are_consistent():
    for name, row in METHODS.items():
        assert row.name == name and row.functions and all(hasattr(losses, f.__name__) for f in row.functions)
        assert all(hasattr(NPOConfig, field) for field in row.hyperparameters), name
        assert None in row.retain_losses or row.combine is not None, name  # alone, but for a constrained one (PDU)


def test_unknown_names_and_impossible_combinations_list_the_valid_ones(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=re.escape(f"forget_loss='xyz' is unknown: use one of {method_names()}")):
        config(tmp_path, forget_loss="xyz")
    with pytest.raises(ValueError, match=re.escape("retain_loss='l2' is unknown: use one of [None, 'nll', 'kl', "
                                                   "'activations']")):
        config(tmp_path, retain_loss="l2")
    alone = Method("alone", lambda forget: losses.ga_loss(forget.logps), functions=(losses.ga_loss,), formula="",
                   paper="", equation="", retain_losses=(None, "nll"))
    monkeypatch.setitem(METHODS, "alone", alone)
    with pytest.raises(ValueError, match=re.escape("forget_loss='alone' does not combine with retain_loss='kl': use "
                                                   "one of [None, 'nll'], or a forget_loss among ['npo', 'ga'")):
        config(tmp_path, forget_loss="alone", retain_loss="kl")
    with pytest.raises(ValueError, match="does not combine"):
        method_losses("alone+kl")
    assert method_losses("alone+rt") == ("alone", "nll")
    per_token = Method("per_token", lambda forget: losses.ga_loss(forget.token_logps.sum(1)),
                       functions=(losses.ga_loss,), formula="", paper="", equation="", needs_reference=True,
                       inputs=(TOKENS,))
    monkeypatch.setitem(METHODS, "per_token", per_token)
    with pytest.raises(ValueError, match=r"reads π_ref per token.*precompute_ref_log_probs=False.*\['npo', 'ga'"):
        config(tmp_path, forget_loss="per_token", precompute_ref_log_probs=True)
    with pytest.raises(ValueError, match="lower-case identifier"):
        Method("NPO+x", alone.loss, functions=(), formula="", paper="", equation="")


def test_the_registry_imports_torch_only():
    code = ("import sys, npo_trl.methods; "
            "heavy = [m for m in ('transformers', 'trl', 'datasets') if m in sys.modules]; assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_docs_table_is_the_registrys():
    """docs/guides/trainer.md holds `markdown_table()`'s output (regenerate it after adding a row)."""
    assert markdown_table() in (ROOT / "docs" / "guides" / "trainer.md").read_text()


def test_per_token_inputs_come_only_when_asked_and_match_the_sequence_ones(tmp_path, finetuned_dir, tokenizer,
                                                                           forget_ds, monkeypatch):
    """A row reading per-token log-probs (and π_ref's log-distributions) gets them for the forget answers only; a row
    of GA over the per-token log-probs trains exactly as GA."""
    seen = []

    def token_ga(forget):
        seen.append(forget)
        return losses.ga_loss(forget.token_logps.sum(1))

    monkeypatch.setitem(METHODS, "token_ga", Method("token_ga", token_ga, functions=(losses.ga_loss,), formula="",
                                                    paper="", equation="", inputs=(TOKENS,)))
    _, ga_logs = train(tmp_path / "ga", finetuned_dir, tokenizer, forget_ds, forget_loss="ga")
    _, token_logs = train(tmp_path / "token", finetuned_dir, tokenizer, forget_ds, forget_loss="token_ga")
    assert [row["loss/forget"] for row in token_logs] == [row["loss/forget"] for row in ga_logs]
    assert seen[0].token_logps.shape == seen[0].token_mask.shape and seen[0].token_logprobs is None

    def away_from_ref(forget):
        seen.append(forget)
        return -losses.kl_loss(forget.token_logprobs, forget.ref_token_logprobs)

    monkeypatch.setitem(METHODS, "away", Method("away", away_from_ref, functions=(losses.kl_loss,), formula="",
                                                paper="", equation="", needs_reference=True, needs_replacement=True,
                                                inputs=(TOKENS, DISTRIBUTIONS)))
    seen.clear()
    _, logs = train(tmp_path / "away", finetuned_dir, tokenizer, forget_ds, forget_loss="away")
    first = seen[0]
    assert first.token_logprobs.shape == first.ref_token_logprobs.shape
    assert first.token_logprobs.size(0) == first.token_mask.sum()  # the forget answers' tokens, not the replacements'
    assert first.ref_token_logps.shape == first.token_logps.shape
    assert logs[0]["loss/forget"] == pytest.approx(0.0, abs=1e-6)  # π_θ = π_ref at the first step


def test_a_stateful_rows_state_is_checkpointed_and_resumes_exactly(tmp_path, finetuned_dir, tokenizer, forget_ds,
                                                                   monkeypatch):
    def scaled_ga(forget, state):
        return losses.ga_loss(forget.logps) / (1.0 + state["steps"])

    def count(state, logged):
        state["steps"] += 1.0
        state["last_forget"] = logged["loss/forget"]

    monkeypatch.setitem(METHODS, "counted", Method("counted", scaled_ga, functions=(losses.ga_loss,), formula="",
                                                   paper="", equation="", state=lambda: {"steps": 0.0},
                                                   update=count))
    whole, logs = train(tmp_path / "whole", finetuned_dir, tokenizer, forget_ds, forget_loss="counted",
                        save_strategy="steps", save_steps=1)
    state = json.loads((tmp_path / "whole" / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["stateful_callbacks"]["MethodStateCallback"]["args"]["values"]["steps"] == 1.0
    assert whole._method_state()["steps"] == 2.0 and whole._method_state()["last_forget"] == logs[-1]["loss/forget"]

    from transformers import AutoModelForCausalLM

    for restore in (False, True):
        resumed = NPOTrainer(AutoModelForCausalLM.from_pretrained(finetuned_dir),
                             args=config(tmp_path / "whole", forget_loss="counted",
                                         restore_callback_states_from_checkpoint=restore),
                             train_dataset=forget_ds, processing_class=tokenizer)
        resumed.train(resume_from_checkpoint=str(tmp_path / "whole" / "checkpoint-1"))
        assert resumed._method_state() == whole._method_state(), restore


# Non-default settings, so that passing them by name is tested too; PDU's forget term is read in eval mode.
COMPARED = {"wga": dict(wga_alpha=0.5), "satimp": dict(satimp_beta1=2.0, satimp_beta2=0.5),
            "undial": dict(undial_gamma=3.0), "ceu": dict(ceu_skip_first=2), "pdu": dict(retain_loss="nll")}


@pytest.mark.parametrize("name", list(COMPARED))
def test_a_compared_methods_row_gives_its_formulas_value(tmp_path, finetuned_dir, tokenizer, forget_ds, retain_ds,
                                                        name):
    """On one batch, the forget loss NPOTrainer computes through the row equals the pure function of npo_trl.losses
    on inputs made here by a plain forward pass: the answers' tokens, labels and lengths in the same order, and the
    settings passed by name."""
    from transformers import AutoModelForCausalLM

    trainer = NPOTrainer(AutoModelForCausalLM.from_pretrained(finetuned_dir),
                         args=config(tmp_path, forget_loss=name, **COMPARED[name]), train_dataset=forget_ds,
                         retain_dataset=retain_ds if name == "pdu" else None, processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()  # the forget term alone
    with torch.no_grad():
        computed = trainer._compute_loss(trainer.model, batch, False)
        mask = batch["completion_mask"][:, 1:].bool()
        forward = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        logits = trainer.model(**forward).logits[:, :-1][mask]
        labels, lengths = batch["input_ids"][:, 1:][mask], mask.sum(1)
        token_logps = torch.log_softmax(logits, -1).gather(1, labels[:, None]).squeeze(1)
        expected = {
            "wga": lambda: losses.wga_loss(token_logps, lengths, 0.5),
            "satimp": lambda: losses.satimp_loss(token_logps, lengths, 2.0, 0.5),
            "undial": lambda: losses.undial_loss(logits, trainer.ref_model(**forward).logits[:, :-1][mask], labels,
                                                 lengths, 3.0),
            "ceu": lambda: losses.ceu_loss(logits, labels, lengths, 2),
            "pdu": lambda: losses.logit_margin_loss(logits, lengths),
        }[name]()
    assert lengths.min() > 2 and expected.abs() > 1e-3
    assert computed.item() == pytest.approx(expected.item(), rel=1e-5)


def test_pdu_steps_its_dual_variable_once_per_optimizer_step_and_resumes_exactly(tmp_path, finetuned_dir, tokenizer,
                                                                                forget_ds, retain_ds):
    """PDU, 3 optimizer steps of 2 accumulated micro-batches, one warm-up step: ε is (1 + slack) × the first step's
    retain loss (π_ref's), λ then moves by the dual update with each later step's retain loss (the mean of its
    micro-batches, as logged), once per step; the state is in each checkpoint, and a run resumed from one ends with
    the uninterrupted run's λ and ε, bit for bit."""
    settings = dict(forget_loss="pdu", retain_loss="nll", per_device_train_batch_size=2, gradient_accumulation_steps=2,
                    max_steps=3, pdu_dual_step=20.0, pdu_slack=0.1, pdu_dual_warmup_steps=1)
    whole, logs = train(tmp_path / "whole", finetuned_dir, tokenizer, forget_ds, retain_ds, save_strategy="steps",
                        save_steps=1, **settings)
    bound = losses.pdu_retain_bound(logs[0]["loss/retain"], 0.1)
    dual = 1.0
    for log in logs[1:]:  # the first step is the warm-up: λ stays
        dual = losses.pdu_dual_update(dual, log["loss/retain"], bound, 20.0)
    assert whole._method_state() == {"dual": dual, "retain_bound": bound, "steps": 3.0} and dual != 1.0
    after_first = losses.pdu_dual_update(1.0, logs[1]["loss/retain"], bound, 20.0)
    assert [log["pdu/dual"] for log in logs] == pytest.approx([1.0, 1.0, after_first])  # λ during each step
    saved = json.loads((tmp_path / "whole" / "checkpoint-1" / "trainer_state.json").read_text())
    assert saved["stateful_callbacks"]["MethodStateCallback"]["args"]["values"] == {"dual": 1.0, "retain_bound": bound,
                                                                                    "steps": 1.0}

    from transformers import AutoModelForCausalLM

    resumed = NPOTrainer(AutoModelForCausalLM.from_pretrained(finetuned_dir),
                         args=config(tmp_path / "whole", save_strategy="no", **settings), train_dataset=forget_ds,
                         retain_dataset=retain_ds, processing_class=tokenizer)
    resumed.train(resume_from_checkpoint=str(tmp_path / "whole" / "checkpoint-1"))
    assert resumed._method_state() == whole._method_state()


def rmu_trainer(tmp_path, model_dir, tokenizer, forget_ds, retain_ds, **kwargs):
    from transformers import AutoModelForCausalLM

    args = config(tmp_path, forget_loss="rmu", retain_loss="activations", **kwargs)
    return NPOTrainer(AutoModelForCausalLM.from_pretrained(model_dir), args=args, train_dataset=forget_ds,
                      retain_dataset=retain_ds, processing_class=tokenizer)


def forget_activations(trainer, batch):
    """Layer ℓ's output at the forget batch's tokens, from a plain forward pass."""
    with torch.no_grad():
        hidden = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               output_hidden_states=True).hidden_states[trainer._hidden_layer + 1]
    return hidden[batch["attention_mask"].bool()]


def test_rmu_trains_only_its_layers_and_steers_the_forget_activations_towards_c_u(tmp_path, finetuned_dir, tokenizer,
                                                                                   forget_ds, retain_ds):
    """RMU, 20 steps on the 2-layer model (ℓ = round(7/32 · 2) = 0): only layer 0's mlp.down_proj changes; the forget
    loss, first the formula's value at π_ref's activations, falls, and the forget activations turn towards u; the
    retain loss starts at 0 (θ = θ_ref); c is 4 × the first step's median activation norm. (The tests' retain rows
    share the forget rows' templates, so α is lowered from the paper's 1200 for the forget term to move in 20
    steps.)"""
    trainer = rmu_trainer(tmp_path, finetuned_dir, tokenizer, forget_ds, retain_ds, max_steps=20, learning_rate=1e-2,
                          rmu_alpha=10.0)
    assert trainer._hidden_layer == 0
    start = {name: param.detach().clone() for name, param in trainer.model.named_parameters()}
    batch = next(iter(trainer.get_train_dataloader()))
    before = forget_activations(trainer, batch)
    trainer.train()
    logs = [row for row in trainer.state.log_history if "loss/forget" in row]
    changed = [name for name, param in trainer.model.named_parameters() if not torch.equal(param, start[name])]
    assert changed == ["model.layers.0.mlp.down_proj.weight"]
    assert [name for name, param in trainer.model.named_parameters() if param.requires_grad] == changed

    coeff = trainer._method_state()["steering_coeff"]
    assert coeff == pytest.approx(4 * logs[0]["rmu/activation_norm"], rel=1e-6)
    assert all(row["rmu/steering_coeff"] == pytest.approx(coeff) for row in logs)
    target = losses.rmu_control_vector(before.size(-1), coeff, seed=0)
    assert logs[0]["loss/retain"] == 0.0 and logs[0]["loss/forget"] == pytest.approx(
        losses.activation_mse(before, target).item(), rel=1e-5)
    assert logs[-1]["loss/forget"] < 0.9 * logs[0]["loss/forget"]
    after = forget_activations(trainer, batch)
    cosine = [torch.nn.functional.cosine_similarity(h, target[None]).mean().item() for h in (before, after)]
    assert cosine[1] > cosine[0] + 0.1
    assert losses.activation_mse(after, target) < losses.activation_mse(before, target)


def test_rmu_with_a_given_coefficient_layer_and_trainable_parameters(tmp_path, finetuned_dir, tokenizer, forget_ds,
                                                                     retain_ds):
    trainer = rmu_trainer(tmp_path, finetuned_dir, tokenizer, forget_ds, retain_ds, max_steps=1, rmu_layer=1,
                          rmu_steering_coeff=3.0, trainable_parameters=[r"layers\.1\.mlp\.(up|down)_proj"])
    assert trainer._hidden_layer == 1
    assert [name for name, param in trainer.model.named_parameters() if param.requires_grad] == [
        "model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.down_proj.weight"]
    trainer.train()
    assert trainer._method_state()["steering_coeff"] == 3.0
    assert trainer.state.log_history[0]["rmu/steering_coeff"] == 3.0


def test_rmu_refuses_what_it_cannot_run(tmp_path, finetuned_dir, tokenizer, forget_ds, retain_ds):
    with pytest.raises(ValueError, match=r"rmu_layer=2 is out of range: the model has 2 decoder layers"):
        rmu_trainer(tmp_path, finetuned_dir, tokenizer, forget_ds, retain_ds, rmu_layer=2)
    with pytest.raises(ValueError, match=r"rmu_layer=-1 is out of range"):
        config(tmp_path, forget_loss="rmu", retain_loss="activations", rmu_layer=-1)
    with pytest.raises(ValueError, match=r"trainable_parameters: \['c_proj'\] match no parameter"):
        rmu_trainer(tmp_path, finetuned_dir, tokenizer, forget_ds, retain_ds, trainable_parameters=["c_proj"])
    for retain_loss in (None, "nll", "kl"):
        with pytest.raises(ValueError, match=re.escape(f"forget_loss='rmu' does not combine with retain_loss="
                                                       f"{retain_loss!r}: use one of ['activations']")):
            config(tmp_path, forget_loss="rmu", retain_loss=retain_loss)
    with pytest.raises(ValueError, match=re.escape("forget_loss='npo' does not combine with retain_loss="
                                                   "'activations': use one of [None, 'nll', 'kl'], or a forget_loss "
                                                   "among ['rmu']")):
        config(tmp_path, forget_loss="npo", retain_loss="activations")
    with pytest.raises(ValueError, match="retain_weight=2.0 does not apply to forget_loss='rmu'.*set rmu_alpha"):
        config(tmp_path, forget_loss="rmu", retain_loss="activations", retain_weight=2.0)
    with pytest.raises(ValueError, match="rmu_steering_coeff=0.0 must be > 0"):
        config(tmp_path, forget_loss="rmu", retain_loss="activations", rmu_steering_coeff=0.0)
    with pytest.raises(ValueError, match="cannot be precomputed: set precompute_ref_log_probs=False"):
        config(tmp_path, forget_loss="rmu", retain_loss="activations", precompute_ref_log_probs=True)
    assert method_losses("rmu") == ("rmu", "activations")

    from peft import LoraConfig

    with pytest.raises(ValueError, match="forget_loss='rmu' with trainable_parameters=None chooses which of the "
                                         "model's own weights train.*drop peft_config"):
        from transformers import AutoModelForCausalLM

        NPOTrainer(AutoModelForCausalLM.from_pretrained(finetuned_dir),
                   args=config(tmp_path, forget_loss="rmu", retain_loss="activations"), train_dataset=forget_ds,
                   retain_dataset=retain_ds, processing_class=tokenizer, peft_config=LoraConfig(r=4))
