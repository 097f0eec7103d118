"""Reference statistics: npo-trl's own, open-unlearning's TOFU_EVAL.json and the TOFU/NPO repositories'
eval_log*.json, written here from our evaluator's values, read back row for row, and refused when they do not match."""

import json
import math

import numpy as np
import pytest

from helpers import toy_eval_sets
from npo_trl.tofu import TOFUEvalSettings, TOFUEvaluator, compute_reference_stats, load_reference_stats
from npo_trl.tofu.eval_sets import TOFUEvalSet, score_eval_set


@pytest.fixture(scope="module")
def forget_rows():
    return toy_eval_sets()["forget"]


@pytest.fixture(scope="module")
def logged(forget_rows, tokenizer, finetuned_dir):
    """Per-row values of the retain model (here: the fine-tuned toy model) that each toolkit's log would hold."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(finetuned_dir)
    scores = score_eval_set(model, tokenizer, TOFUEvalSet("forget", forget_rows, tokenizer), generate=False)
    stats = compute_reference_stats(model, tokenizer, forget_rows)
    return {"scores": scores, "stats": stats, "model": model}


def open_unlearning_log(ratios, answers) -> dict:
    """open-unlearning's TOFU_EVAL.json layout (src/evals/base.py): metric → agg_value and value_by_index."""
    return {
        "forget_truth_ratio": {"agg_value": float(np.mean(np.minimum(ratios, 1 / np.asarray(ratios)))),
                               "value_by_index": {str(i): {"score": r} for i, r in enumerate(ratios)}},
        "forget_Q_A_ROUGE": {"agg_value": 1.0, "value_by_index": {
            str(i): {"rougeL_recall": 1.0, "input": "", "ground_truth": a, "generation": a}
            for i, a in enumerate(answers)}},
        "forget_quality": {"agg_value": None},
    }


def tofu_log(scores, rows, as_lists=False) -> dict:
    """TOFU's eval_log_forget.json: per-row mean losses (negated length-normalised log-probs), keyed by row; the NPO
    repository stores plain lists."""
    entries = {
        "avg_paraphrased_loss": [-v for v in scores["correct_logps"].tolist()],
        "average_perturb_loss": [[-v for v in row] for row in scores["perturbed_logps"].tolist()],
        "generated_text": [[row["question"], row["answer"], row["answer"]] for row in rows],
    }
    return entries if as_lists else {k: {str(i): v for i, v in enumerate(vs)} for k, vs in entries.items()}


def write(path, content) -> str:
    path.write_text(json.dumps(content))
    return str(path)


def test_each_format_is_read_back_row_for_row(tmp_path, logged, forget_rows, tokenizer):
    ratios, answers = logged["stats"]["truth_ratios"], [row["answer"] for row in forget_rows]
    files = {
        "npo-trl": write(tmp_path / "retain_stats.json", logged["stats"]),
        "open-unlearning": write(tmp_path / "TOFU_EVAL.json", open_unlearning_log(ratios, answers)),
        "tofu": write(tmp_path / "eval_log_forget.json", tofu_log(logged["scores"], forget_rows)),
        "tofu-aggregated": write(tmp_path / "eval_log_aggregated.json", {
            "eval_log.json": {}, "eval_log_forget.json": tofu_log(logged["scores"], forget_rows)}),
        "npo-repository": write(tmp_path / "npo_eval_log_forget.json",
                                tofu_log(logged["scores"], forget_rows, as_lists=True)),
    }
    sources = {"npo-trl": "npo-trl", "open-unlearning": "open-unlearning", "tofu": "tofu", "tofu-aggregated": "tofu",
               "npo-repository": "tofu"}
    for name, path in files.items():
        stats = load_reference_stats(path)
        assert stats["source"] == sources[name]
        np.testing.assert_allclose(stats["truth_ratios"], ratios, rtol=1e-12, err_msg=name)
        evaluator = TOFUEvaluator(tokenizer, {"forget": forget_rows}, reference_stats=path,
                                  settings=TOFUEvalSettings(max_new_tokens=2))
        assert evaluator.evaluate(logged["model"])["tofu/forget_quality"] == 1.0, name  # the same model
        if name != "npo-trl":  # a published log covers every row: a subset evaluation takes its rows from it
            subset = TOFUEvaluator(tokenizer, {"forget": forget_rows}, reference_stats=path,
                                   settings=TOFUEvalSettings(max_samples=4, sample_seed=3))
            np.testing.assert_allclose(subset.reference_truth_ratios,
                                       np.asarray(ratios)[subset.sets["forget"].indices], err_msg=name)


