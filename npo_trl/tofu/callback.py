"""`TOFUCallback`: TOFU's metrics during training, logged like the trainer's own and usable to pick the best model."""

import json
import os

from accelerate.utils import is_peft_model
from transformers import TrainerCallback
from trl.trainer.utils import use_adapter

from .evaluator import TOFUEvaluator
from .metrics import METRICS, UTILITY_SETS

JSONL_NAME = "tofu_metrics.jsonl"


class _AdaptersDisabled:
    """π_ref of a PEFT model trained without `ref_model`: its base model, adapters off (or its "ref" adapter on), as
    NPOTrainer computes it."""

    def __init__(self, model):
        self.model = model

    def __call__(self, **kwargs):
        with use_adapter(self.model, adapter_name="ref" if "ref" in self.model.peft_config else None):
            return self.model(**kwargs)


class TOFUCallback(TrainerCallback):
    r"""
    Evaluates TOFU's forget quality, model utility and their components before training and at each evaluation
    point, on every process (each scores a shard of the rows; DDP and DeepSpeed ZeRO-3 work).

    The metrics (`tofu/forget_quality`, `tofu/model_utility`, `tofu/forget_prob`, `tofu/forget_rouge`,
    `tofu/forget_truth_ratio`, `tofu/forget_kl`, `tofu/retain_prob`, ..., `tofu/world_facts_truth_ratio`) go through
    `trainer.log` (so `report_to` and `trainer.state.log_history` carry them), and the main process appends them, with
    `step` and `epoch`, to `output_dir/tofu_metrics.jsonl` (`null` for a metric that cannot be computed). The KL to
    the reference model is reported when the trainer has one (`ref_model`, or a PEFT model's base with adapters off).

    Evaluation points: before training (`eval_on_start`), at `eval_steps`, and whenever the trainer evaluates. When the
    trainer can evaluate (it has an `eval_dataset`), the callback asks it to (`control.should_evaluate`) and adds its
    metrics to the trainer's evaluation metrics as `eval_tofu/...`, so the trainer's best-model bookkeeping sees them.
    To keep the checkpoint with the best forget quality:

    ```python
    >>> args = NPOConfig(..., eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
    ...                  metric_for_best_model="tofu/forget_quality", greater_is_better=True)
    >>> stats = compute_reference_stats(retain_model, tokenizer, eval_sets["forget"], cache_path="retain_stats.json")
    >>> trainer = NPOTrainer(model, args=args, train_dataset=forget, eval_dataset=forget, processing_class=tokenizer,
    ...                      callbacks=[TOFUCallback(tokenizer, eval_sets, reference_stats=stats)])
    ```

    `eval_strategy`, `save_strategy` and `eval_steps` should name the same points (every checkpoint then has its
    metrics). Without an `eval_dataset`, leave `eval_strategy="no"`: the callback then evaluates on its own at
    `eval_steps` (no best-model selection). List it before an `EarlyStoppingCallback` that reads a TOFU metric.
    NPOTrainer binds the callback to itself; with another trainer call `callback.bind(trainer)` before `train()`.

    Parameters:
        processing_class ([`~transformers.PreTrainedTokenizerBase`]):
            The trainer's tokenizer.
        eval_sets (`dict[str, Dataset | list[dict]]`):
            TOFU evaluation sets by name among `"forget"`, `"retain"`, `"real_authors"`, `"world_facts"`, e.g.
            `npo_trl.tofu.tofu_eval_sets(source, "forget10")`. See [`~npo_trl.tofu.TOFUEvaluator`].
        reference_stats (`dict`, `str` or `None`, *optional*):
            The retain model's statistics from [`~npo_trl.tofu.compute_reference_stats`], or a file
            [`~npo_trl.tofu.load_reference_stats`] reads (ours, open-unlearning's `TOFU_EVAL.json`, TOFU's
            `eval_log_forget.json`). Without them `tofu/forget_quality` is not computed (`null` in the JSONL).
        eval_steps (`"epoch"`, `int` or `None`, *optional*, defaults to `"epoch"`):
            Evaluate at the end of each epoch, every `eval_steps` optimizer steps, or (`None`) only when the trainer
            evaluates.
        eval_on_start (`bool`, *optional*, defaults to `True`):
            Evaluate at the start of training (step 0).
        **evaluator_kwargs:
            The evaluation's settings, as [`~npo_trl.tofu.TOFUEvaluator`] takes them: `max_samples` (default every
            row), `seed`, `batch_size`, `generation_batch_size`, `max_new_tokens`, `prompt_format` (the format the
            training rows were made with, e.g. `"plain"`, `"llama3_instruct"`), `prompt_template`,
            `completion_template`, `token_boundary` and `mask_pad_tokens`.
    """

    def __init__(self, processing_class, eval_sets, reference_stats=None, eval_steps="epoch", eval_on_start=True,
                 **evaluator_kwargs):
        if not (eval_steps is None or eval_steps == "epoch"
                or (isinstance(eval_steps, int) and not isinstance(eval_steps, bool) and eval_steps >= 1)):
            raise ValueError(f"eval_steps={eval_steps!r}: use 'epoch', a number of steps >= 1, or None.")
        self.evaluator = TOFUEvaluator(processing_class, eval_sets, reference_stats, **evaluator_kwargs)
        self.eval_steps, self.eval_on_start = eval_steps, eval_on_start
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
        """The trainer evaluated: add TOFU's metrics to its metrics (as `eval_tofu/...`) for best-model selection."""
        tofu = self.evaluate()
        if metrics is not None:
            metrics.update({f"eval_{key}": value for key, value in tofu.items() if value is not None})

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
            raise ValueError("TOFUCallback is not bound to a trainer: NPOTrainer binds it; with another Trainer call "
                             "`callback.bind(trainer)` first.")
        trainer, state = self.trainer, self.trainer.state
        if self._training and self._last is not None and self._last[0] == state.global_step:
            return self._last[1]
        was_training = trainer.model.training
        trainer.model.eval()  # also makes the log below an eval-mode one: DPOTrainer.log keeps its train metrics
        try:
            metrics = self.evaluator.evaluate(trainer.model_wrapped, self._reference_model(), trainer.accelerator,
                                              trainer.args.gradient_checkpointing_kwargs)
            should_log = trainer.control.should_log  # `trainer.log` clears it: keep the trainer's own log of this step
            trainer.log({key: value for key, value in metrics.items() if value is not None})
            trainer.control.should_log = should_log
        finally:
            trainer.model.train(was_training)
        if state.is_world_process_zero:
            os.makedirs(trainer.args.output_dir, exist_ok=True)
            with open(os.path.join(trainer.args.output_dir, JSONL_NAME), "a") as f:
                f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **metrics}) + "\n")
        if self._training:
            self._last = (state.global_step, metrics)
        return metrics

    def _reference_model(self):
        """π_ref for the forget-set KL: the trainer's reference model or a PEFT model's base; None otherwise."""
        if getattr(self.trainer, "ref_model", None) is not None:
            return self.trainer.ref_model
        model = self.trainer.accelerator.unwrap_model(self.trainer.model_wrapped)
        return _AdaptersDisabled(model) if is_peft_model(model) else None

    def _check(self, args):
        """Refuse, before any training step, a setup that would fail or mislead at the first evaluation."""
        if self.trainer is None:
            raise ValueError("TOFUCallback is not bound to a trainer: NPOTrainer binds it; with another Trainer call "
                             "`callback.bind(trainer)` before `train()`.")
        metric = (args.metric_for_best_model or "").removeprefix("eval_")
        if not metric.startswith("tofu/"):
            return
        if metric not in METRICS:
            raise ValueError(f"metric_for_best_model={args.metric_for_best_model!r} is not a TOFU metric: use one "
                             f"of {list(METRICS)}.")
        if metric == "tofu/forget_quality" and self.evaluator.reference_stats is None:
            raise ValueError("metric_for_best_model='tofu/forget_quality' needs the retain model's statistics: pass "
                             "TOFUCallback(reference_stats=compute_reference_stats(retain_model, tokenizer, forget)).")
        if metric == "tofu/model_utility" and not set(UTILITY_SETS) <= set(self.evaluator.sets):
            raise ValueError(f"metric_for_best_model='tofu/model_utility' needs the eval sets {list(UTILITY_SETS)}.")
        if metric == "tofu/forget_kl" and self._reference_model() is None:
            raise ValueError("metric_for_best_model='tofu/forget_kl' needs a reference model (ref_model or PEFT).")
        if metric in ("tofu/forget_quality", "tofu/model_utility") and not args.greater_is_better:
            raise ValueError(f"{metric} is better when higher: set greater_is_better=True.")
        if args.eval_strategy == "no" or not self._trainer_evaluates():
            raise ValueError(f"metric_for_best_model={metric!r} is read from the Trainer's evaluations: set "
                             "eval_strategy (and save_strategy) to the evaluation points, with an eval_dataset.")

