"""The privacy formulas (npo_trl.eval.privacy) on small hand-computed inputs, and the token statistics they read."""

import math
import zlib

import numpy as np
import pytest
import torch

from helpers import tiny_llama
from npo_trl.eval import privacy
from npo_trl.eval.scoring import candidate_logps, sequence_logps, token_statistics
from npo_trl.prompts import tokenize_qa

# Two rows, left-aligned: row 0 has 5 tokens, row 1 has 2 (then padding).
LOGPS = torch.tensor([[-1.0, -2.0, -3.0, -4.0, -5.0], [-0.5, -1.5, 0.0, 0.0, 0.0]])
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])


def test_loss_and_min_k_scores_by_hand():
    torch.testing.assert_close(privacy.loss_score(LOGPS, MASK), torch.tensor([3.0, 1.0]))
    # k = 0.4: row 0 takes its floor(2.0) = 2 lowest log-probs (-5, -4); row 1 floor(0.8) -> at least 1 (-1.5).
    torch.testing.assert_close(privacy.min_k_score(LOGPS, MASK, 0.4), torch.tensor([4.5, 1.5]))
    torch.testing.assert_close(privacy.min_k_score(LOGPS, MASK, 1.0), torch.tensor([3.0, 1.0]))  # k = 100%: LOSS


def test_min_k_plus_plus_standardises_each_token_by_the_vocabulary_statistics():
    expected = torch.tensor([[-2.0, -2.0, -2.0, -2.0, -2.0], [-1.0, -1.0, 0.0, 0.0, 0.0]])
    variance = torch.tensor([[1.0, 4.0, 1.0, 4.0, 0.0], [0.25, 1.0, 0.0, 0.0, 0.0]])
    # z = (logp - mu) / sigma: row 0 [1, 0, -1, -1, -3/1e-3 (variance floored at 1e-6)], row 1 [1, -0.5]
    z_low = -3.0 / math.sqrt(1e-6)
    torch.testing.assert_close(privacy.min_k_plus_plus_score(LOGPS, expected, variance, MASK, 0.4),
                               torch.tensor([-(z_low - 1.0) / 2, 0.5]))


def test_zlib_and_reference_scores_by_hand():
    texts = ["abc abc abc abc abc abc", "The quick brown fox."]
    lengths = [len(zlib.compress(t.encode("utf-8"))) for t in texts]
    np.testing.assert_allclose(privacy.zlib_score([2.0, 3.0], texts), [2.0 / lengths[0], 3.0 / lengths[1]])
    assert lengths[0] < len(texts[0])  # repetitive text compresses: the same loss counts for more
    np.testing.assert_allclose(privacy.reference_score([2.0, 3.0], [2.5, 1.0]), [-0.5, 2.0])


def test_memorization_measures_by_hand():
    is_argmax = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 1, 0, 0], [1, 1, 0, 1, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0]])
    torch.testing.assert_close(privacy.exact_memorization(is_argmax, mask), torch.tensor([0.75, 1.0, 0.2, 0.25, 0.75]))
    # The trailing run of argmax tokens over the length; none at all scores 1/n (k stops at n - 1).
    torch.testing.assert_close(privacy.extraction_strength(is_argmax, mask),
                               torch.tensor([0.75, 1.0, 0.2, 0.25, 0.25]))


def test_without_last_token_drops_each_answers_end_token():
    assert privacy.without_last_token(MASK).tolist() == [[1, 1, 1, 1, 0], [1, 0, 0, 0, 0]]
    assert privacy.without_last_token(torch.tensor([[1, 0]])).tolist() == [[1, 0]]  # a 1-token row keeps it


