"""The evaluation core every benchmark builds on: model passes (`scoring`), running them on every process
(`runner`), the membership-inference and memorization formulas (`privacy`), the `Evaluator` base class, the
`EvalSettings` base class and `UnlearningEvalCallback`. Benchmarks (`npo_trl.tofu`, ...) add their data, their
formulas, an `Evaluator` subclass and an `EvalSettings` subclass."""

from .callback import UnlearningEvalCallback
from .evaluator import Evaluator
from .runner import PassTimer
from .settings import EvalSettings

__all__ = ["EvalSettings", "Evaluator", "PassTimer", "UnlearningEvalCallback"]
