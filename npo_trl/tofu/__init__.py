"""TOFU (Maini et al. 2024) benchmark support: its data (hub, local folder, or an offline synthetic stand-in), its
formulas, its evaluator and its settings (`TOFUEvalSettings`), and `TOFUCallback` for evaluation during training.
Names are imported on first use."""

from ..lazy import lazy_exports

_EXPORTS = {
    "TOFU_HUB_ID": "data",
    "idontknow_answers": "data",
    "load_idontknow": "data",
    "load_tofu": "data",
    "make_synthetic_tofu": "synthetic",
    "to_prompt_completion": "data",
    "tofu_eval_sets": "data",
    "tofu_split_names": "data",
    "TOFUCallback": "callback",
    "TOFUEvaluator": "evaluator",
    "TOFUEvalSettings": "settings",
    "compute_reference_stats": "reference",
    "load_reference_stats": "reference",
    "evaluation_sets": "experiment_data",
    "fine_tune_rows": "experiment_data",
    "idk_answers": "experiment_data",
    "keep_authors": "experiment_data",
    "known_facts": "experiment_data",
    "load_splits": "experiment_data",
    "tokenizer_corpus": "experiment_data",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