def test_auc_direction_ties_and_bounds():
    same = [0.3, 1.2, 2.0]
    assert privacy.mia_auc(same, same) == 0.5  # identical members and non-members: indistinguishable
    assert privacy.mia_auc([0.1, 0.2], [1.0, 2.0]) == 1.0  # members' losses all lower: perfectly separated
    assert privacy.mia_auc([1.0, 2.0], [0.1, 0.2]) == 0.0  # forget rows look less familiar than unseen ones
    # pairs (non-member > member): 2>1, 2=2 (half), 3>1, 3>2 -> 3.5 of 4
    assert privacy.mia_auc([1.0, 2.0], [2.0, 3.0]) == 0.875
    with pytest.raises(ValueError, match="members and non-members"):
        privacy.mia_auc([], [1.0])


def test_privleak_follows_muse():
    assert privacy.privleak(0.62, 0.62) == 0.0  # the retain model against itself
    assert privacy.privleak(1.0, 0.5) == -100.0  # every forget row still stands out: MUSE's "never unlearned"
    assert privacy.privleak(0.0, 0.5) == 100.0  # over-unlearned
    assert privacy.privleak(0.7, 0.6) == pytest.approx((0.3 - 0.4) / 0.4 * 100)  # on MUSE's 1 - AUC


def test_privacy_metrics_report_every_key_and_none_without_the_retain_models_inputs():
    rng = np.random.default_rng(0)
    forget = {name: rng.random(6) for name in privacy.ROW_SCORES + ("zlib",)}
    holdout = {name: rng.random(9) + 0.5 for name in privacy.ROW_SCORES + ("zlib",)}
    metrics = privacy.privacy_metrics(forget, holdout)
    assert set(metrics) == set(privacy.PRIVACY_METRICS)
    assert metrics["privacy/privleak"] is None and metrics["privacy/mia_reference_auc"] is None
    assert metrics["privacy/mia_loss_auc"] == privacy.mia_auc(forget["loss"], holdout["loss"])
    assert metrics["privacy/forget_exact_memorization"] == pytest.approx(forget["exact_memorization"].mean())
    with_retain = privacy.privacy_metrics(forget, holdout, {"min_k": 0.5}, (forget["loss"], holdout["loss"]))
    assert with_retain["privacy/mia_reference_auc"] == 0.5  # the model is its own reference: every score 0
    assert with_retain["privacy/privleak"] == privacy.privleak(metrics["privacy/mia_min_k_auc"], 0.5)


def test_token_statistics_come_from_the_scoring_pass_and_match_a_direct_computation(tokenizer):
    model = tiny_llama(len(tokenizer), seed=3).eval()
    rows = [("Where does agent 1 live?", ["Agent 1 lives in Amberley.", "Perhaps in Kestow."]),
            ("What colour does agent 12 like?", ["Teal.", "Agent 12 likes teal, I think."])]
    pairs = [tokenize_qa(tokenizer, q, a) for q, answers in rows for a in answers]
    alone = token_statistics(model, *zip(*pairs[::2], strict=False), tokenizer.pad_token_id)
    for row, (prompt, completion) in enumerate(pairs[::2]):
        with torch.no_grad():
            logprobs = model(torch.tensor([prompt + completion])).logits[0].log_softmax(-1)
        positions = torch.arange(len(prompt) - 1, len(prompt) + len(completion) - 1)
        targets = torch.tensor(completion)
        n = len(completion)
        assert alone["mask"][row].tolist() == [1] * n + [0] * (alone["mask"].size(1) - n)
        torch.testing.assert_close(alone["logps"][row, :n], logprobs[positions, targets])
        assert alone["is_argmax"][row, :n].tolist() == (logprobs[positions].argmax(-1) == targets).tolist()
    # The scoring passes give the same statistics of each row's first candidate, from their own forward pass.
    _, from_sequences = sequence_logps(model, *zip(*pairs, strict=False), tokenizer.pad_token_id,
                                       statistics_rows=slice(None, None, 2))
    _, from_candidates = candidate_logps(model, *zip(*pairs, strict=False), 2, tokenizer.pad_token_id,
                                         first_candidate_statistics=True)
    for statistics in (from_sequences, from_candidates):
        assert statistics.keys() == alone.keys()
        for name in alone:
            torch.testing.assert_close(statistics[name], alone[name], atol=1e-4, rtol=1e-4)  # fp32 cache path
