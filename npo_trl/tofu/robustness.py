"""TOFU under attack (`npo_trl.attacks`): the relearn/evaluation split of the forget set by author, and the
`RobustnessEvaluator` that scores an unlearned model and its attacked copies on the held-out forget rows, with the
retain and fine-tuned models under the same attacks, as examples/tofu.py and `npo-trl eval tofu --attacks` run it."""

import os

# What an attacked copy is scored on: the forget rows that relearning does not train on, and only them (what recovery
# is about, and a quarter of a whole evaluation's rows); forget quality against the retain model's truth ratios on
# the same rows.
ATTACKED_SETS = ("forget",)


def tofu_robustness_evaluator(processing_class, forget_rows, attack_args, settings=None, *, retain_model=None,
                              finetuned_model=None, retain_rows=None, qa_per_author: int = 20, model_args=None,
                              cache_dir: str | None = None, progress: bool = False):
    """A `RobustnessEvaluator` of TOFU's forget metrics under `attack_args`' attacks (an `AttackArguments`).

    `forget_rows` are TOFU's forget evaluation rows (`question`, `answer`, `paraphrased_answer`, `perturbed_answer`),
    each author's `qa_per_author` rows in a row, as TOFU's files hold them. With a relearning attack they are split
    within each author (`split_forget_rows`, `attack_args.relearn_fraction` and `relearn_seed`): relearning trains on
    one part, in `settings`' prompt format, and every model is scored on the other (`TOFUEvaluator` on the `forget`
    set alone: `tofu/forget_prob`, `_rouge`, `_truth_ratio` and, given `retain_model`, `tofu/forget_quality` against
    the retain model's truth ratios on those rows); without one, on every forget row. `relearn_benign` relearns as many
    `retain_rows` (the first ones).

    `retain_model` and `finetuned_model` (folders, loaded with `model_args`) are the baselines under the same attacks
    (`attack/<attack>/retain/...`, `attack/<attack>/finetuned/...`); the fine-tuned model's scores are recovery's
    reference. With `cache_dir`, the retain model's statistics on the scored rows are cached there
    (`robustness_retain_stats.json`).
    """
    from ..attacks import RobustnessEvaluator, split_forget_rows
    from ..attacks.arguments import make_attacks
    from ..models import load_model
    from .data import to_prompt_completion
    from .evaluator import TOFUEvaluator
    from .reference import compute_reference_stats
    from .settings import TOFUEvalSettings

    settings = settings or TOFUEvalSettings()
    if qa_per_author < 1:
        raise ValueError(f"qa_per_author={qa_per_author}: give the number of rows of each author (TOFU: 20).")
    relearn_rows, scored = None, forget_rows
    if attack_args.relearns:
        relearn_part, scored = split_forget_rows(forget_rows, attack_args.relearn_fraction, attack_args.relearn_seed,
                                                 group_key=lambda index, row: index // qa_per_author)
        relearn_rows = to_prompt_completion(relearn_part, settings.resolved_prompt_format)
    benign_rows = None
    if retain_rows is not None:
        benign_rows = to_prompt_completion(retain_rows, settings.resolved_prompt_format)
    stats = None
    if retain_model is not None:
        cache = None if cache_dir is None else os.path.join(cache_dir, "robustness_retain_stats.json")
        stats = compute_reference_stats(load_model(retain_model, model_args), processing_class, scored, settings,
                                        cache_path=cache)
    evaluator = TOFUEvaluator(processing_class, {"forget": scored}, stats, settings, progress=progress)
    finetuned_metrics = None
    if finetuned_model is not None:
        finetuned_metrics = evaluator.evaluate(load_model(finetuned_model, model_args))
    baselines = {name: path for name, path in (("retain", retain_model), ("finetuned", finetuned_model))
                 if path is not None}
    attacks = make_attacks(attack_args, processing_class, relearn_rows, benign_rows)
    return RobustnessEvaluator(evaluator, attacks, finetuned_metrics=finetuned_metrics, baselines=baselines,
                               progress=progress)
