"""npo_trl.tofu.robustness: the relearn/evaluation split of TOFU's forget rows within each author, the attacked
models scored on the held-out rows only, with forget quality against the retain model's ratios on those rows."""

import pytest
from datasets import Dataset

from helpers import toy_eval_sets
from npo_trl.attacks.arguments import AttackArguments
from npo_trl.tofu import TOFUEvalSettings
from npo_trl.tofu.robustness import tofu_robustness_evaluator

SETTINGS = TOFUEvalSettings(max_new_tokens=4)


def test_relearning_and_scoring_split_each_author(tmp_path, tokenizer, finetuned_dir):
    forget = Dataset.from_list(toy_eval_sets()["forget"])  # 8 rows: with qa_per_author=2, four "authors" of 2
    retain = Dataset.from_list(toy_eval_sets()["retain"])
    robustness = tofu_robustness_evaluator(
        tokenizer, forget, AttackArguments(attacks=["relearn", "relearn_benign", "quantize8"], relearn_steps=[1, 3]),
        SETTINGS, retain_model=finetuned_dir, finetuned_model=finetuned_dir, retain_rows=retain, qa_per_author=2,
        cache_dir=str(tmp_path))
    assert list(robustness.attacks) == ["relearn1", "relearn3", "relearn_benign1", "relearn_benign3", "quantize8"]
    relearned = list(robustness.attacks["relearn1"].rows["prompt"])
    scored = robustness.evaluator.sets["forget"].rows
    assert list(robustness.evaluator.sets) == ["forget"] and len(relearned) == len(scored) == 4
    questions = list(forget["question"])
    for author in range(4):  # one row of each author relearned, the other scored
        pair = set(questions[2 * author:2 * author + 2])
        assert sum(any(q in p for p in relearned) for q in pair) == 1
        assert sum(row["question"] in pair for row in scored) == 1
    assert not {row["question"] for row in scored} & {q for q in questions if any(q in p for p in relearned)}
    assert len(robustness.attacks["relearn_benign1"].rows) == 4  # the benign attack's budget matches
    assert robustness.attacks["relearn_benign1"].rows["completion"][0].strip() in retain["answer"][0]
    # forget quality against the retain model's ratios on the scored rows (cached); recovery's reference
    assert (tmp_path / "robustness_retain_stats.json").exists()
    assert robustness.finetuned_metrics["tofu/forget_quality"] == 1.0  # the retain model is the same folder
    assert set(robustness.baselines) == {"retain", "finetuned"}


def test_without_relearning_every_forget_row_is_scored(tokenizer):
    forget = Dataset.from_list(toy_eval_sets()["forget"])
    robustness = tofu_robustness_evaluator(tokenizer, forget, AttackArguments(attacks=["quantize4"]), SETTINGS)
    assert len(robustness.evaluator.sets["forget"].rows) == 8 and robustness.baselines == {}
    assert robustness.finetuned_metrics is None and robustness.evaluator.reference_stats is None
    with pytest.raises(ValueError, match="qa_per_author=0: give the number of rows of each author"):
        tofu_robustness_evaluator(tokenizer, forget, AttackArguments(attacks=["relearn"]), SETTINGS, qa_per_author=0)
    with pytest.raises(ValueError, match="relearn_benign attack needs its rows.*benign_rows"):
        tofu_robustness_evaluator(tokenizer, forget, AttackArguments(attacks=["relearn_benign"]), SETTINGS)
