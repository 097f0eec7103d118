# Copyright 2026 The npo-trl developers. Licensed under the Apache License, Version 2.0.
"""The TOFU experiment of the NPO paper in one run: base model, fine-tune, retain model, unlearning, table and plots.

    accelerate launch examples/tofu.py                          # offline synthetic default, a tiny Llama, CPU or GPU
    accelerate launch examples/tofu.py --dataset ../shared/tofu --forget_split forget05
    accelerate launch --config_file examples/accelerate_configs/zero3.yaml examples/tofu.py \
        --config examples/configs/tofu_llama2.yaml                # the paper's setting
    accelerate launch examples/tofu.py --config examples/configs/tofu_llama3.2_1b.yaml  # from published models

Stages, each saved under --output_dir and skipped when done (a crashed run resumes from the last finished stage):
`base/` (no --model_name_or_path: a tiny Llama and a tokenizer trained on the data, pre-trained on general knowledge),
`full/` (the base fine-tuned on every author; --finetuned_model skips it), `retain/` (on the retain split alone) and
its statistics `retain_stats.json` (or --retain_model's, or --reference_stats' published log), `unlearn/<method>/`
(each of --methods, TOFU's metrics every epoch; with --seeds 0 1 2, `unlearn/<method>/seed<k>/`), then the report:
`results.csv`, `results.json`, `fig5_tradeoff.png`, `fig6_per_epoch.png`, `fig_privacy.png` and `samples.json`; with
--attacks (default: relearning and 8- and 4-bit quantization), each unlearned model attacked
(`unlearn/<method>/robustness.json`, and the retain and fine-tuned models under the same attacks), then
`attacks.csv`, `attacks.json`, `fig_attacks.png` and the attack table (`npo_trl.attacks`).

Evaluation flags are `TOFUEvalSettings`' (--prompt_format, which the training rows share, --batch_size, --max_samples,
...). Models load with trl.ModelConfig's --dtype, --attn_implementation, --model_revision; the unlearning stage also
takes --use_peft/--lora_* and --load_in_4bit/8bit (the fine-tunes are full fine-tunes, as in the paper).
"""

import dataclasses
import json
import os
from dataclasses import dataclass, field

from accelerate import PartialState
from transformers import AutoTokenizer
from trl import ModelConfig, TrlParser

from npo_trl import NPOConfig
from npo_trl.attacks.arguments import AttackArguments
from npo_trl.attacks.report import format_attack_table, write_attack_report
from npo_trl.attacks.stage import attack_stage
from npo_trl.comparison import comparison_methods
from npo_trl.methods import method_losses, method_names
from npo_trl.models import model_init_kwargs, outside_zero3
from npo_trl.stages import (
    TinyLlamaArguments,
    experiment_parser,
    is_done,
    run_script,
    save_arguments,
    sft_config,
    sft_stage,
    tiny_llama,
    train_tokenizer,
)
from npo_trl.tofu import (
    TOFUEvalSettings,
    TOFUEvaluator,
    evaluation_sets,
    fine_tune_rows,
    idk_answers,
    known_facts,
    load_reference_stats,
    load_splits,
    to_prompt_completion,
    tokenizer_corpus,
)
from npo_trl.tofu.metrics import EVAL_SETS, forget_quality
from npo_trl.tofu.report import format_summary, read_metrics, write_comparison, write_report
from npo_trl.tofu.robustness import tofu_robustness_evaluator
from npo_trl.tofu.stages import retain_model_stats, sample_answers, tofu_unlearning_stage


