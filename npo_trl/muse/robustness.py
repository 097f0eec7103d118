"""MUSE under attack (`npo_trl.attacks`): the relearn/evaluation split of the forget set by document, and the
`RobustnessEvaluator` that scores an unlearned model and its attacked copies on the held-out documents' VerbMem and
KnowMem rows, with the retrain and target models under the same attacks, as examples/muse.py and `npo-trl eval muse
--attacks` run it."""

ATTACKED_SETS = ("verbmem_forget", "knowmem_forget", "knowmem_forget_icl")  # C1 and C2: what recovery is about


def muse_robustness_evaluator(processing_class, eval_sets: dict, attack_args, settings=None, *, forget_texts=None,
                              retain_texts=None, retrain_model=None, target_model=None, model_args=None,
                              progress: bool = False):
    """A `RobustnessEvaluator` of MUSE's forget criteria (`muse/verbmem_forget`, `muse/knowmem_forget`: the sets of
    `ATTACKED_SETS`, PrivLeak left out) under `attack_args`' attacks (an `AttackArguments`).

    With a relearning attack the forget documents are split (`split_forget_rows`, `attack_args.relearn_fraction` and
    `relearn_seed`). When `forget_texts` (the raw forget articles) align row for row with `eval_sets`'
    `verbmem_forget` and `knowmem_forget` rows (article i, its VerbMem excerpt and its KnowMem question: the synthetic
    corpus's layout), relearning trains on the relearn part's articles as raw text and every model is scored on the
    other articles' excerpts and questions. Otherwise (MUSE's files, whose 100 VerbMem excerpts and 100 questions are
    not keyed to articles) relearning trains on the relearn part of the VerbMem excerpts (prompt, then its
    continuation) and VerbMem is scored on the other excerpts, KnowMem on every question, some of whose answers the
    relearned excerpts may hold. `relearn_benign` relearns as many `retain_texts` (the first ones).

    `retrain_model` and `target_model` (folders, loaded with `model_args`) are the baselines under the same attacks,
    named as on TOFU: `attack/<attack>/retain/...` (the retrain model) and `attack/<attack>/finetuned/...` (the
    target model); the target model's scores are recovery's reference.
    """
    from datasets import Dataset

    from ..attacks import RobustnessEvaluator, split_forget_rows
    from ..attacks.arguments import make_attacks
    from ..models import load_model
    from .evaluator import MUSEEvaluator

    missing = [name for name in ATTACKED_SETS if name not in eval_sets]
    if missing:
        raise ValueError(f"eval_sets lacks {missing}: the attacked models are scored on {list(ATTACKED_SETS)} "
                         "(npo_trl.muse.muse_eval_sets reads them).")
    sets = {name: eval_sets[name] for name in ATTACKED_SETS}
    relearn_rows = None
    if attack_args.relearns:
        verbmem = sets["verbmem_forget"]
        indexed = Dataset.from_dict({"row": list(range(len(verbmem)))})
        relearn_part, scored = split_forget_rows(indexed, attack_args.relearn_fraction, attack_args.relearn_seed)
        relearn_ids, scored_ids = list(relearn_part["row"]), list(scored["row"])
        aligned = forget_texts is not None and len(forget_texts) == len(verbmem) == len(sets["knowmem_forget"])
        if aligned:
            relearn_rows = Dataset.from_dict({"text": [forget_texts[i] for i in relearn_ids]})
            sets["knowmem_forget"] = sets["knowmem_forget"].select(scored_ids)
        else:
            relearn_rows = Dataset.from_dict({"prompt": [verbmem[i]["prompt"] for i in relearn_ids],
                                              "completion": [verbmem[i]["gt"] for i in relearn_ids]})
        sets["verbmem_forget"] = verbmem.select(scored_ids)
    benign_rows = None if retain_texts is None else Dataset.from_dict({"text": list(retain_texts)})
    evaluator = MUSEEvaluator(processing_class, sets, settings=settings, progress=progress)
    finetuned_metrics = None if target_model is None else evaluator.evaluate(load_model(target_model, model_args))
    baselines = {name: path for name, path in (("retain", retrain_model), ("finetuned", target_model))
                 if path is not None}
    attacks = make_attacks(attack_args, processing_class, relearn_rows, benign_rows)
    return RobustnessEvaluator(evaluator, attacks, finetuned_metrics=finetuned_metrics, baselines=baselines,
                               progress=progress)
