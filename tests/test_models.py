"""npo_trl.models: the loading settings of a trl.ModelConfig, and a saved model or LoRA adapters loaded whole."""

import torch
from trl import ModelConfig

from npo_trl.models import load_model, model_init_kwargs


def test_model_init_kwargs_follow_model_config():
    assert model_init_kwargs() == {"revision": "main", "dtype": "float32", "attn_implementation": None}
    model_args = ModelConfig(dtype="bfloat16", attn_implementation="sdpa", model_revision="v1")
    assert model_init_kwargs(model_args) == {"revision": "v1", "dtype": "bfloat16", "attn_implementation": "sdpa"}
    assert model_init_kwargs(ModelConfig(dtype=None))["dtype"] == "float32"


def test_load_model_whole_with_model_config_settings(finetuned_dir, finetuned):
    model = load_model(finetuned_dir, ModelConfig(dtype="bfloat16"), device="cpu")
    assert model.dtype == torch.bfloat16 and model.device.type == "cpu"
    default = load_model(finetuned_dir)
    assert default.dtype == torch.float32
    for loaded, original in zip(default.parameters(), finetuned.parameters(), strict=True):
        assert torch.equal(loaded, original)


def test_load_model_puts_lora_adapters_onto_their_base(tmp_path, finetuned_dir, finetuned):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(finetuned, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_config.json").exists() and not (tmp_path / "config.json").exists()
    model = load_model(str(tmp_path), device="cpu")
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, peft_model(ids).logits, atol=1e-5)
        with peft_model.disable_adapter():
            assert not torch.allclose(model(ids).logits, peft_model(ids).logits, atol=1e-5)  # the adapters count