@dataclass
class TOFUScriptArguments:
    """The experiment's stages and data; evaluation settings are `TOFUEvalSettings`', unlearning `NPOConfig`'s."""

    finetuned_model: str | None = field(default=None, metadata={
        "help": "An already fine-tuned model to unlearn from (path or hub id, e.g. "
                "open-unlearning/tofu_Llama-3.2-1B-Instruct_full): skips the base and full stages. Without it, "
                "--model_name_or_path (default: a tiny Llama built here) is fine-tuned on the authors."})
    retain_model: str | None = field(default=None, metadata={
        "help": "A model fine-tuned without the forget set (e.g. "
                "open-unlearning/tofu_Llama-3.2-1B-Instruct_retain90): its truth ratios on the forget set are forget "
                "quality's reference; skips the retain stage."})
    reference_stats: str | None = field(default=None, metadata={
        "help": "The retain model's statistics instead of a retain model: npo-trl's retain_stats.json, "
                "open-unlearning's TOFU_EVAL.json or a TOFU/NPO-repository eval_log_forget.json / "
                "eval_log_aggregated.json of the retain model, for every row of the same forget split."})
    dataset: str = field(default="synthetic", metadata={
        "help": "'synthetic' (the offline generator), a local folder in TOFU's layout, or 'locuslab/TOFU'."})
    forget_split: str = field(default="forget10", metadata={"help": "forget01/05/10 (synthetic: also 20/30/50/90)."})
    methods: list[str] = field(default_factory=lambda: ["npo", "npo+rt", "ga", "ga+rt"], metadata={
        "help": f"Unlearning methods: <forget_loss>[+rt|+kl], forget_loss among {', '.join(method_names())} (pdu: "
                "always with the retain NLL); 'all': every method of npo_trl.comparison.COMPARISON_METHODS."})
    seeds: list[int] | None = field(default=None, metadata={
        "help": "Unlearn every method once per seed into unlearn/<method>/seed<k>/ (the report: median and min-max "
                "over seeds). The fine-tuned and retain models are trained once, with --seed. Default: one run."})
    num_authors: int | None = field(default=None, metadata={
        "help": "Fictitious authors: the generator's (default 100), or on TOFU's files every forget author and the "
                "first others of `full` (npo_trl.tofu.keep_authors). Default: all."})
    qa_per_author: int = field(default=20, metadata={"help": "Question-answer pairs per author (TOFU: 20)."})
    pretrain_epochs: float = field(default=20, metadata={"help": "Built-in model: epochs on general knowledge."})
    finetune_epochs: float = field(default=20, metadata={"help": "Epochs of the full and retain fine-tunes."})
    finetune_learning_rate: float = field(default=2e-3, metadata={"help": "Learning rate of the fine-tunes."})
    finetune_batch_size: int = field(default=32, metadata={"help": "Per-device batch size of the fine-tunes."})
    privacy: bool = field(default=True, metadata={
        "help": "Also the privacy metrics (membership-inference AUCs of forget vs holdout rows, PrivLeak, "
                "memorization); PrivLeak needs the retain model's AUCs (--reference_stats without: --privacy false)."})
    sanity_check: bool = field(default=False, metadata={
        "help": "Also fine-tune another retain model (--seed + 1, or one per --seeds) and report its forget quality, "
                "which should be high: a check of the metric at this scale."})


def check_arguments(script_args: TOFUScriptArguments, args: NPOConfig, model_args: ModelConfig,
                    attack_args: AttackArguments) -> None:
    """Refuse, before anything trains, a combination of stages that cannot run."""
    if attack_args.relearns and PartialState().num_processes > 1:
        raise ValueError(f"--attacks {' '.join(attack_args.attacks)} under {PartialState().num_processes} processes: "
                         "relearning trains a copy with a trainer of its own, on one process. Pass --attacks "
                         "quantize8 quantize4 (or none) here, then rerun with `python examples/tofu.py ... --attacks "
                         "relearn`, which reuses every finished stage.")
    for method in script_args.methods:
        method_losses(method)  # a ValueError naming the valid methods
    seeds = script_args.seeds
    if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
        raise ValueError(f"--seeds {seeds}: give distinct seeds, e.g. --seeds 0 1 2 3 4.")
    if script_args.sanity_check and args.seed in (seeds or []):
        raise ValueError(f"--sanity_check with --seeds {seeds} fine-tunes a retain model per seed to compare with the "
                         f"one of --seed {args.seed}: leave --seed out of --seeds.")
    if script_args.retain_model is not None and script_args.reference_stats is not None:
        raise ValueError("--retain_model and --reference_stats both give forget quality's reference: pass one.")
    trains_retain = script_args.retain_model is None and script_args.reference_stats is None
    needs_base = trains_retain or script_args.sanity_check
    if script_args.finetuned_model is not None and model_args.model_name_or_path is None and needs_base:
        raise ValueError("--finetuned_model skips the base model that a retain model would be fine-tuned from: pass "
                         "--retain_model or --reference_stats (and no --sanity_check), or --model_name_or_path, the "
                         "base the fine-tuned model was trained from.")


