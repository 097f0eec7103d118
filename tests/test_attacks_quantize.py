"""npo_trl.attacks.quantize: 8- and 4-bit (NF4) copies with bitsandbytes, on this CPU, close to the fp32 model; the
input model untouched; bad bits, a PEFT model and a missing bitsandbytes refused, naming the fix."""

import sys

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaForCausalLM

from npo_trl.attacks import QuantizeAttack, quantized_copy


def _log_probs(model, tokenizer):
    batch = tokenizer(["Where does agent 3 live? Agent 3 lives in", "What colour does agent 9 like?"],
                      return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits.float().log_softmax(-1), batch["attention_mask"].bool()


def test_quantized_copies_are_close_to_the_fp32_model_and_leave_it_untouched(finetuned_dir, finetuned, tokenizer):
    before = {key: value.clone() for key, value in finetuned.state_dict().items()}
    reference, mask = _log_probs(finetuned, tokenizer)
    # measured on this model: KL ~6e-6 (8 bits), ~2e-4 (4 bits)
    cases = (8, finetuned_dir, "Linear8bitLt", 1e-3), (4, finetuned, "Linear4bit", 1e-2)  # from a folder, from memory
    for bits, source, layer_kind, max_kl in cases:
        copy = quantized_copy(source, bits)
        assert type(copy.model.layers[0].self_attn.q_proj).__name__ == layer_kind
        log_probs, _ = _log_probs(copy, tokenizer)
        kl = (reference.exp() * (reference - log_probs)).sum(-1)[mask].mean()
        assert 0 < kl < max_kl, (bits, kl)  # quantized (not equal), yet close
        del copy
    # quantizing the in-memory model changed none of its weights, nor its layers' kind
    assert all(torch.equal(before[key], value) for key, value in finetuned.state_dict().items())
    assert isinstance(finetuned.model.layers[0].self_attn.q_proj, torch.nn.Linear)
    assert finetuned.dtype == torch.float32
    assert QuantizeAttack(4).name == "quantize4"


def test_bad_bits_and_missing_bitsandbytes_are_refused(finetuned_dir, monkeypatch):
    with pytest.raises(ValueError, match=r"bits=3.*use bits=8 or bits=4"):
        quantized_copy(finetuned_dir, 3)
    with pytest.raises(ValueError, match=r"bits=16"):
        QuantizeAttack(16)
    peft_model = get_peft_model(LlamaForCausalLM.from_pretrained(finetuned_dir), LoraConfig(target_modules=["q_proj"]))
    with pytest.raises(ValueError, match=r"PEFT model: merge its adapters.*merge_and_unload"):
        quantized_copy(peft_model, 4)
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # what `import bitsandbytes` meets when it is absent
    with pytest.raises(ImportError, match=r"pip install 'npo-trl\[attacks\]'"):
        quantized_copy(finetuned_dir, 4)
