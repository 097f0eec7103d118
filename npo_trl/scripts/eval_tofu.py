# Copyright 2026 The npo-trl developers. Licensed under the Apache License, Version 2.0.
"""Evaluate any model on TOFU without training: every TOFU metric (and the privacy metrics), printed and saved as JSON.

    npo-trl eval tofu --model_name_or_path open-unlearning/tofu_Llama-3.2-1B-Instruct_full \
        --forget_split forget10 --prompt_format llama3_instruct \
        --retain_model open-unlearning/tofu_Llama-3.2-1B-Instruct_retain90
    npo-trl eval tofu --model_name_or_path out/ --dataset ../shared/tofu --reference_stats retain90/TOFU_EVAL.json
    accelerate launch -m npo_trl.scripts.eval_tofu ...             # several processes: each scores a shard

Forget quality needs the retain model's statistics: `--retain_model` (scored here) or `--reference_stats` (npo-trl's
JSON, open-unlearning's TOFU_EVAL.json or a TOFU/NPO-repository eval log); without either it is `null`.
"""

import json
import os
from dataclasses import dataclass, field

from trl import ModelConfig, TrlParser

from npo_trl.prompts import PROMPT_FORMATS, TOKEN_BOUNDARIES


@dataclass
class TOFUEvalArguments:
    """What to evaluate on, and how (`TOFUEvaluator`'s settings)."""

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
    prompt_format: str = field(
        default="plain", metadata={"help": f"The format the model was trained on: one of {list(PROMPT_FORMATS)}."}
    )
    token_boundary: str = field(
        default="common_prefix", metadata={"help": f"Where a scored answer starts: one of {list(TOKEN_BOUNDARIES)}."}
    )
    mask_pad_tokens: bool = field(
        default=False, metadata={"help": "Hide pad-token ids inside the text from attention (open-unlearning's mask)."}
    )
    privacy: bool = field(
        default=True, metadata={"help": "Also the privacy metrics (MIA AUCs, PrivLeak, memorization), on holdoutNN."}
    )
    max_samples: int | None = field(default=None, metadata={"help": "Rows per set at most (default: every row)."})
    eval_seed: int | None = field(default=0, metadata={"help": "Seed of the --max_samples subset."})
    batch_size: int = field(default=8, metadata={"help": "Rows per forward pass per process."})
    generation_batch_size: int | None = field(default=None, metadata={"help": "Rows per generation batch."})
    max_new_tokens: int = field(default=200, metadata={"help": "Length limit of the greedy answers ROUGE scores."})
    output_json: str = field(default="tofu_eval.json", metadata={"help": "Where the metrics are written."})


def main(eval_args: TOFUEvalArguments, model_args: ModelConfig) -> dict:
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from npo_trl.models import load_model
    from npo_trl.tofu import TOFUEvaluator, compute_reference_stats, tofu_eval_sets

    if model_args.model_name_or_path is None:
        raise ValueError("--model_name_or_path is required: the model to evaluate (hub id or local folder).")
    if eval_args.retain_model is not None and eval_args.reference_stats is not None:
        raise ValueError("--retain_model and --reference_stats both give forget quality's reference: pass one.")
    accelerator = Accelerator()  # one process, or several under accelerate launch: each scores a shard of the rows
    sets = tofu_eval_sets(eval_args.dataset, eval_args.forget_split, holdout=eval_args.privacy)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    settings = {"max_samples": eval_args.max_samples, "seed": eval_args.eval_seed, "batch_size": eval_args.batch_size,
                "prompt_format": eval_args.prompt_format, "token_boundary": eval_args.token_boundary,
                "mask_pad_tokens": eval_args.mask_pad_tokens}
    stats = eval_args.reference_stats
    if eval_args.retain_model is not None:
        stats = compute_reference_stats(load_model(eval_args.retain_model, model_args, accelerator.device), tokenizer,
                                        sets["forget"], holdout_eval_set=sets.get("holdout"), accelerator=accelerator,
                                        **settings)
    evaluator = TOFUEvaluator(tokenizer, sets, stats, max_new_tokens=eval_args.max_new_tokens,
                              generation_batch_size=eval_args.generation_batch_size,
                              progress=accelerator.is_main_process, **settings)
    metrics = evaluator.evaluate(load_model(model_args.model_name_or_path, model_args, accelerator.device),
                                 accelerator=accelerator)
    result = {"model": model_args.model_name_or_path, "dataset": eval_args.dataset,
              "forget_split": eval_args.forget_split, "rows": {name: len(s) for name, s in evaluator.sets.items()},
              "settings": settings, "metrics": metrics, "seconds": evaluator.timer.seconds["total"]}
    if accelerator.is_main_process:
        width = max(len(key) for key in metrics)
        for key, value in metrics.items():
            print(f"{key:<{width}}  {'null' if value is None else f'{value:.6g}'}")
        os.makedirs(os.path.dirname(os.path.abspath(eval_args.output_json)), exist_ok=True)
        with open(eval_args.output_json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"Written to {eval_args.output_json}.")
    return result


def make_parser(prog: str | None = None) -> TrlParser:
    return TrlParser((TOFUEvalArguments, ModelConfig), prog=prog)


def run(argv: list[str] | None = None, prog: str | None = None) -> dict:
    eval_args, model_args = make_parser(prog).parse_args_and_config(args=argv)
    return main(eval_args, model_args)


if __name__ == "__main__":
    run()