def test_logs_of_other_rows_are_refused_naming_the_mismatch(tmp_path, logged, forget_rows, tokenizer):
    ratios, answers = logged["stats"]["truth_ratios"], [row["answer"] for row in forget_rows]
    short = write(tmp_path / "short.json", open_unlearning_log(ratios[:-1], answers[:-1]))
    with pytest.raises(ValueError, match="holds truth ratios of 7 forget rows, but the forget set given has 8"):
        TOFUEvaluator(tokenizer, {"forget": forget_rows}, reference_stats=short)
    shuffled = write(tmp_path / "shuffled.json", open_unlearning_log(ratios, answers[1:] + answers[:1]))
    with pytest.raises(ValueError, match="row 0 of the log answers .* another row order"):
        TOFUEvaluator(tokenizer, {"forget": forget_rows}, reference_stats=shuffled)
    scores = logged["scores"]
    gap = tofu_log(scores, forget_rows)
    gap["avg_paraphrased_loss"].pop("3")
    with pytest.raises(ValueError, match="not 0..6: a log of every row"):
        load_reference_stats(write(tmp_path / "gap.json", gap))
    partial = open_unlearning_log(ratios, answers)
    partial["forget_Q_A_ROUGE"]["value_by_index"]["2"].pop("ground_truth")  # no complete answers: no order check
    assert load_reference_stats(write(tmp_path / "partial.json", partial))["answers"] is None
    with pytest.raises(ValueError, match="holds no reference statistics"):
        load_reference_stats(write(tmp_path / "summary.json", {"forget_quality": 0.5, "model_utility": 0.6}))
    with pytest.raises(ValueError, match="numeric 'score'"):
        load_reference_stats(write(tmp_path / "no_score.json", {"forget_truth_ratio": {"value_by_index": {"0": {}}}}))
    # Our own statistics carry a fingerprint of the rows and settings they were computed with.
    with pytest.raises(ValueError, match="token_boundary='common_prefix' there, 'prompt_length' here.*recompute"):
        TOFUEvaluator(tokenizer, {"forget": forget_rows}, reference_stats=logged["stats"],
                      settings=TOFUEvalSettings(token_boundary="prompt_length"))
    with pytest.raises(ValueError, match="other forget rows than this forget set"):
        TOFUEvaluator(tokenizer, {"forget": forget_rows[:-1]}, reference_stats=logged["stats"])
    with pytest.raises(ValueError, match="no 'forget' set"):
        TOFUEvaluator(tokenizer, {"retain": toy_eval_sets()["retain"]}, reference_stats=logged["stats"])


def test_privacy_statistics_are_cached_read_from_open_unlearning_and_required_with_a_holdout_set(
        tmp_path, logged, forget_rows, tokenizer):
    holdout = toy_eval_sets(holdout=True)["holdout"]
    model, cache = logged["model"], tmp_path / "retain_stats.json"
    stats = compute_reference_stats(model, tokenizer, forget_rows, holdout_eval_set=holdout, cache_path=str(cache))
    assert len(stats["privacy"]["forget_losses"]) == len(forget_rows)
    assert len(stats["privacy"]["holdout_losses"]) == len(holdout)
    assert stats["truth_ratios"] == pytest.approx(logged["stats"]["truth_ratios"])  # the same pass as without
    # The cache serves the same holdout rows; another holdout set (or none stored) is recomputed.
    assert compute_reference_stats(model, tokenizer, forget_rows, holdout_eval_set=holdout,
                                   cache_path=str(cache)) == stats
    other = compute_reference_stats(model, tokenizer, forget_rows, holdout_eval_set=holdout[:5],
                                     cache_path=str(cache))
    assert len(other["privacy"]["holdout_losses"]) == 5
    sets = {"forget": forget_rows, "holdout": holdout}
    with pytest.raises(ValueError, match="other holdout rows.*recompute"):
        TOFUEvaluator(tokenizer, sets, reference_stats=other)
    with pytest.raises(ValueError, match=r"no membership-inference AUCs.*holdout_eval_set=.*or leave 'holdout' out"):
        TOFUEvaluator(tokenizer, sets, reference_stats=logged["stats"])  # computed without a holdout set
    short = TOFUEvalSettings(max_new_tokens=2)
    metrics = TOFUEvaluator(tokenizer, sets, reference_stats=stats, settings=short).evaluate(model)
    assert metrics["privacy/mia_reference_auc"] == 0.5  # the "retain" model against itself
    # This stand-in was trained on the forget rows, so its Min-K% AUC is 1: MUSE's 1 - AUC is 0, PrivLeak undefined.
    assert stats["privacy"]["auc"]["min_k"] == 1.0 and math.isnan(metrics["privacy/privleak"])

    # open-unlearning's TOFU_EVAL.json holds the retain model's mia_* AUCs (no per-row losses: no reference attack).
    log_answers = [row["answer"] for row in forget_rows]
    log = open_unlearning_log(stats["truth_ratios"], log_answers)
    log.update({f"mia_{attack}": {"agg_value": auc, "value_by_index": {}}
                for attack, auc in stats["privacy"]["auc"].items() if attack != "reference"})
    read = load_reference_stats(write(tmp_path / "TOFU_EVAL.json", log))
    assert read["privacy"]["auc"] == {k: v for k, v in stats["privacy"]["auc"].items() if k != "reference"}
    with pytest.warns(UserWarning, match="no Min-K% membership-inference AUC"):  # a log without them: no PrivLeak
        without = TOFUEvaluator(tokenizer, sets, reference_stats=load_reference_stats(
            write(tmp_path / "no_mia.json", open_unlearning_log(stats["truth_ratios"], log_answers))), settings=short)
    assert without.evaluate(model)["privacy/privleak"] is None
    with pytest.warns(UserWarning, match="no Min-K%"):  # its Min-K% AUCs are open-unlearning's k = 0.4 only
        TOFUEvaluator(tokenizer, sets, reference_stats=read, settings=TOFUEvalSettings(min_k_fraction=0.2))
    read["privacy"]["auc"]["min_k"] = 0.75
    from_log = TOFUEvaluator(tokenizer, sets, reference_stats=read, settings=short).evaluate(model)
    assert from_log["privacy/privleak"] == pytest.approx((0.0 - 0.25) / 0.25 * 100)  # MUSE's (0 - 0.25) / 0.25
    assert from_log["privacy/mia_reference_auc"] is None
