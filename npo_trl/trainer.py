import contextlib
import textwrap
import warnings

import torch
from datasets import Dataset, IterableDataset
from transformers import PreTrainedModel
from trl import DPOTrainer
from trl.trainer.utils import get_config_model_id

from . import losses
from .checks import check_finite, checked_inputs, checked_processing_class, finite_rows
from .config import NPOConfig
from .data import DataCollatorForUnlearning, RetainStream, to_unlearning_rows, unstack
from .layers import captured_output, choose_layers, decoder_layers
from .method_state import MethodStateCallback
from .methods import DISTRIBUTIONS, HIDDEN, TOKENS, ForgetInputs, Method
from .models import reference_context, upcast_quantized_adapters
from .prompts import tokenizer_of


class NPOTrainer(DPOTrainer):
    """
    Trainer for unlearning with Negative Preference Optimization, from [Negative Preference Optimization: From
    Catastrophic Collapse to Effective Unlearning](https://huggingface.co/papers/2404.05868).

    NPO is DPO with only a rejected answer, so this trainer is TRL's [`~trl.DPOTrainer`]: the reference model
    (a frozen copy of `model`, or the PEFT base with adapters disabled), `precompute_ref_log_probs`, PEFT, DeepSpeed
    and logging are DPO's. What differs: forget-only datasets, an optional retain set, and the losses of
    [`NPOConfig`] (the rows of `npo_trl.methods.METHODS`: NPO, GA, SimNPO, IDK, DPO, WGA, ..., PDU; + NLL or KL on the
    retain set; and RMU, on a layer's activations, training only `trainable_parameters`).

    Example:

    ```python
    >>> from npo_trl import NPOConfig, NPOTrainer

    >>> trainer = NPOTrainer(
    ...     model, ref_model, args=NPOConfig(output_dir="out", beta=0.1), train_dataset=forget_ds,
    ...     processing_class=tokenizer,
    ... )
    >>> trainer.train()
    ```

    Args:
        model (`str`, [`~transformers.PreTrainedModel`] or [`~peft.PeftModel`]):
            The model to unlearn from, as for [`~trl.DPOTrainer`].
        ref_model ([`~transformers.PreTrainedModel`], *optional*):
            π_ref, the model before unlearning. If `None`, a frozen copy is loaded from `model`'s path (or, for a PEFT
            model, its adapters are disabled). Losses that need no reference (`ga`, `simnpo`, `idk`, `wga`,
            `satimp`, `ceu`, `pdu`, with `retain_loss` `None` or `"nll"`) load none, and ignore one passed here.
        args ([`NPOConfig`], *optional*):
            Configuration; defaults to `NPOConfig(f"{model_name}-NPO")`.
        data_collator (`DataCollator`, *optional*):
            Defaults to [`~npo_trl.data.DataCollatorForUnlearning`].
        train_dataset ([`~datasets.Dataset`]):
            The forget set: prompt+completion, text, messages, or prompt+rejected (+chosen), plain or conversational.
        eval_dataset ([`~datasets.Dataset`] or `dict[str, Dataset]`, *optional*):
            Forget-format sets whose forget loss is reported at evaluation.
        processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            The tokenizer; loaded from `model` if `None`.
        compute_metrics, callbacks, optimizers, quantization_config, peft_config:
            As for [`~trl.DPOTrainer`].
        retain_dataset ([`~datasets.Dataset`], *optional*):
            The retain set (same formats), for `retain_loss="nll"`, `"kl"` or `"activations"`. Each micro-batch of
            forget rows is paired with `retain_batch_size` retain rows drawn by [`~npo_trl.data.RetainStream`].
    """

    _tag_names = ["trl", "npo", "unlearning"]
    _name = "NPO"
    _paper = {
        "title": "Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning",
        "id": "2404.05868",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
        @inproceedings{zhang2024negative,
            title        = {{Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning}},
            author       = {Ruiqi Zhang and Licong Lin and Yu Bai and Song Mei},
            year         = 2024,
            booktitle    = {First Conference on Language Modeling},
            url          = {https://openreview.net/forum?id=MXLBXjQkmb},
        }"""),
    }

    def __init__(
        self,
        model,
        ref_model: PreTrainedModel | None = None,
        args: NPOConfig | None = None,
        data_collator=None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset=None,
        processing_class=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        quantization_config=None,
        peft_config=None,
        retain_dataset: Dataset | IterableDataset | None = None,
    ):
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = NPOConfig(f"{model_name.split('/')[-1]}-NPO")
        ref_model, retain_dataset = checked_inputs(model, ref_model, args, train_dataset, retain_dataset,
                                                   compute_metrics, peft_config)
        processing_class = checked_processing_class(model, processing_class)
        tokenizer = tokenizer_of(processing_class)
        if data_collator is None:
            data_collator = DataCollatorForUnlearning(pad_token_id=tokenizer.pad_token_id, max_length=args.max_length,
                                                      truncation_mode=args.truncation_mode,
                                                      pad_to_multiple_of=args.pad_to_multiple_of)

        # DPOTrainer loads no reference model when its log-probs are precomputed; a reference-free objective is
        # that case with nothing to precompute (see `_precompute_ref_logps`).
        precompute = args.precompute_ref_log_probs
        args.precompute_ref_log_probs = precompute or not args.needs_reference
        try:
            super().__init__(
                model, ref_model, args, data_collator, train_dataset, eval_dataset, processing_class,
                None, callbacks, optimizers, quantization_config, peft_config,
            )
        finally:
            args.precompute_ref_log_probs = precompute
        self.precompute_ref_logps = precompute
        upcast_quantized_adapters(self.model, args)  # a float32 QLoRA run steps float32 adapters
        # RMU's layer ℓ; every parameter but `trainable_parameters` frozen before the optimizer takes them
        self._hidden_layer = choose_layers(self.model, args.forget_loss, args.rmu_layer, args.trainable_parameters)

        self.retain_dataset = None
        if retain_dataset is not None:
            self.retain_dataset = self._prepare_dataset(retain_dataset, self.processing_class, args, "retain")
            self._retain_stream = RetainStream(
                len(self.retain_dataset), args.retain_batch_size or args.per_device_train_batch_size, args.seed
            )
        self._retain_micro_step = (-1, 0)  # (global_step, micro-batches seen at that step)
        if args.method.state is not None:  # kept in the checkpoints (`MethodStateCallback`)
            self.add_callback(MethodStateCallback(args.forget_loss, args.method.state(**args.method.settings(args))))

        for callback in self.callback_handler.callbacks:  # e.g. TOFUCallback, which logs through its trainer
            if callable(getattr(callback, "bind", None)) and getattr(callback, "trainer", None) is None:
                callback.bind(self)

    # ---------------------------------------------------------------- data
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """Normalise any accepted format to TRL's preference columns, let DPOTrainer tokenize, then rename."""
        if "completion_ids" in (dataset.column_names or []):  # already prepared
            return dataset
        role = "retain" if dataset_name == "retain" else "forget"
        replacement_column = args.replacement_column if role == "forget" and args.needs_replacement else None
        rows, num_empty = to_unlearning_rows(
            list(dataset), f"{role} ({dataset_name})", replacement_column, args.replacement_answers, args.seed
        )
        if not rows:
            raise ValueError(f"No {role} rows ({dataset_name}) are left to train on: all {num_empty} have an empty "
                             "completion.")
        # DPO tokenizes prompt+chosen and prompt+rejected; the forget (or retain) answer is the rejected one.
        for row in rows:
            row["rejected"] = row.pop("completion")
            row["chosen"] = row.pop("replacement", row["rejected"])
        prepared = super()._prepare_dataset(Dataset.from_list(rows), processing_class, args, dataset_name)
        num_dropped = num_empty + len(rows) - len(prepared)
        if num_dropped:
            warnings.warn(
                f"{num_dropped} of {len(rows) + num_empty} {role} rows ({dataset_name}) were dropped: "
                f"{num_empty} with an empty completion, {len(rows) - len(prepared)} whose prompt fills max_length="
                f"{args.max_length} (raise max_length to keep them)."
            )
        if len(prepared) == 0:
            raise ValueError(f"No {role} rows ({dataset_name}) are left to train on: see the warning above.")
        prepared = prepared.rename_column("rejected_ids", "completion_ids")
        if replacement_column is not None:
            prepared = prepared.rename_column("chosen_ids", "replacement_ids")
        keep = {"prompt_ids", "completion_ids", "replacement_ids", "row_index"}
        return prepared.remove_columns([c for c in prepared.column_names if c not in keep])

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = [
                "prompt_ids", "completion_ids", "replacement_ids", "row_index", "ref_chosen_logps",
                "ref_rejected_logps",
            ]

    def _precompute_ref_logps(self, dataset, name, batch_size):
        if not self.args.needs_reference:
            return dataset
        return super()._precompute_ref_logps(dataset, name, batch_size)

    # ---------------------------------------------------------------- forward passes
    def _token_logps(self, model, batch, reference: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs of the completion tokens (zero elsewhere) and the mask, through TRL's fused LM head."""
        mask = batch["completion_mask"][:, 1:]
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        with reference_context(self) if reference else contextlib.nullcontext():
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                        use_cache=False, fused_lm_head=True)
        return out.log_probs[:, -mask.size(1):], mask  # prompt-learning PEFT prepends virtual tokens

    def _completion_logprobs(self, model, batch, reference: bool = False, rows=None) -> torch.Tensor:
        """Full next-token log-distributions at the completion tokens, (num_tokens, vocab), for the KL term (with
        `rows`, a boolean mask of the batch's rows: theirs only)."""
        mask = batch["completion_mask"][:, 1:].bool()
        if rows is not None:
            mask = mask & rows[:, None]
        positions = mask.any(0).nonzero().squeeze(1)  # only these columns' logits are built
        with reference_context(self) if reference else contextlib.nullcontext():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
                           logits_to_keep=positions).logits
        return torch.log_softmax(logits[mask[:, positions]].float(), dim=-1)

    def _layer_activations(self, model, batch, reference: bool = False):
        """Decoder layer ℓ's output, (rows, T, d), with `_token_logps`' per-token log-probs and mask: one forward
        pass, the layer's output caught by a hook."""
        layer = decoder_layers(self.accelerator.unwrap_model(model))[1][self._hidden_layer]
        with captured_output(layer) as outputs:
            token_logps, mask = self._token_logps(model, batch, reference)
        return outputs[0], token_logps, mask

    def _reference_model(self):
        return self.ref_model if self.ref_model is not None else self.model

    def compute_ref_log_probs(self, model, inputs):
        """Reference log π_ref(y|x) per sequence, as (replacements, completions) (TRL's (chosen, rejected) columns).

        Without replacement answers the first element is NaN: no loss reads it.
        """
        with self.accelerator.autocast():
            token_logps, _ = self._token_logps(model, inputs, reference=True)
        replacements, completions = unstack(token_logps.sum(1), self.args.needs_replacement)
        return (torch.full_like(completions, float("nan")) if replacements is None else replacements), completions

    # ---------------------------------------------------------------- retain batches
    def _next_retain_batch(self):
        step, micro = self._retain_micro_step
        micro = micro if step == self.state.global_step else 0
        self._retain_micro_step = (self.state.global_step, micro + 1)
        k = (self.state.global_step * self.args.gradient_accumulation_steps + micro) * self.accelerator.num_processes
        rows = self.retain_dataset.select(self._retain_stream.indices(k + self.accelerator.process_index))
        return self.data_collator(list(rows))

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.retain_dataset is not None:
            inputs = {**inputs, "retain": self._next_retain_batch()}
        return super().training_step(model, inputs, num_items_in_batch)

    # ---------------------------------------------------------------- loss
    def _compute_loss(self, model, inputs, return_outputs):
        args, mode, row = self.args, ("train" if self.model.training else "eval"), self.args.method
        forget = self._forget_inputs(model, inputs, row)
        settings = row.settings(args, self._method_state())
        forget_loss = row.loss(forget, **settings)  # the method's formula in npo_trl.losses (npo_trl.methods)
        loss = args.forget_weight * forget_loss

        metrics = {"loss/forget": forget_loss, "forget/logps": forget.logps}
        if forget.ref_logps is not None:
            metrics["forget/ref_logps"] = forget.ref_logps
            metrics["forget/log_ratio"] = forget.logps - forget.ref_logps
        if row.metrics is not None:
            metrics.update(row.metrics(forget, **settings))

        if mode == "train" and args.retain_loss is not None:
            if args.separate_backward and torch.is_grad_enabled() and "lomo" not in str(args.optim):
                # the forget activations go before the retain pass (LOMO optimizers update inside each backward)
                check_finite(loss, self.state.global_step)
                self._backward_now(loss)
                loss = loss.detach()
            retain = inputs["retain"]
            if args.retain_loss == "nll":
                retain_token_logps, retain_mask = self._token_logps(model, retain)
                retain_logps, retain_lengths = retain_token_logps.sum(1), retain_mask.sum(1)
                ok = finite_rows(self, [retain_logps], retain, "retain", False)
                retain_loss = losses.nll_loss(retain_logps[ok], retain_lengths[ok])
            elif args.retain_loss == "activations":  # RMU's: layer ℓ's output against the frozen model's
                tokens = retain["attention_mask"].bool()
                activations = self._layer_activations(model, retain)[0][tokens]
                ref_activations = self._layer_activations(self._reference_model(), retain, reference=True)[0][tokens]
                retain_loss = losses.activation_mse(activations, ref_activations)
            else:
                logprobs = self._completion_logprobs(model, retain)
                ref_logprobs = self._completion_logprobs(self._reference_model(), retain, reference=True)
                retain_loss = losses.kl_loss(logprobs, ref_logprobs)
                metrics["retain/kl"] = retain_loss
            loss = (row.combine(loss, retain_loss, **settings) if row.combine is not None  # e.g. PDU's Lagrangian
                    else loss + args.retain_weight * retain_loss)
            metrics["loss/retain"] = retain_loss

        check_finite(loss, self.state.global_step)
        logged = {}
        for key, value in metrics.items():  # mean per process, then across processes
            value = value.detach().float().mean().reshape(1)
            logged[key] = self.accelerator.gather(value).mean().item()
            self._metrics[mode][key].append(logged[key])
        if mode == "train" and row.update is not None:  # the same values on every process: the same state
            self._method_state(callback=True).record(logged)  # `row.update` after the optimizer step, from their mean
        return (loss, None) if return_outputs else loss

    def _forget_inputs(self, model, inputs, row: Method) -> ForgetInputs:
        """The forget answers' log-probs that `row` reads (`Method.inputs`), for the rows whose values are finite."""
        if HIDDEN in row.inputs:  # caught in the same forward pass
            activations, token_logps, mask = self._layer_activations(model, inputs)
        else:
            token_logps, mask = self._token_logps(model, inputs)
        logps, lengths = token_logps.sum(1), mask.sum(1)
        ref_token_logps, ref_logps = (self._forget_ref_logps(inputs, row.per_token_reference) if row.needs_reference
                                      else (None, None))

        # Rows are [replacements; forget answers] when the loss trains on replacement answers (`unstack`).
        paired = row.needs_replacement
        finite = finite_rows(self, [logps] if ref_logps is None else [logps, ref_logps], inputs, "forget", paired)
        (rep_logps, logps), (rep_lengths, lengths) = unstack(logps[finite], paired), unstack(lengths[finite], paired)
        rep_ref_logps, ref_logps = (None, None) if ref_logps is None else unstack(ref_logps[finite], paired)
        values = dict(logps=logps, lengths=lengths, ref_logps=ref_logps, replacement_logps=rep_logps,
                      replacement_lengths=rep_lengths, replacement_ref_logps=rep_ref_logps)
        if TOKENS in row.inputs:  # already computed: only kept
            values["token_logps"] = unstack(token_logps[finite], paired)[1]
            values["token_mask"] = unstack(mask[finite], paired)[1]
            if ref_token_logps is not None:
                values["ref_token_logps"] = unstack(ref_token_logps[finite], paired)[1]
        if HIDDEN in row.inputs:  # every token of the row, prompt and completion (RMU trains on raw text)
            values["hidden_states"] = activations[inputs["attention_mask"].bool() & finite[:, None]]
        if DISTRIBUTIONS in row.inputs:  # one more forward pass each, only for a row that asks; not the replacements
            forget_rows = finite & (torch.arange(len(finite), device=finite.device) >= len(finite) // 2 * paired)
            values["token_logprobs"] = self._completion_logprobs(model, inputs, rows=forget_rows)
            values["token_labels"] = inputs["input_ids"][:, 1:][mask.bool() & forget_rows[:, None]]
            if row.needs_reference:
                values["ref_token_logprobs"] = self._completion_logprobs(self._reference_model(), inputs,
                                                                         reference=True, rows=forget_rows)
        return ForgetInputs(**values)

    def _method_state(self, callback: bool = False):
        """The stateful method's state (`Method.state`; with `callback`, its `MethodStateCallback`), looked up each
        time: resuming may replace the callback."""
        found = next((cb for cb in self.callback_handler.callbacks if isinstance(cb, MethodStateCallback)), None)
        return found if callback or found is None else found.values

    def _backward_now(self, loss):
        """Backpropagate one term of the loss now, scaled as `Trainer.training_step` scales the loss `compute_loss`
        returns (DPOTrainer's losses are not scaled for gradient accumulation). Under DeepSpeed this term is a
        backward inside the micro-step, not its accumulation boundary: the engine steps after the last term."""
        if not self.loss_is_scaled_for_ga:
            loss = loss / self.current_gradient_accumulation_steps
        if self.is_deepspeed_enabled:
            engine = self.accelerator.deepspeed_engine_wrapped.engine
            engine.set_gradient_accumulation_boundary(is_boundary=False)
            engine.backward(loss, scale_wrt_gas=False)
        else:
            self.accelerator.backward(loss)

    def _forget_ref_logps(self, inputs, per_token: bool = False) -> tuple[torch.Tensor | None, torch.Tensor]:
        """log π_ref per token (with `per_token`, else None; NPOConfig refuses it with precomputed log-probs) and per
        sequence, for the forget batch's rows."""
        if self.precompute_ref_logps:
            keys = (["ref_chosen_logps", "ref_rejected_logps"] if self.args.needs_replacement
                    else ["ref_rejected_logps"])
            return None, torch.cat([inputs[k] for k in keys]).float()
        ref_token_logps, _ = self._token_logps(self._reference_model(), inputs, reference=True)
        return (ref_token_logps if per_token else None), ref_token_logps.sum(1)
