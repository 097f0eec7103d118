"""NPOTrainer end to end on a tiny fine-tuned Llama: every loss unlearns, reference handling, PEFT, metrics."""

import math
import warnings

import pytest
import torch
from datasets import Dataset

from helpers import tiny_llama
from npo_trl import NPOConfig, NPOTrainer


def config(tmp_path, **kwargs):
    defaults = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, learning_rate=1e-3, max_steps=6,
                    logging_steps=1, report_to="none", activation_checkpointing=False, save_strategy="no",
                    replacement_answers=["I don't know.", "I have no idea."], seed=0)
    return NPOConfig(**{**defaults, **kwargs})


@torch.no_grad()
def mean_forget_logp(model, tokenizer, dataset):
    """Mean over rows of log π(completion | prompt), computed directly (independent of the trainer's code)."""
    total = 0.0
    for prompt, completion in zip(dataset["prompt"], dataset["completion"], strict=False):
        prompt_ids = tokenizer(prompt)["input_ids"]
        ids = tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"]
        logits = model(torch.tensor([ids])).logits[0, :-1].log_softmax(-1)
        targets = torch.tensor(ids[1:])
        total += logits[torch.arange(len(targets)), targets][len(prompt_ids) - 1:].sum().item()
    return total / len(dataset)


@pytest.mark.parametrize("forget_loss", ["npo", "ga", "simnpo", "idk", "dpo"])
def test_every_forget_loss_lowers_forget_logprobs(tmp_path, finetuned, tokenizer, forget_ds, forget_loss):
    before = mean_forget_logp(finetuned, tokenizer, forget_ds)
    trainer = NPOTrainer(finetuned, args=config(tmp_path, forget_loss=forget_loss, beta=0.5, max_steps=10),
                         train_dataset=forget_ds, processing_class=tokenizer)
    trainer.train()
    after = mean_forget_logp(trainer.model, tokenizer, forget_ds)
    assert after < before - 0.5, (forget_loss, before, after)


def test_reference_models_load_only_when_the_loss_needs_one(tmp_path, finetuned_dir, tokenizer, forget_ds, retain_ds):
    from transformers import AutoModelForCausalLM

    def build(**kw):
        model = AutoModelForCausalLM.from_pretrained(finetuned_dir)
        retain = retain_ds if kw.get("retain_loss") else None
        return NPOTrainer(model, args=config(tmp_path, **kw), train_dataset=forget_ds, retain_dataset=retain,
                          processing_class=tokenizer)

    for kw in [dict(forget_loss="ga"), dict(forget_loss="simnpo"), dict(forget_loss="idk", retain_loss="nll"),
               dict(forget_loss="ga", retain_loss="nll")]:
        assert build(**kw).ref_model is None, kw
    for kw in [dict(forget_loss="npo"), dict(forget_loss="dpo"), dict(forget_loss="ga", retain_loss="kl")]:
        trainer = build(**kw)
        assert trainer.ref_model is not None, kw
        assert trainer.ref_model is not trainer.model


def test_ga_drifts_much_faster_than_npo(tmp_path, finetuned_dir, tokenizer, forget_ds):
    """Theorem 2 on a real model: over the same steps GA moves the weights far more than NPO."""
    from transformers import AutoModelForCausalLM

    drifts = {}
    for loss in ("ga", "npo"):
        model = AutoModelForCausalLM.from_pretrained(finetuned_dir)
        start = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        args = config(tmp_path / loss, forget_loss=loss, beta=1.0, max_steps=30, learning_rate=0.2,
                      lr_scheduler_type="constant", optim="sgd")
        trainer = NPOTrainer(model, args=args, train_dataset=forget_ds, processing_class=tokenizer)
        trainer.train()
        drifts[loss] = (torch.cat([p.detach().flatten() for p in model.parameters()]) - start).norm().item()
    assert drifts["ga"] > 5 * drifts["npo"], drifts


def test_precomputed_reference_gives_the_same_losses_as_a_live_one(tmp_path, finetuned_dir, tokenizer, forget_ds):
    from transformers import AutoModelForCausalLM

    runs = {}
    for precompute in (False, True):
        model = AutoModelForCausalLM.from_pretrained(finetuned_dir)
        args = config(tmp_path / str(precompute), precompute_ref_log_probs=precompute, max_steps=4)
        trainer = NPOTrainer(model, args=args, train_dataset=forget_ds, processing_class=tokenizer)
        assert (trainer.ref_model is None) == precompute
        trainer.train()
        runs[precompute] = [(h["loss"], h["forget/ref_logps"]) for h in trainer.state.log_history if "loss" in h]
    assert len(runs[True]) == 4
    for (live_loss, live_ref), (pre_loss, pre_ref) in zip(runs[False], runs[True], strict=False):
        assert pre_loss == pytest.approx(live_loss, rel=1e-4, abs=1e-5)
        assert pre_ref == pytest.approx(live_ref, rel=1e-4)


