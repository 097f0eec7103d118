"""Greedy generation for evaluation: the same tokens as `model.generate`, with rows leaving the batch at EOS and
drafts verified in one pass."""

import pytest
import torch
from transformers import GenerationConfig

from helpers import fine_tune, tiny_llama, toy_qa
from npo_trl.eval.generation import eos_token_ids, generate_answers, generate_ids, greedy_decode
from npo_trl.eval.scoring import pad_id_of

# prompts of very different lengths: one word to a long preamble
PROMPTS = ["Where does agent 3 live?", "What colour does agent 5 like?", "Where",
           "Agent 7 likes amber. Agent 9 lives in Kestow. Agent 2 likes teal. Where does agent 2 live?",
           "What colour does agent 12 like?", "Where does agent 40 live?"]


@pytest.fixture(scope="module")
def trained(tokenizer):
    model = tiny_llama(len(tokenizer), seed=5)
    fine_tune(model, tokenizer, toy_qa(0, 16), steps=120)
    return model.eval()


def reference_ids(model, tokenizer, prompts, max_new_tokens, mask_pad_tokens=False) -> list[list[int]]:
    """`model.generate`'s greedy tokens of each prompt alone (no padding), cut after EOS."""
    rows = []
    for prompt in prompts:
        ids = torch.tensor([tokenizer(prompt)["input_ids"]])
        mask = torch.ones_like(ids) if not mask_pad_tokens else (ids != tokenizer.pad_token_id).long()
        config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                  eos_token_id=tokenizer.eos_token_id)
        rows.append(model.generate(input_ids=ids, attention_mask=mask, generation_config=config)[0, ids.size(1):]
                    .tolist())
    return rows


def prompt_ids(tokenizer, prompts=PROMPTS):
    return [tokenizer(p)["input_ids"] for p in prompts]


