"""`NPOTrainer`'s input checks, in one place: inputs that cannot train are refused with the fix named, inputs the
objective does not use are dropped with a warning."""

import warnings

import torch
from datasets import Dataset
from transformers import AutoProcessor, PreTrainedModel
from trl.trainer.utils import get_config_model_id

from .config import NPOConfig
from .data import unstack
from .prompts import tokenizer_of


def checked_processing_class(model, processing_class=None):
    """`processing_class`, or the one loaded from `model` (its name or path); a tokenizer without a pad token gets
    its EOS token as one (what the trainer pads with), and one with neither is refused."""
    if processing_class is None:
        processing_class = AutoProcessor.from_pretrained(model if isinstance(model, str) else
                                                         get_config_model_id(model.config))
    tokenizer = tokenizer_of(processing_class)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("processing_class has neither a pad_token nor an eos_token: set tokenizer.pad_token.")
        tokenizer.pad_token = tokenizer.eos_token
    return processing_class


def checked_inputs(model, ref_model, args, train_dataset, retain_dataset, compute_metrics, peft_config):
    """Refuse inputs that cannot train (naming the fix) and drop those the objective does not use (with a warning);
    returns the `ref_model` and `retain_dataset` to use."""
    if not isinstance(args, NPOConfig):
        raise ValueError(f"args must be an NPOConfig, got {type(args).__name__}: use NPOConfig(**args.to_dict()).")
    if train_dataset is None or (isinstance(train_dataset, Dataset) and len(train_dataset) == 0):
        raise ValueError("train_dataset, the forget set, is missing or empty: pass the rows to unlearn.")
    if args.retain_loss is not None and retain_dataset is None:
        raise ValueError(f"retain_loss={args.retain_loss!r} needs retain_dataset: pass the retain set.")
    if args.retain_loss is None and retain_dataset is not None:
        warnings.warn("retain_dataset is ignored because retain_loss is None: set retain_loss='nll' or 'kl'.")
        retain_dataset = None
    if ref_model is not None and not args.needs_reference:
        warnings.warn(
            f"forget_loss={args.forget_loss!r} with retain_loss={args.retain_loss!r} uses no reference model: "
            "the ref_model passed is ignored."
        )
        ref_model = None
    if ref_model is not None and isinstance(model, PreTrainedModel):
        vocab, ref_vocab = (m.config.get_text_config().vocab_size for m in (model, ref_model))
        if vocab != ref_vocab:
            raise ValueError(
                f"model and ref_model have different vocabularies ({vocab} vs {ref_vocab} tokens): the reference "
                "must be the model before unlearning, with the same tokenizer."
            )
    if args.retain_loss == "kl" and args.precompute_ref_log_probs and ref_model is None and peft_config is None:
        raise ValueError(
            "retain_loss='kl' compares full next-token distributions with π_ref on retain rows, which cannot be "
            "precomputed: set precompute_ref_log_probs=False, or pass ref_model."
        )
    peft = peft_config is not None or hasattr(model, "peft_config")
    if peft and (args.forget_loss == "rmu" or args.trainable_parameters is not None):
        raise ValueError(
            f"forget_loss={args.forget_loss!r} with trainable_parameters={args.trainable_parameters} chooses which of "
            "the model's own weights train, which a PEFT model does not train: drop peft_config (use_peft) and train "
            "the full model (RMU updates a few MLP matrices only), or choose the adapted modules in peft_config."
        )
    if compute_metrics is not None:
        raise ValueError(
            "compute_metrics is not supported: NPOTrainer's evaluation reports the forget loss and log-probs. "
            "For benchmark metrics during training use npo_trl.tofu.TOFUCallback (or npo_trl.eval's callback)."
        )
    return ref_model, retain_dataset


def finite_rows(trainer, values, batch, role, paired) -> torch.Tensor:
    """Which rows of `trainer`'s `batch` have finite `values` (log-probs): raise (naming the step and rows) or count
    the others in the `nonfinite/rows` metric, per `nonfinite_loss`."""
    finite = torch.stack([torch.isfinite(v) for v in values]).all(0)
    if paired:  # a pair is usable only if both its rows are
        finite = torch.cat([torch.logical_and(*unstack(finite, paired))] * 2)
    num_bad = trainer.accelerator.gather(finite.logical_not().sum().reshape(1)).sum().item()
    if num_bad == 0:
        return finite
    bad = finite.logical_not().nonzero().squeeze(1)
    if "row_index" in batch:
        bad = batch["row_index"][bad % len(batch["row_index"])]
    where = f"step {trainer.state.global_step}: {num_bad} {role} row(s) (this process: dataset rows " \
            f"{sorted(set(bad.tolist()))})"
    if trainer.args.nonfinite_loss == "raise":
        raise ValueError(
            f"Non-finite log-probabilities at {where}; nothing was applied to the weights. Check those rows and "
            "the model's precision, or set nonfinite_loss='skip' to leave such rows out of the loss."
        )
    if not finite.any():
        raise ValueError(f"Every row of the batch has non-finite log-probabilities at {where}.")
    trainer._metrics["train" if trainer.model.training else "eval"]["nonfinite/rows"].append(num_bad)
    return finite


def check_finite(loss: torch.Tensor, step: int) -> None:
    """Refuse a non-finite loss whose rows' log-probabilities were all finite."""
    if not torch.isfinite(loss):
        raise ValueError(
            f"The loss is {loss.item()} at step {step} although every row's log-probabilities "
            "are finite: lower learning_rate, or check the model for overflow (e.g. fp16)."
        )
