"""npo_trl.attacks.relearn: the seeded, disjoint, grouped split of the forget rows and its refusals; relearning a
copy of an unlearned tiny model on one part brings the other part back, and leaves the input model unchanged."""

import pytest
import torch
from datasets import Dataset
from transformers import LlamaForCausalLM

from helpers import fine_tune, toy_qa
from npo_trl.attacks import RelearnAttack, relearn_copy, split_forget_rows


def agent(index, row):
    """toy_qa's group: two questions per agent, in a row."""
    return index // 2


def test_split_is_seeded_disjoint_and_grouped():
    rows = toy_qa(0, 10)  # 10 agents, 2 questions each
    relearn, evaluate = split_forget_rows(rows, seed=3, group_key=agent)
    assert isinstance(relearn, Dataset) and len(relearn) == len(evaluate) == 10
    prompts = list(relearn["prompt"]), list(evaluate["prompt"])
    assert not set(prompts[0]) & set(prompts[1])
    assert sorted(prompts[0] + prompts[1]) == sorted(rows["prompt"])
    # grouped: every agent has one question in each part
    assert [{p.split()[-2] for p in part} for part in prompts] == [{str(i) for i in range(10)}] * 2
    # seeded: the same seed gives the same split, another seed another one
    assert list(split_forget_rows(rows, seed=3, group_key=agent)[0]["prompt"]) == prompts[0]
    assert any(list(split_forget_rows(rows, seed=s, group_key=agent)[0]["prompt"]) != prompts[0] for s in range(4))
    # a column as the group, lists in, lists out; ungrouped: about `fraction` of the rows
    listed = [{**row, "agent": i // 2} for i, row in enumerate(rows)]
    by_column = split_forget_rows(listed, seed=3, group_key="agent")
    assert [row["prompt"] for row in by_column[0]] == prompts[0]
    assert [len(part) for part in split_forget_rows(listed, fraction=0.25)] == [5, 15]


def test_split_refusals():
    rows = toy_qa(0, 2)
    for fraction in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match=rf"fraction={fraction}.*strictly between 0 and 1"):
            split_forget_rows(rows, fraction=fraction)
    with pytest.raises(ValueError, match="evaluation part.*is empty.*groups of at least 2 rows"):
        split_forget_rows(rows, group_key=lambda i, row: i)  # groups of one row all go to relearning
    with pytest.raises(ValueError, match="relearn part.*is empty"):
        split_forget_rows(rows.select([0]), fraction=0.2)
    with pytest.raises(ValueError, match="group_key='author' is not a column"):
        split_forget_rows(rows, group_key="author")


def completion_logprob(model, tokenizer, rows) -> float:
    """Mean log-probability of the completions' tokens given their prompts."""
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            prompt = tokenizer(row["prompt"])["input_ids"]
            ids = torch.tensor([tokenizer(row["prompt"] + row["completion"])["input_ids"]])
            logps = model(input_ids=ids).logits[0, :-1].log_softmax(-1).gather(1, ids[0, 1:, None])[:, 0]
            total, count = total + logps[len(prompt) - 1:].sum().item(), count + ids.shape[1] - len(prompt)
    return total / count


def test_relearning_brings_held_out_forget_rows_back_and_leaves_the_input_model(finetuned, tokenizer, forget_ds):
    fine_tune(finetuned, tokenizer, forget_ds, steps=8, lr=1e-3, ascent=True)  # a crude unlearning
    relearn_rows, held_out = split_forget_rows(forget_ds, seed=0, group_key=agent)
    before = {key: value.clone() for key, value in finetuned.state_dict().items()}
    unlearned = completion_logprob(finetuned, tokenizer, held_out)

    relearned = relearn_copy(finetuned, tokenizer, relearn_rows, steps=10, learning_rate=1e-3)
    assert relearned is not finetuned and not relearned.training
    after = completion_logprob(relearned, tokenizer, held_out)
    assert after > unlearned + 1.0, (unlearned, after)  # measured: -6.5 -> -0.7 nats per token
    assert all(torch.equal(before[key], value) for key, value in finetuned.state_dict().items())



def test_relearning_lora_adapters_from_a_saved_model_gives_a_merged_copy(finetuned_dir, tokenizer, forget_ds):
    from peft import LoraConfig

    attack = RelearnAttack(tokenizer, forget_ds, steps=2, learning_rate=1e-3, name="relearn_lora",
                           peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    relearned = attack(finetuned_dir)
    assert attack.name == "relearn_lora" and type(relearned) is LlamaForCausalLM  # adapters merged
    saved = LlamaForCausalLM.from_pretrained(finetuned_dir).state_dict()
    changed = [key for key, value in relearned.state_dict().items() if not torch.equal(saved[key], value)]
    assert changed and all("q_proj" in key or "v_proj" in key for key in changed)


def test_relearn_refusals(finetuned, tokenizer, forget_ds):
    with pytest.raises(ValueError, match="steps=0.*>= 1"):
        relearn_copy(finetuned, tokenizer, forget_ds, steps=0)
    with pytest.raises(ValueError, match="learning_rate=0.*positive"):
        relearn_copy(finetuned, tokenizer, forget_ds, learning_rate=0)
    with pytest.raises(ValueError, match="prompt/completion rows.*to_prompt_completion"):
        relearn_copy(finetuned, tokenizer, [{"question": "q", "answer": "a"}])