def test_logged_metrics(tmp_path, finetuned, tokenizer, forget_ds, retain_ds):
    trainer = NPOTrainer(finetuned, args=config(tmp_path, retain_loss="kl", max_steps=2), train_dataset=forget_ds,
                         retain_dataset=retain_ds, processing_class=tokenizer)
    trainer.train()
    logged = trainer.state.log_history[0]
    for key in ("loss/forget", "loss/retain", "forget/logps", "forget/ref_logps", "forget/log_ratio", "npo/weight",
                "retain/kl"):
        assert key in logged and logged[key] == logged[key], key
    # At step 1 the policy is the reference: log-ratio 0, W = 1, KL 0.
    assert logged["forget/log_ratio"] == pytest.approx(0.0, abs=1e-5)
    assert logged["npo/weight"] == pytest.approx(1.0, abs=1e-5)
    assert logged["retain/kl"] == pytest.approx(0.0, abs=1e-5)
    assert logged["forget/logps"] < 0


def test_retain_nll_keeps_retain_facts_better_than_npo_alone(tmp_path, finetuned_dir, tokenizer, forget_ds, retain_ds):
    from transformers import AutoModelForCausalLM

    results = {}
    for retain_loss in (None, "nll"):
        model = AutoModelForCausalLM.from_pretrained(finetuned_dir)
        args = config(tmp_path / str(retain_loss), forget_loss="ga", retain_loss=retain_loss, max_steps=10)
        trainer = NPOTrainer(model, args=args, train_dataset=forget_ds,
                             retain_dataset=retain_ds if retain_loss else None, processing_class=tokenizer)
        trainer.train()
        results[retain_loss] = mean_forget_logp(model, tokenizer, retain_ds)
    assert results["nll"] > results[None]


@pytest.mark.parametrize("retain_loss", ["nll", "kl"])
def test_separate_backward_gives_the_gradients_of_one_backward(tmp_path, finetuned_dir, tokenizer, forget_ds,
                                                               retain_ds, retain_loss):
    """Forget term backpropagated before the retain pass (the default) against one backward of the sum: SGD with
    lr 1 moves each weight by its gradient, over 2 optimizer steps of 2 accumulated micro-batches each."""
    from transformers import AutoModelForCausalLM

    runs = {}
    for separate in (True, False):
        args = config(tmp_path, retain_loss=retain_loss, separate_backward=separate, optim="sgd", learning_rate=1.0,
                      lr_scheduler_type="constant", max_grad_norm=0, max_steps=2, gradient_accumulation_steps=2,
                      per_device_train_batch_size=2)
        trainer = NPOTrainer(AutoModelForCausalLM.from_pretrained(finetuned_dir), args=args, train_dataset=forget_ds,
                             retain_dataset=retain_ds, processing_class=tokenizer)
        trainer.train()
        runs[separate] = ([p.detach().clone() for p in trainer.model.parameters()],
                          [h["loss"] for h in trainer.state.log_history if "loss" in h])
    start = AutoModelForCausalLM.from_pretrained(finetuned_dir).parameters()
    # the weights moved
    assert sum((a - b).abs().sum().item() for a, b in zip(runs[True][0], start, strict=False)) > 1.0
    for separate_weight, joint_weight in zip(runs[True][0], runs[False][0], strict=False):
        torch.testing.assert_close(separate_weight, joint_weight, atol=1e-6, rtol=1e-5)
    assert runs[True][1] == pytest.approx(runs[False][1], rel=1e-6)  # the logged loss is the sum's, as before


