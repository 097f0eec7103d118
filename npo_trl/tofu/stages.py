"""TOFU's stages of a staged run (`npo_trl.stages`), as examples/tofu.py runs them and benchmarks/evaluation.py times
them: the unlearning stage with TOFU's metrics every epoch, the retain model's statistics, and the sample generations
of the report."""

import os

from ..stages import is_done, unlearning_stage


def tofu_unlearning_stage(model: str, args, method: str, output_dir: str, splits: dict, eval_sets: dict,
                          reference_stats=None, settings=None, *, model_args=None, seed: int | None = None,
                          replacement_answers: list[str] | None = None) -> str:
    """One unlearning run on TOFU (`npo_trl.stages.unlearning_stage`): the model at `model` (a path or hub id, with
    its tokenizer) unlearns `splits["forget"]` with `method` (retaining `splits["retain"]` when the method has a
    retain loss), both in `settings.prompt_format`, into `output_dir`/final unless a model is saved there already.
    `TOFUCallback` evaluates `eval_sets` under `settings` (a `TOFUEvalSettings`) against `reference_stats` before
    training and after every epoch, into `output_dir`/tofu_metrics.jsonl. Returns the final model's folder."""
    from transformers import AutoTokenizer

    from .callback import TOFUCallback
    from .data import to_prompt_completion
    from .settings import TOFUEvalSettings

    final = os.path.join(output_dir, "final")
    if is_done(final):
        return final
    settings = settings or TOFUEvalSettings()
    tokenizer = AutoTokenizer.from_pretrained(model)
    callback = TOFUCallback(tokenizer, eval_sets, reference_stats=reference_stats, settings=settings,
                            eval_steps="epoch")
    forget, retain = (to_prompt_completion(splits[key], settings.resolved_prompt_format)
                      for key in ("forget", "retain"))
    return unlearning_stage(model, args, method, output_dir, forget, retain, processing_class=tokenizer,
                            model_args=model_args, callbacks=[callback], seed=seed,
                            replacement_answers=replacement_answers)


def retain_model_stats(model: str, processing_class, eval_sets: dict, settings=None, cache_path: str | None = None,
                       *, model_args=None, args=None) -> dict:
    """A retain model's statistics on `eval_sets["forget"]` (and on `eval_sets["holdout"]` when there, for the privacy
    metrics), forget quality's reference: `compute_reference_stats` of the model at `model` (loaded whole with
    `model_args`, beside a ZeRO-3 run whose `TrainingArguments` are `args`), computed by the main process and cached
    in `cache_path`, which the other processes then read."""
    from accelerate import PartialState

    from ..models import load_model, outside_zero3
    from .reference import compute_reference_stats

    with outside_zero3(args), PartialState().main_process_first():
        return compute_reference_stats(load_model(model, model_args), processing_class, eval_sets["forget"], settings,
                                       holdout_eval_set=eval_sets.get("holdout"), cache_path=cache_path)


def sample_answers(models: dict[str, str], processing_class, eval_sets: dict, settings=None, *, model_args=None,
                   num_rows: int = 3, max_new_tokens: int = 48) -> dict[str, dict[str, list[str]]]:
    """Greedy answers of each model (`models`: label → path, loaded by `npo_trl.models.load_model` with `model_args`)
    to the first `num_rows` questions of each evaluation set, in `settings`' prompt format: per set, its questions,
    their answers, and each model's (the paper's Figure 7)."""
    from ..eval.generation import generate_answers
    from ..models import load_model
    from ..prompts import generation_prompt_ids
    from .settings import TOFUEvalSettings

    settings = settings or TOFUEvalSettings()
    rows = {name: eval_set.select(range(num_rows)) for name, eval_set in eval_sets.items()}
    prompts = {name: [generation_prompt_ids(processing_class, question, settings.resolved_prompt_format)
                      for question in questions["question"]] for name, questions in rows.items()}
    samples = {name: {"question": list(questions["question"]), "answer": list(questions["answer"])}
               for name, questions in rows.items()}
    for label, path in models.items():  # one model in memory at a time
        model = load_model(path, model_args)
        for name in eval_sets:
            samples[name][label] = generate_answers(model, processing_class, prompts[name],
                                                    max_new_tokens=max_new_tokens,
                                                    mask_pad_tokens=settings.mask_pad_tokens)
        del model
    return samples
