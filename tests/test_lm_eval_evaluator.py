"""LMEvalEvaluator on the local tasks of the WMDP stand-in: 1.0 for a model that learned the answers, about chance for
a random one, lm-eval's numbers equal to an independent count of argmax choices, the same numbers from the task files
and the task dicts, the random states kept, and bad input (unknown task, lm-eval missing, bad arguments)."""

import json
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import ROOT, tiny_llama
from lm_eval_helpers import argmax_accuracy, memorising_model, small_standin, standin_tokenizer
from npo_trl.lm_eval import LMEvalEvaluator, multiple_choice_task

KEYS = [f"lm_eval/{task}/{metric}" for task in ("wmdp_synthetic", "mmlu_synthetic") for metric in ("acc", "acc_norm")]


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    return small_standin(tmp_path_factory.mktemp("wmdp"))


@pytest.fixture(scope="module")
def tokenizer(standin):
    return standin_tokenizer(standin)


def test_a_model_that_learned_the_answers_scores_one(standin, tokenizer):
    evaluator = LMEvalEvaluator(standin.tasks, tokenizer, batch_size=16)
    assert evaluator.metric_names == tuple(KEYS) and set(evaluator.higher_is_better) == set(KEYS)
    model = memorising_model(standin, tokenizer)
    model.train()
    metrics = evaluator.evaluate(model)
    assert metrics == {key: 1.0 for key in KEYS}
    assert model.training  # its mode comes back
    assert evaluator.results["n-samples"]["wmdp_synthetic"]["effective"] == 32
    assert evaluator.timer.counts["rows"] == 64 and evaluator.timer.seconds["lm_eval"] > 0


def test_a_random_model_scores_about_chance(tmp_path, tokenizer):
    """400 questions (100 microbes and 100 towns, 4 each) whose answer and distractors are drawn at random: a random
    model's accuracy is about binomial, its standard deviation sqrt(0.25 * 0.75 / 400) = 0.022, so 0.25 ± 0.08 (3.7
    standard deviations) holds for any model that has learned nothing. Each task (200 questions, sd 0.031) within
    0.12."""
    standin = small_standin(tmp_path, num_forget=100, num_retain=100, seed=1)
    metrics = LMEvalEvaluator(standin.tasks, tokenizer, batch_size=32, metrics=("acc",)).evaluate(
        tiny_llama(len(tokenizer), seed=3))
    accs = [metrics["lm_eval/wmdp_synthetic/acc"], metrics["lm_eval/mmlu_synthetic/acc"]]
    assert abs(np.mean(accs) - 0.25) < 0.08 and all(abs(acc - 0.25) < 0.12 for acc in accs), accs


def test_the_numbers_equal_a_direct_count_of_argmax_choices(standin, tokenizer):
    """A model part-way through learning the answers (neither all right nor chance), scored by lm-eval and counted
    here (lm_eval_helpers.argmax_accuracy), with a batch size that pads."""
    model = memorising_model(standin, tokenizer, steps=30)
    metrics = LMEvalEvaluator(standin.tasks, tokenizer, batch_size=5).evaluate(model)
    for task, data in (("wmdp_synthetic", "wmdp"), ("mmlu_synthetic", "mmlu")):
        acc, acc_norm = argmax_accuracy(model, tokenizer, standin.datasets[data])
        assert metrics[f"lm_eval/{task}/acc"] == pytest.approx(acc)
        assert metrics[f"lm_eval/{task}/acc_norm"] == pytest.approx(acc_norm)
    assert 0.3 < np.mean([metrics[key] for key in KEYS]) < 1.0, metrics  # something to count


def test_task_files_dicts_and_limit(standin, tokenizer):
    """The task files under include_path give the dicts' numbers; a metric a task lacks is None; limit counts rows."""
    model = tiny_llama(len(tokenizer), seed=1)
    from_dicts = LMEvalEvaluator(standin.tasks, tokenizer).evaluate(model)
    from_files = LMEvalEvaluator(standin.task_names, tokenizer, include_path=standin.include_path)
    assert from_files.evaluate(model) == from_dicts
    only_acc = {**multiple_choice_task("forget_only", f"{standin.directory}/wmdp.jsonl"),
                "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}
    limited = LMEvalEvaluator([only_acc], tokenizer, limit=10)
    assert limited.evaluate(model)["lm_eval/forget_only/acc_norm"] is None
    assert limited.results["n-samples"]["forget_only"]["effective"] == 10


def test_random_states_come_back(standin, tokenizer):
    """simple_evaluate seeds random, NumPy and torch: a training run evaluated on the way goes on as it would."""
    evaluator = LMEvalEvaluator(standin.tasks[:1], tokenizer, limit=2)
    model = tiny_llama(len(tokenizer))
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    expected = random.random(), np.random.rand(), torch.rand(1).item()
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    evaluator.evaluate(model)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_unknown_task_and_bad_arguments_are_refused(standin, tokenizer, tmp_path):
    with pytest.raises(ValueError, match=r"no task 'no_such_task' among its own tasks or in include_path.*"
                                         r"`lm-eval ls tasks`.*include_path.*task config dict"):
        LMEvalEvaluator([*standin.tasks, "no_such_task"], tokenizer, include_path=str(tmp_path))
    with pytest.raises(ValueError, match=r"include_path=.*is not a folder"):
        LMEvalEvaluator(["wmdp_synthetic"], tokenizer, include_path=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"needs a 'task' name"):
        LMEvalEvaluator([{"dataset_path": "json"}], tokenizer)
    with pytest.raises(ValueError, match=r"tasks is empty"):
        LMEvalEvaluator([], tokenizer)
    with pytest.raises(ValueError, match=r"batch_size='auto'.*not 'auto'"):
        LMEvalEvaluator(standin.tasks, tokenizer, batch_size="auto")
    with pytest.raises(ValueError, match=r"names 'wmdp_synthetic' twice"):
        LMEvalEvaluator(standin.tasks[:1] * 2, tokenizer)
    with pytest.raises(ValueError, match=r"metric_for_best_model='lm_eval/mmlu/acc' is not a lm_eval metric"):
        LMEvalEvaluator(standin.tasks, tokenizer).check_metric("lm_eval/mmlu/acc", False)


def test_lm_eval_missing_raises_naming_the_extra(standin, tokenizer, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` now fails, as when it is not installed
    with pytest.raises(ImportError, match=r"pip install 'npo-trl\[lm-eval\]'"):
        LMEvalEvaluator(standin.tasks, tokenizer)


def test_importing_the_packages_imports_neither_lm_eval_nor_torch():
    code = ("import sys, json, npo_trl.lm_eval as lm, npo_trl.wmdp as wmdp; "
            "assert 'LMEvalEvaluator' in dir(lm) and 'write_synthetic_wmdp' in dir(wmdp); "
            "lm.multiple_choice_task; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('lm_eval', 'torch', 'datasets'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert json.loads(out.splitlines()[-1]) == []
