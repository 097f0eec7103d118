"""The quantization attack (Zhang et al. ICLR 2025, "Catastrophic failure of LLM unlearning via quantization", arXiv
2410.16454): an unlearned model loaded in 8 bits, or in 4 bits (NF4), with bitsandbytes, as anyone holding the weights
may load it. When unlearning moved the weights less than the quantization step, the quantized unlearned model rounds
back to the fine-tuned one and what it forgot returns."""

import contextlib
import logging
import os
import tempfile

import torch

BITS = (4, 8)
INSTALL = "pip install 'npo-trl[attacks]'"  # what brings bitsandbytes


def quantization_config(bits: int, compute_dtype: torch.dtype = torch.float32):
    """transformers' `BitsAndBytesConfig` for `bits`: 8 → LLM.int8() (`load_in_8bit`); 4 → NF4 (`load_in_4bit`,
    `bnb_4bit_quant_type="nf4"`), computing in `compute_dtype`; the two settings of the quantization paper."""
    if bits not in BITS:
        raise ValueError(f"bits={bits!r}: bitsandbytes quantizes to 8 bits or to 4 bits (NF4); use bits=8 or bits=4.")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        raise ImportError(f"The quantization attack loads the model with bitsandbytes, which is not installed: "
                          f"`{INSTALL}` (or `pip install bitsandbytes>=0.50`).") from error
    from transformers import BitsAndBytesConfig

    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype)


def quantized_copy(model_or_path, bits: int, dtype: torch.dtype = torch.float32, device=None,
                   **from_pretrained_kwargs):
    """A copy of a causal language model loaded in `bits` bits (8, or 4 with NF4) with bitsandbytes, in eval mode.

    `model_or_path` is a saved model's folder (or hub id), or a model in memory, which is saved to a temporary folder
    and loaded back from it (the folder is removed at once); the input model is never changed. A PEFT model is
    refused: merge its adapters into a copy first (`merge_and_unload`) and pass that. The weights that bitsandbytes
    does not quantize (embeddings, norms, the LM head) and the 4-bit computation use `dtype`; the copy lives on
    `device` (default: this process's, `accelerate.PartialState().device`). `from_pretrained_kwargs` go to
    `AutoModelForCausalLM.from_pretrained`. Raises a ValueError for bits other than 4 or 8 and an ImportError naming
    the fix when bitsandbytes is missing.
    """
    config = quantization_config(bits, dtype)
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM

    if hasattr(model_or_path, "peft_config"):
        raise ValueError("quantized_copy got a PEFT model: merge its adapters into a copy first "
                         "(`copy.deepcopy(model).merge_and_unload()`) or pass the folder of a merged model.")
    if bits == 8:
        _quiet_cast_notice()
    device = PartialState().device if device is None else torch.device(device)
    kwargs = {"dtype": dtype, "device_map": {"": device}, **from_pretrained_kwargs, "quantization_config": config}
    with _saved(model_or_path) as path:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    return model.eval()


class _DropCastNotice(logging.Filter):
    """Drops bitsandbytes' notice that an 8-bit layer casts float32 inputs to float16, logged at every call of every
    layer (an evaluation would print it thousands of times); its other messages pass."""

    def filter(self, record):
        return "inputs will be cast from" not in record.getMessage()


def _quiet_cast_notice():
    log = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _DropCastNotice) for f in log.filters):
        log.addFilter(_DropCastNotice())


@contextlib.contextmanager
def _saved(model_or_path):
    """The folder of a saved model: `model_or_path` itself if it is a path, else a temporary folder it is saved to."""
    if isinstance(model_or_path, (str, os.PathLike)):
        yield str(model_or_path)
        return
    with tempfile.TemporaryDirectory(prefix="npo_trl_attack_") as folder:
        model_or_path.save_pretrained(folder)
        yield folder


class QuantizeAttack:
    r"""
    The quantization attack as `RobustnessEvaluator` runs it: `attack(model_or_path)` is `quantized_copy(...,
    bits)`, named `"quantize8"` or `"quantize4"` in the metric keys.

    Parameters:
        bits (`int`):
            8 (LLM.int8()) or 4 (NF4).
        quantize_kwargs:
            More arguments of `quantized_copy` (dtype, device, `from_pretrained` arguments).
    """

    runs_under_several_processes = True  # the main process alone loads and evaluates the copy

    def __init__(self, bits: int, **quantize_kwargs):
        quantization_config(bits)  # refuse bad bits, or a missing bitsandbytes, at once
        self.bits, self.kwargs, self.name = bits, quantize_kwargs, f"quantize{bits}"

    def __call__(self, model_or_path):
        return quantized_copy(model_or_path, self.bits, **self.kwargs)
