# Copyright 2026 The npo-trl developers. Licensed under the Apache License, Version 2.0.
"""MUSE's News experiment in one run: target model, retrain model, unlearning with each method, Table 3, C5 and C6.

    accelerate launch examples/muse.py                                   # offline synthetic default, a tiny Llama
    accelerate launch examples/muse.py --dataset ./MUSE-News             # a local copy in the hub's layout
    accelerate launch --config_file examples/accelerate_configs/zero3.yaml examples/muse.py \
        --config examples/configs/muse_news_llama2.yaml                  # MUSE's target and retrain models

Stages (each writes under --output_dir and is skipped when its output exists, so a crashed run resumes):

1. `target/`: with no --target_model, a small Llama built from a config and a tokenizer trained on the corpus,
   trained on the forget articles (scal forget_4, every fold) and retain1 + retain2, each article a sequence;
2. `retrain/`: the same model trained on retain1 + retain2 alone (skipped with --retrain_model), and its PrivLeak
   AUCs (`retrain_stats.json`), against which PrivLeak is measured;
3. `unlearn/<method>/` (with --seeds 0 1 2, `unlearn/<method>/seed<k>/`): the target unlearned on raw forget with each
   method of --methods (retain set: retain1), both chunked by MUSE's rule (`npo_trl.muse.chunk_texts`), MUSE's
   criteria every epoch (`MUSECallback`); with --attacks (default: relearning, 8- and 4-bit quantization) each
   unlearned model, the retrain and the target model attacked (`robustness.json`; `npo_trl.attacks`);
4. `c5/<method>/`, `c6/<method>/`: scalability (scal forget_1..4, each from the target) and sustainability (sust
   forget_1..4, one after another) for each of --criteria_methods;
5. `results.csv` (method × epoch), `results.json`, `table3.md` (target, retrain and each method's final model:
   VerbMem D_f, KnowMem D_f, PrivLeak, KnowMem D_r), `fig_per_epoch.png` and `fig_c5_c6.png` (npo_trl.muse.report);
   with --attacks, `attacks.csv`, `attacks.json`, `fig_attacks.png` and the attack table (npo_trl.attacks.report).

The evaluation's flags are `MUSEEvalSettings`' (--batch_size, --verbmem_max_new_tokens, --knowmem_max_new_tokens,
--knowmem_trailing_space, ...).
"""

import dataclasses
import json
import os
from dataclasses import dataclass, field

from accelerate import PartialState
from datasets import Dataset
from transformers import AutoTokenizer
from trl import ModelConfig, TrlParser

from npo_trl import NPOConfig
from npo_trl.attacks.arguments import AttackArguments
from npo_trl.attacks.report import format_attack_table, write_attack_report
from npo_trl.attacks.stage import attack_stage
from npo_trl.comparison import comparison_methods
from npo_trl.methods import method_losses, method_names
from npo_trl.models import load_model, outside_zero3
from npo_trl.muse import (
    MUSECallback,
    MUSEEvalSettings,
    MUSEEvaluator,
    chunk_texts,
    compute_reference_stats,
    load_muse,
    make_synthetic_muse,
    muse_eval_sets,
    scalability,
    sustainability,
)
from npo_trl.muse.report import read_metrics, table3, write_comparison, write_report
from npo_trl.muse.robustness import muse_robustness_evaluator
from npo_trl.stages import (
    TinyLlamaArguments,
    experiment_parser,
    is_done,
    run_script,
    sft_config,
    sft_stage,
    tiny_llama,
    train_tokenizer,
    unlearning_stage,
)


