"""`UnlearningEvalCallback`: a benchmark's metrics during training, logged like the trainer's own and usable to pick
the best checkpoint; every benchmark's callback (e.g. `npo_trl.tofu.TOFUCallback`) is one with its evaluator."""

import json
import os
import time

from accelerate.utils import is_peft_model
from transformers import TrainerCallback

from ..models import reference_adapter
from .runner import eval_mode


class _AdaptersDisabled:
    """π_ref of a PEFT model trained without `ref_model`, as a callable model (see `npo_trl.models`)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, **kwargs):
        with reference_adapter(self.model):
            return self.model(**kwargs)


class UnlearningEvalCallback(TrainerCallback):
    r"""
    Evaluates an [`~npo_trl.eval.Evaluator`] before training and at each evaluation point, on every process (each
    scores a shard of the rows; DDP and DeepSpeed ZeRO-3 work).

    The metrics go through `trainer.log` (so `report_to` and `trainer.state.log_history` carry them), and the main
    process appends them, with `step`, `epoch` and the evaluation's timing (`eval_timing`: seconds per kind of pass
    and in all, counts such as generated tokens, and the wall-clock time it ended), to
    `output_dir/<evaluator.name>_metrics.jsonl` (`null` for a metric that cannot be computed). Metrics that compare
    with the reference model use the trainer's (`ref_model`, or a PEFT model's base with adapters off).

    Evaluation points: before training (`eval_on_start`), at `eval_steps`, and whenever the trainer evaluates. When the
    trainer can evaluate (it has an `eval_dataset`), the callback asks it to (`control.should_evaluate`) and adds its
    metrics to the trainer's evaluation metrics as `eval_<name>/...`, so the trainer's best-model bookkeeping sees
    them (`metric_for_best_model="<name>/..."`, checked before the first step). `eval_strategy`, `save_strategy` and
    `eval_steps` should name the same points. Without an `eval_dataset`, leave `eval_strategy="no"`: the callback then
    evaluates on its own at `eval_steps` (no best-model selection). List it before an `EarlyStoppingCallback` that
    reads its metric. NPOTrainer binds the callback to itself; with another trainer call `callback.bind(trainer)`
    before `train()`. A progress bar follows the trainer's `disable_tqdm`.

    Parameters:
        evaluator ([`~npo_trl.eval.Evaluator`]):
            The benchmark's evaluator, e.g. [`~npo_trl.tofu.TOFUEvaluator`].
        eval_steps (`"epoch"`, `int` or `None`, *optional*, defaults to `"epoch"`):
            Evaluate at the end of each epoch, every `eval_steps` optimizer steps, or (`None`) only when the trainer
            evaluates.
        eval_on_start (`bool`, *optional*, defaults to `True`):
            Evaluate at the start of training (step 0).
    """

    def __init__(self, evaluator, eval_steps="epoch", eval_on_start=True):
        if not (eval_steps is None or eval_steps == "epoch"
                or (isinstance(eval_steps, int) and not isinstance(eval_steps, bool) and eval_steps >= 1)):
            raise ValueError(f"eval_steps={eval_steps!r}: use 'epoch', a number of steps >= 1, or None.")
        self.evaluator, self.eval_steps, self.eval_on_start = evaluator, eval_steps, eval_on_start
        self.jsonl_name = f"{evaluator.name}_metrics.jsonl"
        self.trainer = None
        self._training = False
        self._last = None  # (global_step, metrics) of the last evaluation during training

    def bind(self, trainer):
        """Attach the trainer whose model, reference model, accelerator and log this callback uses."""
        self.trainer = trainer

    # ---------------------------------------------------------------- events
    def on_train_begin(self, args, state, control, **kwargs):
        self._check(args)
        self._training, self._last = True, None
        if self.eval_on_start:
            self.evaluate()

    def on_step_end(self, args, state, control, **kwargs):
        if isinstance(self.eval_steps, int) and state.global_step % self.eval_steps == 0:
            self._evaluation_point(control)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.eval_steps == "epoch":
            self._evaluation_point(control)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        """The trainer evaluated: add this callback's metrics to its metrics (as `eval_<name>/...`) for best-model
        selection."""
        ours = self.evaluate()
        if metrics is not None:
            metrics.update({f"eval_{key}": value for key, value in ours.items() if value is not None})

    def on_train_end(self, args, state, control, **kwargs):
        self._training, self._last = False, None

    def _evaluation_point(self, control):
        if self._trainer_evaluates():
            control.should_evaluate = True  # the trainer evaluates after this event; `on_evaluate` adds our metrics
        else:
            self.evaluate()

    def _trainer_evaluates(self) -> bool:
        """Whether `trainer.evaluate()` can run (transformers' Trainer needs an eval_dataset)."""
        return self.trainer.eval_dataset is not None

    # ---------------------------------------------------------------- evaluation
    def evaluate(self) -> dict[str, float | None]:
        """Evaluates the trainer's model now (on every process), logs the metrics and appends them to the JSONL.

        During training, a second call at the same step (e.g. one per eval_dataset) returns the first one's metrics.
        """
        if self.trainer is None:
            raise ValueError(f"{type(self).__name__} is not bound to a trainer: NPOTrainer binds it; with another "
                             "Trainer call `callback.bind(trainer)` first.")
        trainer, state = self.trainer, self.trainer.state
        if self._training and self._last is not None and self._last[0] == state.global_step:
            return self._last[1]
        self.evaluator.progress = state.is_world_process_zero and not trainer.args.disable_tqdm
        # eval mode also makes the log below an eval-mode one: DPOTrainer.log keeps its train metrics
        with eval_mode(trainer.model):
            metrics = self.evaluator.evaluate(trainer.model_wrapped, self._reference_model(), trainer.accelerator,
                                              trainer.args.gradient_checkpointing_kwargs)
            should_log = trainer.control.should_log  # `trainer.log` clears it: keep the trainer's own log of this step
            trainer.log({key: value for key, value in metrics.items() if value is not None})
            trainer.control.should_log = should_log
        if state.is_world_process_zero:
            os.makedirs(trainer.args.output_dir, exist_ok=True)
            with open(os.path.join(trainer.args.output_dir, self.jsonl_name), "a") as f:
                f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **metrics,
                                    "eval_timing": {**self.evaluator.timer.summary(), "end": time.time()}}) + "\n")
        if self._training:
            self._last = (state.global_step, metrics)
        return metrics

    def _reference_model(self):
        """π_ref for the metrics that compare with it: the trainer's reference model or a PEFT model's base (adapters
        off, as NPOTrainer computes it); None otherwise."""
        if getattr(self.trainer, "ref_model", None) is not None:
            return self.trainer.ref_model
        model = self.trainer.accelerator.unwrap_model(self.trainer.model_wrapped)
        return _AdaptersDisabled(model) if is_peft_model(model) else None

    def _check(self, args):
        """Refuse, before any training step, a setup that would fail or mislead at the first evaluation."""
        if self.trainer is None:
            raise ValueError(f"{type(self).__name__} is not bound to a trainer: NPOTrainer binds it; with another "
                             "Trainer call `callback.bind(trainer)` before `train()`.")
        metric = (args.metric_for_best_model or "").removeprefix("eval_")
        if not (metric.startswith(f"{self.evaluator.name}/") or metric in self.evaluator.metric_names):
            return
        self.evaluator.check_metric(metric, has_reference_model=self._reference_model() is not None)
        if metric in self.evaluator.higher_is_better and not args.greater_is_better:
            raise ValueError(f"{metric} is better when higher: set greater_is_better=True.")
        if metric in self.evaluator.lower_is_better and args.greater_is_better:
            raise ValueError(f"{metric} is better when lower: set greater_is_better=False.")
        if args.eval_strategy == "no" or not self._trainer_evaluates():
            raise ValueError(f"metric_for_best_model={metric!r} is read from the Trainer's evaluations: set "
                             "eval_strategy (and save_strategy) to the evaluation points, with an eval_dataset.")
