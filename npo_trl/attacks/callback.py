"""`RobustnessCallback`: a `RobustnessEvaluator` run at the end of training (and, optionally, every few steps)."""

from ..eval.callback import UnlearningEvalCallback
from .evaluator import RobustnessEvaluator


class RobustnessCallback(UnlearningEvalCallback):
    r"""
    Runs a [`RobustnessEvaluator`] on the trainer's model at the end of training, and every `eval_steps` optimizer
    steps or at each epoch's end when given: the benchmark's metrics and each attack's (`attack/<attack>/...`) go
    through `trainer.log` and into `output_dir/<benchmark>_robustness_metrics.jsonl`, as
    [`~npo_trl.eval.UnlearningEvalCallback`] does (it is one, without an evaluation before training). Each
    evaluation attacks a copy of the model (one at a time, freed after it); the model being trained is not changed.
    Under several processes, see `RobustnessEvaluator` (the main process runs the quantization attacks alone;
    relearning is refused).

    Parameters:
        evaluator ([`RobustnessEvaluator`]):
            The attacks and the benchmark's evaluator.
        eval_steps (`"epoch"`, `int` or `None`, *optional*, defaults to `None`):
            Also evaluate at the end of each epoch or every `eval_steps` optimizer steps; `None`: at the end of
            training only.
    """

    def __init__(self, evaluator: RobustnessEvaluator, eval_steps=None):
        if not isinstance(evaluator, RobustnessEvaluator):
            raise ValueError(f"RobustnessCallback needs a RobustnessEvaluator, got {type(evaluator).__name__}: wrap "
                             "the benchmark's evaluator, RobustnessEvaluator(evaluator, attacks).")
        super().__init__(evaluator, eval_steps=eval_steps, eval_on_start=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self._last is None or self._last[0] != state.global_step:  # not evaluated at this step already
            self.evaluate()
        super().on_train_end(args, state, control, **kwargs)
