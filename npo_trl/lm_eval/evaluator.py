"""`LMEvalEvaluator`: lm-evaluation-harness's metrics (e.g. WMDP's and MMLU's accuracy) of the in-memory model,
through lm-eval's own `HFLM` and `simple_evaluate`."""

import contextlib
import functools
import logging
import os
import random

import numpy as np
import torch

from ..eval.evaluator import Evaluator
from ..prompts import tokenizer_of
from .tasks import import_lm_eval, task_manager, task_name

DEFAULT_METRICS = ("acc", "acc_norm")
HIGHER_IS_BETTER = ("acc", "acc_norm", "exact_match", "f1", "mcc", "bleu")


class LMEvalEvaluator(Evaluator):
    r"""
    lm-evaluation-harness's metrics of a model: for each task of `tasks`, `lm_eval/<task>/<metric>` (e.g.
    `lm_eval/wmdp_bio/acc`, `lm_eval/mmlu/acc`), computed by `lm_eval.simple_evaluate` on lm-eval's `HFLM` wrapping the
    model in memory (no copy is saved or loaded). A metric a task does not report is `None` (e.g. `acc_norm` of the
    hub's WMDP tasks). lm-eval's seeds are set for its evaluation as it sets them, and the random states of `random`,
    NumPy and torch come back afterwards, so that a training run goes on as it would have.

    Several processes (DDP, DeepSpeed ZeRO-3, FSDP, under `accelerate launch`): every process evaluates every row of
    every task, in the same batches, so every process runs the same forward passes (ZeRO-3 and FSDP gather each
    layer's weights in them) and gets the same numbers; the work is not split. A group task (`mmlu`, `wmdp`) reports
    its aggregate under its own name. (lm-eval returns its results where `LOCAL_RANK` is 0 only; process 0's are sent
    to the others.)

    Parameters:
        tasks (`list[str | dict]`):
            lm-eval tasks: names from its registry (`"wmdp_bio"`, `"wmdp_cyber"`, `"mmlu"`; `lm-eval ls tasks` lists
            them), names of tasks in YAML files under `include_path`, or task config dicts (e.g.
            [`~npo_trl.lm_eval.multiple_choice_task`], or `npo_trl.wmdp.write_synthetic_wmdp(...).tasks`). Hub tasks
            download their data on first use.
        processing_class ([`~transformers.PreTrainedTokenizerBase`] or processor):
            The model's tokenizer.
        batch_size (`int`, *optional*, defaults to `8`):
            Requests per forward pass (lm-eval's `batch_size`; not `"auto"`, whose search would differ between
            processes).
        include_path (`str`, `list[str]` or `None`, *optional*):
            Folders of local task YAML files, whose tasks `tasks` may name.
        metrics (`tuple[str, ...]`, *optional*, defaults to `("acc", "acc_norm")`):
            The lm-eval metrics reported for each task; `"<metric>,<filter>"` names a filter other than `none` (e.g.
            `"exact_match,strict-match"`).
        num_fewshot (`int` or `None`, *optional*):
            Few-shot examples per question, over the tasks' own setting (lm-eval's `num_fewshot`).
        limit (`int`, `float` or `None`, *optional*):
            Evaluate only the first `limit` rows of each task (a fraction when below 1): for quick checks only.
        progress (`bool`, *optional*, defaults to `False`):
            Show lm-eval's progress bars and its log lines (`LMEvalCallback` follows the trainer's `disable_tqdm`).
    """

    name = "lm_eval"

    def __init__(self, tasks, processing_class, batch_size: int = 8, include_path=None,
                 metrics: tuple[str, ...] = DEFAULT_METRICS, num_fewshot: int | None = None, limit=None,
                 progress: bool = False):
        super().__init__(progress)
        if isinstance(tasks, (str, dict)):
            tasks = [tasks]
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: give a number of requests >= 1 (not 'auto': its search "
                             "would run other forward passes on each process).")
        if not metrics:
            raise ValueError("metrics is empty: name lm-eval metrics to report, e.g. ('acc', 'acc_norm').")
        self.tasks, self.task_names = list(tasks), [task_name(spec) for spec in tasks]
        duplicate = next((n for n in self.task_names if self.task_names.count(n) > 1), None)
        if duplicate is not None:
            raise ValueError(f"tasks names {duplicate!r} twice: give each task once.")
        self.task_manager = task_manager(self.tasks, include_path)
        self.processing_class, self.batch_size, self.metrics = processing_class, batch_size, tuple(metrics)
        self.num_fewshot, self.limit = num_fewshot, limit
        self.metric_names = tuple(f"lm_eval/{task}/{metric}" for task in self.task_names for metric in self.metrics)
        self.higher_is_better = tuple(key for key in self.metric_names
                                      if key.rsplit("/", 1)[1].split(",")[0] in HIGHER_IS_BETTER)
        self.results = None  # lm-eval's per-task results and row counts of the last evaluation

    def compute(self, model, ref_model, accelerator, synced_gpus) -> dict[str, float | None]:
        with self.timer("lm_eval"):
            results = self.run_lm_eval(model)
        if accelerator is not None and accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            results = broadcast_object_list([results], from_process=0)[0]
        if results is None:
            local_rank = os.environ.get("LOCAL_RANK")
            raise RuntimeError(f"lm-eval returned no results on this process (LOCAL_RANK={local_rank}), which has "
                               "no process group to receive process 0's: pass the accelerator of a distributed "
                               "run (under `accelerate launch` on CPUs, with --cpu).")
        self.results = results
        self.timer.count("rows", sum(results["n-samples"][task]["effective"] for task in results["n-samples"]))
        return metrics_of(results["results"], self.task_names, self.metrics)

    def run_lm_eval(self, model) -> dict | None:
        """lm-eval's evaluation of `model` (unwrapped, in eval mode), every row on this process: `{"results": ...,
        "n-samples": ...}` as `simple_evaluate` returns them, `None` on a process whose `LOCAL_RANK` is not 0 (lm-eval
        returns its results there only; `compute` sends process 0's to every process)."""
        lm_eval = import_lm_eval()
        with quiet(not self.progress), preserved_random_state():
            lm = quiet_hflm()(pretrained=model, tokenizer=tokenizer_of(self.processing_class),
                              batch_size=self.batch_size)
            lm.show_progress = self.progress
            output = lm_eval.simple_evaluate(lm, tasks=self.tasks, task_manager=self.task_manager,
                                             num_fewshot=self.num_fewshot, limit=self.limit, log_samples=False,
                                             bootstrap_iters=0)
        return None if output is None else {"results": output["results"], "n-samples": output["n-samples"]}