def sft(model, tokenizer, rows, path, epochs, seed, script_args, settings, args, model_args) -> None:
    """A supervised stage (TRL's SFTTrainer, loss on the answer) on question→answer `rows` in the evaluation's prompt
    format; `model` is a model, or a path loaded with ModelConfig's settings."""
    sft_args = sft_config(args, path, num_train_epochs=epochs, learning_rate=script_args.finetune_learning_rate,
                          per_device_train_batch_size=script_args.finetune_batch_size, seed=seed,
                          warmup_steps=min(1.0 / epochs, 0.5),  # the paper's: warm-up over one epoch, then decay
                          model_init_kwargs=model_init_kwargs(model_args) if isinstance(model, str) else None)
    rows = to_prompt_completion(rows, settings.resolved_prompt_format).shuffle(seed=seed)
    sft_stage(model, sft_args, rows, tokenizer)


def build_base(script_args, tiny_args, settings, args, model_args, splits) -> str:
    """Stage 1: --model_name_or_path, or a tiny Llama and a tokenizer trained on the data, pre-trained on general
    knowledge (the real-author and world facts count twice in the tokenizer's text: the fine-tunes train on them)."""
    path = model_args.model_name_or_path or os.path.join(args.output_dir, "base")
    if not is_done(path):
        texts = tokenizer_corpus(*splits.values(), known_facts(splits)) + idk_answers(script_args.dataset)
        tokenizer = train_tokenizer(texts, tiny_args.vocab_size)
        model = tiny_llama(tokenizer, tiny_args.hidden_size, tiny_args.num_layers, seed=args.seed)
        sft(model, tokenizer, splits["general_knowledge"], path, script_args.pretrain_epochs, args.seed, script_args,
            settings, args, model_args)
    return path


def fine_tune(base, authors, path, seed, script_args, settings, args, model_args, splits) -> None:
    """Stages 2 and 3: the base fine-tuned on `authors`; the built-in base, which would otherwise lose them, also on
    the real-author and world facts (`fine_tune_rows`), a real base never on those evaluation rows."""
    if not is_done(path):
        rows = fine_tune_rows(authors, splits, built_in=model_args.model_name_or_path is None)
        sft(base, AutoTokenizer.from_pretrained(base), rows, path, script_args.finetune_epochs, seed, script_args,
            settings, args, model_args)


def reference_stats(script_args, settings, args, model_args, base, splits, tokenizer, eval_sets) -> dict:
    """Stage 3: forget quality's reference, from --reference_stats (checked against the forget and holdout sets before
    anything trains), --retain_model, or the retain model fine-tuned here."""
    if script_args.reference_stats is not None:
        stats = load_reference_stats(script_args.reference_stats)
        TOFUEvaluator(tokenizer, {k: eval_sets[k] for k in ("forget", "holdout") if k in eval_sets}, stats, settings)
        return stats
    path = script_args.retain_model or os.path.join(args.output_dir, "retain")
    if script_args.retain_model is None:
        fine_tune(base, splits["retain"], path, args.seed, script_args, settings, args, model_args, splits)
    return retain_model_stats(path, tokenizer, eval_sets, settings, os.path.join(args.output_dir, "retain_stats.json"),
                              model_args=model_args, args=args)


