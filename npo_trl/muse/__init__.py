"""MUSE (Shi et al. 2025) benchmark support: its data (hub, local folder, or an offline synthetic stand-in), its
formulas, its evaluator and its settings (`MUSEEvalSettings`), `MUSECallback` for evaluation during training, and the
scalability and sustainability runs. Names are imported on first use."""

from ..lazy import lazy_exports

_EXPORTS = {
    "MUSE_HUB_IDS": "data",
    "chunk_texts": "data",
    "load_muse": "data",
    "muse_eval_sets": "data",
    "make_synthetic_muse": "synthetic",
    "MUSECallback": "callback",
    "MUSEEvaluator": "evaluator",
    "MUSEEvalSettings": "settings",
    "compute_reference_stats": "evaluator",
    "scalability": "criteria",
    "sustainability": "criteria",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