@dataclass
class MUSEScriptArguments:
    """Arguments of the experiment; evaluation settings are `MUSEEvalSettings`', unlearning `NPOConfig`'s."""

    dataset: str = field(default="synthetic", metadata={
        "help": "'synthetic' (the offline generator), 'news' or 'books' (MUSE's hub datasets), or a local folder in "
                "their layout (<subset>/<split>.parquet|.jsonl|.json)."})
    target_model: str | None = field(default=None, metadata={
        "help": "A model trained on the corpus (e.g. muse-bench/MUSE-News_target): skips the target stage."})
    retrain_model: str | None = field(default=None, metadata={
        "help": "A model trained on the retain set only (e.g. muse-bench/MUSE-News_retrain): skips the retrain "
                "stage. PrivLeak is relative to its AUC."})
    tokenizer_name_or_path: str | None = field(default=None, metadata={
        "help": "The tokenizer of every model, when the target model has none of its own (MUSE's: "
                "meta-llama/Llama-2-7b-hf). Default: the target model's."})
    methods: list[str] = field(default_factory=lambda: ["npo", "npo+rt", "npo+kl", "ga", "ga+rt", "ga+kl"],
                               metadata={"help": "Unlearning methods: <forget_loss>[+rt|+kl], forget_loss among "
                                                 f"{', '.join(method_names(lambda row: not row.needs_replacement))} "
                                                 "(pdu: always with the retain NLL); 'all': every one "
                                                 "(npo_trl.comparison)."})
    seeds: list[int] | None = field(default=None, metadata={
        "help": "Unlearn every method once per seed into unlearn/<method>/seed<k>/ (rows <method>/seed<k> in the "
                "report; the attack table: median and min-max over seeds). Default: one run, with --seed."})
    criteria: bool = field(default=True, metadata={
        "help": "Run C5 (scalability) and C6 (sustainability) for --criteria_methods (MUSE-Books has no scal/sust "
                "subsets: --criteria false)."})
    criteria_methods: list[str] = field(default_factory=lambda: ["npo+rt"], metadata={
        "help": "Methods also run for C5 and C6."})
    num_forget: int = field(default=16, metadata={"help": "Synthetic data: articles per forget fold."})
    target_epochs: float = field(default=40, metadata={"help": "Epochs of the target and retrain models' training."})
    target_learning_rate: float = field(default=2e-3, metadata={"help": "Learning rate of that training."})
    target_batch_size: int = field(default=8, metadata={"help": "Per-device batch size of that training."})
    join_documents: bool | None = field(default=None, metadata={
        "help": "Unlearning rows: MUSE's chunks of the joined forget (and retain) articles (true), or each article "
                "cut on its own (false). Default: MUSE's rule, except with the built-in target model, which was "
                "trained one article per sequence."})


def forget_folds(source) -> list[Dataset]:
    """Every forget article the target model was trained on: scal forget_4 (all folds), or raw forget where the
    corpus has no scal subset (MUSE-Books)."""
    try:
        return [load_muse(source, "scal", "forget_4")]
    except ValueError:
        return [load_muse(source, "raw", "forget")]


def train_lm(model, tokenizer, texts: list[str], path: str, script_args, args: NPOConfig) -> None:
    """Language modelling with TRL's SFTTrainer, every token counted: each text a sequence of its own (BOS, the text,
    EOS), cut into pieces of at most max_length tokens. Unlike unlearning, which takes MUSE's chunks of the joined
    corpus, the models here do not learn an article's facts keyed on whichever article precedes it in a chunk: that is
    what lets a small model answer a KnowMem question asked out of that context."""
    rows = []
    for text in texts:
        ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
        rows += [ids[start:start + args.max_length] for start in range(0, len(ids), args.max_length)]
    sft_args = sft_config(args, path, num_train_epochs=script_args.target_epochs, max_length=None,
                          learning_rate=script_args.target_learning_rate, warmup_steps=0.05,
                          per_device_train_batch_size=script_args.target_batch_size)
    sft_stage(model, sft_args, Dataset.from_dict({"input_ids": rows}).shuffle(args.seed), tokenizer)


def build_models(script_args, tiny_args, settings, args, model_args, source) -> tuple[str, str]:
    """Stages 1 and 2: (target model, retrain model), each trained here from the base unless given. The base is
    --model_name_or_path, or a small Llama built from a config with a tokenizer trained on the corpus."""
    state = PartialState()
    retain = [text for split in ("retain1", "retain2") for text in load_muse(source, "raw", split)["text"]]
    forget = [text for fold in forget_folds(source) for text in fold["text"]]
    tokenizer_path = model_args.model_name_or_path or os.path.join(args.output_dir, "tokenizer")
    paths = {"target": os.path.join(args.output_dir, "target"), "retrain": os.path.join(args.output_dir, "retrain")}
    for kind, texts, given in (("target", forget + retain, script_args.target_model),
                               ("retrain", retain, script_args.retrain_model)):
        if given is not None or is_done(paths[kind]):
            continue
        if model_args.model_name_or_path is None:
            with state.main_process_first():
                if state.is_main_process and not os.path.exists(os.path.join(tokenizer_path, "tokenizer.json")):
                    holdout = list(load_muse(source, "raw", "holdout")["text"])
                    train_tokenizer(forget + retain + holdout, tiny_args.vocab_size).save_pretrained(tokenizer_path)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        max_positions = max(args.max_length, 512) + settings.verbmem_max_new_tokens  # a chunk and a continuation
        model = model_args.model_name_or_path or tiny_llama(tokenizer, tiny_args.hidden_size, tiny_args.num_layers,
                                                            max_positions, args.seed)
        train_lm(model, tokenizer, texts, paths[kind], script_args, args)
    return script_args.target_model or paths["target"], script_args.retrain_model or paths["retrain"]


