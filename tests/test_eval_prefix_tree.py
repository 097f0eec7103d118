"""Candidate answers as a prefix tree (npo_trl.eval.prefix_tree): the tree, its masks, and `candidate_logps` running
it for the values of one pass per candidate."""

import torch

from helpers import tiny_llama
from npo_trl.eval.logit_stats import greedy_agreement
from npo_trl.eval.prefix_tree import PrefixTree, tree_batch
from npo_trl.eval.scoring import can_run_tree, candidate_logps, sequence_logps, token_statistics
from npo_trl.prompts import tokenize_qa


def test_a_shared_beginning_is_one_node():
    tree = PrefixTree([[5, 6, 7], [5, 6, 8, 9], [5, 10], [11]])
    assert tree.tokens == [5, 6, 7, 8, 9, 10, 11]
    assert tree.parents == [-1, 0, 1, 1, 3, 0, -1]
    assert tree.depths == [0, 1, 2, 2, 3, 1, 0]
    assert tree.paths == [[0, 1, 2], [0, 1, 3, 4], [0, 5], [6]]
    ancestors = tree.ancestors()
    assert ancestors[4].nonzero().flatten().tolist() == [0, 1, 3, 4]  # 9 sees 5, 6, 8 and itself, not 7
    assert ancestors[6].nonzero().flatten().tolist() == [6]  # a second root sees only itself


def test_tree_batch_positions_and_masks():
    trees = [PrefixTree([[5, 6], [5, 7]]), PrefixTree([[8], [0, 9]])]  # token 0 is the pad token
    prefix_mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # the second prefix is one token shorter
    inputs = tree_batch(trees, [3, 2], prefix_mask, 0, torch.float32)
    assert inputs["input_ids"].tolist() == [[5, 6, 7], [8, 0, 9]]
    assert inputs["position_ids"].tolist() == [[3, 4, 4], [2, 2, 3]]
    allowed = inputs["attention_mask"][:, 0] == 0
    assert allowed.shape == (2, 3, 6)
    assert allowed[0, 2].tolist() == [True, True, True, True, False, True]  # 7: prefix, its parent 5, itself
    assert allowed[1, 2].tolist() == [True, True, False, False, True, True]  # 9: prefix (2 tokens), 0, itself
    assert allowed[1, 0].tolist() == [True, True, False, True, False, False]
    hidden = tree_batch(trees, [3, 2], prefix_mask, 0, torch.float32, mask_pad_tokens=True)["attention_mask"][:, 0]
    assert (hidden[1, :, 4] < 0).all()  # the pad-token node is hidden from every node, itself included
    assert inputs["attention_mask"].min() == torch.finfo(torch.float32).min
    # a padding node (tree 0 has 3 nodes, a shorter tree would be padded) attends to its prefix and itself
    padded = tree_batch([PrefixTree([[5, 6, 7]]), PrefixTree([[8]])], [3, 3], torch.ones(2, 3, dtype=torch.long), 0,
                        torch.float32)["attention_mask"][1, 0] == 0
    assert padded[2].tolist() == [True, True, True, False, False, True]


def test_candidate_logps_run_shared_beginnings_once_for_the_values_of_sequence_logps(tokenizer):
    """Candidates that begin alike (as TOFU's perturbed answers do): each beginning runs once, and every score, the
    answer's token statistics and its greedy agreement are one pass per candidate's, with pad tokens hidden or not."""
    model = tiny_llama(len(tokenizer), seed=7).eval()
    assert can_run_tree(model)
    rows = [("Where does agent 1 live?", ["Agent 1 lives in Amberley.", "Agent 1 lives in Kestow.",
                                         "Agent 1 lives in Kestow, near Amberley.", "Agent 1 likes teal."]),
            ("What colour does agent 12 like?", ["Agent 12 likes teal.", "Agent 12 likes red.", "Teal.",
                                                 "Agent 12 likes red, or teal."])]
    pairs = [tokenize_qa(tokenizer, q, a) for q, answers in rows for a in answers]
    pairs[3] = (pairs[3][0], pairs[3][1][:2] + [0] + pairs[3][1][2:])  # a pad token inside an answer
    prompts, completions = (list(x) for x in zip(*pairs, strict=True))
    inputs = []
    hook = model.register_forward_pre_hook(lambda m, args, kwargs: inputs.append(kwargs["input_ids"].shape),
                                           with_kwargs=True)
    try:
        for hide in (False, True):
            inputs.clear()
            logps, table = candidate_logps(model, prompts, completions, 4, 0, mask_pad_tokens=hide,
                                           first_candidate_statistics=True, first_candidate_greedy=True)
            tree_tokens = sum(shape[0] * shape[1] for shape in inputs[1:])  # the passes after the questions'
            direct = sequence_logps(model, prompts, completions, 0, mask_pad_tokens=hide).view(2, 4)
            torch.testing.assert_close(logps, direct, atol=1e-5, rtol=1e-5)
            answers = token_statistics(model, prompts[::4], completions[::4], 0, mask_pad_tokens=hide)
            for name in ("logps", "expected_logps", "logp_variance"):
                torch.testing.assert_close(table[name], answers[name], atol=1e-4, rtol=1e-4)
            assert table["is_argmax"].tolist() == answers["is_argmax"].tolist()
            # one pass per candidate from the last question token on would run this many tokens, padding aside
            assert tree_tokens < sum(len(c) + 1 for c in completions)
    finally:
        hook.remove()
    # the greedy agreement is the one a pass over each answer gives
    batch_logits = model(torch.tensor([prompts[0] + completions[0]])).logits[0, len(prompts[0]) - 1:-1]
    mask = torch.tensor([[0] * len(prompts[0]) + [1] * len(completions[0])])
    agreement, _ = greedy_agreement(batch_logits, torch.tensor([prompts[0] + completions[0]]), mask,
                                    torch.tensor([0]))
    assert int(table["greedy_agreement"][0, 0]) == int(agreement[0])


def test_attention_without_4d_masks_keeps_the_pass_per_candidate(tokenizer):
    model = tiny_llama(len(tokenizer), seed=7).eval()
    model.config._attn_implementation = "flash_attention_2"  # only read here: flash kernels take no 4D mask
    assert not can_run_tree(model)
