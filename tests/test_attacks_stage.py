"""npo_trl.attacks.stage: attack_stage evaluates each saved model once, writes robustness.json beside its folder, reads
it back on the next call, and recomputes a file whose metric keys differ."""

import json
import os

import pytest
from transformers import LlamaForCausalLM

from helpers import tiny_llama
from npo_trl.attacks.stage import ROBUSTNESS_FILE, attack_stage


class Timer:
    def __init__(self):
        self.seconds = {}


class FakeRobustness:
    """The interface attack_stage calls of a RobustnessEvaluator: `metric_names`, `finetuned_metrics`, `timer` and
    `evaluate(model)`, which counts its calls and returns a metric per name (the model's number of layers)."""

    def __init__(self, metric_names=("tofu/forget_prob", "attack/quantize4/tofu/forget_prob")):
        self.metric_names, self.finetuned_metrics, self.timer = tuple(metric_names), {"tofu/forget_prob": 0.9}, Timer()
        self.models = []

    def evaluate(self, model):
        assert isinstance(model, LlamaForCausalLM)
        self.models.append(model)
        self.timer.seconds = {"total": float(len(self.models))}
        layers = model.config.num_hidden_layers
        return {name: layers + len(self.models) / 10 for name in self.metric_names}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """method → seed → the final folder of a saved tiny model, as an unlearning stage leaves them (one layer for
    npo, two for simnpo)."""
    root = tmp_path_factory.mktemp("unlearn")
    folders = {}
    for method, layers in (("npo", 1), ("simnpo", 2)):
        for seed in (0, 1):
            path = root / method / f"seed{seed}" / "final"
            tiny_llama(32, seed=seed, hidden=16, layers=layers).save_pretrained(path)
            folders.setdefault(method, {})[seed] = str(path)
    return folders


def test_stage_evaluates_each_model_once_and_caches_its_result(models):
    robustness = FakeRobustness()
    results = attack_stage(robustness, models)
    assert len(robustness.models) == 4
    assert {method: list(runs) for method, runs in results.items()} == {"npo": [0, 1], "simnpo": [0, 1]}
    for count, (method, seed) in enumerate([("npo", 0), ("npo", 1), ("simnpo", 0), ("simnpo", 1)], start=1):
        layers = 1 if method == "npo" else 2
        result = results[method][seed]
        assert result == {"metrics": dict.fromkeys(robustness.metric_names, layers + count / 10),
                          "finetuned": {"tofu/forget_prob": 0.9}, "seconds": {"total": float(count)}}
        cache = os.path.join(os.path.dirname(models[method][seed]), ROBUSTNESS_FILE)
        with open(cache) as f:
            assert json.load(f) == result
    assert [model.config.num_hidden_layers for model in robustness.models] == [1, 1, 2, 2]

    # a second call reads the files back and evaluates nothing
    again = FakeRobustness()
    assert attack_stage(again, models) == results and again.models == []

    # other metric keys (other attacks or sets): recomputed, and the file rewritten
    other = FakeRobustness(["tofu/forget_prob", "attack/relearn2/tofu/forget_prob"])
    changed = attack_stage(other, {"npo": {0: models["npo"][0]}})
    assert len(other.models) == 1
    assert sorted(changed["npo"][0]["metrics"]) == sorted(other.metric_names)
    with open(os.path.join(os.path.dirname(models["npo"][0]), ROBUSTNESS_FILE)) as f:
        assert json.load(f) == changed["npo"][0]
    # the others still hold the first keys
    assert attack_stage(FakeRobustness(), {"npo": {1: models["npo"][1]}})["npo"][1] == results["npo"][1]