@pytest.mark.parametrize("model_kind", ["trained", "untrained"])
def test_greedy_decode_gives_generates_tokens_with_and_without_drafts(tokenizer, trained, model_kind):
    model = trained if model_kind == "trained" else tiny_llama(len(tokenizer), seed=6).eval()
    expected = reference_ids(model, tokenizer, PROMPTS, 14)
    eos, pad = eos_token_ids(model, tokenizer), pad_id_of(tokenizer)
    plain = greedy_decode(model, prompt_ids(tokenizer), 14, eos, pad)
    assert plain == expected
    # drafts: the answer itself (accepted whole), half of it then wrong tokens, a random draft, none, one too long
    half = [t[:len(t) // 2] + [7, 8, 9] for t in expected]
    drafts = [expected[0], half[1], [5, 6, 7, 8], None, expected[4] + [11] * 30, []]
    assert greedy_decode(model, prompt_ids(tokenizer), 14, eos, pad, drafts=drafts) == expected
    out = generate_ids(model, tokenizer, prompt_ids(tokenizer), 14, drafts=drafts)
    width = max(len(t) for t in expected)
    assert out.tolist() == [t + [pad] * (width - len(t)) for t in expected]  # model.generate's padded layout


def test_rows_leave_the_batch_at_eos_and_a_right_draft_needs_one_pass(tokenizer, trained):
    """The trained model ends its answers with EOS after a few tokens, and the long preamble's row ends later: the
    decoding steps after a row's EOS run without it. With its own answers as drafts, every row ends in one pass."""
    expected = reference_ids(trained, tokenizer, PROMPTS, 30)
    assert all(row[-1] == tokenizer.eos_token_id for row in expected)
    batch_rows = []
    hook = trained.register_forward_pre_hook(lambda module, args, kwargs: batch_rows.append(
        kwargs["input_ids"].shape), with_kwargs=True)
    try:
        eos, pad = eos_token_ids(trained, tokenizer), pad_id_of(tokenizer)
        assert greedy_decode(trained, prompt_ids(tokenizer), 30, eos, pad) == expected
        prefills, steps = [s for s in batch_rows if s[1] > 1], [s for s in batch_rows if s[1] == 1]
        assert sum(shape[0] for shape in prefills) == len(PROMPTS)  # prompts of similar length together
        assert len(steps) == max(len(t) for t in expected) - 1
        assert [shape[0] for shape in steps] == [sum(len(t) > i + 1 for t in expected) for i in range(len(steps))]
        batch_rows.clear()
        assert greedy_decode(trained, prompt_ids(tokenizer), 30, eos, pad, drafts=expected) == expected
        assert all(shape[1] > 1 for shape in batch_rows)  # prefills only: no decoding step
    finally:
        hook.remove()


def test_pad_tokens_hidden_inside_prompts_decode_as_generate_does(tokenizer, trained):
    """`mask_pad_tokens`: a pad-token id inside a prompt is hidden from attention in both."""
    pad = tokenizer.pad_token_id
    prompts = [[*tokenizer("Where does agent")["input_ids"], pad, *tokenizer(" 3 live?")["input_ids"][1:]],
               tokenizer("Where does agent 5 live?")["input_ids"]]
    expected = []
    for ids in prompts:
        ids = torch.tensor([ids])
        config = GenerationConfig(max_new_tokens=10, do_sample=False, pad_token_id=pad,
                                  eos_token_id=tokenizer.eos_token_id)
        expected.append(trained.generate(input_ids=ids, attention_mask=(ids != pad).long(),
                                         generation_config=config)[0, ids.size(1):].tolist())
    got = greedy_decode(trained, prompts, 10, eos_token_ids(trained, tokenizer), pad, mask_pad_tokens=True)
    assert got == expected


def test_generate_answers_decodes_and_counts_tokens(tokenizer, trained):
    from npo_trl.eval.runner import PassTimer

    timer = PassTimer()
    answers = generate_answers(trained, tokenizer, prompt_ids(tokenizer), 30, timer=timer)
    expected = reference_ids(trained, tokenizer, PROMPTS, 30)
    assert answers == [tokenizer.decode(t, skip_special_tokens=True).strip() for t in expected]
    assert timer.counts["generated_tokens"] == sum(len(t) for t in expected)


def test_a_prompt_start_common_to_the_batch_runs_once(tokenizer, trained):
    """Few-shot prompts (a preamble of >= MIN_SHARED_PREFIX tokens, then the question): the preamble runs once for
    the batch, with and without drafts and hidden pad tokens, and the answers are still generate's."""
    from npo_trl.eval.generation import MIN_SHARED_PREFIX

    preamble = "Agent 1 lives in Amberley. Agent 2 likes green. Agent 4 lives in Sarrow. Agent 6 likes teal. "
    prompts = [preamble + p for p in PROMPTS]
    assert len(tokenizer(preamble)["input_ids"]) > MIN_SHARED_PREFIX
    expected = reference_ids(trained, tokenizer, prompts, 12)
    shapes = []
    hook = trained.register_forward_pre_hook(lambda module, args, kwargs: shapes.append(kwargs["input_ids"].shape),
                                             with_kwargs=True)
    try:
        eos, pad = eos_token_ids(trained, tokenizer), pad_id_of(tokenizer)
        assert greedy_decode(trained, prompt_ids(tokenizer, prompts), 12, eos, pad) == expected
        assert shapes[0][0] == 1 and shapes[0][1] >= MIN_SHARED_PREFIX  # the preamble, once
        drafts = [t[:3] for t in expected]
        assert greedy_decode(trained, prompt_ids(tokenizer, prompts), 12, eos, pad, drafts=drafts,
                             mask_pad_tokens=True) == expected
    finally:
        hook.remove()


def test_each_row_may_have_its_own_length_limit(tokenizer, trained):
    limits = [3, 30, 1, 12, 5, 8]
    expected = [row[:limit] for row, limit in zip(reference_ids(trained, tokenizer, PROMPTS, 30), limits,
                                                  strict=True)]
    eos, pad = eos_token_ids(trained, tokenizer), pad_id_of(tokenizer)
    assert greedy_decode(trained, prompt_ids(tokenizer), limits, eos, pad) == expected
    width = max(len(t) for t in expected)
    assert generate_ids(trained, tokenizer, prompt_ids(tokenizer), limits).tolist() == \
        [t + [pad] * (width - len(t)) for t in expected]


def test_the_scoring_pass_tells_how_much_of_each_answer_greedy_decoding_reproduces(tokenizer, trained):
    """`greedy_agreement` (from `candidate_logps`' pass over the answers): greedy decoding from the generation prompt
    gives the answer's first `greedy_agreement` tokens, then `greedy_next` (-1: the whole answer, EOS included)."""
    from helpers import toy_eval_sets
    from npo_trl.tofu import TOFUEvalSettings
    from npo_trl.tofu.eval_sets import TOFUEvalSet, score_eval_set

    eval_set = TOFUEvalSet("forget", toy_eval_sets()["forget"], tokenizer)
    scores = score_eval_set(trained, tokenizer, eval_set, TOFUEvalSettings(batch_size=3), generate=False)
    config = GenerationConfig(max_new_tokens=30, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=tokenizer.eos_token_id)
    agreements = []
    for i, (prompt, draft) in enumerate(zip(eval_set.prompts, eval_set.drafts, strict=True)):
        assert draft is not None
        greedy = trained.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt),
                                  dtype=torch.long), generation_config=config)[0, len(prompt):].tolist()
        agreement, following = int(scores["greedy_agreement"][i]), int(scores["greedy_next"][i])
        assert greedy[:agreement] == draft[:agreement]
        assert greedy[agreement:agreement + 1] == ([following] if following >= 0 else []) or agreement == len(draft)
        assert (following == -1) == (agreement == len(draft))
        agreements.append(agreement)
    assert max(agreements) >= 3 and min(agreements) < max(agreements)  # some answers known, some not


