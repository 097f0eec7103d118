"""The evaluator's per-row values and aggregates against TOFU's definitions written out independently
(`tofu_reference_impl`): both token boundaries, a prompt that ends in a space, and a Llama-3-style chat tokenizer
whose pad token is its end-of-turn token, with and without the reference evaluator's pad-token attention mask."""

import numpy as np
import pytest
import torch

from helpers import tiny_llama, toy_eval_sets
from npo_trl.tofu import TOFUEvalSettings, TOFUEvaluator, compute_reference_stats
from npo_trl.tofu.metrics import UTILITY_METRICS
from tofu_reference_impl import (
    forget_quality,
    harmonic_mean,
    question_answer_ids,
    row_values,
    set_values,
)

TOLERANCE = 1e-6
MAX_NEW_TOKENS = 6


def float64_model(tokenizer, seed, style=None, rows=(), steps=60):
    """A tiny float64 Llama, trained for `steps` full-batch steps on the answers of `rows` written in `style`."""
    model = tiny_llama(len(tokenizer), seed=seed).double()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if rows:
        sequences = [sum(question_answer_ids(tokenizer, r["question"], r["answer"], style, "common_prefix")[:2], [])
                     for r in rows]
        width = max(map(len, sequences))
        ids = torch.tensor([s + [tokenizer.pad_token_id] * (width - len(s)) for s in sequences])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences])
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(steps):
            model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss.backward()
            optimizer.step(), optimizer.zero_grad()
    return model.eval()


CASES = {  # (tokenizer fixture, prompt format, hand-written style, token boundary, mask pad tokens)
    "question_answer/common_prefix": ("tokenizer", "tofu_phi", "qa", "common_prefix", False),
    "question_answer/prompt_length": ("tokenizer", "tofu_phi", "qa", "prompt_length", False),
    "llama3/common_prefix": ("llama3_tokenizer", "llama3_instruct", "llama3", "common_prefix", False),
    "llama3/prompt_length/masked": ("llama3_tokenizer", "llama3_instruct", "llama3", "prompt_length", True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_per_row_value_and_aggregate_equals_the_written_out_definition(case, request):
    tokenizer_name, prompt_format, style, boundary, mask = CASES[case]
    tokenizer = request.getfixturevalue(tokenizer_name)
    mask_token = tokenizer.pad_token_id if mask else None
    if mask:
        assert tokenizer.pad_token_id == tokenizer.eos_token_id  # the case that matters: pad = end of turn
    sets = toy_eval_sets()
    known = [row for rows in sets.values() for row in rows]
    model = float64_model(tokenizer, 11, style, known)
    retained = [row for name in sets if name != "forget" for row in sets[name]]
    retain_model = float64_model(tokenizer, 12, style, retained)
    settings = TOFUEvalSettings(batch_size=3, max_new_tokens=MAX_NEW_TOKENS, prompt_format=prompt_format,
                                token_boundary=boundary, mask_pad_tokens=mask)
    stats = compute_reference_stats(retain_model, tokenizer, sets["forget"], settings)
    evaluator = TOFUEvaluator(tokenizer, sets, reference_stats=stats, settings=settings)
    scores = evaluator.score(model)
    expected = {name: row_values(model, tokenizer, name, rows, style, boundary, mask_token, MAX_NEW_TOKENS)
                for name, rows in sets.items()}

    differences = {}
    for name, values in expected.items():
        ours = np.column_stack([scores[name]["answer_logps"],
                                *([scores[name]["correct_logps"]] if name in ("forget", "retain") else []),
                                scores[name]["perturbed_logps"]])
        differences[f"{name} scores"] = np.abs(ours - values["scores"]).max()
        differences[f"{name} rouge"] = np.abs(scores[name]["rouge"] - values["rouge"]).max()
    retain_ratios = row_values(retain_model, tokenizer, "forget", sets["forget"], style, boundary, mask_token,
                               max_new_tokens=1)["truth_ratios"]
    differences["retain model truth ratios"] = np.abs(np.array(stats["truth_ratios"]) - retain_ratios).max()
    assert max(differences.values()) <= TOLERANCE, differences

    metrics = evaluator.evaluate(model)
    reference = {k: v for name, values in expected.items() for k, v in set_values(name, values).items()}
    reference["tofu/model_utility"] = harmonic_mean([reference[key] for key in UTILITY_METRICS])
    assert reference["tofu/model_utility"] > 0 and reference["tofu/forget_rouge"] > 0  # no component is trivially 0
    reference["tofu/forget_quality"] = forget_quality(expected["forget"]["truth_ratios"], retain_ratios)
    for key, value in reference.items():
        assert metrics[key] == pytest.approx(value, abs=TOLERANCE), key


def test_the_two_token_boundaries_differ_by_the_answer_token_that_swallowed_the_prompts_space(tokenizer):
    """"Question: …\\nAnswer: " ends in a space, which merges into the answer's first token: the reference
    evaluator's `len(prompt_ids)` boundary then leaves that token out of the score; ours scores it."""
    question, answer = "Where does agent 1 live?", "Agent 1 lives in Amberley."
    context, scored, prompt = question_answer_ids(tokenizer, question, answer, "qa", "common_prefix")
    _, scored_from_prompt_length, _ = question_answer_ids(tokenizer, question, answer, "qa", "prompt_length")
    assert tokenizer.convert_ids_to_tokens(prompt[-1]) == "Ġ"  # the prompt's trailing space, a token of its own
    assert tokenizer.convert_ids_to_tokens(scored[0]) == "ĠAgent" and len(context) == len(prompt) - 1
    assert scored_from_prompt_length == scored[1:]
    assert tokenizer.decode(scored) == " Agent 1 lives in Amberley.</s>"
    assert tokenizer.decode(scored_from_prompt_length) == " 1 lives in Amberley.</s>"


def test_the_pad_mask_changes_the_scores_of_a_chat_model_whose_pad_token_ends_its_turns(llama3_tokenizer):
    sets = {"forget": toy_eval_sets()["forget"]}
    model = float64_model(llama3_tokenizer, seed=11)
    plain, masked = (TOFUEvaluator(llama3_tokenizer, sets, settings=TOFUEvalSettings(prompt_format="llama3_instruct",
                                                                                     mask_pad_tokens=mask))
                     .score(model, generate=False)["forget"]["answer_logps"] for mask in (False, True))
    assert np.abs(plain - masked).min() > 1e-6  # every row: its system and user turns end in <|eot_id|>
