# Copyright 2026 The npo-trl developers. Licensed under the Apache License, Version 2.0.
"""Evaluate any model on MUSE without training: MUSE's criteria C1-C4 (VerbMem, KnowMem, PrivLeak and each attack's
AUC), printed and saved as JSON.

    npo-trl eval muse --model_name_or_path out/ --tokenizer_name_or_path meta-llama/Llama-2-7b-hf \
        --retrain_model muse-bench/MUSE-News_retrain
    npo-trl eval muse --model_name_or_path out/ --dataset ./MUSE-News --reference_stats results/muse/retrain_stats.json
    accelerate launch -m npo_trl.scripts.eval_muse ...             # several processes: each scores a shard

PrivLeak needs the retrain model's AUCs: `--retrain_model` (scored here) or `--reference_stats` (the
`retrain_stats.json` that `compute_reference_stats` and examples/muse.py write); without either it is `null`, and the
AUCs are still reported. How the sets are evaluated are the flags of `npo_trl.muse.MUSEEvalSettings` (`--batch_size`,
`--verbmem_max_new_tokens`, `--knowmem_max_new_tokens`, `--knowmem_trailing_space`, `--privleak_max_length`,
`--min_k_fraction`).

`--attacks relearn quantize8 quantize4` (`npo_trl.attacks.AttackArguments`' flags) also attacks the model and scores
the copies' VerbMem and KnowMem on the documents that relearning does not train on (`npo_trl.muse.robustness`), with
`--target_model` as recovery's reference and, with `--retrain_model`, both as baselines: the JSON's `attacks`.
"""


from dataclasses import dataclass, field

from trl import ModelConfig, TrlParser

from npo_trl.attacks.arguments import AttackArguments
from npo_trl.muse.settings import MUSEEvalSettings
from npo_trl.scripts.output import write_result


@dataclass
class MUSEEvalArguments:
    """What to evaluate on (how: `MUSEEvalSettings`), and where the metrics go."""

    dataset: str = field(
        default="news",
        metadata={"help": "MUSE's data: 'news' or 'books' (the hub's muse-bench/MUSE-News, MUSE-Books), a hub id, a "
                          "local folder in their layout (<subset>/<split>.parquet|.jsonl|.json), or 'synthetic'."},
    )
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={"help": "The tokenizer of both models, when the model has none of its own (MUSE's: "
                          "meta-llama/Llama-2-7b-hf). Default: the model's."},
    )
    retrain_model: str | None = field(
        default=None,
        metadata={"help": "The retrain model (never trained on the forget set), scored here for PrivLeak's "
                          "reference."},
    )
    reference_stats: str | None = field(
        default=None,
        metadata={"help": "The retrain model's AUCs instead of --retrain_model: a retrain_stats.json written by "
                          "compute_reference_stats or examples/muse.py."},
    )
    privleak: bool = field(
        default=True,
        metadata={"help": "Also PrivLeak and the attacks' AUCs, on the privleak forget and holdout texts."},
    )
    target_model: str | None = field(
        default=None,
        metadata={"help": "The target model (before unlearning), with --attacks: recovery's reference, and attacked "
                          "as a baseline beside the retrain model."},
    )
    output_json: str = field(default="muse_eval.json", metadata={"help": "Where the metrics are written."})


def check_arguments(eval_args: MUSEEvalArguments, model_args: ModelConfig) -> None:
    """Refuse, before any model loads, a combination that cannot run."""
    if model_args.model_name_or_path is None:
        raise ValueError("--model_name_or_path is required: the model to evaluate (hub id or local folder).")
    if eval_args.retrain_model is not None and eval_args.reference_stats is not None:
        raise ValueError("--retrain_model and --reference_stats both give PrivLeak's reference: pass one.")
    if not eval_args.privleak and (eval_args.retrain_model or eval_args.reference_stats) is not None:
        raise ValueError("--retrain_model and --reference_stats are PrivLeak's reference, which --privleak false "
                         "leaves out: drop them, or pass --privleak true.")


