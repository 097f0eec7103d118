# Copyright 2026 The npo-trl developers. Licensed under the Apache License, Version 2.0.
"""Evaluate any saved model on lm-evaluation-harness tasks (WMDP, MMLU, or local tasks) without training: each task's
accuracy, printed and saved as JSON. Needs the extra: `pip install 'npo-trl[lm-eval]'`.

    npo-trl eval lm-eval --model_name_or_path HuggingFaceH4/zephyr-7b-beta --tasks wmdp_bio wmdp_cyber mmlu \
        --dtype bfloat16 --batch_size 16
    npo-trl eval lm-eval --model_name_or_path out/ --include_path data/wmdp --tasks wmdp_synthetic mmlu_synthetic
    accelerate launch -m npo_trl.scripts.eval_lm_eval ...   # several processes (ZeRO-3): each evaluates every row

The model is loaded as npo-trl loads any model (`npo_trl.models.load_model`: `--dtype`, `--attn_implementation`, a
folder of LoRA adapters onto its base) and evaluated in memory by `npo_trl.lm_eval.LMEvalEvaluator`. Hub tasks
download their data on first use; `--include_path` names a folder of local task YAML files (the offline WMDP
stand-in's: `npo_trl.wmdp.write_synthetic_wmdp`).
"""

from dataclasses import dataclass, field

from trl import ModelConfig, TrlParser

from npo_trl.scripts.output import write_result


@dataclass
class LMEvalArguments:
    """Which lm-eval tasks, how they are run, and where the metrics go."""

    tasks: list[str] = field(
        default_factory=list,
        metadata={"help": "lm-eval task names: its registry's (wmdp_bio wmdp_cyber mmlu; `lm-eval ls tasks` lists "
                          "them) or those of the YAML files under --include_path."},
    )
    include_path: list[str] | None = field(
        default=None,
        metadata={"help": "Folders of local lm-eval task YAML files, e.g. the WMDP stand-in's folder."},
    )
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={"help": "The model's tokenizer, when the model folder has none. Default: the model's."},
    )
    batch_size: int = field(default=8, metadata={"help": "Requests per forward pass."})
    metrics: list[str] = field(
        default_factory=lambda: ["acc", "acc_norm"],
        metadata={"help": "The lm-eval metrics reported per task ('<metric>,<filter>' for a filter other than "
                          "'none'); one a task lacks is null."},
    )
    num_fewshot: int | None = field(
        default=None, metadata={"help": "Few-shot examples per question, over the tasks' own setting."})
    limit: float | None = field(
        default=None,
        metadata={"help": "Evaluate only the first LIMIT rows of each task (a fraction when below 1): quick checks "
                          "only."},
    )
    output_json: str = field(default="lm_eval.json", metadata={"help": "Where the metrics are written."})


def main(eval_args: LMEvalArguments, model_args: ModelConfig) -> dict:
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from npo_trl.lm_eval import LMEvalEvaluator
    from npo_trl.models import load_model

    if model_args.model_name_or_path is None:
        raise ValueError("--model_name_or_path is required: the model to evaluate (hub id or local folder).")
    if not eval_args.tasks:
        raise ValueError("--tasks is required: lm-eval task names, e.g. --tasks wmdp_bio wmdp_cyber mmlu.")
    limit = eval_args.limit
    limit = int(limit) if limit is not None and limit >= 1 else limit
    accelerator = Accelerator()  # one process, or several under accelerate launch: each evaluates every row
    tokenizer = AutoTokenizer.from_pretrained(
        eval_args.tokenizer_name_or_path or model_args.model_name_or_path,
        revision=None if eval_args.tokenizer_name_or_path else model_args.model_revision)
    evaluator = LMEvalEvaluator(eval_args.tasks, tokenizer, eval_args.batch_size, eval_args.include_path,
                                tuple(eval_args.metrics), eval_args.num_fewshot, limit,
                                progress=accelerator.is_main_process)  # unknown tasks refused before the model loads
    model = load_model(model_args.model_name_or_path, model_args, accelerator.device)
    metrics = evaluator.evaluate(model, accelerator=accelerator)
    result = {"model": model_args.model_name_or_path, "tasks": eval_args.tasks, "include_path": eval_args.include_path,
              "rows": {task: counts["effective"] for task, counts in evaluator.results["n-samples"].items()},
              "lm_eval_results": evaluator.results["results"], "metrics": metrics,
              "seconds": evaluator.timer.seconds["total"]}
    if accelerator.is_main_process:
        write_result(result, eval_args.output_json)
    return result


def make_parser(prog: str | None = None) -> TrlParser:
    return TrlParser((LMEvalArguments, ModelConfig), prog=prog)


def run(argv: list[str] | None = None, prog: str | None = None) -> dict:
    return main(*make_parser(prog).parse_args_and_config(args=argv))


if __name__ == "__main__":
    run()