def test_peft_lora_with_gradient_checkpointing_trains_lora_b(tmp_path, finetuned, tokenizer, forget_ds):
    from peft import LoraConfig

    args = config(tmp_path, gradient_checkpointing=True, max_steps=2)
    trainer = NPOTrainer(finetuned, args=args, train_dataset=forget_ds, processing_class=tokenizer,
                         peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    assert trainer.ref_model is None  # the reference is the base model, adapters off
    lora_b = {n: p for n, p in trainer.model.named_parameters() if "lora_B" in n}
    assert lora_b and all(p.abs().sum() == 0 for p in lora_b.values())
    grads = {}
    trainer.add_callback(_GradRecorder(lora_b, grads))
    trainer.train()
    assert grads and all(g > 0 for g in grads.values()), grads
    assert all(p.abs().sum() > 0 for p in lora_b.values())
    assert trainer.state.log_history[0]["forget/log_ratio"] == pytest.approx(0.0, abs=1e-5)
    # step 1: π_θ = π_ref (adapters off), so NPO's loss is (2/β)·log 2
    assert trainer.state.log_history[0]["loss/forget"] == pytest.approx(2 * math.log(2) / args.beta, rel=1e-5)


class _GradRecorder:
    """Records each LoRA B matrix's gradient norm just before the optimizer step."""

    def __init__(self, params, out):
        self.params, self.out = params, out

    def __getattr__(self, name):
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_pre_optimizer_step(self, *args, **kwargs):
        for name, p in self.params.items():
            self.out[name] = max(self.out.get(name, 0.0), 0.0 if p.grad is None else p.grad.norm().item())


def _rows(dataset):
    return [dict(r) for r in dataset]


@pytest.mark.parametrize("fmt", ["prompt_completion", "text", "prompt_rejected", "conversational", "messages"])
def test_dataset_formats(tmp_path, finetuned, chat_tokenizer, forget_ds, fmt):
    rows = _rows(forget_ds)
    if fmt == "text":
        data = Dataset.from_list([{"text": r["prompt"] + r["completion"]} for r in rows])
    elif fmt == "prompt_rejected":
        data = Dataset.from_list([{"prompt": r["prompt"], "rejected": r["completion"], "chosen": " No idea."}
                                  for r in rows])
    elif fmt == "conversational":
        data = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                                   "completion": [{"role": "assistant", "content": r["completion"].strip()}]}
                                  for r in rows])
    elif fmt == "messages":
        data = Dataset.from_list([{"messages": [{"role": "user", "content": r["prompt"]},
                                                {"role": "assistant", "content": r["completion"].strip()}]}
                                  for r in rows])
    else:
        data = forget_ds
    trainer = NPOTrainer(finetuned, args=config(tmp_path, max_steps=2), train_dataset=data,
                         processing_class=chat_tokenizer)
    first = trainer.train_dataset[0]
    assert len(first["completion_ids"]) > 0
    assert first["completion_ids"][-1] == chat_tokenizer.eos_token_id or fmt in ("conversational", "messages")
    if fmt == "text":
        assert first["prompt_ids"] == [chat_tokenizer.bos_token_id]  # every token of the text counts
    trainer.train()
    assert trainer.state.log_history[-2]["forget/log_ratio"] < 0


