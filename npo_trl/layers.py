"""A model's decoder layers, for the methods that read or train some of them (RMU): finding layer ℓ, capturing its
output during a forward pass, and training only the parameters whose names match `NPOConfig.trainable_parameters`."""

import contextlib
import re

import torch

# RMU's layer as the WMDP paper's code places it in zephyr-7b: the output of decoder layer 7 of 32.
RMU_LAYER_FRACTION = 7 / 32


def decoder_layers(model) -> tuple[str, torch.nn.ModuleList]:
    """The qualified name and the `ModuleList` of `model`'s decoder layers (the first list of
    `config.num_hidden_layers` modules: `model.layers` of a Llama, `transformer.h` of a GPT-2). `model` is the bare
    model, not a DDP or DeepSpeed wrapper (`accelerator.unwrap_model`)."""
    num_layers = model.config.get_text_config().num_hidden_layers
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == num_layers:
            return name, module
    raise ValueError(f"{type(model).__name__} has no list of its {num_layers} decoder layers (config."
                     "num_hidden_layers): RMU reads and trains decoder layers, so it needs a decoder-only model.")


def rmu_layer(requested: int | None, num_layers: int) -> int:
    """The decoder layer ℓ whose output RMU steers: `requested` (`NPOConfig.rmu_layer`), or by default the paper's
    depth, round(7/32 · num_layers) (7 of zephyr-7b's 32; 0 of a 2-layer model)."""
    layer = round(RMU_LAYER_FRACTION * num_layers) if requested is None else requested
    if not 0 <= layer < num_layers:
        raise ValueError(f"rmu_layer={requested} is out of range: the model has {num_layers} decoder layers, so give "
                         f"0 <= rmu_layer <= {num_layers - 1} (or None for round(7/32 · {num_layers}) = "
                         f"{round(RMU_LAYER_FRACTION * num_layers)}).")
    return layer


def rmu_trainable_parameters(layers_name: str, layer: int) -> list[str]:
    """RMU's default trainable parameters, as the WMDP paper's code trains zephyr-7b: the MLP's down projection of
    layers ℓ-2, ℓ-1 and ℓ (those that exist), as `trainable_parameters` patterns."""
    return [rf"^{re.escape(layers_name)}\.{index}\.mlp\.down_proj\." for index in range(max(0, layer - 2), layer + 1)]


def train_only(model, patterns: list[str]) -> list[str]:
    """Freeze every parameter of `model` whose name matches none of `patterns` (regular expressions, `re.search`)
    and return the names of the others, which keep their `requires_grad`. Call it before the optimizer is built (and
    DeepSpeed initialised): both take the parameters that require gradients."""
    names = [name for name, _ in model.named_parameters()]
    unmatched = [pattern for pattern in patterns if not any(re.search(pattern, name) for name in names)]
    if unmatched:
        raise ValueError(f"trainable_parameters: {unmatched} match no parameter of the model (e.g. {names[:3]}): "
                         "give regular expressions that match parameter names (re.search), e.g. "
                         r"'^model\.layers\.7\.mlp\.down_proj\.'.")
    trainable = []
    for name, param in model.named_parameters():
        if any(re.search(pattern, name) for pattern in patterns):
            trainable.append(name)
        else:
            param.requires_grad_(False)
    return trainable


def choose_layers(model, forget_loss: str, requested_layer: int | None, patterns: list[str] | None) -> int | None:
    """RMU's layer ℓ (`rmu_layer`, checked against `model`; None for another `forget_loss`), after freezing every
    parameter but those `patterns` match (`NPOConfig.trainable_parameters`; for RMU by default
    `rmu_trainable_parameters`; None and not RMU: nothing frozen). `NPOTrainer` calls it before the optimizer and
    DeepSpeed take the parameters that require gradients."""
    layers_name, layers = decoder_layers(model) if forget_loss == "rmu" else (None, None)
    layer = None if layers is None else rmu_layer(requested_layer, len(layers))
    if patterns is None and forget_loss == "rmu":
        patterns = rmu_trainable_parameters(layers_name, layer)
    if patterns is not None:
        train_only(model, patterns)
    return layer


@contextlib.contextmanager
def captured_output(module: torch.nn.Module):
    """Within this context, the output of each forward call of `module` (its hidden states: a decoder layer's first
    output) is appended to the list it yields. The hook is gone on leaving, so that activation checkpointing's
    recomputation in the backward pass appends nothing."""
    outputs = []

    def hook(_, __, output):
        outputs.append(output[0] if isinstance(output, tuple) else output)

    handle = module.register_forward_hook(hook)
    try:
        yield outputs
    finally:
        handle.remove()
