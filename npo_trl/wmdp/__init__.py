"""WMDP (Li et al. 2024, arXiv 2403.03218) support: an offline stand-in in the hub datasets' schema (fictional
microbes to forget, fictional towns to keep) with its lm-eval tasks. The hub's WMDP and MMLU are lm-eval's own tasks
(`wmdp_bio`, `wmdp_cyber`, `mmlu`): evaluate them with `npo_trl.lm_eval.LMEvalEvaluator`. Names are imported on first
use."""

from ..lazy import lazy_exports

_EXPORTS = {
    "FORGET_TASK": "synthetic",
    "GENERAL_TASK": "synthetic",
    "SyntheticWMDP": "synthetic",
    "accuracy_keys": "report",
    "format_table": "report",
    "summarize": "report",
    "make_synthetic_wmdp": "synthetic",
    "qa_text": "synthetic",
    "write_report": "report",
    "write_synthetic_wmdp": "synthetic",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
