# Copyright 2026 The npo-trl developers. Licensed under the Apache License, Version 2.0.
"""Evaluate any model on TOFU without training: every TOFU metric (and the privacy metrics), printed and saved as JSON.

    npo-trl eval tofu --model_name_or_path open-unlearning/tofu_Llama-3.2-1B-Instruct_full \
        --forget_split forget10 --prompt_format llama3_instruct \
        --retain_model open-unlearning/tofu_Llama-3.2-1B-Instruct_retain90
    npo-trl eval tofu --model_name_or_path out/ --dataset ../shared/tofu --reference_stats retain90/TOFU_EVAL.json
    accelerate launch -m npo_trl.scripts.eval_tofu ...             # several processes: each scores a shard

Forget quality needs the retain model's statistics: `--retain_model` (scored here) or `--reference_stats` (npo-trl's
JSON, open-unlearning's TOFU_EVAL.json or a TOFU/NPO-repository eval log); without either it is `null`. How the sets
are evaluated are the flags of `npo_trl.tofu.TOFUEvalSettings` (`--max_samples`, `--sample_seed`, `--batch_size`,
`--generation_batch_size`, `--max_new_tokens`, `--prompt_format`, `--prompt_template`, `--completion_template`,
`--token_boundary`, `--mask_pad_tokens`, `--min_k_fraction`).

`--attacks relearn quantize8 quantize4` (`npo_trl.attacks.AttackArguments`' flags) also attacks the model and scores
the copies on the forget rows that relearning does not train on (`npo_trl.tofu.robustness`), with `--finetuned_model`
as recovery's reference and, with `--retain_model`, both as baselines under the same attacks: the JSON's `attacks`.
"""


from dataclasses import dataclass, field

from trl import ModelConfig, TrlParser

from npo_trl.attacks.arguments import AttackArguments
from npo_trl.scripts.output import write_result
from npo_trl.tofu.settings import TOFUEvalSettings


@dataclass
class TOFUEvalArguments:
    """What to evaluate on (how: `TOFUEvalSettings`), and where the metrics go."""

    dataset: str = field(
        default="locuslab/TOFU",
        metadata={"help": "TOFU's data: 'locuslab/TOFU' (the hub), a local folder in its layout, or 'synthetic'."},
    )
    forget_split: str = field(default="forget10", metadata={"help": "forget01, forget05 or forget10."})
    retain_model: str | None = field(
        default=None,
        metadata={"help": "The retain model (never trained on the forget set), scored for forget quality."},
    )
    reference_stats: str | None = field(
        default=None, metadata={"help": "The retain model's statistics file instead of --retain_model."}
    )
    privacy: bool = field(
        default=True, metadata={"help": "Also the privacy metrics (MIA AUCs, PrivLeak, memorization), on holdoutNN."}
    )
    finetuned_model: str | None = field(
        default=None,
        metadata={"help": "The fine-tuned model (before unlearning), with --attacks: recovery's reference, and "
                          "attacked as a baseline beside the retain model."},
    )
    output_json: str = field(default="tofu_eval.json", metadata={"help": "Where the metrics are written."})


def attack(eval_args, attack_args, settings, model_args, tokenizer, sets, model) -> dict:
    """--attacks: the model's forget metrics on the forget rows that relearning does not train on, after each attack,
    with their recoveries and the retain and fine-tuned models under the same attacks (`npo_trl.tofu.robustness`)."""
    from npo_trl.tofu.robustness import tofu_robustness_evaluator

    robustness = tofu_robustness_evaluator(
        tokenizer, sets["forget"], attack_args, settings, retain_model=eval_args.retain_model,
        finetuned_model=eval_args.finetuned_model, retain_rows=sets["retain"], model_args=model_args, progress=True)
    return robustness.evaluate(model)


def main(eval_args: TOFUEvalArguments, settings: TOFUEvalSettings, model_args: ModelConfig,
         attack_args: AttackArguments | None = None) -> dict:
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from npo_trl.models import load_model
    from npo_trl.tofu import TOFUEvaluator, compute_reference_stats, tofu_eval_sets

    if model_args.model_name_or_path is None:
        raise ValueError("--model_name_or_path is required: the model to evaluate (hub id or local folder).")
    if eval_args.retain_model is not None and eval_args.reference_stats is not None:
        raise ValueError("--retain_model and --reference_stats both give forget quality's reference: pass one.")
    attack_args = attack_args or AttackArguments()
    accelerator = Accelerator()  # one process, or several under accelerate launch: each scores a shard of the rows
    if attack_args.attacks and accelerator.num_processes > 1:
        raise ValueError(f"--attacks runs on one process (each attack loads or trains a copy of its own), not "
                         f"{accelerator.num_processes}: run `npo-trl eval tofu --attacks ...` without accelerate "
                         "launch.")
    sets = tofu_eval_sets(eval_args.dataset, eval_args.forget_split, holdout=eval_args.privacy)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    stats = eval_args.reference_stats
    if eval_args.retain_model is not None:
        stats = compute_reference_stats(load_model(eval_args.retain_model, model_args, accelerator.device), tokenizer,
                                        sets["forget"], settings, holdout_eval_set=sets.get("holdout"),
                                        accelerator=accelerator)
    evaluator = TOFUEvaluator(tokenizer, sets, stats, settings, progress=accelerator.is_main_process)
    model = load_model(model_args.model_name_or_path, model_args, accelerator.device)
    metrics = evaluator.evaluate(model, accelerator=accelerator)
    result = {"model": model_args.model_name_or_path, "dataset": eval_args.dataset,
              "forget_split": eval_args.forget_split, "rows": {name: len(s) for name, s in evaluator.sets.items()},
              "settings": settings.to_dict(), "metrics": metrics, "seconds": evaluator.timer.seconds["total"]}
    if attack_args.attacks:
        result["attacks"] = attack(eval_args, attack_args, settings, model_args, tokenizer, sets, model)
    if accelerator.is_main_process:
        write_result(result, eval_args.output_json)
    return result


def make_parser(prog: str | None = None) -> TrlParser:
    return TrlParser((TOFUEvalArguments, TOFUEvalSettings, ModelConfig, AttackArguments), prog=prog)


def run(argv: list[str] | None = None, prog: str | None = None) -> dict:
    return main(*make_parser(prog).parse_args_and_config(args=argv))


if __name__ == "__main__":
    run()
