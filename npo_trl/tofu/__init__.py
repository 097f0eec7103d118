"""TOFU (Maini et al. 2024) benchmark support: its data (hub, local folder, or an offline synthetic stand-in), its
metrics, and `TOFUCallback` for evaluation during training."""

from .callback import TOFUCallback
from .data import (
    TOFU_HUB_ID,
    idontknow_answers,
    load_idontknow,
    load_tofu,
    make_synthetic_tofu,
    to_prompt_completion,
    tofu_eval_sets,
    tofu_split_names,
)
from .evaluator import TOFUEvaluator
from .reference import compute_reference_stats, load_reference_stats

__all__ = [
    "TOFU_HUB_ID",
    "TOFUCallback",
    "TOFUEvaluator",
    "compute_reference_stats",
    "idontknow_answers",
    "load_idontknow",
    "load_reference_stats",
    "load_tofu",
    "make_synthetic_tofu",
    "to_prompt_completion",
    "tofu_eval_sets",
    "tofu_split_names",
]
