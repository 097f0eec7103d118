"""TOFU's evaluation sets: row validation and selection, and per-row scores against direct passes."""

import numpy as np
import pytest

from helpers import toy_eval_sets
from npo_trl.eval.generation import generate_answers
from npo_trl.eval.scoring import can_share_prefix, sequence_logps
from npo_trl.prompts import tokenize_qa
from npo_trl.tofu import TOFUEvalSettings, TOFUEvaluator
from npo_trl.tofu.eval_sets import TOFUEvalSet, score_eval_set, select_rows


def test_select_rows_is_a_fixed_seeded_subset():
    rows = [{"i": i} for i in range(10)]
    assert select_rows(rows, 20) == rows
    first, again = select_rows(rows, 4, seed=1), select_rows(rows, 4, seed=1)
    assert first == again and len(first) == 4
    assert [r["i"] for r in first] == sorted(r["i"] for r in first)
    assert select_rows(rows, 4, seed=2) != first
    assert select_rows(rows, 3, seed=None) == rows[:3]  # TOFU's own selection: the first rows


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
        TOFUEvaluator(tokenizer, {"holdouts": sets["real_authors"]})
    holdout = toy_eval_sets(holdout=True)["holdout"]
    with pytest.raises(ValueError, match=r"'holdout', row 0: missing field 'answer'.*\['question', 'answer'\]"):
        TOFUEvaluator(tokenizer, {"forget": forget, "holdout": [{"question": r["question"], "reply": r["answer"]}
                                                                for r in holdout]})
    with pytest.raises(ValueError, match="'holdout' is empty: give its rows.*or leave 'holdout' out"):
        TOFUEvaluator(tokenizer, {"forget": forget, "holdout": []})
    with pytest.raises(ValueError, match="'holdout' but no 'forget' set"):
        TOFUEvaluator(tokenizer, {"retain": sets["retain"], "holdout": holdout})
    with pytest.raises(ValueError, match="'answer' must be a non-empty string"):
        TOFUEvalSet("holdout", [dict(holdout[0], answer=" ")], tokenizer)
    with pytest.raises(ValueError, match="'answer' must hold non-empty strings"):
        TOFUEvalSet("world_facts", [dict(sets["world_facts"][0], answer=" ")], tokenizer)


def test_score_eval_set_gives_the_same_scores_with_or_without_sharing_and_in_any_batch_size(finetuned, tokenizer):
    eval_set = TOFUEvalSet("forget", toy_eval_sets()["forget"], tokenizer)
    assert eval_set.shares_prompt and can_share_prefix(finetuned)  # TOFU's candidates share their question
    reference = score_eval_set(finetuned, tokenizer, eval_set, TOFUEvalSettings(batch_size=1, max_new_tokens=12))
    for batch_size, share, generation_batch_size in [(3, True, None), (100, True, 5), (3, False, 100)]:
        eval_set.shares_prompt = share
        settings = TOFUEvalSettings(batch_size=batch_size, max_new_tokens=12,
                                    generation_batch_size=generation_batch_size)
        scores = score_eval_set(finetuned, tokenizer, eval_set, settings)
        for key in ("answer_logps", "correct_logps", "perturbed_logps", "rouge"):
            np.testing.assert_allclose(scores[key], reference[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_score_eval_set_columns_hold_each_candidates_score(finetuned, tokenizer):
    eval_set = TOFUEvalSet("forget", toy_eval_sets()["forget"], tokenizer)
    scores = score_eval_set(finetuned, tokenizer, eval_set, TOFUEvalSettings(batch_size=3, max_new_tokens=12))
    row = eval_set.rows[5]
    pairs = [tokenize_qa(tokenizer, row["question"], a)
             for a in [row["answer"], row["paraphrased_answer"], *row["perturbed_answer"]]]
    direct = sequence_logps(finetuned, *zip(*pairs, strict=False), tokenizer.pad_token_id).double().numpy()
    np.testing.assert_allclose(scores["answer_logps"][5], direct[0], rtol=1e-5)
    np.testing.assert_allclose(scores["correct_logps"][5], direct[1], rtol=1e-5)
    np.testing.assert_allclose(scores["perturbed_logps"][5], direct[2:], rtol=1e-5)
    # The fine-tuned model answers its facts greedily, word for word.
    answers = generate_answers(finetuned, tokenizer, eval_set.prompts[:2], max_new_tokens=12)
    assert [a.strip() for a in answers] == [r["answer"] for r in eval_set.rows[:2]]
    assert scores["rouge"].tolist() == [1.0] * len(eval_set)