def test_prompt_rejected_dataset_uses_chosen_as_replacement_for_dpo(tmp_path, finetuned, tokenizer, forget_ds):
    data = Dataset.from_list([{"prompt": r["prompt"], "rejected": r["completion"], "chosen": " No idea."}
                              for r in _rows(forget_ds)])
    trainer = NPOTrainer(finetuned, args=config(tmp_path, forget_loss="dpo", replacement_answers=None, max_steps=2),
                         train_dataset=data, processing_class=tokenizer)
    expected = tokenizer(" No idea." + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    assert trainer.train_dataset[0]["replacement_ids"] == expected
    trainer.train()


def test_replacement_answers_are_drawn_per_row_deterministically(tmp_path, finetuned, tokenizer, forget_ds):
    args = config(tmp_path, forget_loss="idk", replacement_answers=["I don't know.", "No idea at all.", "Unknown."])
    first = NPOTrainer(finetuned, args=args, train_dataset=forget_ds, processing_class=tokenizer)
    second = NPOTrainer(finetuned, args=args, train_dataset=forget_ds, processing_class=tokenizer)
    ids = first.train_dataset["replacement_ids"]
    assert ids == second.train_dataset["replacement_ids"]
    assert len({tuple(i) for i in ids}) > 1  # several answers are used


def test_empty_completions_are_dropped_with_one_counting_warning(tmp_path, finetuned, tokenizer, forget_ds):
    rows = _rows(forget_ds)
    rows[1]["completion"], rows[3]["completion"] = "", "   "
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = NPOTrainer(finetuned, args=config(tmp_path), train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer)
    drops = [w for w in caught if "dropped" in str(w.message)]
    assert len(drops) == 1 and "2 of 8" in str(drops[0].message)
    assert len(trainer.train_dataset) == 6
    assert 1 not in trainer.train_dataset["row_index"] and 3 not in trainer.train_dataset["row_index"]


def test_rows_truncated_away_are_counted(tmp_path, finetuned, tokenizer, forget_ds):
    rows = _rows(forget_ds)
    rows[0]["prompt"] = "Where does agent 1 live? " * 30
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = NPOTrainer(finetuned, args=config(tmp_path, max_length=32), train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer)
    assert any("1 of 8" in str(w.message) and "max_length" in str(w.message) for w in caught)
    assert len(trainer.train_dataset) == 7


# ---------------------------------------------------------------- bad input: refused before training, naming the fix
def test_missing_columns_list_what_was_found_and_what_is_accepted(tmp_path, finetuned, tokenizer):
    data = Dataset.from_list([{"question": "Where?", "answer": "Here."}])
    with pytest.raises(ValueError, match=r"columns \['answer', 'question'\].*accepts prompt\+completion.*rename"):
        NPOTrainer(finetuned, args=config(tmp_path), train_dataset=data, processing_class=tokenizer)


def test_retain_loss_without_retain_dataset(tmp_path, finetuned, tokenizer, forget_ds):
    with pytest.raises(ValueError, match="retain_loss='nll' needs retain_dataset"):
        NPOTrainer(finetuned, args=config(tmp_path, retain_loss="nll"), train_dataset=forget_ds,
                   processing_class=tokenizer)


def test_retain_dataset_without_retain_loss_warns_and_is_ignored(tmp_path, finetuned, tokenizer, forget_ds, retain_ds):
    with pytest.warns(UserWarning, match="retain_dataset is ignored because retain_loss is None"):
        trainer = NPOTrainer(finetuned, args=config(tmp_path), train_dataset=forget_ds, retain_dataset=retain_ds,
                             processing_class=tokenizer)
    assert trainer.retain_dataset is None


@pytest.mark.parametrize("forget_loss", ["idk", "dpo"])
def test_replacement_losses_without_replacement_answers(tmp_path, finetuned, tokenizer, forget_ds, forget_loss):
    args = config(tmp_path, forget_loss=forget_loss, replacement_answers=None)
    with pytest.raises(ValueError, match="needs a replacement answer.*replacement_answers"):
        NPOTrainer(finetuned, args=args, train_dataset=forget_ds, processing_class=tokenizer)


def test_ref_model_with_a_reference_free_loss_warns_and_is_ignored(tmp_path, finetuned_dir, tokenizer, forget_ds):
    from transformers import AutoModelForCausalLM

    model, ref = (AutoModelForCausalLM.from_pretrained(finetuned_dir) for _ in range(2))
    with pytest.warns(UserWarning, match="uses no reference model: the ref_model passed is ignored"):
        trainer = NPOTrainer(model, ref, args=config(tmp_path, forget_loss="ga"), train_dataset=forget_ds,
                             processing_class=tokenizer)
    assert trainer.ref_model is None


def test_model_and_ref_model_with_different_vocabularies(tmp_path, finetuned, tokenizer, forget_ds):
    with pytest.raises(ValueError, match=r"different vocabularies \(\d+ vs 999 tokens\)"):
        NPOTrainer(finetuned, tiny_llama(999), args=config(tmp_path), train_dataset=forget_ds,
                   processing_class=tokenizer)


def test_kl_retain_loss_cannot_be_precomputed(tmp_path, finetuned, tokenizer, forget_ds, retain_ds):
    with pytest.raises(ValueError, match="set precompute_ref_log_probs=False, or pass ref_model"):
        NPOTrainer(finetuned, args=config(tmp_path, retain_loss="kl", precompute_ref_log_probs=True),
                   train_dataset=forget_ds, retain_dataset=retain_ds, processing_class=tokenizer)


def test_a_dataset_with_nothing_left_raises(tmp_path, finetuned, tokenizer):
    data = Dataset.from_list([{"prompt": "Where?", "completion": " "}, {"prompt": "Who?", "completion": ""}])
    with pytest.raises(ValueError, match=r"No forget rows \(train\) are left to train on: all 2 have an empty"):
        NPOTrainer(finetuned, args=config(tmp_path), train_dataset=data, processing_class=tokenizer)


def test_a_dataset_truncated_to_nothing_raises_after_the_counting_warning(tmp_path, finetuned, tokenizer):
    data = Dataset.from_list([{"prompt": "Where does agent 1 live? " * 30, "completion": " Here."}])
    with pytest.warns(UserWarning, match="1 of 1"), pytest.raises(ValueError, match="No forget rows .* are left"):
        NPOTrainer(finetuned, args=config(tmp_path, max_length=16), train_dataset=data, processing_class=tokenizer)


def test_an_empty_forget_set_is_refused(tmp_path, finetuned, tokenizer):
    with pytest.raises(ValueError, match="train_dataset, the forget set, is missing or empty"):
        NPOTrainer(finetuned, args=config(tmp_path), train_dataset=Dataset.from_list([]), processing_class=tokenizer)
