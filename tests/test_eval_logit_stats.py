"""npo_trl.eval.logit_stats: the statistics scoring takes from the LM head's logits, computed in slices of rows,
equal their definitions on the whole tensor."""

import torch

from npo_trl.eval.logit_stats import LOGSUMEXP_ROWS, completion_token_statistics, greedy_agreement, normaliser


def test_token_statistics_in_slices_are_their_definitions():
    torch.manual_seed(0)
    rows, vocab = 3, 50
    lengths = [LOGSUMEXP_ROWS + 7, 5, 60]  # more completion tokens than one slice holds, rows of unequal length
    width = 1 + max(lengths)
    input_ids = torch.randint(0, vocab, (rows, width))
    completion_mask = torch.tensor([[0] + [1] * n + [0] * (width - 1 - n) for n in lengths])
    logits = 3 * torch.randn(sum(lengths), vocab)
    stats = completion_token_statistics(logits, input_ids, completion_mask)
    logprobs = logits.log_softmax(-1)
    start = 0
    for r, n in enumerate(lengths):
        lp, targets = logprobs[start:start + n], input_ids[r, 1:1 + n]
        p = lp.exp()
        expected = (p * lp).sum(-1)
        torch.testing.assert_close(stats["logps"][r, :n], lp.gather(1, targets[:, None])[:, 0])
        torch.testing.assert_close(stats["expected_logps"][r, :n], expected)
        torch.testing.assert_close(stats["logp_variance"][r, :n], (p * (lp - expected[:, None]) ** 2).sum(-1))
        assert stats["is_argmax"][r, :n].tolist() == (lp.argmax(-1) == targets).tolist()
        assert stats["mask"][r].tolist() == [1] * n + [0] * (max(lengths) - n)
        assert not stats["logps"][r, n:].any()
        start += n
    torch.testing.assert_close(normaliser(logits), logits.logsumexp(-1))


def test_greedy_agreement_counts_the_leading_greedy_tokens():
    vocab = 6
    input_ids = torch.tensor([[0, 1, 2, 3], [0, 4, 5, 0]])
    completion_mask = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 0]])
    choices = [1, 2, 5, 4, 5]  # row 0 follows its answer for two tokens, then would say 5; row 1 follows it all
    logits = torch.nn.functional.one_hot(torch.tensor(choices), vocab).float()
    agreement, following = greedy_agreement(logits, input_ids, completion_mask, torch.tensor([0, 1]))
    assert agreement.tolist() == [2, 2] and following.tolist() == [5, -1]
