# Copyright 2026 The npo-trl developers. Licensed under the Apache License, Version 2.0.
"""The staged run of an unlearning experiment (examples/tofu.py, examples/muse.py): each stage saves a model into a
folder of its own and is skipped when that model is there, so a run that crashed resumes from its last finished
stage. The pieces both experiments share: a tokenizer and a tiny Llama built here (nothing downloaded), TRL's
`SFTConfig` with the unlearning configuration's shared settings, the supervised and unlearning stages, and reading the
JSON Lines an evaluation callback writes.

Every stage runs on every process of an `accelerate launch` and ends with all of them waiting for each other, so the
next stage finds the same files on each. The heavy libraries are imported when a function needs them:
`import npo_trl.stages` stays light for the reports that only read files.
"""

import json
import os
import shutil
from dataclasses import dataclass, field

MODEL_FILES = ("config.json", "adapter_config.json")  # a whole model, or LoRA adapters


@dataclass
class TinyLlamaArguments:
    r"""
    The built-in base model of an experiment run without a given model: a small Llama built from a config
    (`tiny_llama`) for a byte-level BPE tokenizer trained on the experiment's data (`train_tokenizer`).

    Parameters:
        hidden_size (`int`, *optional*, defaults to `128`):
            Hidden size; the MLP is 4 times as wide, with one attention head per 64 dimensions.
        num_layers (`int`, *optional*, defaults to `4`):
            Number of decoder layers.
        vocab_size (`int`, *optional*, defaults to `2048`):
            Size of the tokenizer's vocabulary, special tokens included.
    """

    hidden_size: int = field(default=128, metadata={"help": "Built-in model: hidden size."})
    num_layers: int = field(default=4, metadata={"help": "Built-in model: number of layers."})
    vocab_size: int = field(default=2048, metadata={"help": "Built-in model: size of its BPE vocabulary."})


def is_done(path: str) -> bool:
    """Whether a stage saved its model in `path`: a model's `config.json`, or LoRA adapters' `adapter_config.json`."""
    return any(os.path.exists(os.path.join(path, name)) for name in MODEL_FILES)


