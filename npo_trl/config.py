import dataclasses
import os
from dataclasses import dataclass, field

import torch
from trl import DPOConfig

from .methods import METHODS, RETAIN_LOSSES, check_combination, method_losses, method_names


@dataclass
class NPOConfig(DPOConfig):
    r"""
    Configuration class for the [`NPOTrainer`].

    NPO (Zhang et al. 2024, [arXiv 2404.05868](https://huggingface.co/papers/2404.05868)) unlearns a forget set
    by DPO with only a rejected answer. This class adds the unlearning parameters to [`~trl.DPOConfig`]; the
    reference-model, PEFT, precomputed-log-prob and DeepSpeed parameters are DPO's. DPO's own loss parameters
    (`loss_type`, `use_weighting`, `ld_alpha`, `f_divergence_type`, `label_smoothing`) do not apply. On a machine
    without an accelerator a few defaults change (`bf16`, `dataloader_pin_memory`, `ddp_backend="gloo"`, `use_cpu`);
    `_resolve_for_a_cpu_machine` lists them.

    Parameters:
        > Parameters that control the unlearning objective

        forget_loss (`str`, *optional*, defaults to `"npo"`):
            Loss on the forget set, a row of `npo_trl.methods.METHODS`: `"npo"` (eq. 3), `"ga"` (gradient ascent,
            eq. 1), `"simnpo"` (reference-free, length-normalised), `"idk"` (NLL on a replacement answer such as "I
            don't know"), `"dpo"` (DPO with the replacement as chosen and the forget answer as rejected), `"wga"`,
            `"satimp"`, `"undial"`, `"ceu"`, `"pdu"` (the methods NPO is compared with; PDU needs `retain_loss="nll"`),
            `"rmu"` (WMDP's RMU on layer activations; needs `retain_loss="activations"`).
            NPOConfig refuses a name the registry lacks and a combination its row refuses.
        retain_loss (`str` or `None`, *optional*, defaults to `None`):
            Loss on the retain set: `None`, `"nll"` (the paper's +RT), `"kl"` (KL(π_ref‖π_θ) on the retain
            completion tokens, the paper's +KL) or `"activations"` (RMU's: the mean squared distance of layer ℓ's
            output to the frozen model's at every retain token; only with `forget_loss="rmu"`, which needs it). Needs
            `retain_dataset`.
        forget_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the forget loss (the paper's componential weight).
        retain_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the retain loss.
        beta (`float`, *optional*, defaults to `0.1`):
            Inverse temperature β of NPO, SimNPO and DPO. As β → 0, NPO becomes gradient ascent.
        gamma (`float`, *optional*, defaults to `0.0`):
            Reward margin γ of SimNPO, in units of per-token log-probability.
        wga_alpha (`float`, *optional*, defaults to `1.0`):
            WGA's exponent α: each forget token weighted by sg(p_t^α); 0 is token-wise gradient ascent
            (open-unlearning's WGA.yaml: 1).
        satimp_beta1 (`float`, *optional*, defaults to `5.0`):
            SatImp's saturation exponent β1, the weight sg(p_t^β1·(1 − p_t)^β2) (open-unlearning's SatImp.yaml: 5).
        satimp_beta2 (`float`, *optional*, defaults to `1.0`):
            SatImp's importance exponent β2 (open-unlearning's SatImp.yaml: 1; 0 gives WGA with α = β1).
        undial_gamma (`float`, *optional*, defaults to `10.0`):
            UNDIAL's logit shift γ: π_θ is distilled towards softmax(z_ref − γ·e_(y_t)) (open-unlearning's
            UNDIAL.yaml: 10; the authors sweep 3, 10, 30).
        ceu_skip_first (`int`, *optional*, defaults to `1`):
            CE-U leaves out each forget answer's first tokens (the paper's TOFU setting and open-unlearning's: 1).
        pdu_dual_init (`float`, *optional*, defaults to `1.0`):
            PDU's initial dual variable λ₀, the retain loss's weight at the start (open-unlearning's PDU.yaml: 1).
            PDU's λ replaces `retain_weight`, which must stay 1.
        pdu_dual_step (`float`, *optional*, defaults to `1.0`):
            PDU's dual step size η_λ: after each optimizer step λ ← max(0, λ + η_λ·(L_retain − ε)) (open-unlearning's
            `dual_step_size`: 1).
        pdu_retain_bound (`float`, *optional*):
            PDU's constraint level ε on the retain NLL per token. `None`: ε = (1 + `pdu_slack`)·π_ref's retain loss,
            measured at the first optimizer step (θ is θ_ref until its update: the retain loss of that step's retain
            batches, no extra pass) and kept in the checkpointed state (open-unlearning requires ε).
        pdu_slack (`float`, *optional*, defaults to `0.0`):
            With `pdu_retain_bound=None`, how far above π_ref's retain loss ε lies, as a fraction (the paper's choice
            of ε relative to π_ref; 0: the retain loss may not rise).
        pdu_dual_warmup_steps (`int`, *optional*, defaults to `0`):
            Optimizer steps during which λ stays at `pdu_dual_init` (the paper's warm start; open-unlearning's
            `dual_warmup_epochs` counts epochs).
        rmu_layer (`int`, *optional*):
            RMU's layer ℓ: the decoder layer (0-based) whose output RMU steers, on forget rows towards c·u and on
            retain rows towards the frozen model's. `None`: round(7/32 · the model's number of layers), the depth of
            the WMDP paper's layer 7 of zephyr-7b's 32 (0 for a 2-layer model).
        rmu_steering_coeff (`float`, *optional*):
            RMU's steering coefficient c, the norm of the target c·u (the paper's code: 6.5 for zephyr-7b, 300 for
            Mixtral-8x7B). `None`: 4 × the median norm of layer ℓ's output on the forget tokens, measured at the
            first optimizer step (θ is θ_ref until its update) and kept in the checkpointed state.
        rmu_alpha (`float`, *optional*, defaults to `1200.0`):
            RMU's retain weight α on the activation distance to the frozen model (the paper's code for zephyr-7b:
            1200). RMU's α replaces `retain_weight`, which must stay 1.
        trainable_parameters (`list[str]`, *optional*):
            Regular expressions (`re.search`) on parameter names: only the parameters matching one are trained, the
            others are frozen before the optimizer is built (and before DeepSpeed starts). Each must match some
            parameter. `None`: every parameter, except for `forget_loss="rmu"`, which trains the MLP's down
            projection of layers ℓ-2, ℓ-1 and ℓ, as the paper's code (for a Llama and ℓ = 7:
            `^model\.layers\.5\.mlp\.down_proj\.` and those of layers 6 and 7). Not with PEFT, whose adapters are the
            trained parameters.
        retain_batch_size (`int`, *optional*):
            Retain rows per device per forget micro-batch. Defaults to `per_device_train_batch_size`.
        replacement_answers (`list[str]`, *optional*):
            Replacement answers for `"idk"`/`"dpo"` when the forget set has no `replacement_column`; each forget row
            gets one, drawn with `seed`.
        replacement_column (`str`, *optional*, defaults to `"replacement"`):
            Column of the forget set holding its replacement answers. A preference dataset's `"chosen"` column is used
            when this column is absent.
        separate_backward (`bool`, *optional*, defaults to `True`):
            With a retain loss, backpropagate the forget term before the retain batch's forward pass, so that the two
            batches' activations are never held at once: the same gradients as one backward of the sum, with less peak
            memory (benchmarks/RESULTS.md: NPO+RT 1.17× SFT's instead of 1.24×, NPO+KL 1.15× instead of 1.28×).
            Under DDP and ZeRO-3 the gradients are reduced once per term. `False` runs one backward of the sum, as do
            the LOMO optimizers (they update the weights inside each backward).
        nonfinite_loss (`str`, *optional*, defaults to `"raise"`):
            What to do with rows whose log-probabilities or loss are not finite: `"raise"` stops training with an
            error naming the step and the rows; `"skip"` leaves those rows out of the loss and counts them in the
            `nonfinite/rows` metric.
    """

    learning_rate: float = field(
        default=1e-5,
        metadata={"help": "The initial learning rate for AdamW (the NPO paper's TOFU setting)."},
    )
    # TRL's configs default `gradient_checkpointing` to True, the alias transformers 5.25 deprecates (a FutureWarning
    # on every config): the same default under the new name (set in __post_init__ when neither name is given, so that
    # a user's `gradient_checkpointing=False` still counts), which transformers mirrors into the old one.
    activation_checkpointing: bool | None = field(
        default=None,
        metadata={"help": "Recompute activations in the backward pass, trading compute for memory. Default: True "
                          "(TRL's default)."},
    )
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={"help": "Deprecated alias of activation_checkpointing (transformers 5.25); set that instead."},
    )
    forget_loss: str = field(
        default="npo",
        metadata={"help": "Loss on the forget set (npo_trl.methods.METHODS).", "choices": method_names()},
    )
    retain_loss: str | None = field(
        default=None,
        metadata={
            "help": "Loss on the retain set: None, 'nll' (+RT) or 'kl' (+KL, KL(π_ref‖π_θ) on completion tokens).",
        },
    )
    forget_weight: float = field(default=1.0, metadata={"help": "Weight of the forget loss."})
    retain_weight: float = field(default=1.0, metadata={"help": "Weight of the retain loss."})
    gamma: float = field(default=0.0, metadata={"help": "SimNPO reward margin γ (per-token log-prob units)."})
    wga_alpha: float = field(default=1.0, metadata={"help": "WGA's exponent α of the token weight sg(p_t^α)."})
    satimp_beta1: float = field(default=5.0, metadata={"help": "SatImp's saturation exponent β1."})
    satimp_beta2: float = field(default=1.0, metadata={"help": "SatImp's importance exponent β2."})
    undial_gamma: float = field(default=10.0, metadata={"help": "UNDIAL's shift γ of the forget token's logit."})
    ceu_skip_first: int = field(default=1, metadata={"help": "CE-U: tokens left out at the start of each answer."})
    pdu_dual_init: float = field(default=1.0, metadata={"help": "PDU's initial dual variable λ₀ (retain weight)."})
    pdu_dual_step: float = field(default=1.0, metadata={"help": "PDU's dual step size η_λ, per optimizer step."})
    pdu_retain_bound: float | None = field(
        default=None,
        metadata={"help": "PDU's bound ε on the retain NLL; default (1 + pdu_slack) × π_ref's, measured at step 1."},
    )
    pdu_slack: float = field(default=0.0, metadata={"help": "PDU: ε's fraction above π_ref's retain loss."})
    pdu_dual_warmup_steps: int = field(default=0, metadata={"help": "PDU: optimizer steps before λ first moves."})
    rmu_layer: int | None = field(
        default=None,
        metadata={"help": "RMU's decoder layer ℓ (0-based) whose output it steers; default round(7/32 · num layers)."},
    )
    rmu_steering_coeff: float | None = field(
        default=None,
        metadata={"help": "RMU's steering coefficient c, the norm of the target c·u; default 4 × the median norm of "
                          "layer ℓ's output on the forget tokens at step 1."},
    )
    rmu_alpha: float = field(default=1200.0, metadata={"help": "RMU's retain weight α (the paper's zephyr-7b: 1200)."})
    trainable_parameters: list[str] | None = field(
        default=None,
        metadata={"help": "Regular expressions on parameter names: train only the matching parameters (default: all; "
                          "rmu: layers ℓ-2..ℓ's mlp.down_proj)."},
    )
    retain_batch_size: int | None = field(
        default=None,
        metadata={"help": "Retain rows per device per forget micro-batch; defaults to per_device_train_batch_size."},
    )
    replacement_answers: list[str] | None = field(
        default=None,
        metadata={"help": "Replacement answers ('I don't know') for forget_loss 'idk'/'dpo', one drawn per row."},
    )
    replacement_column: str = field(
        default="replacement",
        metadata={"help": "Forget-set column with replacement answers; a preference dataset's 'chosen' also counts."},
    )
    separate_backward: bool = field(
        default=True,
        metadata={"help": "With a retain loss, backpropagate the forget term before the retain forward pass (the same "
                          "gradients, one batch's activations at a time: less peak memory); False: one backward of "
                          "the sum."},
    )
    nonfinite_loss: str = field(
        default="raise",
        metadata={"help": "Rows with non-finite log-probs: 'raise' (error) or 'skip' (left out, counted).",
                  "choices": ["raise", "skip"]},
    )

    def __post_init__(self):
        if self.activation_checkpointing is None and self.gradient_checkpointing is None:
            self.activation_checkpointing = True
        if isinstance(self.retain_loss, str) and self.retain_loss.lower() in ("none", "null", ""):
            self.retain_loss = None
        check_combination(self.forget_loss, self.retain_loss, self.precompute_ref_log_probs)
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0 (got {self.beta}); as beta → 0 NPO becomes forget_loss='ga'.")
        for name in ("forget_weight", "retain_weight", "wga_alpha", "satimp_beta1", "satimp_beta2", "undial_gamma",
                     "ceu_skip_first", "pdu_dual_init", "pdu_dual_step", "pdu_slack", "pdu_dual_warmup_steps",
                     "rmu_alpha"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0 (got {getattr(self, name)}): {self._ranges()}")
        for name in ("ceu_skip_first", "pdu_dual_warmup_steps"):
            if getattr(self, name) != int(getattr(self, name)):
                raise ValueError(f"{name} counts tokens or steps: give a whole number (got {getattr(self, name)}).")
        if self.pdu_retain_bound is not None and not self.pdu_retain_bound > 0:
            raise ValueError(f"pdu_retain_bound={self.pdu_retain_bound} can never hold (the retain NLL is > 0): give "
                             "ε > 0, or None to use (1 + pdu_slack) × π_ref's retain loss.")
        if self.forget_loss == "pdu" and self.retain_weight != 1.0:
            raise ValueError(f"retain_weight={self.retain_weight} does not apply to forget_loss='pdu', whose dual "
                             "variable λ weighs the retain loss: leave retain_weight at 1 and set pdu_dual_init.")
        if self.forget_loss == "rmu" and self.retain_weight != 1.0:
            raise ValueError(f"retain_weight={self.retain_weight} does not apply to forget_loss='rmu', whose retain "
                             "term is weighted by rmu_alpha: leave retain_weight at 1 and set rmu_alpha.")
        if self.rmu_layer is not None and (self.rmu_layer != int(self.rmu_layer) or self.rmu_layer < 0):
            raise ValueError(f"rmu_layer={self.rmu_layer} is out of range: give a decoder layer's 0-based index, or "
                             "None for round(7/32 · the model's number of layers).")
        if self.rmu_steering_coeff is not None and not self.rmu_steering_coeff > 0:
            raise ValueError(f"rmu_steering_coeff={self.rmu_steering_coeff} must be > 0 (the norm of RMU's target "
                             "c·u), or None for 4 × the median activation norm.")
        if self.retain_loss == "activations" and self.precompute_ref_log_probs:
            raise ValueError("retain_loss='activations' compares layer activations with the frozen model's on each "
                             "retain batch, which cannot be precomputed: set precompute_ref_log_probs=False.")
        if self.trainable_parameters is not None and not self.trainable_parameters:
            raise ValueError("trainable_parameters=[] would train nothing: give regular expressions of parameter "
                             "names, or None to train every parameter (rmu: its default layers).")
        if self.retain_batch_size is not None and self.retain_batch_size < 1:
            raise ValueError(f"retain_batch_size must be >= 1 (got {self.retain_batch_size}).")
        if self.nonfinite_loss not in ("raise", "skip"):
            raise ValueError(f"nonfinite_loss={self.nonfinite_loss!r} is unknown: use 'raise' or 'skip'.")
        if self.replacement_answers is not None and not any(a and a.strip() for a in self.replacement_answers):
            raise ValueError("replacement_answers holds no non-empty string: give at least one answer.")
        loss_type = [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type)
        if loss_type != ["sigmoid"] or self.use_weighting or self.ld_alpha is not None:
            raise ValueError(
                "loss_type, use_weighting and ld_alpha are DPO options that NPOTrainer does not use: choose the "
                f"objective with forget_loss {method_names()} and retain_loss {list(RETAIN_LOSSES)}."
            )
        self._resolve_for_a_cpu_machine()
        super().__post_init__()

    @staticmethod
    def _ranges() -> str:
        return ("weights, wga_alpha, satimp_beta1/2, undial_gamma, pdu_dual_init, pdu_dual_step, pdu_slack and "
                "rmu_alpha are floats >= 0; ceu_skip_first and pdu_dual_warmup_steps whole numbers >= 0.")

    def for_method(self, method: str, **changes) -> "NPOConfig":
        """A copy of this configuration for one method (`method_losses`: "npo+rt" sets forget_loss="npo" and
        retain_loss="nll"), with `changes` (e.g. `output_dir=...`) applied."""
        forget_loss, retain_loss = method_losses(method)
        # not `to_dict()`, which writes "<PAD_TOKEN>", "<HUB_TOKEN>" in place of every `*_token` field
        return dataclasses.replace(self, **changes, forget_loss=forget_loss, retain_loss=retain_loss)

    def _resolve_for_a_cpu_machine(self):
        """The defaults that depend on the machine, all here. On a machine without an accelerator:

        - `bf16` (TRL's default is True, which fails validation there) becomes False unless set;
        - `dataloader_pin_memory` becomes False (pinning needs an accelerator; torch warns on every loader otherwise);
        - under several processes (`WORLD_SIZE` > 1), `ddp_backend` becomes `"gloo"`, and plain data parallelism gets
          `use_cpu` (else accelerate does not wrap the model in DDP), and FSDP is refused: accelerate runs it only on
          GPU-like devices and would fall back to data parallelism without a word;
        - a DeepSpeed launch whose accelerate config asks for mixed precision is refused: DeepSpeed would run bf16
          while these arguments say fp32 ("ds bf16.enabled=True vs hf bf16=False").
        """
        if torch.accelerator.is_available():
            return
        if self.bf16 is None and not self.fp16:
            self.bf16 = False
        self.dataloader_pin_memory = False
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            self.ddp_backend = self.ddp_backend or "gloo"
            deepspeed = self.deepspeed or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
            if bool(self.fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
                raise ValueError(
                    "FSDP was asked for (an FSDP accelerate config or --fsdp) on a machine without an accelerator: "
                    "accelerate enables FSDP only on GPU-like devices (on a CPU it would silently train with plain "
                    "data parallelism instead). Shard across CPU processes with DeepSpeed ZeRO-3 "
                    "(examples/accelerate_configs/zero3.yaml --mixed_precision no), or use DDP."
                )
            self.use_cpu = self.use_cpu or not deepspeed
            mixed_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
            if deepspeed and mixed_precision != "no" and not (self.bf16 or self.fp16):
                raise ValueError(
                    f"accelerate launch asks for mixed_precision={mixed_precision!r} (its config file or "
                    "--mixed_precision), which DeepSpeed cannot match on a machine without an accelerator while "
                    "training in fp32: add --mixed_precision no to accelerate launch."
                )

    @property
    def needs_reference(self) -> bool:
        """Whether the objective compares the policy with π_ref (so a reference model or its log-probs exist)."""
        return self.method.needs_reference or self.retain_loss in ("kl", "activations")

    @property
    def needs_replacement(self) -> bool:
        """Whether the forget rows carry a replacement answer ("I don't know")."""
        return self.method.needs_replacement

    @property
    def method(self):
        """The registry row of `forget_loss` (`npo_trl.methods.Method`)."""
        return METHODS[self.forget_loss]
