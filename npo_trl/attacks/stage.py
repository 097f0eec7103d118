"""The attack stage of a staged run (`npo_trl.stages`): every unlearned model's robustness metrics, each saved beside
its model and skipped when done, as examples/tofu.py and examples/muse.py run it."""

import json
import os

ROBUSTNESS_FILE = "robustness.json"


def attack_stage(robustness, models: dict[str, dict], model_args=None, device=None) -> dict[str, dict]:
    """`robustness` (a `RobustnessEvaluator`) on each model of `models` (method → seed → a saved model's folder, loaded
    with `model_args` by `npo_trl.models.load_model`, LoRA adapters merged into their base), one model in memory at a
    time, on this process alone. Each result, `{"metrics": ..., "finetuned": the fine-tuned model's metrics
    (recovery's reference), "seconds": ...}`, is written to `robustness.json` in the model folder's parent (e.g.
    `unlearn/npo/seed0/` for `unlearn/npo/seed0/final`) and read back instead of recomputed when it holds the same
    metric keys (the same attacks and sets). Returns method → seed → result."""
    return {method: {seed: _attacked(robustness, path, model_args, device) for seed, path in runs.items()}
            for method, runs in models.items()}


def _attacked(robustness, path: str, model_args, device) -> dict:
    from ..models import load_model

    cache = os.path.join(os.path.dirname(os.path.normpath(path)), ROBUSTNESS_FILE)
    if os.path.exists(cache):
        with open(cache) as f:
            result = json.load(f)
        if sorted(result.get("metrics", {})) == sorted(robustness.metric_names):
            return result
    metrics = robustness.evaluate(load_model(path, model_args, device, merge_adapters=True))
    result = {"metrics": metrics, "finetuned": robustness.finetuned_metrics, "seconds": dict(robustness.timer.seconds)}
    with open(cache, "w") as f:
        json.dump(result, f, indent=1)
    return result
