# Copyright 2026 The npo-trl developers. Licensed under the Apache License, Version 2.0.
"""Unlearn a forget set from a model, from the command line: TRL's `trl dpo` script, for NPOTrainer.

    npo-trl --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name my-org/forget-set \
        --retain_dataset_name my-org/retain-set --retain_loss nll --output_dir qwen-npo-rt
    npo-trl --config recipe.yaml                                   # the same arguments in a YAML file
    accelerate launch --config_file examples/accelerate_configs/zero3.yaml -m npo_trl.scripts.unlearn ...

The forget set (`--dataset_name`, `--dataset_config`, `--dataset_train_split`) and the retain set
(`--retain_dataset_name`, `--retain_dataset_config`, `--retain_dataset_split`) are hub datasets, local folders or
local data files (.json, .jsonl, .csv, .parquet), in any format NPOTrainer accepts (prompt/completion, text,
messages, prompt/rejected). Every NPOConfig field is an argument (`--forget_loss`, `--retain_loss`, `--beta`, ...), and
`trl.ModelConfig`'s: `--dtype`, `--attn_implementation`, `--model_revision`, `--use_peft --lora_r ...`,
`--load_in_4bit`. The model is saved to `--output_dir` with a model card, and pushed with `--push_to_hub`.
"""

import os
import warnings
from dataclasses import dataclass, field

from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config, get_quantization_config

from npo_trl import NPOConfig, NPOTrainer
from npo_trl.models import model_init_kwargs
from npo_trl.stages import close_processes

DATA_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class UnlearnScriptArguments(ScriptArguments):
    """TRL's script arguments (`--dataset_name` and friends name the forget set), and the retain set's."""

    retain_dataset_name: str | None = field(
        default=None,
        metadata={"help": "The retain set, for --retain_loss nll/kl: a hub dataset, a local folder or a data file."},
    )
    retain_dataset_config: str | None = field(
        default=None, metadata={"help": "The retain set's configuration (`datasets.load_dataset`'s `name`)."}
    )
    retain_dataset_split: str = field(default="train", metadata={"help": "The retain set's split."})


def load_rows(name: str, config: str | None, split: str, flag: str):
    """One split of a hub dataset, a local folder or a local data file, or a ValueError naming `flag` and the fix."""
    import datasets

    extension = os.path.splitext(name)[1].lower()
    if os.path.isfile(name):
        if extension not in DATA_FILE_BUILDERS:
            raise ValueError(f"{flag} {name!r}: a local file must be one of {sorted(DATA_FILE_BUILDERS)}.")
        return datasets.load_dataset(DATA_FILE_BUILDERS[extension], data_files=name, split="train")
    flag_split = "--dataset_train_split" if flag == "--dataset_name" else "--retain_dataset_split"
    try:
        return datasets.load_dataset(name, name=config, split=split)
    except (FileNotFoundError, ConnectionError) as e:
        raise ValueError(f"{flag} {name!r} is neither a local file or folder nor a dataset that could be loaded "
                         f"from the hub: {e}") from e
    except ValueError as e:
        if "split" not in str(e).lower():
            raise
        raise ValueError(f"{flag} {name!r} has no split {split!r} ({e}); set {flag_split}.") from e


def check_arguments(script_args: UnlearnScriptArguments, args: NPOConfig, model_args: ModelConfig) -> None:
    """Refuse, before any model loads, what cannot run."""
    from transformers.utils import is_peft_available

    if model_args.model_name_or_path is None:
        raise ValueError("--model_name_or_path is required: the model to unlearn from (hub id or local folder).")
    if script_args.dataset_name is None:
        raise ValueError("--dataset_name is required: the forget set (hub id, local folder or data file).")
    if args.retain_loss is not None and script_args.retain_dataset_name is None:
        raise ValueError(f"--retain_loss {args.retain_loss} trains on a retain set: give it with "
                         "--retain_dataset_name (or drop --retain_loss).")
    if args.retain_loss is None and script_args.retain_dataset_name is not None:
        warnings.warn(f"--retain_dataset_name {script_args.retain_dataset_name!r} is not used without --retain_loss "
                      "(nll or kl).")
    if model_args.use_peft and not is_peft_available():
        raise ValueError("--use_peft needs the peft package: pip install 'npo-trl[peft]' (or drop --use_peft).")


def main(script_args: UnlearnScriptArguments, args: NPOConfig, model_args: ModelConfig) -> NPOTrainer:
    check_arguments(script_args, args, model_args)
    args.model_init_kwargs = {**model_init_kwargs(model_args), "trust_remote_code": args.trust_remote_code,
                              **(args.model_init_kwargs or {})}
    forget = load_rows(script_args.dataset_name, script_args.dataset_config, script_args.dataset_train_split,
                       "--dataset_name")
    retain = None
    if args.retain_loss is not None:
        retain = load_rows(script_args.retain_dataset_name, script_args.retain_dataset_config,
                           script_args.retain_dataset_split, "--retain_dataset_name")
    trainer = NPOTrainer(model_args.model_name_or_path, args=args, train_dataset=forget, retain_dataset=retain,
                         quantization_config=get_quantization_config(model_args),
                         peft_config=get_peft_config(model_args))
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model(args.output_dir)
    trainer.create_model_card(dataset_name=script_args.dataset_name)
    trainer.accelerator.print(f"Model saved to {args.output_dir}.")
    if args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
        trainer.accelerator.print(f"Model pushed to https://huggingface.co/{trainer.hub_model_id}.")
    return trainer


def make_parser(prog: str | None = None) -> TrlParser:
    return TrlParser((UnlearnScriptArguments, NPOConfig, ModelConfig), prog=prog)


def run(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Parse `argv` (default: the command line), train, save; then free the process group."""
    script_args, args, model_args = make_parser(prog).parse_args_and_config(args=argv)
    trainer = main(script_args, args, model_args)
    del trainer
    close_processes()


if __name__ == "__main__":
    run()
