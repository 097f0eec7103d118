"""Models outside the trainer's own loading: π_ref of a PEFT model trained without `ref_model` (for the trainer and the
evaluation callbacks) and the context the trainer computes π_ref in, the float32 adapters of a float32 QLoRA run (for
the trainer), and loading a saved model whole, with `trl.ModelConfig`'s settings, beside a ZeRO-3 run (for the
examples' stages, the CLI scripts and the benchmarks, which load models outside a trainer)."""

import contextlib
import os

from trl import ModelConfig
from trl.trainer.utils import use_adapter


def reference_adapter(peft_model):
    """Context in which `peft_model` computes π_ref: its adapters off, or its "ref" adapter on if it has one (TRL's
    convention for a reference adapter)."""
    return use_adapter(peft_model, adapter_name="ref" if "ref" in peft_model.peft_config else None)


@contextlib.contextmanager
def reference_context(trainer):
    """π_ref in `trainer` (an `NPOTrainer`): no gradients, no activation checkpointing, and for a PEFT model without
    `ref_model`, its adapters off (`reference_adapter`)."""
    import torch
    from accelerate.utils import is_peft_model
    from trl.models.utils import disable_gradient_checkpointing

    adapter = contextlib.nullcontext()
    if trainer.ref_model is None and is_peft_model(trainer.model):
        adapter = reference_adapter(trainer.accelerator.unwrap_model(trainer.model))
    with torch.no_grad(), disable_gradient_checkpointing(trainer.model, trainer.args.gradient_checkpointing_kwargs), \
            adapter:
        yield


def upcast_quantized_adapters(model, args) -> None:
    """Give the trainable weights of a PEFT model on a quantized base (QLoRA: `--load_in_4bit --use_peft`) back their
    float32, in a run without mixed precision (neither `args.bf16` nor `args.fp16`); any other model is left as it is.

    TRL's DPOTrainer casts a quantized model's adapters to bfloat16, the QLoRA paper's setting for bf16 training
    (arXiv 2305.14314). Without mixed precision the optimizer then steps the bfloat16 weights themselves, and a
    bfloat16 weight drops any update below half its spacing (~2.4e-4 near LoRA A's initial size, ~0.1): at NPO's
    learning rates LoRA A hardly moves (measured on a 4-bit tiny Llama: 4 steps at lr 1e-5 left 98% of its entries
    unchanged). The 4-bit layers compute in float32 here (`bnb_4bit_compute_dtype` is `ModelConfig.dtype`)."""
    import torch

    quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
    if args.bf16 or args.fp16 or not quantized:
        return
    for param in model.parameters():
        if param.requires_grad and param.dtype == torch.bfloat16:
            param.data = param.data.float()


def model_init_kwargs(model_args=None) -> dict:
    """What a `trl.ModelConfig` says about loading any model: revision, dtype (float32 by default), attention
    implementation; for `from_pretrained` or `NPOConfig.model_init_kwargs`. `None` stands for `ModelConfig()`."""
    model_args = model_args or ModelConfig()
    return {"revision": model_args.model_revision, "dtype": model_args.dtype or "float32",
            "attn_implementation": model_args.attn_implementation}


def load_model(path: str, model_args=None, device=None, merge_adapters: bool = False):
    """A saved causal language model (a folder or a hub id), whole, loaded with `model_args`' settings
    (`model_init_kwargs`) on `device` (default: this process's device, `accelerate.PartialState().device`). A folder
    of LoRA adapters (`adapter_config.json`, as an unlearning stage run with `--use_peft` saves) is loaded onto the
    base model it names; with `merge_adapters`, merged into it (a plain model, as the attacks take one). Under
    ZeRO-3, load it inside `outside_zero3`."""
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import create_model_from_path

    kwargs = {**model_init_kwargs(model_args), "device_map": None}
    if os.path.exists(os.path.join(path, "adapter_config.json")) and merge_adapters:
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path, **kwargs).merge_and_unload()
    elif os.path.exists(os.path.join(path, "adapter_config.json")):
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    else:
        model = create_model_from_path(path, **kwargs)
    return model.to(PartialState().device if device is None else device)


@contextlib.contextmanager
def outside_zero3(args):
    """Models loaded in this context, outside a trainer, are whole on each process: under ZeRO-3 (`args`, a
    TrainingArguments with a DeepSpeed config), transformers would otherwise partition them with zero.Init, which only
    works when every process loads the same model at the same time."""
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if getattr(args, "hf_deepspeed_config", None) is not None:
            set_hf_deepspeed_config(args.hf_deepspeed_config)
