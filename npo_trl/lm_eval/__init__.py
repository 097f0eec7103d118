"""lm-evaluation-harness (EleutherAI's `lm-eval`, the optional extra `npo-trl[lm-eval]`) on the evaluation core: an
evaluator of the in-memory model on any task list (registry names such as `wmdp_bio` or `mmlu`, local task files,
task config dicts), `LMEvalCallback` for evaluation during training, and local four-choice task configs. Importing
this package imports nothing of lm-eval; names are imported on first use."""

from ..lazy import lazy_exports

_EXPORTS = {
    "LMEvalCallback": "callback",
    "LMEvalEvaluator": "evaluator",
    "import_lm_eval": "tasks",
    "multiple_choice_task": "tasks",
    "task_manager": "tasks",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