def check_arguments(script_args: MUSEScriptArguments, model_args: ModelConfig, attack_args: AttackArguments) -> None:
    """Refuse, before anything trains, a combination that cannot run."""
    if attack_args.relearns and PartialState().num_processes > 1:
        raise ValueError(f"--attacks {' '.join(attack_args.attacks)} under {PartialState().num_processes} processes: "
                         "relearning trains a copy with a trainer of its own, on one process. Pass --attacks "
                         "quantize8 quantize4 (or none) here, then rerun with `python examples/muse.py ... --attacks "
                         "relearn`, which reuses every finished stage.")
    if script_args.target_model is not None and script_args.retrain_model is None and \
            model_args.model_name_or_path is None:
        raise ValueError("--target_model skips the base that a retrain model would be trained from: pass "
                         "--retrain_model (e.g. muse-bench/MUSE-News_retrain), or --model_name_or_path, the base.")
    if script_args.retrain_model is not None and script_args.target_model is None and \
            model_args.model_name_or_path is None:
        raise ValueError("--retrain_model without --target_model: the built-in target has a tokenizer trained here, "
                         "which the given retrain model does not share; pass --target_model too, or "
                         "--model_name_or_path, the base both come from.")
    raw_text = method_names(lambda row: not row.needs_replacement)  # MUSE has no replacement answers
    for flag, methods in (("--methods", script_args.methods),
                          ("--criteria_methods", script_args.criteria_methods if script_args.criteria else [])):
        for method in methods:
            if method_losses(method)[0] not in raw_text:
                raise ValueError(f"{flag} {method!r}: use <{'|'.join(raw_text)}>[+rt|+kl] (MUSE's forget sets are raw "
                                 "text, with no replacement answer for "
                                 f"{'/'.join(method_names(lambda row: row.needs_replacement))}).")


ATTACK_KEYS = ["muse/verbmem_forget", "muse/knowmem_forget"]


def unlearn_path(script_args, args, method: str, seed: int) -> str:
    """unlearn/<method>/ (no --seeds), else unlearn/<method>/seed<k>/."""
    path = os.path.join(args.output_dir, "unlearn", method)
    return path if script_args.seeds is None else os.path.join(path, f"seed{seed}")


def attacks(script_args, attack_args, settings, args, model_args, source, tokenizer, target, retrain) -> dict:
    """Stage 6: every unlearned model, the retrain and the target model under --attacks, scored on the documents that
    relearning does not train on (`npo_trl.muse.robustness`); attacks.csv/json, fig_attacks.png."""
    robustness = muse_robustness_evaluator(
        tokenizer, muse_eval_sets(source, privleak=False), attack_args, settings,
        forget_texts=list(load_muse(source, "raw", "forget")["text"]),
        retain_texts=list(load_muse(source, "raw", "retain1")["text"]), retrain_model=retrain, target_model=target,
        model_args=model_args)
    models = {method: {seed: os.path.join(unlearn_path(script_args, args, method, seed), "final")
                       for seed in script_args.seeds or [args.seed]} for method in script_args.methods}
    return write_attack_report(args.output_dir, attack_stage(robustness, models, model_args),
                               attack_args.attack_names(), ATTACK_KEYS, f"MUSE ({script_args.dataset})")


