"""`RobustnessEvaluator`: a benchmark's metrics of a model and of copies of it under attacks (relearning,
quantization), with how much of what unlearning removed each attack brings back."""

import contextlib
import gc
import shutil
import tempfile
import time

import torch

from ..eval.evaluator import Evaluator
from ..eval.runner import evaluation_model
from .metrics import is_forget_metric, recoveries


class RobustnessEvaluator(Evaluator):
    r"""
    Wraps a benchmark's [`~npo_trl.eval.Evaluator`] (e.g. [`~npo_trl.tofu.TOFUEvaluator`],
    [`~npo_trl.muse.MUSEEvaluator`]): `evaluate(model)` returns the wrapped evaluator's metrics of `model`, and for
    each attack the metrics of an attacked copy as `attack/<attack>/<key>` and, for each forget metric
    (`npo_trl.attacks.metrics.is_forget_metric`), its recovery as `attack/<attack>/recovery/<key>`:
    (attacked − unlearned) / (fine-tuned − unlearned), 0 when nothing comes back, 1 when all does (None without
    `finetuned_metrics`, or where unlearning did not move the metric). The attacked copies are scored without a
    reference model, so the metrics that compare with it (e.g. `tofu/forget_kl`) are None.

    The input model is never changed; one attacked copy exists at a time, freed after its evaluation. `timer.seconds`
    holds the plain evaluation's seconds (`"plain"`), each attack's (`"attack/<attack>"`) and its evaluation's
    (`"attack/<attack>/evaluate"`), each baseline's attack and evaluation (`"attack/<attack>/<baseline>"`, at the
    first evaluation only), and `"total"`. Its `name` is `<benchmark>_robustness`, so that
    `UnlearningEvalCallback(RobustnessEvaluator(...))` writes `<benchmark>_robustness_metrics.jsonl` beside the
    benchmark callback's file.

    Several processes (an `accelerator` with more than one): every process takes part in the plain evaluation; then
    the model's whole weights are gathered (under ZeRO-3) and the main process saves them to a temporary folder,
    loads each attacked copy from it and evaluates it alone, while the other processes wait; the attack metrics are
    then sent to every process. Quantization runs so; relearning, which trains with a trainer of its own, is refused
    there (run it on one process, on the saved model).

    Parameters:
        evaluator ([`~npo_trl.eval.Evaluator`]):
            The benchmark's evaluator.
        attacks (`list` or `dict`):
            The attacks, each a callable that takes a model (or a saved model's folder) and returns an attacked copy
            (`QuantizeAttack(8)`, `QuantizeAttack(4)`, `RelearnAttack(...)`), with a `name`; or a dict from name to
            such a callable.
        finetuned_metrics (`dict` or `None`, *optional*):
            The attack evaluator's metrics of the fine-tuned model (before unlearning), which recovery is relative
            to; without them the recovery keys are None.
        attack_evaluator ([`~npo_trl.eval.Evaluator`] or `None`, *optional*):
            The evaluator of the attacked copies, e.g. the benchmark's evaluator on the forget-side sets only (what
            recovery is about; cheaper), on forget rows that a relearning attack does not relearn
            (`split_forget_rows`). Default: `evaluator`. When given, it also scores the model itself, as
            `attack/none/<key>`: the unlearned values that recovery starts from.
        baselines (`dict` or `None`, *optional*):
            Models under the same attacks, by name, each a model or a saved model's folder, reported as
            `attack/<attack>/<baseline>/<key>`: the retain model (never trained on the forget set: relearning teaches
            it too, so an attack leaks only where the unlearned model recovers more) and the fine-tuned model, e.g.
            `{"retain": retain_dir, "finetuned": finetuned_dir}`. They do not change during training: each is
            attacked and scored once, at the first evaluation, and its metrics are reused.
        progress (`bool`, *optional*, defaults to `False`):
            Show progress bars over the batches.
    """

    def __init__(self, evaluator: Evaluator, attacks, finetuned_metrics: dict | None = None,
                 attack_evaluator: Evaluator | None = None, baselines: dict | None = None, progress: bool = False):
        super().__init__(progress)
        attacks = dict(attacks) if isinstance(attacks, dict) else {attack.name: attack for attack in attacks}
        if not attacks:
            raise ValueError("attacks is empty: give at least one, e.g. [QuantizeAttack(4)].")
        self.evaluator, self.attacks, self.finetuned_metrics = evaluator, attacks, finetuned_metrics
        self.attack_evaluator = attack_evaluator or evaluator
        if "none" in attacks:
            raise ValueError("An attack is named 'none', the name of the unattacked model's keys: rename it.")
        self.baselines, self._baseline_metrics = dict(baselines or {}), None
        if "recovery" in self.baselines:
            raise ValueError("A baseline is named 'recovery', the name of the recovery keys: rename it.")
        self.name = f"{evaluator.name}_robustness"
        attacked_keys = self.attack_evaluator.metric_names
        names = [f"attack/none/{key}" for key in attacked_keys] if self.attack_evaluator is not evaluator else []
        for attack in attacks:
            names += [f"attack/{attack}/{key}" for key in attacked_keys]
            names += [f"attack/{attack}/recovery/{key}" for key in attacked_keys if is_forget_metric(key)]
            names += [f"attack/{attack}/{baseline}/{key}" for baseline in self.baselines for key in attacked_keys]
        self.metric_names = tuple(evaluator.metric_names) + tuple(names)
        self.higher_is_better, self.lower_is_better = evaluator.higher_is_better, evaluator.lower_is_better

    def check_metric(self, metric: str, has_reference_model: bool) -> None:
        if metric.startswith("attack/"):
            raise ValueError(f"metric_for_best_model={metric!r}: an attack's metric costs an attack at every "
                             "evaluation and is not ordered by greater_is_better; select by a benchmark metric.")
        self.evaluator.check_metric(metric, has_reference_model)

    def evaluate(self, model, ref_model=None, accelerator=None, gradient_checkpointing_kwargs=None
                 ) -> dict[str, float | None]:
        """The wrapped evaluator's metrics of `model` and, for each attack, its copy's metrics and recoveries, the
        same on every process (see the class docstring for several processes)."""
        several = accelerator is not None and accelerator.num_processes > 1
        refused = [name for name, attack in self.attacks.items()
                   if several and not getattr(attack, "runs_under_several_processes", False)]
        if refused:
            raise ValueError(f"The attacks {refused} cannot run under {accelerator.num_processes} processes (each "
                             "trains a copy with a trainer of its own): run them on one process, on the saved model "
                             "(e.g. after training), or keep only the quantization attacks here.")
        self.timer.reset()
        start = time.perf_counter()
        for inner in (self.evaluator, self.attack_evaluator):
            inner.progress = self.progress
        metrics = self.evaluator.evaluate(model, ref_model, accelerator, gradient_checkpointing_kwargs)
        self.timer.seconds["plain"] = time.perf_counter() - start
        unlearned = metrics
        if self.attack_evaluator is not self.evaluator:
            unlearned = self.attack_evaluator.evaluate(model, None, accelerator, gradient_checkpointing_kwargs)
            metrics.update({f"attack/none/{key}": value for key, value in unlearned.items()})
        if not several:
            with evaluation_model(model, accelerator, gradient_checkpointing_kwargs) as (unwrapped, _):
                attacked = self._attack_all(unwrapped, unlearned)
        else:
            attacked = self._attack_on_main_process(model, unlearned, accelerator)
        metrics.update(attacked)
        self.timer.seconds["total"] = time.perf_counter() - start
        return metrics

    def _attack_all(self, model_or_path, unlearned: dict) -> dict[str, float | None]:
        """Every attack's metrics and recoveries, on this process alone; one attacked copy at a time."""
        out = {}
        for name, attack in self.attacks.items():
            start = time.perf_counter()
            attacked_model = attack(model_or_path)
            self.timer.seconds[f"attack/{name}"] = time.perf_counter() - start
            start = time.perf_counter()
            attacked = self.attack_evaluator.evaluate(attacked_model)
            self.timer.seconds[f"attack/{name}/evaluate"] = time.perf_counter() - start
            del attacked_model
            gc.collect()
            if torch.accelerator.is_available():
                torch.accelerator.empty_cache()
            out.update({f"attack/{name}/{key}": value for key, value in attacked.items()})
            found = recoveries(attacked, unlearned, self.finetuned_metrics) if self.finetuned_metrics else \
                dict.fromkeys(key for key in attacked if is_forget_metric(key))
            out.update({f"attack/{name}/recovery/{key}": value for key, value in found.items()})
        if self._baseline_metrics is None:
            self._baseline_metrics = self._attack_baselines()
        return {**out, **self._baseline_metrics}

    def _attack_baselines(self) -> dict[str, float | None]:
        """Every attack's metrics of every baseline model, on this process alone; one attacked copy at a time."""
        out = {}
        for baseline, model_or_path in self.baselines.items():
            for name, attack in self.attacks.items():
                start = time.perf_counter()
                attacked_model = attack(model_or_path)
                attacked = self.attack_evaluator.evaluate(attacked_model)
                self.timer.seconds[f"attack/{name}/{baseline}"] = time.perf_counter() - start
                del attacked_model
                gc.collect()
                out.update({f"attack/{name}/{baseline}/{key}": value for key, value in attacked.items()})
        return out

    def _attack_on_main_process(self, model, unlearned: dict, accelerator) -> dict[str, float | None]:
        """Several processes: the main process saves the gathered weights, attacks and evaluates; the others wait."""
        from accelerate.utils import broadcast_object_list
        from trl.models.utils import unwrap_model_for_generation

        folder = tempfile.mkdtemp(prefix="npo_trl_attack_") if accelerator.is_main_process else None
        try:
            with unwrap_model_for_generation(model, accelerator, gather_deepspeed3_params=True) as unwrapped:
                if accelerator.is_main_process:
                    unwrapped.save_pretrained(folder)
            accelerator.wait_for_everyone()
            attacked = [None]
            if accelerator.is_main_process:
                with _outside_zero3():  # the copies load whole on the main process, not partitioned by zero.Init
                    attacked = [self._attack_all(folder, unlearned)]
            accelerator.wait_for_everyone()
            return broadcast_object_list(attacked, from_process=0)[0]
        finally:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _outside_zero3():
    """Models loaded in this context are whole, even in a ZeRO-3 run (see `npo_trl.models.outside_zero3`)."""
    from types import SimpleNamespace

    from transformers.integrations import deepspeed

    from ..models import outside_zero3

    current = deepspeed._hf_deepspeed_config_weak_ref() if deepspeed._hf_deepspeed_config_weak_ref else None
    with outside_zero3(SimpleNamespace(hf_deepspeed_config=current)):
        yield
