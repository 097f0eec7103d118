"""π_ref of a PEFT model trained without `ref_model`, in one place for the trainer and the evaluation callbacks."""

from trl.trainer.utils import use_adapter


def reference_adapter(peft_model):
    """Context in which `peft_model` computes π_ref: its adapters off, or its "ref" adapter on if it has one (TRL's
    convention for a reference adapter)."""
    return use_adapter(peft_model, adapter_name="ref" if "ref" in peft_model.peft_config else None)
