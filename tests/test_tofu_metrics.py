"""TOFU's metrics: each formula on hand-computed inputs, the batched scoring against direct per-example passes."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import CITIES, COLOURS, tiny_llama
from datasets import Dataset

from npo_trl import NPOConfig, NPOTrainer
from npo_trl.tofu.reference import compute_reference_stats
from npo_trl.prompts import get_prompt_format, tokenize_qa
from npo_trl.tofu.evaluator import TOFUEvaluator
from npo_trl.tofu.metrics import (
    METRICS,
    TOFUEvalSet,
    can_share_prefix,
    candidate_logps,
    forget_quality,
    generate_answers,
    model_utility,
    option_probs,
    reference_kl,
    rouge_l_recall,
    score_eval_set,
    select_rows,
    sequence_logps,
    truth_ratio_score,
    truth_ratios,
)


def toy_eval_sets() -> dict[str, list[dict]]:
    """TOFU-schema rows about the conftest agents (all known to the `finetuned` model): agents 0-3 are forgotten."""

    def rows(agents, attribute, num_perturbed, paraphrase):
        out = []
        for i in agents:
            if attribute == "city":
                question, say, values = f"Where does agent {i} live?", f"Agent {i} lives in", CITIES
                value = CITIES[i % 8]
            else:
                question, say, values = f"What colour does agent {i} like?", f"Agent {i} likes", COLOURS
                value = COLOURS[i * 3 % 8]
            wrong = [v for v in values if v != value][i % 3:i % 3 + num_perturbed]
            row = {"question": question, "answer": f"{say} {value}.",
                   "perturbed_answer": [f"Perhaps {say.lower()} {w}." for w in wrong]}
            if paraphrase:
                row["paraphrased_answer"] = f"{say} {value}"
                row["paraphrased_question"] = question.replace("?", ", do you know?")
            out.append(row)
        return out

    return {
        "forget": rows(range(0, 4), "city", 5, True) + rows(range(0, 4), "colour", 5, True),
        "retain": rows(range(4, 8), "city", 5, True) + rows(range(4, 8), "colour", 5, True),
        "real_authors": rows(range(8, 12), "colour", 3, False),
        "world_facts": rows(range(12, 16), "city", 3, False),
    }


# ---------------------------------------------------------------- formulas on known numbers
def test_truth_ratio_and_its_aggregates_on_known_probabilities():
    correct = np.log([0.5, 0.2])
    perturbed = np.log([[0.1, 0.4], [0.4, 0.4]])  # geometric means 0.2 and 0.4
    ratios = truth_ratios(correct, perturbed)
    np.testing.assert_allclose(ratios, [0.4, 2.0])
    assert truth_ratio_score(ratios, forget=True) == pytest.approx((0.4 + 0.5) / 2)  # mean(min(R, 1/R))
    assert truth_ratio_score(ratios, forget=False) == pytest.approx((0.6 + 0.0) / 2)  # mean(max(0, 1 - R))


def test_truth_ratio_does_not_underflow_for_long_improbable_answers():
    ratios = truth_ratios(np.array([-800.0]), np.array([[-801.0, -799.0, -800.0]]))
    np.testing.assert_allclose(ratios, [1.0])


def test_option_probs_normalise_over_the_answer_and_its_perturbations():
    answer = np.log([0.5, 0.6])
    perturbed = np.log([[0.25, 0.25, 0.5], [0.2, 0.1, 0.1]])
    np.testing.assert_allclose(option_probs(answer, perturbed), [0.5 / 1.5, 0.6 / 1.0])


def test_forget_quality_is_one_for_identical_samples_and_tiny_for_separated_ones():
    ratios = np.linspace(0.1, 3.0, 20)
    assert forget_quality(ratios, ratios.copy()) == 1.0
    assert forget_quality(ratios, ratios + 100.0) < 1e-9


def test_model_utility_is_the_harmonic_mean_and_zero_with_a_zero_component():
    assert model_utility([1.0, 0.5]) == pytest.approx(2 / (1 / 1.0 + 1 / 0.5))
    assert model_utility([0.5] * 9) == pytest.approx(0.5)
    assert model_utility([0.9] * 8 + [0.0]) == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        model_utility([0.5, float("nan")])


def test_rouge_l_recall_with_stemming():
    recall = rouge_l_recall(["the cat sat", "cats running home", ""], ["the cat sat on the mat", "cat runs", "a b"])
    np.testing.assert_allclose(recall, [3 / 6, 1.0, 0.0])


# ---------------------------------------------------------------- rows and tokens
def test_select_rows_is_a_fixed_seeded_subset():
    rows = [{"i": i} for i in range(10)]
    assert select_rows(rows, 20) == rows
    first, again = select_rows(rows, 4, seed=1), select_rows(rows, 4, seed=1)
    assert first == again and len(first) == 4
    assert [r["i"] for r in first] == sorted(r["i"] for r in first)
    assert select_rows(rows, 4, seed=2) != first
    assert select_rows(rows, 3, seed=None) == rows[:3]  # TOFU's own selection: the first rows


@pytest.mark.parametrize("prompt_format", ["plain", "chat"])
def test_answers_are_tokenized_as_npo_trainer_tokenizes_training_rows(tmp_path, tokenizer, chat_tokenizer,
                                                                     prompt_format):
    tok = chat_tokenizer if prompt_format == "chat" else tokenizer
    question, answer = "Where does agent 3 live?", "Agent 3 lives in Lunmere."
    if prompt_format == "chat":
        row = {"prompt": [{"role": "user", "content": question}],
               "completion": [{"role": "assistant", "content": answer}]}
    else:
        row = {"prompt": question, "completion": " " + answer}
    args = NPOConfig(output_dir=str(tmp_path), forget_loss="ga", report_to="none", max_steps=1)
    trainer = NPOTrainer(tiny_llama(len(tok)), args=args, train_dataset=Dataset.from_list([row]),
                         processing_class=tok)
    trained = trainer.train_dataset[0]
    assert tokenize_qa(tok, question, answer, prompt_format) == (trained["prompt_ids"], trained["completion_ids"])


def test_templates_format_the_rows_like_to_prompt_completion(tokenizer):
    prompt, completion = tokenize_qa(tokenizer, "Where does agent 3 live?", "Lunmere.",
                                     get_prompt_format("plain", "Q: {question}\nA:", " {answer}"))
    assert tokenizer.decode(prompt + completion) == "<s>Q: Where does agent 3 live?\nA: Lunmere.</s>"
    with pytest.raises(ValueError, match="may name only the fields"):
        tokenize_qa(tokenizer, "q", "a", get_prompt_format("plain", "{title}: {question}"))


def test_bad_eval_rows_are_refused_naming_the_field(tokenizer):
    sets = toy_eval_sets()
    forget = sets["forget"]
    with pytest.raises(ValueError, match="'paraphrased_answer'"):
        TOFUEvalSet("forget", [{k: v for k, v in r.items() if k != "paraphrased_answer"} for r in forget], tokenizer)
    with pytest.raises(ValueError, match="'perturbed_answer' must be a non-empty list"):
        TOFUEvalSet("retain", [dict(forget[0], perturbed_answer="Agent 0 lives in Kestow.")], tokenizer)
    with pytest.raises(ValueError, match="same number"):
        TOFUEvalSet("forget", [forget[0], dict(forget[1], perturbed_answer=forget[1]["perturbed_answer"][:2])],
                    tokenizer)
    with pytest.raises(ValueError, match="Unknown TOFU evaluation set"):
        TOFUEvaluator(tokenizer, {"holdout": sets["real_authors"]})
    with pytest.raises(ValueError, match="'answer' must hold non-empty strings"):
        TOFUEvalSet("world_facts", [dict(sets["world_facts"][0], answer=" ")], tokenizer)
    for sizes in ({"batch_size": 0}, {"max_new_tokens": 0}, {"generation_batch_size": 0}):
        with pytest.raises(ValueError, match=f"{next(iter(sizes))}.* must be >= 1"):
            TOFUEvaluator(tokenizer, {"world_facts": sets["world_facts"]}, **sizes)


# ---------------------------------------------------------------- batched passes
def test_sequence_logps_match_a_direct_per_example_computation(tokenizer):
    model = tiny_llama(len(tokenizer), seed=3).eval()
    pairs = [tokenize_qa(tokenizer, q, a) for q, a in [("Where does agent 1 live?", "Agent 1 lives in Amberley."),
                                                       ("Hi?", "No."),
                                                       ("What colour does agent 12 like?", "Agent 12 likes teal.")]]
    batched = sequence_logps(model, *zip(*pairs), tokenizer.pad_token_id)
    direct = []
    for prompt, completion in pairs:
        with torch.no_grad():
            logprobs = model(torch.tensor([prompt + completion])).logits[0].log_softmax(-1)
        targets = range(len(prompt), len(prompt) + len(completion))
        direct.append(sum(logprobs[t - 1, (prompt + completion)[t]].item() for t in targets) / len(completion))
    torch.testing.assert_close(batched, torch.tensor(direct), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prompt_format", ["plain", "chat"])
def test_candidate_logps_run_each_question_once_for_the_values_of_sequence_logps(tokenizer, chat_tokenizer,
                                                                                   prompt_format):
    tok = chat_tokenizer if prompt_format == "chat" else tokenizer
    model = tiny_llama(len(tok), seed=4).eval()
    rows = [("Where does agent 1 live?", ["Agent 1 lives in Amberley.", "Amberley.", "Perhaps in Corrow, or not."]),
            ("Hi?", ["No.", "Agent 3 likes teal.", "Yes"]),
            ("What colour does agent 12 like, and why?", ["Teal.", "Agent 12 likes teal.", "Rust, I think."])]
    pairs = [tokenize_qa(tok, q, a, prompt_format) for q, answers in rows for a in answers]
    shared = candidate_logps(model, *zip(*pairs), 3, tok.pad_token_id)
    direct = sequence_logps(model, *zip(*pairs), tok.pad_token_id).view(3, 3)
    torch.testing.assert_close(shared, direct, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="share a prompt of >= 2 tokens"):
        candidate_logps(model, [[1], [1]], [[5, 6], [7]], 2, tok.pad_token_id)


def test_candidate_logps_with_prompts_that_differ_within_a_row_and_with_lora(tokenizer):
    from peft import LoraConfig, get_peft_model

    # Row 0's candidates share 3 of their prompt tokens, row 1's all 5: the unshared rest runs with each candidate.
    prompts = [[1, 5, 6, 7], [1, 5, 6, 8, 9], [1, 5, 6], [1, 10, 11, 12, 13], [1, 10, 11, 12, 13],
               [1, 10, 11, 12, 13]]
    completions = [[20, 21, 2], [22, 2], [23, 24, 25, 2], [26, 2], [27, 28, 2], [29, 2]]
    model = tiny_llama(len(tokenizer), seed=5).eval()
    lora = get_peft_model(tiny_llama(len(tokenizer), seed=5),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    for m in (model, lora.eval()):
        assert can_share_prefix(m)
        torch.testing.assert_close(candidate_logps(m, prompts, completions, 3, 0),
                                   sequence_logps(m, prompts, completions, 0).view(2, 3), atol=1e-5, rtol=1e-5)


def test_sliding_window_and_recurrent_models_keep_the_unshared_path(tokenizer):
    from transformers import MistralConfig, MistralForCausalLM, Qwen2Config

    torch.manual_seed(0)
    mistral = MistralForCausalLM(MistralConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                               sliding_window=6, pad_token_id=0)).eval()
    assert not can_share_prefix(mistral)  # a window counts cache positions, padding included
    conv = Qwen2Config(num_hidden_layers=2, layer_types=["full_attention", "conv"])
    assert not can_share_prefix(type("Model", (), {"config": conv})())
    with pytest.raises(ValueError, match="full-attention key-value cache"):
        candidate_logps(mistral, [[1, 5, 6, 7], [1, 5, 6]], [[20, 2], [21, 2]], 2, 0)
    # score_eval_set takes the unshared path for it: each candidate's score is sequence_logps' own.
    eval_set = TOFUEvalSet("world_facts", toy_eval_sets()["world_facts"], tokenizer)
    scores = score_eval_set(mistral, tokenizer, eval_set, batch_size=3, max_new_tokens=4)
    pairs = eval_set.candidates[2]
    direct = sequence_logps(mistral, *zip(*pairs), 0).double().numpy()
    np.testing.assert_allclose(scores["answer_logps"][2], direct[0], rtol=1e-6)
    np.testing.assert_allclose(scores["perturbed_logps"][2], direct[1:], rtol=1e-6)


def test_score_eval_set_gives_the_same_scores_with_or_without_sharing_and_in_any_batch_size(finetuned, tokenizer):
    eval_set = TOFUEvalSet("forget", toy_eval_sets()["forget"], tokenizer)
    assert eval_set.shares_prompt and can_share_prefix(finetuned)  # TOFU's candidates share their question
    reference = score_eval_set(finetuned, tokenizer, eval_set, batch_size=1, max_new_tokens=12)
    for batch_size, share, generation_batch_size in [(3, True, None), (100, True, 5), (3, False, 100)]:
        eval_set.shares_prompt = share
        scores = score_eval_set(finetuned, tokenizer, eval_set, batch_size=batch_size, max_new_tokens=12,
                                generation_batch_size=generation_batch_size)
        for key in ("answer_logps", "correct_logps", "perturbed_logps", "rouge"):
            np.testing.assert_allclose(scores[key], reference[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_reference_kl_is_zero_against_itself_and_positive_against_another_model(tokenizer):
    model, other = tiny_llama(len(tokenizer), seed=1).eval(), tiny_llama(len(tokenizer), seed=2).eval()
    pairs = [tokenize_qa(tokenizer, "Where does agent 1 live?", "Agent 1 lives in Amberley."),
             tokenize_qa(tokenizer, "Hi?", "No.")]
    torch.testing.assert_close(reference_kl(model, model, *zip(*pairs), 0), torch.zeros(2), atol=1e-6, rtol=0)
    assert (reference_kl(model, other, *zip(*pairs), 0) > 0).all()


def test_score_eval_set_columns_hold_each_candidates_score(finetuned, tokenizer):
    eval_set = TOFUEvalSet("forget", toy_eval_sets()["forget"], tokenizer)
    scores = score_eval_set(finetuned, tokenizer, eval_set, batch_size=3, max_new_tokens=12)
    row = eval_set.rows[5]
    pairs = [tokenize_qa(tokenizer, row["question"], a)
             for a in [row["answer"], row["paraphrased_answer"], *row["perturbed_answer"]]]
    direct = sequence_logps(finetuned, *zip(*pairs), tokenizer.pad_token_id).double().numpy()
    np.testing.assert_allclose(scores["answer_logps"][5], direct[0], rtol=1e-5)
    np.testing.assert_allclose(scores["correct_logps"][5], direct[1], rtol=1e-5)
    np.testing.assert_allclose(scores["perturbed_logps"][5], direct[2:], rtol=1e-5)
    # The fine-tuned model answers its facts greedily, word for word.
    answers = generate_answers(finetuned, tokenizer, eval_set.prompts[:2], max_new_tokens=12)
    assert [a.strip() for a in answers] == [r["answer"] for r in eval_set.rows[:2]]
    assert scores["rouge"].tolist() == [1.0] * len(eval_set)


# ---------------------------------------------------------------- the evaluator and the retain statistics
def test_evaluator_reports_every_metric_and_forget_quality_against_reference_stats(tmp_path, finetuned, tokenizer):
    sets = toy_eval_sets()
    cache = tmp_path / "retain_stats.json"
    stats = compute_reference_stats(finetuned, tokenizer, sets["forget"], cache_path=str(cache))
    assert len(stats["truth_ratios"]) == len(sets["forget"]) and json.loads(cache.read_text()) == stats

    metrics = TOFUEvaluator(tokenizer, sets, reference_stats=str(cache), max_new_tokens=12).evaluate(
        finetuned, ref_model=finetuned)
    assert set(metrics) == set(METRICS) and all(v is not None and math.isfinite(v) for v in metrics.values())
    assert metrics["tofu/forget_quality"] == 1.0  # the same model as the reference: identical truth ratios
    assert metrics["tofu/forget_kl"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["tofu/forget_prob"] > 0.9 and metrics["tofu/forget_rouge"] == 1.0
    assert 0 < metrics["tofu/model_utility"] <= 1

    # The cache is read back (not recomputed) for the same rows and model ...
    cached = dict(stats, truth_ratios=[9.0] * len(sets["forget"]))
    cache.write_text(json.dumps(cached))
    assert compute_reference_stats(finetuned, tokenizer, sets["forget"], cache_path=str(cache)) == cached
    # ... and statistics of other rows are refused.
    with pytest.raises(ValueError, match="recompute"):
        TOFUEvaluator(tokenizer, sets, reference_stats=stats, max_samples=4)
    # Without statistics, no forget quality, clearly.
    assert TOFUEvaluator(tokenizer, {"forget": sets["forget"]}, max_new_tokens=4).evaluate(finetuned)[
        "tofu/forget_quality"] is None
