"""The evaluation core every benchmark builds on: model passes (`scoring`), running them on every process
(`runner`), the membership-inference and memorization formulas (`privacy`), the `Evaluator` base class and
`UnlearningEvalCallback`. Benchmarks (`npo_trl.tofu`, ...) add their data, their formulas and an `Evaluator`
subclass."""

from .callback import UnlearningEvalCallback
from .evaluator import Evaluator
from .runner import PassTimer

__all__ = ["Evaluator", "PassTimer", "UnlearningEvalCallback"]
