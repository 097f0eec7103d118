"""Is it really forgotten? Attacks on an unlearned model, as someone holding its weights could run them: relearning
on part of the forget set (`relearn`) and loading it in 8 or 4 bits (`quantize`); the recovery of each forget metric
(`metrics`); `RobustnessEvaluator`, which scores a benchmark's metrics after each attack, and `RobustnessCallback`,
which runs it at the end of training. Names are imported on first use."""

from ..lazy import lazy_exports

_EXPORTS = {
    "QuantizeAttack": "quantize",
    "quantization_config": "quantize",
    "quantized_copy": "quantize",
    "RelearnAttack": "relearn",
    "relearn_copy": "relearn",
    "split_forget_rows": "relearn",
    "is_forget_metric": "metrics",
    "recoveries": "metrics",
    "recovery": "metrics",
    "RobustnessEvaluator": "evaluator",
    "RobustnessCallback": "callback",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
