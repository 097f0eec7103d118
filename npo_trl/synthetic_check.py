"""The NPO paper's Section 4 experiment (Zhang et al. 2024, arXiv 2404.05868) as functions: a random-features
binary classifier π_θ(y=1|x) = σ(θᵀz), its six unlearning methods as full-batch gradient descent of many θ's at once
through the trainer's method rows (`npo_trl.methods`, so what is measured is the code the trainer runs), the KL
distances to the retrained model, the paper's grid-search rule, Pareto frontiers, the fits of Theorem 2 and the
figures. `examples/synthetic.py` samples the data and runs it.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import linregress

from . import losses
from .methods import METHODS as METHODS_BY_NAME
from .methods import ForgetInputs, method_losses
from .plotting import pyplot

METHODS = ("GA", "NPO", "GA+RT", "NPO+RT", "IDK+RT", "DPO+RT")  # the +RT ones last: `unlearn` wants them contiguous
USES_BETA = ("NPO", "NPO+RT", "DPO+RT")
GA_BASED = ("GA", "GA+RT")


def logits_of(theta: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """θᵀz for θ (I, C, F) and features Z (I, n, F): (I, C, n)."""
    return torch.einsum("icf,inf->icn", theta, Z)


def label_logps(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log π(y|x) of a binary classifier: logsigmoid(logit) for y = 1, logsigmoid(-logit) for y = 0."""
    return F.logsigmoid((2 * y[:, None, :] - 1) * logits)


def train(Z: torch.Tensor, y: torch.Tensor, num_forget: int, steps: int, learning_rate: float
          ) -> tuple[torch.Tensor, ...]:
    """The reference (all rows) and retrained (retain rows, after the first num_forget) models: cross-entropy by
    full-batch gradient descent from θ = 0, both at once, to the paper code's horizon lr·steps = 0.05·20000.

    A horizon, not a minimiser: at α = 1 a few features fire on only a handful of retain inputs, the retain-only
    problem is quasi-separable and its minimiser lies at infinity, so the retrained model is what GD reaches.
    """
    theta = torch.zeros(Z.shape[0], 2, Z.shape[-1], dtype=Z.dtype)
    for _ in range(steps):
        theta.requires_grad_(True)
        logps = label_logps(logits_of(theta, Z), y)
        ref, retr = logps[:, :1], logps[:, 1:, num_forget:]
        total = losses.nll_loss(ref, torch.ones_like(ref)) + losses.nll_loss(retr, torch.ones_like(retr))
        (grad,) = torch.autograd.grad(total * Z.shape[0], theta)
        theta = (theta - learning_rate * grad).detach()
    return theta[:, 0], theta[:, 1]