def main(script_args: MUSEScriptArguments, tiny_args: TinyLlamaArguments, settings: MUSEEvalSettings,
         attack_args: AttackArguments, args: NPOConfig, model_args: ModelConfig | None = None) -> dict | None:
    model_args = model_args or ModelConfig()
    if script_args.methods == ["all"]:  # the every-method comparison, of the methods MUSE's raw text allows
        script_args = dataclasses.replace(script_args, methods=comparison_methods(replacement=False))
    check_arguments(script_args, model_args, attack_args)
    state, out = PartialState(), args.output_dir
    source = make_synthetic_muse(script_args.num_forget) if script_args.dataset == "synthetic" else script_args.dataset
    if script_args.criteria:
        try:
            load_muse(source, "scal", "forget_1"), load_muse(source, "sust", "forget_1")
        except ValueError as error:
            raise ValueError(f"--criteria needs the scal and sust subsets, which {script_args.dataset!r} lacks "
                             f"(MUSE-Books has none): pass --criteria false. ({error})") from error
    given_base = (script_args.target_model or model_args.model_name_or_path) is not None
    if settings.knowmem_trailing_space is None:  # MUSE's "Answer: ", not after the built-in byte-level tokenizer's
        settings = dataclasses.replace(settings, knowmem_trailing_space=given_base)
    target, retrain = build_models(script_args, tiny_args, settings, args, model_args, source)
    tokenizer = AutoTokenizer.from_pretrained(script_args.tokenizer_name_or_path or target)
    eval_sets = muse_eval_sets(source)
    with outside_zero3(args), state.main_process_first():  # the main process computes them; the others read its cache
        stats = compute_reference_stats(load_model(retrain, model_args), tokenizer, eval_sets, settings,
                                        cache_path=os.path.join(out, "retrain_stats.json"), model_name=retrain)
    join = given_base if script_args.join_documents is None else script_args.join_documents
    forget = list(load_muse(source, "raw", "forget")["text"])
    retain = chunk_texts(load_muse(source, "raw", "retain1")["text"], tokenizer, args.max_length, join)

    def unlearn(method, model_path, forget_texts, path, callbacks=None, seed=None):
        rows = chunk_texts(forget_texts, tokenizer, args.max_length, join)
        return unlearning_stage(model_path, args, method, path, rows, retain, processing_class=tokenizer,
                                model_args=model_args, callbacks=callbacks, seed=seed)

    def evaluate(path):  # MUSE's criteria of a saved model, by the main process alone (the others get {})
        if not state.is_main_process:
            return {}
        with outside_zero3(args):
            return MUSEEvaluator(tokenizer, eval_sets, stats, settings).evaluate(load_model(path, model_args))

    seeds = script_args.seeds or [args.seed]
    for method in script_args.methods:
        for seed in seeds:
            unlearn(method, target, forget, unlearn_path(script_args, args, method, seed),
                    [MUSECallback(tokenizer, eval_sets, reference_stats=stats, settings=settings)], seed)
    criteria = {"c5": {}, "c6": {}}
    for method in script_args.criteria_methods if script_args.criteria else []:
        def run(model_path, forget_set, path, method=method):
            return unlearn(method, model_path, list(forget_set["text"]), path)
        folds = [load_muse(source, subset, f"forget_{k}") for subset in ("scal", "sust") for k in range(1, 5)]
        criteria["c5"][method] = scalability(run, evaluate, target, folds[:4], os.path.join(out, "c5", method))
        criteria["c6"][method] = sustainability(run, evaluate, target, folds[4:], os.path.join(out, "c6", method))
    if not state.is_main_process:
        return None
    reference = {"target": evaluate(target), "retrain": evaluate(retrain)}
    table = {method if script_args.seeds is None else f"{method}/seed{seed}":
             read_metrics(unlearn_path(script_args, args, method, seed))
             for method in script_args.methods for seed in seeds}
    summary = write_report(out, table, reference, criteria if script_args.criteria else None,
                           dataset=script_args.dataset)
    print(table3(summary["table3"]))
    if attack_args.attacks:
        with outside_zero3(args):
            summary["attacks"] = attacks(script_args, attack_args, settings, args, model_args, source, tokenizer,
                                         target, retrain)
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump(summary, f, indent=1)
        print(format_attack_table(summary["attacks"], ATTACK_KEYS[0]))
    write_comparison(out, table, summary.get("attacks"))
    return summary


def make_parser() -> TrlParser:
    """The experiment's arguments, with the defaults of its offline run (the built-in tiny model on a CPU;
    examples/configs/muse_news_llama2.yaml sets MUSE's). --knowmem_trailing_space defaults to MUSE's "Answer: " with a
    given model, and to "Answer:" with the built-in byte-level tokenizer, for which that space is a token never seen
    before an answer."""
    return experiment_parser((MUSEScriptArguments, TinyLlamaArguments, MUSEEvalSettings, AttackArguments, NPOConfig,
                              ModelConfig), output_dir="results/muse", num_train_epochs=10, learning_rate=1e-3,
                             per_device_train_batch_size=4, max_length=256, batch_size=16, knowmem_trailing_space=None,
                             attacks=["relearn", "quantize8", "quantize4"], relearn_steps=[80],
                             relearn_learning_rate=1e-4)


if __name__ == "__main__":
    run_script(main, make_parser())