def test_drafts_proposed_in_the_decoding_loop():
    from npo_trl.eval.generation import draft_width, propose_draft

    assert propose_draft([1, 2, 7, 7, 7], [7, 7, 7], None, 4) == [7, 7, 7, 7]  # a repeated token, copied on
    assert propose_draft([1, 5, 6, 5, 6], [5, 6, 5, 6], None, 5) == [5, 6, 5, 6, 5]  # a repeated phrase
    assert propose_draft([3, 4, 9, 2, 3, 4], [3, 4], None, 2) == [9, 2]  # what followed in the prompt
    assert propose_draft([1, 2, 3], [3], None, 4) == []  # nothing to look up
    assert propose_draft([1, 8, 9], [8, 9], [8, 9, 10, 11, 12], 2) == [10, 11]  # the hint, while followed
    assert propose_draft([1, 8, 8, 8], [8, 8, 8], [8, 9, 10], 2) == [8, 8]  # left: the lookup again
    assert propose_draft([1, 8, 8, 8], [8, 8, 8], None, 0) == []
    assert draft_width([4, 4, 4, 0]) == 4 and draft_width([8, 0, 0, 0]) == 0  # half the positions filled, or none
    assert draft_width([32] * 16) == 7  # at most DRAFT_PASS_TOKENS (128) tokens in a pass of 16 rows


def test_lookup_drafts_and_hints_keep_generates_tokens_in_fewer_passes(tokenizer, monkeypatch):
    """An untrained model repeats phrases: its repetitions are proposed and taken, so the answers take fewer passes
    than plain decoding, and they are `model.generate`'s; a hint that is the answer is taken in growing drafts, a
    wrong one is dropped after the first token."""
    from npo_trl.eval import generation

    model = tiny_llama(len(tokenizer), seed=3).eval()
    expected = reference_ids(model, tokenizer, PROMPTS, 24)
    eos, pad = eos_token_ids(model, tokenizer), pad_id_of(tokenizer)
    passes = []
    hook = model.register_forward_pre_hook(lambda m, args, kwargs: passes.append(kwargs["input_ids"].shape),
                                           with_kwargs=True)
    try:
        counts = {}
        for name, hints in (("none", None), ("right", expected), ("wrong", [[5, 6, 7]] * len(PROMPTS))):
            passes.clear()
            assert greedy_decode(model, prompt_ids(tokenizer), 24, eos, pad, hints=hints) == expected
            counts[name] = len(passes)
        monkeypatch.setattr(generation, "FIRST_DRAFT", 0)  # no drafts in the loop: plain decoding
        passes.clear()
        assert greedy_decode(model, prompt_ids(tokenizer), 24, eos, pad) == expected
    finally:
        hook.remove()
    assert counts["none"] == counts["wrong"] < len(passes)
    assert counts["right"] <= 6  # the prefill(s), then drafts of 4, 8, 16 tokens


def test_generation_starts_from_the_scoring_passs_question_caches(tokenizer, trained):
    """TOFU's scoring pass keeps each question's cache (all but its last token); greedy decoding started from it
    runs only the rest, and gives the same answers. A cache of other tokens is not used."""
    from helpers import toy_eval_sets
    from npo_trl.tofu import TOFUEvalSettings
    from npo_trl.tofu.eval_sets import TOFUEvalSet, greedy_rouge, score_eval_set

    settings = TOFUEvalSettings(batch_size=2, max_new_tokens=12)
    eval_set = TOFUEvalSet("retain", toy_eval_sets()["retain"], tokenizer, settings)
    scores = score_eval_set(trained, tokenizer, eval_set, settings, generate=False, prompt_cache_tokens=10_000)
    caches = scores["greedy_prompt_caches"]
    assert all(len(cache[0]) == len(prompt) - 1 for cache, prompt in zip(caches, eval_set.prompts, strict=True))
    limited = score_eval_set(trained, tokenizer, eval_set, settings, generate=False, prompt_cache_tokens=30)
    assert 0 < sum(len(c[0]) for c in limited["greedy_prompt_caches"] if c is not None) <= 30
    eos, pad = eos_token_ids(trained, tokenizer), pad_id_of(tokenizer)
    expected = reference_ids(trained, tokenizer, [row["question"] for row in eval_set.rows], 12)
    passes = []
    hook = trained.register_forward_pre_hook(lambda m, args, kwargs: passes.append(kwargs["input_ids"].shape),
                                             with_kwargs=True)
    try:
        plain = greedy_decode(trained, eval_set.prompts, 12, eos, pad)
        prefill_plain = passes[0][1]
        passes.clear()
        assert greedy_decode(trained, eval_set.prompts, 12, eos, pad, prompt_caches=caches) == plain
        assert passes[0][1] < prefill_plain  # the questions' tokens did not run again
        wrong = [(cache[0][:-1] + [cache[0][-1] + 1], *cache[1:]) for cache in caches]
        assert greedy_decode(trained, eval_set.prompts, 12, eos, pad, prompt_caches=wrong) == plain
    finally:
        hook.remove()
    if eval_set.prompts[0] == tokenizer(eval_set.rows[0]["question"])["input_ids"]:
        assert plain == expected
    rouge = greedy_rouge(trained, tokenizer, [eval_set], settings, [scores])[0]
    scores.pop("greedy_prompt_caches")
    assert rouge.tolist() == greedy_rouge(trained, tokenizer, [eval_set], settings, [scores])[0].tolist()