def kl_to(theta: torch.Tensor, theta_target: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """E_x KL(π_target(·|x) ‖ π_θ(·|x)) over the rows of Z, per instance and config: (I, C). An evaluation metric."""
    def log_dist(t):
        logits = logits_of(t, Z)
        return torch.stack([F.logsigmoid(-logits), F.logsigmoid(logits)], -1)

    kl = F.kl_div(log_dist(theta), log_dist(theta_target[:, None]), reduction="none", log_target=True)
    return kl.sum(-1).mean(-1)


def method_loss(method: str, lp: dict, beta: float) -> torch.Tensor:
    """The paper's objectives on per-sample log-probs (I, k, n), through the trainer's method rows
    (`npo_trl.methods`): "NPO+RT" is the "npo" row's loss plus the retain NLL, weight 1; IDK's and DPO's replacement
    answer is the Bern(0.5) label. The mean over instances and configs of each one's loss."""
    forget_loss, retain_loss = method_losses(method.lower())
    row, ones = METHODS_BY_NAME[forget_loss], torch.ones_like(lp["forget"])
    forget = ForgetInputs(logps=lp["forget"], lengths=ones, ref_logps=lp["forget_ref"], replacement_logps=lp["idk"],
                          replacement_lengths=ones, replacement_ref_logps=lp["idk_ref"])
    if set(row.hyperparameters) - {"beta"}:
        raise ValueError(f"method {method!r} reads {list(row.hyperparameters)}; this experiment sets β only: use one "
                         f"of {list(METHODS)}.")
    loss = row.loss(forget, **({"beta": beta} if row.hyperparameters else {}))
    if retain_loss == "nll":
        loss = loss + losses.nll_loss(lp["retain"], torch.ones_like(lp["retain"]))
    return loss


def unlearn(task: dict, configs: list[tuple[str, float, float]], steps: int, eval_every: int) -> dict:
    """Gradient descent from the reference for every (method, lr, β) config and every instance at once.

    Configs sharing (method, β) must be adjacent, and the +RT ones contiguous: each (method, β) group calls its loss
    once on a (I, k, n) block of log-probs, and that mean times I·k is a sum of independent losses, so each θ gets
    exactly its own gradient. Returns the forget and retain distances (evals, I, C) at steps 0, eval_every, ..., steps.
    """
    num_instances, num_configs = task["theta_ref"].shape[0], len(configs)
    theta = task["theta_ref"][:, None, :].repeat(1, num_configs, 1)
    lr = torch.tensor([c[1] for c in configs])[None, :, None]
    groups = {}
    for i, (method, _, beta) in enumerate(configs):
        groups.setdefault((method, beta), []).append(i)
    rt = [i for i, c in enumerate(configs) if c[0].endswith("+RT")] or [0]  # (one unused column if none is +RT)
    assert all(idx == list(range(idx[0], idx[-1] + 1)) for idx in [*groups.values(), rt]), "configs out of order"
    ref_logits = logits_of(task["theta_ref"][:, None], task["Z_f"])
    forget_ref, idk_ref = label_logps(ref_logits, task["y_f"]), label_logps(ref_logits, task["y_idk"])

    record = {"step": [], "forget": [], "retain": []}
    for step in range(steps + 1):
        if step % eval_every == 0 or step == steps:
            record["step"].append(step)
            record["forget"].append(kl_to(theta, task["theta_retr"], task["Z_ef"]))
            record["retain"].append(kl_to(theta, task["theta_retr"], task["Z_er"]))
        if step == steps:
            break
        theta.requires_grad_(True)
        forget_logits = logits_of(theta, task["Z_f"])
        lp_forget, lp_idk = label_logps(forget_logits, task["y_f"]), label_logps(forget_logits, task["y_idk"])
        lp_retain = label_logps(logits_of(theta[:, rt[0]: rt[-1] + 1], task["Z_r"]), task["y_r"])
        total = 0.0
        for (method, beta), idx in groups.items():
            a, b = idx[0], idx[-1] + 1
            lp = {"forget": lp_forget[:, a:b], "forget_ref": forget_ref, "idk": lp_idk[:, a:b], "idk_ref": idk_ref,
                  "retain": lp_retain[:, a - rt[0]: b - rt[0]]}
            total = total + method_loss(method, lp, beta) * num_instances * len(idx)
        (grad,) = torch.autograd.grad(total, theta)
        theta = (theta - lr * grad).detach()
    return {"step": record["step"], "forget": torch.stack(record["forget"]).double().numpy(),
            "retain": torch.stack(record["retain"]).double().numpy()}


def select(forget: np.ndarray, retain: np.ndarray, configs: list) -> dict[str, int]:
    """The grid search: per method, the config index picked from one instance's (evals, C) distance curves.

    The score is the total distance to the retrained model, forget + retain, at the last step. GA-based methods have
    no fixed point (the faster they run the further they go), so they get, as in the paper, the largest learning rate
    still stable at the last step, stable meaning a score no worse than the reference's (failing that, the smallest);
    the others get the argmin of the score over (lr, β).
    """
    score = np.nan_to_num(forget + retain, nan=np.inf)
    picks = {}
    for method in dict.fromkeys(c[0] for c in configs):
        idx = [i for i, c in enumerate(configs) if c[0] == method]
        if method in GA_BASED:
            stable = [i for i in idx if score[-1, i] <= score[0, i]]
            picks[method] = max(stable or [min(idx, key=lambda i: configs[i][1])], key=lambda i: configs[i][1])
        else:
            picks[method] = min(idx, key=lambda i: score[-1, i])
    return picks


def frontier(forget: np.ndarray, retain: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """The Pareto frontier of a trajectory: the least retain distance among its points with forget distance ≤ level."""
    return np.array([retain[forget <= level].min() if (forget <= level).any() else np.inf for level in levels])


def line_fit(y: np.ndarray, feature: np.ndarray) -> tuple[float, np.ndarray, float, float]:
    """The least-squares line y ≈ a + b·feature (`scipy.stats.linregress`): its R², fitted values, a and b."""
    fit = linregress(feature, y)
    return float(fit.rvalue ** 2), fit.intercept + fit.slope * feature, float(fit.intercept), float(fit.slope)


def plot(results: dict, curves_by_alpha: dict, output_dir: str) -> None:
    """figure4.png (distances and Pareto curves per α), figure3.png (NPO → GA as β → 0), theorem2.png (drifts)."""
    plt = pyplot()

    def save(fig, name, title):
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(os.path.join(output_dir, name), dpi=110)
        plt.close(fig)

    colours = dict(zip(METHODS, ("tab:red", "tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown"),
                       strict=False))
    alphas = list(curves_by_alpha)
    fig, axes = plt.subplots(len(alphas), 3, figsize=(15, 4.2 * len(alphas)), squeeze=False)
    for row, alpha in enumerate(alphas):
        s, tag = curves_by_alpha[alpha], "ab"[row] if row < 2 else str(row)
        step = np.array(s["step"])
        for i, m in enumerate(METHODS):
            for ax, key in ((axes[row, 0], "forget"), (axes[row, 1], "retain")):
                mean, sd = s[key]["mean"][:, i], s[key]["sd"][:, i]
                ax.plot(step, mean, color=colours[m], label=m)
                ax.fill_between(step, np.clip(mean - sd, 1e-3, None), mean + sd, color=colours[m], alpha=0.15)
            axes[row, 2].plot(s["forget"]["mean"][:, i], s["retain"]["mean"][:, i], color=colours[m], label=m)
        axes[row, 2].plot(s["forget"]["mean"][0, 0], s["retain"]["mean"][0, 0], "ko", label="reference")
        titles = ("forget distance", "retain distance", "Pareto curves")
        for col, (ax, title) in enumerate(zip(axes[row], titles, strict=False)):
            ax.set_title(f"({tag}{col + 1}) α = {alpha:g}: {title}")
            ax.set_yscale("linear" if col == 0 else "log")  # retain distances span 0.01 (NPO+RT) to >1 (GA)
            ax.set_xlabel("step" if col < 2 else "forget distance  KL(π_retr ‖ π_θ) on D_FG")
            ax.grid(alpha=0.3)
        axes[row, 0].set_ylabel("KL(π_retr ‖ π_θ), forget distribution")
        axes[row, 1].set_ylabel("KL(π_retr ‖ π_θ), retain distribution")
        axes[row, 2].set_ylabel("retain distance")
        axes[row, 2].legend(fontsize=8)
    save(fig, "figure4.png", "NPO paper, Figure 4: unlearning a random-features classifier (mean ± sd over instances)")

    r3 = results["figure3"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    step = np.array(r3["curves"]["step"])
    cmap = plt.get_cmap("viridis")
    for i, (f, r) in enumerate(zip(r3["curves"]["forget_mean"], r3["curves"]["retain_mean"], strict=False)):
        label, colour = ("GA", "k") if i == 0 else (f"NPO β={r3['betas'][i - 1]:g}", cmap(i / len(r3["betas"])))
        style = "--" if i == 0 else "-"
        axes[0].plot(step, f, style, color=colour, label=label)
        axes[1].plot(f, r, style, color=colour, label=label)
    axes[0].set(xlabel="step", ylabel="forget distance", yscale="log",
                title=f"forget distance, lr = {r3['learning_rate']:g}, α = {r3['alpha']:g}")
    axes[1].set(xlabel="forget distance", ylabel="retain distance", yscale="log", title="Pareto curves")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save(fig, "figure3.png", "NPO paper, Figure 3: NPO's curves approach GA's as β → 0")

    th = results["theorem2"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    t_fit = [t for t in th["t"] if t >= th["fit_from_step"]]
    for ax, method in zip(axes, ("GA", "NPO"), strict=False):
        r = th[method]
        ax.plot(th["t"], r["drift"], "k", lw=3, alpha=0.4, label=f"{method}: measured")
        ax.plot(t_fit, r["fit_linear"], "--", color="tab:red", label=f"a + b·t   (R² = {r['r2_linear']:.4f})")
        ax.plot(t_fit, r["fit_log"], ":", color="tab:blue", label=f"a + b·log(1+t)   (R² = {r['r2_log']:.4f})")
        ax.axvline(th["fit_from_step"], color="grey", lw=0.8)
        ax.set(xlabel="step t", ylabel=r"$\|\theta_t - \theta_{\mathrm{init}}\|_{X^\top X}$",
               title=f"{method} (fits on t ≥ {th['fit_from_step']:g})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save(fig, "theorem2.png", "Theorem 2: GA drifts linearly, NPO logarithmically")
