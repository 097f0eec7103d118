"""A model's decoder layers (npo_trl.layers): layer ℓ found and checked, its output caught by a hook, and training
limited to the parameters `trainable_parameters` names."""

import pytest
import torch

from helpers import tiny_llama
from npo_trl.layers import (
    captured_output,
    choose_layers,
    decoder_layers,
    rmu_layer,
    rmu_trainable_parameters,
    train_only,
)


def test_decoder_layers_and_the_papers_default_layer():
    model = tiny_llama(50, layers=3)
    name, layers = decoder_layers(model)
    assert name == "model.layers" and layers is model.model.layers
    assert [rmu_layer(None, n) for n in (2, 3, 32, 80)] == [0, 1, 7, 18]  # round(7/32 · n): zephyr-7b's 7 of 32
    assert rmu_layer(2, 3) == 2
    with pytest.raises(ValueError, match=r"rmu_layer=3 is out of range: the model has 3 decoder layers, so give 0 <= "
                                         r"rmu_layer <= 2"):
        rmu_layer(3, 3)
    with pytest.raises(ValueError, match="no list of its 2 decoder layers"):
        decoder_layers(_without_layers())


def _without_layers():
    model = tiny_llama(50)
    model.model.layers = torch.nn.ModuleList(list(model.model.layers)[:1])
    return model


def test_captured_output_is_the_layers_hidden_states_and_the_hook_goes():
    model = tiny_llama(50, layers=2)
    ids = torch.tensor([[1, 5, 6, 7]])
    with captured_output(model.model.layers[0]) as outputs:
        hidden = model(ids, output_hidden_states=True).hidden_states
    assert len(outputs) == 1
    torch.testing.assert_close(outputs[0], hidden[1])  # transformers' hidden_states[ℓ + 1]
    model(ids)
    assert len(outputs) == 1  # the hook is gone


def test_train_only_freezes_the_others_and_refuses_a_pattern_matching_nothing():
    model = tiny_llama(50, layers=3)
    patterns = rmu_trainable_parameters("model.layers", 2)
    assert train_only(model, patterns) == [f"model.layers.{i}.mlp.down_proj.weight" for i in range(3)]
    assert sum(p.requires_grad for p in model.parameters()) == 3
    assert rmu_trainable_parameters("model.layers", 0) == [r"^model\.layers\.0\.mlp\.down_proj\."]
    with pytest.raises(ValueError, match=r"trainable_parameters: \['mlp\\\\.c_proj'\] match no parameter"):
        train_only(tiny_llama(50), [r"mlp\.down_proj", r"mlp\.c_proj"])


def test_choose_layers_picks_rmus_layer_and_freezes_all_but_the_trainable_parameters():
    def trainable(model):
        return [name for name, param in model.named_parameters() if param.requires_grad]

    model = tiny_llama(50, layers=3)
    assert choose_layers(model, "rmu", None, None) == 1  # round(7/32 · 3); RMU trains layers ℓ-2..ℓ's down_proj
    assert trainable(model) == [f"model.layers.{i}.mlp.down_proj.weight" for i in (0, 1)]
    model = tiny_llama(50, layers=3)
    assert choose_layers(model, "rmu", 2, [r"^model\.layers\.0\.self_attn\.q_proj\."]) == 2
    assert trainable(model) == ["model.layers.0.self_attn.q_proj.weight"]
    model = tiny_llama(50, layers=3)
    everything = trainable(model)
    assert choose_layers(model, "npo", None, None) is None and trainable(model) == everything  # nothing frozen
    assert choose_layers(model, "npo", None, [r"^model\.layers\.2\."]) is None
    assert trainable(model) == [name for name in everything if name.startswith("model.layers.2.")]
