"""Models outside the trainer's own loading: π_ref of a PEFT model trained without `ref_model` (for the trainer and
the evaluation callbacks), and loading a model whole, with `trl.ModelConfig`'s settings, beside a ZeRO-3 run (for the
examples' stages that load models outside a trainer)."""

import contextlib

from trl.trainer.utils import use_adapter


def reference_adapter(peft_model):
    """Context in which `peft_model` computes π_ref: its adapters off, or its "ref" adapter on if it has one (TRL's
    convention for a reference adapter)."""
    return use_adapter(peft_model, adapter_name="ref" if "ref" in peft_model.peft_config else None)


def model_init_kwargs(model_args) -> dict:
    """What a `trl.ModelConfig` says about loading any model: revision, dtype (float32 by default), attention
    implementation; for `from_pretrained` or `NPOConfig.model_init_kwargs`."""
    return {"revision": model_args.model_revision, "dtype": model_args.dtype or "float32",
            "attn_implementation": model_args.attn_implementation}


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
