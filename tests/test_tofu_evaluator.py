"""TOFUEvaluator: every metric, forget quality against the retain model's statistics, and their cache."""

import json
import math
import random
import re

import pytest
from datasets import Dataset, concatenate_datasets

from helpers import fine_tune, tiny_llama, toy_eval_sets, toy_qa, toy_tofu_rows
from npo_trl.eval.privacy import ATTACKS, PRIVACY_METRICS
from npo_trl.tofu import TOFUEvalSettings, TOFUEvaluator, compute_reference_stats
from npo_trl.tofu.metrics import METRICS


def test_evaluator_reports_every_metric_and_forget_quality_against_reference_stats(tmp_path, finetuned, tokenizer):
    sets = toy_eval_sets()
    cache = tmp_path / "retain_stats.json"
    stats = compute_reference_stats(finetuned, tokenizer, sets["forget"], cache_path=str(cache))
    assert len(stats["truth_ratios"]) == len(sets["forget"]) and json.loads(cache.read_text()) == stats

    metrics = TOFUEvaluator(tokenizer, sets, reference_stats=str(cache),
                            settings=TOFUEvalSettings(max_new_tokens=12)).evaluate(finetuned, ref_model=finetuned)
    assert set(metrics) == set(METRICS + PRIVACY_METRICS)
    assert all(metrics[k] is not None and math.isfinite(metrics[k]) for k in METRICS)
    assert all(metrics[k] is None for k in PRIVACY_METRICS)  # no holdout set: no privacy metrics
    assert metrics["tofu/forget_quality"] == 1.0  # the same model as the reference: identical truth ratios
    assert metrics["tofu/forget_kl"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["tofu/forget_prob"] > 0.9 and metrics["tofu/forget_rouge"] == 1.0
    assert 0 < metrics["tofu/model_utility"] <= 1

    # The cache is read back (not recomputed) for the same rows, model and scoring settings (batch sizes and
    # generation length do not change the statistics) ...
    cached = dict(stats, truth_ratios=[9.0] * len(sets["forget"]))
    cache.write_text(json.dumps(cached))
    speed = TOFUEvalSettings(batch_size=2, generation_batch_size=5, max_new_tokens=3)
    assert compute_reference_stats(finetuned, tokenizer, sets["forget"], speed, cache_path=str(cache)) == cached
    # ... a cache written under other scoring settings is refused, naming the field and the fix ...
    with pytest.raises(ValueError, match=r"mask_pad_tokens=False there, True here.*delete the cache file at " +
                       re.escape(str(cache))):
        compute_reference_stats(finetuned, tokenizer, sets["forget"], TOFUEvalSettings(mask_pad_tokens=True),
                                cache_path=str(cache))
    # ... and so are statistics of other settings given to an evaluator.
    with pytest.raises(ValueError, match="max_samples=None there, 4 here.*recompute"):
        TOFUEvaluator(tokenizer, sets, reference_stats=stats, settings=TOFUEvalSettings(max_samples=4))
    with pytest.raises(ValueError, match=r"min_k_fraction=0.4 there, 0.2 here.*delete the cache file at " +
                       re.escape(str(cache))):
        TOFUEvaluator(tokenizer, sets, reference_stats=str(cache), settings=TOFUEvalSettings(min_k_fraction=0.2))
    with pytest.raises(ValueError, match="no settings fingerprint.*recompute"):
        TOFUEvaluator(tokenizer, sets, reference_stats={k: v for k, v in stats.items() if k != "settings_fingerprint"})
    # Without statistics, no forget quality, clearly.
    assert TOFUEvaluator(tokenizer, {"forget": sets["forget"]}, settings=TOFUEvalSettings(max_new_tokens=4)).evaluate(
        finetuned)["tofu/forget_quality"] is None


# Computed at commit b0d235e, before the evaluation core was split out of npo_trl/tofu/metrics.py (that code cast the
# log-probabilities to float32; they now stay in float64 for a float64 model, hence ~1e-7 differences).
PINNED = {
    "tofu/forget_quality": 0.00015540015540015537,
    "tofu/model_utility": 0.9436602162444042,
    "tofu/forget_prob": 0.6771619318796605,
    "tofu/forget_rouge": 0.8916666666666666,
    "tofu/forget_truth_ratio": 0.01413940545538406,
    "tofu/forget_kl": 0.722400575876236,
    "tofu/retain_prob": 0.7003816666738993,
    "tofu/retain_rouge": 0.94375,
    "tofu/retain_truth_ratio": 0.9859339945863628,
    "tofu/real_authors_prob": 0.990825203588026,
    "tofu/real_authors_rouge": 1.0,
    "tofu/real_authors_truth_ratio": 0.9969216694438235,
    "tofu/world_facts_prob": 0.9827736778888783,
    "tofu/world_facts_rouge": 1.0,
    "tofu/world_facts_truth_ratio": 0.99424031953788,
}


def test_every_metric_equals_the_values_pinned_before_the_restructuring(tokenizer):
    model = tiny_llama(len(tokenizer), seed=21).double()
    fine_tune(model, tokenizer, concatenate_datasets([toy_qa(0, 4), toy_qa(4, 16)]), steps=60)
    retain = tiny_llama(len(tokenizer), seed=22).double()
    fine_tune(retain, tokenizer, toy_qa(4, 16), steps=60)
    sets = toy_eval_sets()
    settings = TOFUEvalSettings(batch_size=3, max_new_tokens=12)
    stats = compute_reference_stats(retain, tokenizer, sets["forget"], settings)
    metrics = TOFUEvaluator(tokenizer, sets, stats, settings).evaluate(model, ref_model=retain)
    assert {k: metrics[k] for k in METRICS} == pytest.approx(PINNED, abs=1e-6)


def test_privacy_metrics_tell_trained_rows_from_unseen_ones_and_a_retain_model_cannot(tokenizer):
    """Agents 16-47 split at random: half trained on (the members), half never (the holdout); the retain model saw
    neither (it learned agents 48-63), so to it the two halves are exchangeable."""
    agents = random.Random(0).sample(range(16, 48), 32)
    members = toy_tofu_rows(agents[:16], "city") + toy_tofu_rows(agents[:16], "colour")
    holdout = toy_tofu_rows(agents[16:], "city", 0) + toy_tofu_rows(agents[16:], "colour", 0)
    model, retain = tiny_llama(len(tokenizer), seed=31), tiny_llama(len(tokenizer), seed=32)
    fine_tune(model, tokenizer, Dataset.from_list([{"prompt": r["question"], "completion": " " + r["answer"]}
                                                   for r in members]))
    fine_tune(retain, tokenizer, toy_qa(48, 64))
    sets = {"forget": members, "holdout": holdout}
    settings = TOFUEvalSettings(batch_size=5, max_new_tokens=4)
    stats = compute_reference_stats(retain, tokenizer, members, settings, holdout_eval_set=holdout)
    assert set(stats["privacy"]["auc"]) == set(ATTACKS) - {"reference"}  # the retain model is that attack's reference

    evaluator = TOFUEvaluator(tokenizer, sets, reference_stats=stats, settings=settings)
    trained, unseen = evaluator.evaluate(model), evaluator.evaluate(retain)
    assert set(trained) == set(METRICS + PRIVACY_METRICS)
    for attack in ATTACKS:
        assert trained[f"privacy/mia_{attack}_auc"] > 0.8, (attack, trained)
        # Never trained on either set: chance, up to the sampling noise of 32 vs 32 rows (sd of the AUC ≈ 0.07).
        assert abs(unseen[f"privacy/mia_{attack}_auc"] - 0.5) < 0.25, (attack, unseen)
        if attack != "reference":
            assert unseen[f"privacy/mia_{attack}_auc"] == pytest.approx(stats["privacy"]["auc"][attack], abs=1e-12)
    assert unseen["privacy/mia_reference_auc"] == 0.5 and unseen["privacy/privleak"] == pytest.approx(0, abs=1e-9)
    assert trained["privacy/privleak"] < -50  # the forget rows still stand out: not unlearned
    assert trained["privacy/forget_exact_memorization"] > 0.9
    assert trained["privacy/holdout_exact_memorization"] < trained["privacy/forget_exact_memorization"] - 0.2
    assert trained["privacy/forget_extraction_strength"] > 0.9


def test_a_generation_length_left_unset_is_refused(tokenizer):
    """`max_new_tokens=None` is what the examples' parser gives when the flag is not set (the example resolves it); an
    evaluator never takes it for some default length."""
    from helpers import toy_eval_sets

    with pytest.raises(ValueError, match=r"settings.max_new_tokens is None: .*TOFUEvalSettings\(max_new_tokens=200\)"):
        TOFUEvaluator(tokenizer, toy_eval_sets(), settings=TOFUEvalSettings(max_new_tokens=None))