def sanity_check(script_args, settings, args, model_args, base, splits, tokenizer, eval_sets, stats):
    """--sanity_check: other retain models against the first, whose forget quality should be high. One with --seed + 1
    (`retain_seed2/`, a float), or one per seed k of --seeds (`retain_sanity_seed<k>/`, a dict seed → value)."""
    values = {}
    for seed in script_args.seeds or [args.seed + 1]:
        name = "retain_seed2" if script_args.seeds is None else f"retain_sanity_seed{seed}"
        path = os.path.join(args.output_dir, name)
        fine_tune(base, splits["retain"], path, seed, script_args, settings, args, model_args, splits)
        cache = os.path.join(args.output_dir, f"{name}_stats.json")
        other = retain_model_stats(path, tokenizer, eval_sets, settings, cache, model_args=model_args, args=args)
        values[seed] = forget_quality(other["truth_ratios"], stats["truth_ratios"])
    return values if script_args.seeds is not None else values[args.seed + 1]


def unlearn_path(script_args, args, method: str, seed: int) -> str:
    """unlearn/<method>/ (no --seeds), else unlearn/<method>/seed<k>/."""
    path = os.path.join(args.output_dir, "unlearn", method)
    return path if script_args.seeds is None else os.path.join(path, f"seed{seed}")


def report(script_args, settings, args, model_args, eval_sets, full_path, sanity, stats) -> dict:
    """Stage 5: results.csv/json, Figures 5 and 6, the privacy figure, samples of the first seed's models (Fig. 7)."""
    out, seeds = args.output_dir, script_args.seeds or [args.seed]
    table = {method: {seed: read_metrics(unlearn_path(script_args, args, method, seed)) for seed in seeds}
             for method in script_args.methods}
    summary = write_report(out, table, f"TOFU {script_args.forget_split}", script_args.privacy,
                           forget_split=script_args.forget_split, dataset=script_args.dataset,
                           sanity_check_retain_vs_retain=sanity,
                           retain_privacy={"auc": stats["privacy"]["auc"]} if "privacy" in stats else None)
    models = {"finetuned": full_path, **{method: os.path.join(unlearn_path(script_args, args, method, seeds[0]),
                                                              "final") for method in script_args.methods}}
    samples = sample_answers(models, AutoTokenizer.from_pretrained(full_path),
                             {name: eval_sets[name] for name in EVAL_SETS}, settings, model_args=model_args)
    with open(os.path.join(out, "samples.json"), "w") as f:
        json.dump(samples, f, indent=1, ensure_ascii=False)
    return summary


ATTACK_KEYS = ["tofu/forget_prob", "tofu/forget_rouge", "tofu/forget_truth_ratio", "tofu/forget_quality"]


def attacks(script_args, attack_args, settings, args, model_args, eval_sets, splits, full_path, tokenizer) -> dict:
    """Stage 5: every unlearned model, and the retain and fine-tuned models, under --attacks, scored on the forget rows
    that relearning does not train on (`npo_trl.tofu.robustness`); attacks.csv/json, fig_attacks.png."""
    retain = script_args.retain_model or os.path.join(args.output_dir, "retain")  # none with --reference_stats
    robustness = tofu_robustness_evaluator(
        tokenizer, eval_sets["forget"], attack_args, settings, retain_model=None if script_args.reference_stats
        else retain, finetuned_model=full_path, retain_rows=splits["retain"], qa_per_author=script_args.qa_per_author,
        model_args=model_args, cache_dir=args.output_dir)
    models = {method: {seed: os.path.join(unlearn_path(script_args, args, method, seed), "final")
                       for seed in script_args.seeds or [args.seed]} for method in script_args.methods}
    results = attack_stage(robustness, models, model_args)
    return write_attack_report(args.output_dir, results, attack_args.attack_names(), ATTACK_KEYS,
                               f"TOFU {script_args.forget_split}")


