"""`Evaluator`: what every benchmark's evaluator shares — the model prepared once for evaluation on every process, the
time of its passes, and the checks that decide whether a metric can select the best checkpoint."""

import time

import torch

from .runner import PassTimer, evaluation_model


class Evaluator:
    r"""
    Base of a benchmark's evaluator: its metrics of a model, the same on every process.

    A subclass sets `name` (the prefix of its metric keys, e.g. `"tofu"`, and of its callback's JSONL file),
    `metric_names` (every key `evaluate` returns, `None` where an input is missing), `higher_is_better` and
    `lower_is_better` (the keys whose larger, or smaller, values are better), and implements `compute`;
    `check_metric` may refuse a best-model metric that its inputs cannot give. `timer`
    ([`~npo_trl.eval.runner.PassTimer`]) holds the seconds of the last evaluation's passes (`"total"` included) and its
    counts; `progress` shows a progress bar over the batches.
    """

    name = "eval"
    metric_names: tuple[str, ...] = ()
    higher_is_better: tuple[str, ...] = ()
    lower_is_better: tuple[str, ...] = ()

    def __init__(self, progress: bool = False):
        self.timer, self.progress = PassTimer(), progress

    @torch.no_grad()
    def evaluate(self, model, ref_model=None, accelerator=None, gradient_checkpointing_kwargs=None
                 ) -> dict[str, float | None]:
        """All metrics of `model`, the same on every process.

        `ref_model` (the model before unlearning, or any callable model) adds the metrics that compare with it. With
        `accelerator`, `model` may be wrapped (DDP, DeepSpeed): each process scores its shard of the rows, with
        `synced_gpus` generation under ZeRO-3. The model runs in eval mode and gets its train/eval mode back.
        """
        self.timer.reset()
        start = time.perf_counter()
        with evaluation_model(model, accelerator, gradient_checkpointing_kwargs) as (unwrapped, synced_gpus):
            metrics = self.compute(unwrapped, ref_model, accelerator, synced_gpus)
        self.timer.seconds["total"] = time.perf_counter() - start
        return metrics

    def compute(self, model, ref_model, accelerator, synced_gpus: bool) -> dict[str, float | None]:
        """The metrics of an unwrapped model in eval mode (see `evaluate`)."""
        raise NotImplementedError

    def check_metric(self, metric: str, has_reference_model: bool) -> None:
        """Raise a ValueError naming the fix if `metric` cannot select the best checkpoint with these inputs."""
        if metric not in self.metric_names:
            raise ValueError(f"metric_for_best_model={metric!r} is not a {self.name} metric: use one of "
                             f"{list(self.metric_names)}.")
