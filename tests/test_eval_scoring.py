"""The evaluation core's batched model passes (npo_trl.eval.scoring) against direct per-example passes."""

import numpy as np
import pytest
import torch

from helpers import tiny_llama, toy_eval_sets
from npo_trl.eval.scoring import can_share_prefix, candidate_logps, reference_kl, sequence_logps
from npo_trl.prompts import tokenize_qa
from npo_trl.tofu import TOFUEvalSettings
from npo_trl.tofu.eval_sets import TOFUEvalSet, score_eval_set


def test_sequence_logps_match_a_direct_per_example_computation(tokenizer):
    model = tiny_llama(len(tokenizer), seed=3).eval()
    pairs = [tokenize_qa(tokenizer, q, a) for q, a in [("Where does agent 1 live?", "Agent 1 lives in Amberley."),
                                                       ("Hi?", "No."),
                                                       ("What colour does agent 12 like?", "Agent 12 likes teal.")]]
    batched = sequence_logps(model, *zip(*pairs, strict=False), tokenizer.pad_token_id)
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
    shared = candidate_logps(model, *zip(*pairs, strict=False), 3, tok.pad_token_id)
    direct = sequence_logps(model, *zip(*pairs, strict=False), tok.pad_token_id).view(3, 3)
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
    scores = score_eval_set(mistral, tokenizer, eval_set, TOFUEvalSettings(batch_size=3, max_new_tokens=4))
    pairs = eval_set.candidates[2]
    direct = sequence_logps(mistral, *zip(*pairs, strict=False), 0).double().numpy()
    np.testing.assert_allclose(scores["answer_logps"][2], direct[0], rtol=1e-6)
    np.testing.assert_allclose(scores["perturbed_logps"][2], direct[1:], rtol=1e-6)


def test_reference_kl_is_zero_against_itself_and_positive_against_another_model(tokenizer):
    model, other = tiny_llama(len(tokenizer), seed=1).eval(), tiny_llama(len(tokenizer), seed=2).eval()
    pairs = [tokenize_qa(tokenizer, "Where does agent 1 live?", "Agent 1 lives in Amberley."),
             tokenize_qa(tokenizer, "Hi?", "No.")]
    torch.testing.assert_close(reference_kl(model, model, *zip(*pairs, strict=False), 0), torch.zeros(2),
                               atol=1e-6, rtol=0)
    assert (reference_kl(model, other, *zip(*pairs, strict=False), 0) > 0).all()


def test_token_statistics_match_a_direct_per_example_computation(tokenizer):
    from npo_trl.eval.scoring import token_statistics

    model = tiny_llama(len(tokenizer), seed=6).eval()
    pairs = [tokenize_qa(tokenizer, "Where does agent 1 live?", "Agent 1 lives in Amberley."),
             tokenize_qa(tokenizer, "Hi?", "No.")]
    stats = token_statistics(model, *zip(*pairs, strict=False), tokenizer.pad_token_id)
    for row, (prompt, completion) in enumerate(pairs):
        with torch.no_grad():
            logprobs = model(torch.tensor([prompt + completion])).logits[0].log_softmax(-1)
        positions = range(len(prompt) - 1, len(prompt) + len(completion) - 1)
        direct = logprobs[list(positions)]
        n = len(completion)
        assert stats["mask"][row].tolist() == [1] * n + [0] * (stats["mask"].size(1) - n)
        torch.testing.assert_close(stats["logps"][row, :n], direct[range(n), completion], atol=1e-5, rtol=1e-5)
        mean = (direct.exp() * direct).sum(-1)
        torch.testing.assert_close(stats["expected_logps"][row, :n], mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(stats["logp_variance"][row, :n], (direct.exp() * (direct - mean[:, None]) ** 2)
                                   .sum(-1), atol=1e-4, rtol=1e-4)
    assert torch.equal(stats["logps"][1, len(pairs[1][1]):], torch.zeros(stats["logps"].size(1) - len(pairs[1][1])))