def main(script_args: TOFUScriptArguments, tiny_args: TinyLlamaArguments, settings: TOFUEvalSettings,
         attack_args: AttackArguments, args: NPOConfig, model_args: ModelConfig | None = None) -> dict | None:
    model_args = model_args or ModelConfig()
    if script_args.methods == ["all"]:  # the every-method comparison (npo_trl.comparison)
        script_args = dataclasses.replace(script_args, methods=comparison_methods())
    check_arguments(script_args, args, model_args, attack_args)
    settings = dataclasses.replace(  # this run's default: short answers on synthetic data
        settings, max_new_tokens=settings.max_new_tokens or (48 if script_args.dataset == "synthetic" else 200))
    save_arguments(args.output_dir, script=script_args, tiny_model=tiny_args, settings=settings, attacks=attack_args,
                   training=args, model=model_args)
    splits = load_splits(script_args.dataset, script_args.forget_split, num_authors=script_args.num_authors,
                         qa_per_author=script_args.qa_per_author, holdout=script_args.privacy)
    eval_sets = evaluation_sets(splits)
    trains_retain = script_args.retain_model is None and script_args.reference_stats is None
    base = None
    if script_args.finetuned_model is None or trains_retain or script_args.sanity_check:
        base = build_base(script_args, tiny_args, settings, args, model_args, splits)
    full_path = script_args.finetuned_model or os.path.join(args.output_dir, "full")
    if script_args.finetuned_model is None:
        fine_tune(base, splits["full"], full_path, args.seed, script_args, settings, args, model_args, splits)
    tokenizer = AutoTokenizer.from_pretrained(full_path)
    stats = reference_stats(script_args, settings, args, model_args, base, splits, tokenizer, eval_sets)
    sanity = None
    if script_args.sanity_check:
        sanity = sanity_check(script_args, settings, args, model_args, base, splits, tokenizer, eval_sets, stats)
    for method in script_args.methods:
        for seed in script_args.seeds or [args.seed]:
            tofu_unlearning_stage(full_path, args, method, unlearn_path(script_args, args, method, seed), splits,
                                  eval_sets, stats, settings, model_args=model_args, seed=seed,
                                  replacement_answers=idk_answers(script_args.dataset))
    if PartialState().is_main_process:
        with outside_zero3(args):
            summary = report(script_args, settings, args, model_args, eval_sets, full_path, sanity, stats)
            if attack_args.attacks:
                summary["attacks"] = attacks(script_args, attack_args, settings, args, model_args, eval_sets, splits,
                                             full_path, tokenizer)
                with open(os.path.join(args.output_dir, "results.json"), "w") as f:
                    json.dump(summary, f, indent=1)
            write_comparison(args.output_dir, summary, summary.get("attacks"))
        print(format_summary(summary))
        if attack_args.attacks:
            print(format_attack_table(summary["attacks"], ATTACK_KEYS[0]))
        return summary


def make_parser() -> TrlParser:
    """The experiment's arguments, with the defaults of its offline run (the built-in tiny model on a CPU;
    examples/configs/tofu_llama2.yaml sets the paper's). --max_new_tokens defaults to 48 on the synthetic data, whose
    answers are short, else TOFU's 200."""
    return experiment_parser((TOFUScriptArguments, TinyLlamaArguments, TOFUEvalSettings, AttackArguments, NPOConfig,
                              ModelConfig), output_dir="results/tofu", num_train_epochs=15, learning_rate=3e-4,
                             per_device_train_batch_size=32, max_length=128, batch_size=32, max_new_tokens=None,
                             attacks=["relearn", "quantize8", "quantize4"], relearn_steps=[80],
                             relearn_learning_rate=1e-4)


if __name__ == "__main__":
    run_script(main, make_parser())
