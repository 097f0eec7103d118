"""The unlearning methods: one row per forget loss, which everything that names a method reads.

`NPOConfig` takes its `forget_loss` choices, its checks and `method_losses` from `METHODS`; `NPOTrainer` computes
the inputs a row asks for and calls `row.loss(forget, **row.settings(args, state))`, which calls the formula in
`npo_trl.losses`; the examples check `--methods` against it, and the docs' method table is `markdown_table()`'s
output. Imports stay light: torch only.

Adding a method is one pure function in `losses.py` (citing its equation) and one row in `METHODS`' list, e.g. the
per-token WGA:

    Method("wga", lambda forget, wga_alpha: losses.wga_loss(*_answer_tokens(forget), wga_alpha),
           functions=(losses.wga_loss,), paper="Wang et al. 2025 (ICLR), arXiv 2502.19301", equation="",
           formula="sg(p_t^α) log p_t per answer token", inputs=(TOKENS,), hyperparameters=("wga_alpha",)),

then the table in docs/guides/trainer.md regenerated (`python -c "from npo_trl.methods import markdown_table;
print(markdown_table())"`; a test compares them); a hyper-parameter NPOConfig lacks becomes a field there, with its
help.

- `inputs` says which log-probabilities of the forget answers `row.loss` reads (`ForgetInputs`): `SEQUENCE` (per
  sequence, the sum over the answer's tokens, and |y|: NPO, GA, SimNPO, IDK, DPO), `TOKENS` (per token, `token_logps`
  and `token_mask`, (rows, T): the trainer's forward pass makes them anyway, so this costs nothing) or
  `DISTRIBUTIONS` (the next-token log-distributions at the answer's tokens, `token_logprobs`, (num_tokens, vocab), and
  those tokens, `token_labels`: one more forward pass that builds the full logits, made only for a row that asks)
  or `HIDDEN` (the output of decoder layer ℓ = `rmu_layer` at every non-padding token of the forget rows, prompt and
  completion alike, `hidden_states`, (num_tokens, d): caught by a hook in the forward pass the trainer makes anyway).
  With `needs_reference`, the reference's of the same kind come too (`ref_logps`, `ref_token_logps`,
  `ref_token_logprobs`); per-token ones need a live π_ref, so such a row refuses `precompute_ref_log_probs` (the
  precomputed columns hold sums).
- `needs_replacement`: the forget set's rows carry a replacement answer ("I don't know"), whose log-probs come as
  `replacement_logps`, `replacement_lengths` (and `replacement_ref_logps`).
- `hyperparameters` names the NPOConfig fields the loss reads; they are passed to it by name (a field the loss does
  not take fails at once), and listed in the docs table.
- `retain_losses` are the retain losses the method combines with; NPOConfig refuses the others. `"nll"` and `"kl"`
  read log-probs of the retain completions; `"activations"` (RMU's) is the mean squared distance between layer ℓ's
  output and the frozen reference model's at every non-padding retain token, and only a row naming it takes it.
- A stateful method (PDU's dual variable) sets `state(**hyper-parameters)` to return its initial state, a dict of
  floats. The trainer keeps that dict in `npo_trl.method_state.MethodStateCallback`, written into every checkpoint's
  trainer_state.json (`stateful_callbacks`, JSON: floats come back exactly) and read back on resume, and passes it to
  `loss`, `metrics` and `combine` as `state=`, which only read it. `update(state, logged, **hyper-parameters)` changes
  it in place after each optimizer step (not each micro-batch), from `logged`: that step's logged values as floats
  ("loss/forget", "loss/retain", "forget/logps", ...), each the mean over the step's micro-batches and over processes,
  so every process holds the same state.
- `combine`, optional, is the training objective from the weighted forget term and the retain loss, `(forget_weight ·
  forget loss, retain loss, **settings)`, in place of `forget term + retain_weight · retain loss` (PDU: the Lagrangian,
  the retain loss weighted by the dual variable). A row that needs a retain loss lists only those in `retain_losses`;
  its bare name (`"pdu"`) then means it with the first (`method_losses`).
- `metrics`, optional, gives more values to log (e.g. NPO's `npo/weight`), from the same inputs and settings.

PDU is the stateful row below: `_pdu_state`, `_pdu_combine`, `_pdu_update` and `_pdu_metrics` around the formulas of
`losses.py`.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import losses

SEQUENCE = "sequence"  # log π(y|x) summed over the answer's tokens, and |y|
TOKENS = "tokens"  # log π(y_t|x, y_<t) of each answer token, (rows, T), and the mask of the answer's tokens
DISTRIBUTIONS = "distributions"  # log π(·|x, y_<t) over the vocabulary at each answer token, (num_tokens, vocab)
HIDDEN = "hidden"  # the output of decoder layer ℓ (`rmu_layer`) at every token of the forget rows, (num_tokens, d)
INPUTS = (SEQUENCE, TOKENS, DISTRIBUTIONS, HIDDEN)
RETAIN_LOSSES = (None, "nll", "kl", "activations")
LOG_PROB_RETAIN_LOSSES = (None, "nll", "kl")  # "activations" (RMU's) needs a row that names it
# The paper's method names: <forget_loss>[+rt|+kl], the suffix naming the retain loss.
METHOD_RETAIN_SUFFIXES = {"": None, "rt": "nll", "kl": "kl"}


@dataclass(frozen=True)
class ForgetInputs:
    """What a forget loss reads, for the rows of one micro-batch whose log-probabilities are finite. Only the fields
    of the row's `inputs` (and, with `needs_reference`/`needs_replacement`, their reference and replacement values)
    are set; the others are None."""

    logps: torch.Tensor  # log π_θ(y|x) of each forget answer, (rows,)
    lengths: torch.Tensor  # |y|, (rows,)
    ref_logps: torch.Tensor | None = None
    replacement_logps: torch.Tensor | None = None
    replacement_lengths: torch.Tensor | None = None
    replacement_ref_logps: torch.Tensor | None = None
    token_logps: torch.Tensor | None = None  # (rows, T), zero outside token_mask
    token_mask: torch.Tensor | None = None
    ref_token_logps: torch.Tensor | None = None
    token_logprobs: torch.Tensor | None = None  # (num_tokens, vocab), the forget answers' tokens in row order
    ref_token_logprobs: torch.Tensor | None = None
    token_labels: torch.Tensor | None = None  # (num_tokens,), the token ids of `token_logprobs`' rows
    hidden_states: torch.Tensor | None = None  # (num_tokens, d): layer ℓ's output at the rows' non-padding tokens


@dataclass(frozen=True)
class Method:
    """One forget loss: how the trainer computes it and what it needs (see the module's docstring)."""

    name: str
    loss: Callable[..., torch.Tensor]  # (ForgetInputs, **settings) → scalar to minimise
    functions: tuple[Callable, ...]  # the formulas of `npo_trl.losses` it calls
    formula: str  # per forget row, for the docs table (Markdown, `|` escaped)
    paper: str
    equation: str  # in `paper`; "" where the paper numbers none
    needs_reference: bool = False
    needs_replacement: bool = False
    inputs: tuple[str, ...] = (SEQUENCE,)
    hyperparameters: tuple[str, ...] = ()
    retain_losses: tuple[str | None, ...] = LOG_PROB_RETAIN_LOSSES
    state: Callable[..., dict[str, float]] | None = None  # (**hyper-parameters) → the initial state
    update: Callable[..., None] | None = None  # (state, logged metrics, **hyper-parameters), after each optimizer step
    combine: Callable[..., torch.Tensor] | None = None  # (forget term, retain loss, **settings) → the objective
    metrics: Callable[..., dict[str, torch.Tensor]] | None = None

    def __post_init__(self):
        if not self.name.isidentifier() or self.name != self.name.lower():
            raise ValueError(f"method name {self.name!r}: use a lower-case identifier (it is a --forget_loss value).")
        unknown = [kind for kind in self.inputs if kind not in INPUTS]
        if unknown or not set(self.retain_losses) <= set(RETAIN_LOSSES):
            raise ValueError(f"method {self.name!r}: inputs among {list(INPUTS)}, retain_losses among "
                             f"{list(RETAIN_LOSSES)}.")

    def settings(self, args, state: dict | None = None) -> dict:
        """The keyword arguments of `loss` and `metrics`: the NPOConfig fields of `hyperparameters`, and the `state`
        of a stateful method (without it: the hyper-parameters only, as `update` takes them)."""
        values = {name: getattr(args, name) for name in self.hyperparameters}
        return values if self.state is None or state is None else {**values, "state": state}

    @property
    def per_token_reference(self) -> bool:
        return self.needs_reference and any(kind != SEQUENCE for kind in self.inputs)


def _answer_tokens(forget: ForgetInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """The forget answers' per-token log-probs flattened in row order, and each answer's token count."""
    return forget.token_logps[forget.token_mask.bool()], forget.token_mask.sum(1)


def _pdu_state(pdu_dual_init, pdu_retain_bound, **_) -> dict[str, float]:
    """λ₀, ε (`pdu_retain_bound`, or 0 until `_pdu_update` measures it) and the optimizer steps taken."""
    return {"dual": float(pdu_dual_init), "retain_bound": float(pdu_retain_bound or 0.0), "steps": 0.0}


def _pdu_combine(forget_term, retain_loss, state, pdu_retain_bound, pdu_slack, **_) -> torch.Tensor:
    """The Lagrangian at the current λ. Before ε is measured (the first step, without `pdu_retain_bound`), this
    micro-batch's own retain loss stands for π_ref's: θ is θ_ref until the first update, and ε moves no gradient."""
    measuring = pdu_retain_bound is None and state["steps"] == 0
    bound = losses.pdu_retain_bound(retain_loss.detach(), pdu_slack) if measuring else state["retain_bound"]
    return losses.pdu_lagrangian(forget_term, retain_loss, state["dual"], bound)


def _pdu_update(state, logged, pdu_dual_step, pdu_retain_bound, pdu_slack, pdu_dual_warmup_steps, **_) -> None:
    """After each optimizer step: at the first, ε = (1 + slack)·(that step's retain loss, π_ref's) unless given; then,
    once `pdu_dual_warmup_steps` steps have passed, the projected dual ascent step on λ."""
    if pdu_retain_bound is None and state["steps"] == 0:
        state["retain_bound"] = losses.pdu_retain_bound(logged["loss/retain"], pdu_slack)
    state["steps"] += 1.0
    if state["steps"] > pdu_dual_warmup_steps:
        state["dual"] = losses.pdu_dual_update(state["dual"], logged["loss/retain"], state["retain_bound"],
                                               pdu_dual_step)


def _pdu_metrics(forget, state, pdu_retain_bound, **_) -> dict[str, torch.Tensor]:
    """λ (`pdu/dual`) and, once set, ε (`pdu/retain_bound`) during this step."""
    known = pdu_retain_bound is not None or state["steps"] > 0
    return {"pdu/dual": torch.tensor(state["dual"]), **({"pdu/retain_bound": torch.tensor(state["retain_bound"])}
                                                          if known else {})}


# RMU's default steering coefficient: this multiple of the median norm of layer ℓ's output on the forget tokens,
# measured at the first optimizer step (docs/guides/trainer.md, "RMU").
RMU_STEERING_NORM_MULTIPLE = 4.0


def _rmu_steering_coeff(forget, state, rmu_steering_coeff) -> float:
    """c: `rmu_steering_coeff`; without it, measured at the first optimizer step from this micro-batch (θ is θ_ref
    until the first update) and from then on the state's, the mean of the first step's measurements."""
    if rmu_steering_coeff is not None:
        return float(rmu_steering_coeff)
    if state["steps"] == 0:
        return RMU_STEERING_NORM_MULTIPLE * losses.median_token_norm(forget.hidden_states).item()
    return state["steering_coeff"]


def _rmu_loss(forget, state, rmu_steering_coeff, seed, **_) -> torch.Tensor:
    """RMU's forget term: layer ℓ's output pushed towards c·u."""
    activations = forget.hidden_states
    target = losses.rmu_control_vector(activations.size(-1), _rmu_steering_coeff(forget, state, rmu_steering_coeff),
                                       seed)
    return losses.activation_mse(activations, target.to(activations.device))


def _rmu_state(rmu_steering_coeff, **_) -> dict[str, float]:
    """c (`rmu_steering_coeff`, or 0 until `_rmu_update` measures it) and the optimizer steps taken."""
    return {"steering_coeff": float(rmu_steering_coeff or 0.0), "steps": 0.0}


def _rmu_update(state, logged, rmu_steering_coeff, **_) -> None:
    """After the first optimizer step, without `rmu_steering_coeff`: c = the multiple of that step's median
    activation norm (its mean over micro-batches and processes)."""
    if rmu_steering_coeff is None and state["steps"] == 0:
        state["steering_coeff"] = RMU_STEERING_NORM_MULTIPLE * logged["rmu/activation_norm"]
    state["steps"] += 1.0


def _rmu_metrics(forget, state, rmu_steering_coeff, **_) -> dict[str, torch.Tensor]:
    """The median norm of the forget activations (`rmu/activation_norm`) and c (`rmu/steering_coeff`)."""
    return {"rmu/activation_norm": losses.median_token_norm(forget.hidden_states),
            "rmu/steering_coeff": torch.tensor(_rmu_steering_coeff(forget, state, rmu_steering_coeff))}


PDU_HYPERPARAMETERS = ("pdu_dual_init", "pdu_dual_step", "pdu_retain_bound", "pdu_slack", "pdu_dual_warmup_steps")
NPO_PAPER = "Zhang et al. 2024, arXiv 2404.05868"
METHODS: dict[str, Method] = {row.name: row for row in [
    Method("npo", lambda forget, beta: losses.npo_loss(forget.logps, forget.ref_logps, beta),
           functions=(losses.npo_loss,), paper=NPO_PAPER, equation="eq. 3",
           formula="−(2/β) log σ(−β (log π_θ(y\\|x) − log π_ref(y\\|x)))",
           needs_reference=True, hyperparameters=("beta",),
           metrics=lambda forget, beta: {"npo/weight": losses.npo_weight(forget.logps, forget.ref_logps, beta)}),
    Method("ga", lambda forget: losses.ga_loss(forget.logps), functions=(losses.ga_loss,), paper=NPO_PAPER,
           equation="eq. 1", formula="log π_θ(y\\|x)"),
    Method("simnpo", lambda forget, beta, gamma: losses.simnpo_loss(forget.logps, forget.lengths, beta, gamma),
           functions=(losses.simnpo_loss,), paper="Fan et al. 2024, arXiv 2410.07163", equation="",
           formula="−(2/β) log σ(β (−log π_θ(y\\|x)/\\|y\\| − γ))", hyperparameters=("beta", "gamma")),
    Method("idk", lambda forget: losses.nll_loss(forget.replacement_logps, forget.replacement_lengths),
           functions=(losses.nll_loss,), paper="Maini et al. 2024 (TOFU), arXiv 2401.06121", equation="",
           formula="−log π_θ(y_idk\\|x) per token (NLL on a replacement answer, \"I don't know\")",
           needs_replacement=True),
    Method("dpo", lambda forget, beta: losses.dpo_loss(forget.replacement_logps, forget.replacement_ref_logps,
                                                       forget.logps, forget.ref_logps, beta),
           functions=(losses.dpo_loss,), paper=NPO_PAPER, equation="eq. 2",
           formula="−(1/β) log σ(β (log π_θ/π_ref (y_idk) − log π_θ/π_ref (y))), the replacement as chosen",
           needs_reference=True, needs_replacement=True, hyperparameters=("beta",)),
    Method("wga", lambda forget, wga_alpha: losses.wga_loss(*_answer_tokens(forget), wga_alpha),
           functions=(losses.wga_loss,), paper="Wang et al. 2025 (ICLR), arXiv 2502.19301", equation="",
           formula="sg(p_t^α) log p_t per answer token, p_t = π_θ(y_t\\|x, y_<t)", inputs=(TOKENS,),
           hyperparameters=("wga_alpha",)),
    Method("satimp", lambda forget, satimp_beta1, satimp_beta2: losses.satimp_loss(
               *_answer_tokens(forget), satimp_beta1, satimp_beta2),
           functions=(losses.satimp_loss,), paper="Yang et al. 2025 (ICML), arXiv 2505.11953", equation="",
           formula="sg(p_t^β1 (1 − p_t)^β2) log p_t per answer token", inputs=(TOKENS,),
           hyperparameters=("satimp_beta1", "satimp_beta2")),
    Method("undial", lambda forget, undial_gamma: losses.undial_loss(
               forget.token_logprobs, forget.ref_token_logprobs, forget.token_labels, forget.lengths, undial_gamma),
           functions=(losses.undial_loss,), paper="Dong et al. 2025 (NAACL), arXiv 2402.10052", equation="",
           formula="KL(softmax(z_ref,t − γ e_(y_t)) ‖ π_θ,t) per answer token", needs_reference=True,
           inputs=(DISTRIBUTIONS,), hyperparameters=("undial_gamma",)),
    Method("ceu", lambda forget, ceu_skip_first: losses.ceu_loss(
               forget.token_logprobs, forget.token_labels, forget.lengths, ceu_skip_first),
           functions=(losses.ceu_loss,), paper="Yang 2025, arXiv 2503.01224", equation="",
           formula="H(softmax(sg(z_t) with z_t(y_t) = −∞), π_θ,t) per answer token", inputs=(DISTRIBUTIONS,),
           hyperparameters=("ceu_skip_first",)),
    Method("pdu", lambda forget, state, **_: losses.logit_margin_loss(forget.token_logprobs, forget.lengths),
           functions=(losses.logit_margin_loss, losses.pdu_lagrangian, losses.pdu_dual_update,
                      losses.pdu_retain_bound),
           paper="Entesari et al. 2025, arXiv 2506.05314", equation="",
           formula="(max_v z_t(v) − mean_v z_t(v))² per answer token; + λ (L_retain − ε), λ by dual ascent",
           inputs=(DISTRIBUTIONS,), hyperparameters=PDU_HYPERPARAMETERS, retain_losses=("nll",), state=_pdu_state,
           update=_pdu_update, combine=_pdu_combine, metrics=_pdu_metrics),
    Method("rmu", _rmu_loss, functions=(losses.activation_mse, losses.rmu_control_vector, losses.median_token_norm),
           paper="Li et al. 2024 (WMDP), arXiv 2403.03218", equation="Algorithm 1",
           formula="\\|h_θ^ℓ(x) − c·u\\|² / d per token, u a fixed random unit vector; + α \\|h_θ^ℓ − h_ref^ℓ\\|² / d "
                   "on retain tokens",
           inputs=(HIDDEN,), hyperparameters=("rmu_layer", "rmu_steering_coeff", "rmu_alpha", "seed"),
           retain_losses=("activations",), state=_rmu_state, update=_rmu_update, metrics=_rmu_metrics,
           combine=lambda forget_term, retain_loss, rmu_alpha, **_: forget_term + rmu_alpha * retain_loss),
]}


def method_names(predicate: Callable[[Method], bool] = lambda row: True) -> list[str]:
    """The names of the rows for which `predicate` holds, in the registry's order."""
    return [name for name, row in METHODS.items() if predicate(row)]


def method_losses(method: str) -> tuple[str, str | None]:
    """(forget_loss, retain_loss) of a method as the NPO paper names it: "npo" → ("npo", None), "npo+rt" → ("npo",
    "nll"), "ga+kl" → ("ga", "kl"), "idk+rt", "simnpo", ...; a row that needs a retain loss takes its first without a
    suffix: "pdu" → ("pdu", "nll")."""
    forget_loss, _, suffix = method.partition("+")
    if forget_loss not in METHODS or suffix not in METHOD_RETAIN_SUFFIXES:
        raise ValueError(f"method {method!r}: use <forget_loss>[+rt|+kl] with forget_loss among "
                         f"{method_names()}.")
    retain_loss = METHOD_RETAIN_SUFFIXES[suffix]
    if not suffix and None not in METHODS[forget_loss].retain_losses:  # "pdu": with the retain loss it needs
        retain_loss = METHODS[forget_loss].retain_losses[0]
    check_combination(forget_loss, retain_loss)
    return forget_loss, retain_loss


def check_combination(forget_loss: str, retain_loss: str | None, precompute_ref_log_probs: bool = False) -> Method:
    """The row of `forget_loss`, or a ValueError naming the valid choices when the combination cannot run."""
    if forget_loss not in METHODS:
        raise ValueError(f"forget_loss={forget_loss!r} is unknown: use one of {method_names()}.")
    row = METHODS[forget_loss]
    if retain_loss not in RETAIN_LOSSES:
        raise ValueError(f"retain_loss={retain_loss!r} is unknown: use one of {list(RETAIN_LOSSES)}.")
    if retain_loss not in row.retain_losses:
        raise ValueError(f"forget_loss={forget_loss!r} does not combine with retain_loss={retain_loss!r}: use one of "
                         f"{list(row.retain_losses)}, or a forget_loss among "
                         f"{method_names(lambda other: retain_loss in other.retain_losses)}.")
    if precompute_ref_log_probs and row.per_token_reference:
        raise ValueError(f"forget_loss={forget_loss!r} reads π_ref per token, which precompute_ref_log_probs does "
                         "not store (it holds sums): set precompute_ref_log_probs=False, or use a forget_loss among "
                         f"{method_names(lambda other: not other.per_token_reference)}.")
    return row


def markdown_table() -> str:
    """The docs' table of the forget losses (docs/guides/trainer.md), one line per row of `METHODS`."""
    lines = ["| `forget_loss` | formula (per forget row, averaged) | source | function | reference model | "
             "replacement answer | inputs | hyper-parameters | retain losses |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in METHODS.values():
        cells = [f"`\"{row.name}\"`", row.formula, ", ".join(filter(None, (row.paper, row.equation))),
                 ", ".join(f"`{function.__name__}`" for function in row.functions),
                 "yes" if row.needs_reference else "no", "yes" if row.needs_replacement else "no",
                 ", ".join(row.inputs), ", ".join(row.hyperparameters) or "—",
                 ", ".join(f"`{name}`" for name in row.retain_losses)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