def metrics_of(results: dict, task_names: list[str], metrics: tuple[str, ...]) -> dict[str, float | None]:
    """`lm_eval/<task>/<metric>` for each task and metric from lm-eval's `results["results"]` (keyed
    `"<metric>,<filter>"`, the filter `none` unless named), `None` where the task has no such metric."""
    out = {}
    for task in task_names:
        row = results.get(task, {})
        for metric in metrics:
            value = row.get(metric if "," in metric else f"{metric},none")
            out[f"lm_eval/{task}/{metric}"] = float(value) if isinstance(value, (int, float)) else None
    return out


@functools.cache
def quiet_hflm():
    """lm-eval's `HFLM`, whose request loops show their progress bars only when its `show_progress` is set."""
    from lm_eval.models.huggingface import HFLM

    class QuietHFLM(HFLM):
        show_progress = False

        def loglikelihood(self, requests, disable_tqdm=False):
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm or not self.show_progress)

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm or not self.show_progress)

        def generate_until(self, requests, disable_tqdm=False):
            return super().generate_until(requests, disable_tqdm=disable_tqdm or not self.show_progress)

    return QuietHFLM


@contextlib.contextmanager
def quiet(enabled: bool = True):
    """lm-eval's log lines below errors, and the `datasets` progress bars, off for the duration (when `enabled`)."""
    import datasets

    logger = logging.getLogger("lm_eval")
    level, bars_were_off = logger.level, datasets.are_progress_bars_disabled()
    if enabled:
        logger.setLevel(logging.ERROR)
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        logger.setLevel(level)
        if enabled and not bars_were_off:
            datasets.enable_progress_bars()


@contextlib.contextmanager
def preserved_random_state():
    """The random states of `random`, NumPy, torch's CPU and this process's accelerator come back afterwards
    (`simple_evaluate` seeds them all)."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    device_type = torch.accelerator.current_accelerator().type if torch.accelerator.is_available() else "cuda"
    devices = [torch.accelerator.current_device_index()] if torch.accelerator.is_available() else []
    with torch.random.fork_rng(devices=devices, device_type=device_type):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