def build_evaluator(eval_args: MUSEEvalArguments, settings: MUSEEvalSettings, model_args: ModelConfig, tokenizer,
                    accelerator):
    """The `MUSEEvaluator` of the flags: MUSE's sets from --dataset, PrivLeak's reference from --reference_stats or
    the retrain model scored here (every process its shard)."""
    from npo_trl.models import load_model
    from npo_trl.muse import MUSEEvaluator, compute_reference_stats, muse_eval_sets

    sets = muse_eval_sets(eval_args.dataset, privleak=eval_args.privleak)
    stats = eval_args.reference_stats
    if eval_args.retrain_model is not None:
        stats = compute_reference_stats(load_model(eval_args.retrain_model, model_args, accelerator.device), tokenizer,
                                        sets, settings, model_name=eval_args.retrain_model, accelerator=accelerator)
    return MUSEEvaluator(tokenizer, sets, stats, settings, progress=accelerator.is_main_process)


def attack(eval_args, attack_args, settings, model_args, tokenizer, model) -> dict:
    """--attacks: the model's forget criteria on the documents that relearning does not train on, after each attack,
    with their recoveries and the retrain and target models under the same attacks (`npo_trl.muse.robustness`)."""
    from npo_trl.muse import load_muse, muse_eval_sets
    from npo_trl.muse.robustness import muse_robustness_evaluator

    texts = {split: list(load_muse(eval_args.dataset, "raw", split)["text"]) for split in ("forget", "retain1")}
    robustness = muse_robustness_evaluator(
        tokenizer, muse_eval_sets(eval_args.dataset, privleak=False), attack_args, settings,
        forget_texts=texts["forget"], retain_texts=texts["retain1"], retrain_model=eval_args.retrain_model,
        target_model=eval_args.target_model, model_args=model_args, progress=True)
    return robustness.evaluate(model)


def main(eval_args: MUSEEvalArguments, settings: MUSEEvalSettings, model_args: ModelConfig,
         attack_args: AttackArguments | None = None) -> dict:
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from npo_trl.models import load_model

    attack_args = attack_args or AttackArguments()
    check_arguments(eval_args, model_args)
    accelerator = Accelerator()
    if attack_args.attacks and accelerator.num_processes > 1:
        raise ValueError(f"--attacks runs on one process (each attack loads or trains a copy of its own), not "
                         f"{accelerator.num_processes}: run `npo-trl eval muse --attacks ...` without accelerate "
                         "launch.")  # one process, or several under accelerate launch: each scores a shard of the rows
    tokenizer = AutoTokenizer.from_pretrained(
        eval_args.tokenizer_name_or_path or model_args.model_name_or_path,
        revision=None if eval_args.tokenizer_name_or_path else model_args.model_revision)
    evaluator = build_evaluator(eval_args, settings, model_args, tokenizer, accelerator)
    model = load_model(model_args.model_name_or_path, model_args, accelerator.device)
    metrics = evaluator.evaluate(model, accelerator=accelerator)
    rows = {name: len(prompts) for name, (prompts, *_) in evaluator.generation_sets.items()}
    rows.update({name: len(ids) for name, (ids, _) in evaluator.privleak_sets.items()})
    result = {"model": model_args.model_name_or_path, "dataset": eval_args.dataset,
              "reference": eval_args.retrain_model or eval_args.reference_stats, "rows": rows,
              "settings": settings.to_dict(), "metrics": metrics, "seconds": evaluator.timer.seconds["total"]}
    if attack_args.attacks:
        result["attacks"] = attack(eval_args, attack_args, settings, model_args, tokenizer, model)
    if accelerator.is_main_process:
        write_result(result, eval_args.output_json)
    return result


def make_parser(prog: str | None = None) -> TrlParser:
    return TrlParser((MUSEEvalArguments, MUSEEvalSettings, ModelConfig, AttackArguments), prog=prog)


def run(argv: list[str] | None = None, prog: str | None = None) -> dict:
    return main(*make_parser(prog).parse_args_and_config(args=argv))


if __name__ == "__main__":
    run()