def clean_interrupted_stage(path: str) -> None:
    """Remove what an interrupted run of a stage left in `path` (its partial metrics and checkpoints), so that the
    stage starts again clean: the main process deletes the folder, then every process waits for it."""
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process and os.path.isdir(path):
        shutil.rmtree(path)
    state.wait_for_everyone()


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer of `vocab_size` tokens trained on `texts` (nothing is downloaded): special tokens
    `<pad>`, `<s>` (prepended to every text, the BOS token) and `</s>` (the EOS token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def tiny_llama(tokenizer, hidden_size: int = 128, num_layers: int = 4, max_position_embeddings: int = 512,
               seed: int = 0):
    """A small Llama built from a config, for `tokenizer`'s vocabulary and special tokens, its weights drawn with
    `seed`: an MLP of 4 × `hidden_size`, one attention head per 64 dimensions, input and output embeddings tied."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=max(1, hidden_size // 64),
        max_position_embeddings=max_position_embeddings, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True))


def sft_config(args, output_dir: str, **changes):
    """TRL's `SFTConfig` for a supervised stage of a run whose unlearning configuration is `args` (an `NPOConfig`):
    its seed, precision, device and process settings, activation checkpointing, reporting and progress bars, with a
    stage's own defaults (linear decay, weight decay 0.01, a log line every 25 steps, no checkpoints) and `changes`
    (epochs, learning rate, batch size, ...) applied last."""
    from trl import SFTConfig

    shared = {name: getattr(args, name) for name in (
        "seed", "bf16", "fp16", "ddp_backend", "use_cpu", "report_to", "activation_checkpointing",
        "dataloader_pin_memory", "disable_tqdm", "max_length")}
    stage = {"lr_scheduler_type": "linear", "weight_decay": 0.01, "logging_steps": 25, "save_strategy": "no"}
    return SFTConfig(output_dir=output_dir, **{**shared, **stage, **changes})


def sft_stage(model, args, train_dataset, processing_class) -> str:
    """Supervised training with TRL's `SFTTrainer` into `args.output_dir` (`args` an `SFTConfig`, e.g. from
    `sft_config`), unless a model is saved there already; the model (a model, or a path loaded with
    `args.model_init_kwargs`) and its tokenizer are saved there. Returns that folder."""
    from accelerate import PartialState
    from trl import SFTTrainer

    if not is_done(args.output_dir):
        trainer = SFTTrainer(model, args=args, train_dataset=train_dataset, processing_class=processing_class)
        trainer.train()
        trainer.save_model(args.output_dir)
        del trainer
    PartialState().wait_for_everyone()
    return args.output_dir


def unlearning_stage(model, args, method: str, output_dir: str, train_dataset, retain_dataset=None, *,
                     processing_class=None, model_args=None, callbacks=None, seed: int | None = None,
                     replacement_answers: list[str] | None = None) -> str:
    """One unlearning run: `model` (a path) unlearned with `method` (`NPOConfig.for_method`: "npo", "npo+rt", ...)
    into `output_dir`/final, unless a model is saved there already; returns that folder.

    A run interrupted mid-way starts again in a clean `output_dir` (`clean_interrupted_stage`), without its partial
    metrics. The run's `NPOConfig` is `args` for `method`, with `output_dir`, `seed` when given, the loading settings
    of `model_args` (a `trl.ModelConfig`: dtype, attention, revision, and its LoRA and quantization flags) and, for a
    method that trains towards replacement answers (idk, dpo) with none in `args`, `replacement_answers`.
    `retain_dataset` is used by the methods with a retain loss only.
    """
    import gc

    from trl import ModelConfig, get_peft_config, get_quantization_config

    from .models import model_init_kwargs
    from .trainer import NPOTrainer

    final = os.path.join(output_dir, "final")
    if is_done(final):
        return final
    clean_interrupted_stage(output_dir)
    model_args = model_args or ModelConfig()
    method_args = args.for_method(method, output_dir=output_dir, **({} if seed is None else {"seed": seed}))
    method_args.model_init_kwargs = model_init_kwargs(model_args)
    if method_args.needs_replacement and method_args.replacement_answers is None:
        method_args.replacement_answers = replacement_answers
    trainer = NPOTrainer(
        model, args=method_args, train_dataset=train_dataset,
        retain_dataset=retain_dataset if method_args.retain_loss else None, processing_class=processing_class,
        callbacks=callbacks, quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args))
    trainer.train()
    trainer.save_model(final)
    del trainer
    gc.collect()
    return final


def read_jsonl(path: str) -> list[dict]:
    """The rows of a JSON Lines file, e.g. the `tofu_metrics.jsonl` or `muse_metrics.jsonl` an evaluation callback
    appends to."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def save_arguments(output_dir: str, **arguments) -> None:
    """Write the run's arguments to `output_dir`/arguments.json, by the main process: each of `arguments` (a name and
    a dataclass such as `NPOConfig`, `trl.ModelConfig` or the script's) as a dict, so that the run can be repeated and
    its stages reused (benchmarks/evaluation.py rebuilds the unlearning stage from it)."""
    import dataclasses

    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    values = {name: value.to_dict() if hasattr(value, "to_dict") else dataclasses.asdict(value)
              for name, value in arguments.items()}
    for fields in values.values():  # `to_dict` writes "<HUB_TOKEN>" for a `*_token` field: null, so a rebuild is clean
        fields.update({key: None for key, value in fields.items() if value == f"<{key.upper()}>"})
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "arguments.json"), "w") as f:
        json.dump(values, f, indent=1, default=str)


def experiment_parser(dataclass_types, **defaults):
    """TRL's `TrlParser` over `dataclass_types` (e.g. a script's arguments, its evaluation settings, `NPOConfig` and
    `trl.ModelConfig`) with the unlearning defaults of an experiment run offline on a CPU (a constant learning rate, a
    log line every 5 steps, no checkpoints, no reporting, no activation checkpointing, beta 0.1), then `defaults`."""
    from trl import TrlParser

    parser = TrlParser(dataclass_types)
    parser.set_defaults(lr_scheduler_type="constant", logging_steps=5, save_strategy="no", report_to="none",
                        activation_checkpointing=False, beta=0.1, **defaults)
    return parser


def run_script(main, parser) -> None:
    """A script's entry point: `main` called with the dataclasses `parser` fills from the command line (and its
    --config file), then `close_processes`."""
    main(*parser.parse_args_and_config())
    close_processes()


def close_processes() -> None:
    """The end of a script: free the trainers' wrappers, which hold the process group, then destroy it (a clean exit
    under `accelerate launch`; nothing to do in a single process)."""
    import gc

    from accelerate import PartialState

    gc.collect()
    PartialState().destroy_process_group()
