"""Section 4 of the NPO paper (Zhang et al. 2024, arXiv 2404.05868) on synthetic data, and Theorem 2's divergence.

A random-features classifier π_θ(y=1|x) = σ(θᵀReLU(Wx)) learns a forget set and a retain set; six unlearning methods
then run full-batch gradient descent from it and are scored by their KL distance to the model retrained on the retain
set alone (Figures 3 and 4). Every objective is a function of `npo_trl.losses` applied to per-sample log-probabilities
log π_θ(y|x) = logsigmoid(±logit), through the trainer's method rows (`npo_trl.synthetic_check` holds the model,
the methods' gradient descent, the grid-search rule and the figures; this script samples the data and runs them), so
what is measured is the code the trainer runs.

All methods, learning rates, β's and instances train at once, as one (instances, configs, features) tensor of θ's.
Hyperparameters are grid-searched on a separate tuning instance, then the picks run on the `num_instances` others.

```bash
python examples/synthetic.py                                   # the full run, about a minute on 2 CPU cores
python examples/synthetic.py --num_instances 1 --steps 500     # a quick look
```

Writes figure3.png, figure4.png, theorem2.png and results.json to --output_dir.
"""

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from trl import TrlParser

from npo_trl import losses
from npo_trl.synthetic_check import (
    METHODS,
    USES_BETA,
    frontier,
    label_logps,
    line_fit,
    logits_of,
    plot,
    select,
    train,
    unlearn,
)


@dataclass
class ScriptArguments:
    output_dir: str = field(default="results/synthetic", metadata={"help": "Where the PNGs and results.json go."})
    num_instances: int = field(default=5, metadata={"help": "Random instances (data and W) reported; the paper's 5."})
    steps: int = field(default=2000, metadata={"help": "Gradient-descent steps of unlearning."})
    eval_every: int = field(default=25, metadata={"help": "Steps between two evaluations of the distances."})
    alphas: list[float] = field(default_factory=lambda: [1.0, 0.0],
                                metadata={"help": "Mean gaps α (μ_f = -μ_r = α·1_d): 1 is Fig. 4a, 0 is Fig. 4b."})
    dim: int = field(default=16, metadata={"help": "Input dimension d."})
    num_features: int = field(default=128, metadata={"help": "Random ReLU features (rows of W)."})
    num_forget: int = field(default=200, metadata={"help": "Forget-set size."})
    num_retain: int = field(default=1000, metadata={"help": "Retain-set size."})
    num_eval: int = field(default=1000, metadata={"help": "Fresh inputs per distribution the distances average over."})
    train_steps: int = field(default=10000, metadata={"help": "GD steps training the reference and retrained models."})
    train_learning_rate: float = field(
        default=0.1, metadata={"help": "Their learning rate; the paper's code runs 0.05 for 20000 steps, the same "
                                       "horizon and (to 4 digits) the same models."})
    learning_rates: list[float] = field(
        default_factory=lambda: [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2],
        metadata={"help": "Learning-rate grid, searched per method."})
    betas: list[float] = field(default_factory=lambda: [0.1, 0.3, 1.0, 3.0, 10.0],
                               metadata={"help": "β grid of NPO, NPO+RT and DPO+RT."})
    figure3_betas: list[float] = field(default_factory=lambda: [0.01, 0.1, 0.2, 0.5, 1.0],
                                       metadata={"help": "Fig. 3: NPO's β's, run beside GA at one learning rate."})
    figure3_learning_rate: float = field(default=5e-4, metadata={"help": "Fig. 3: the shared learning rate."})
    theorem_dim: int = field(default=1000, metadata={"help": "Theorem 2: dimension d of the logistic model."})
    theorem_num_forget: int = field(default=10, metadata={"help": "Theorem 2: forget points, n_f ≤ d."})
    theorem_ref_logit: float = field(default=2.0, metadata={"help": "Theorem 2: the reference's logit on each point."})
    theorem_steps: int = field(default=5000, metadata={"help": "Theorem 2: gradient steps."})
    theorem_learning_rate: float = field(default=1.0, metadata={"help": "Theorem 2: step size."})
    theorem_beta: float = field(default=1.0, metadata={"help": "Theorem 2: NPO's β."})
    seed: int = field(default=0, metadata={"help": "Instance k has seed + k; the tuning one, seed + num_instances."})
    num_threads: int = field(default=1, metadata={"help": "Torch CPU threads; one is fastest for such small matmuls."})
    plot: bool = field(default=True, metadata={"help": "Write the PNGs (results.json is always written)."})


# ----------------------------------------------------------------------------------------------- data


def make_task(args: ScriptArguments, specs: list[tuple[float, int]]) -> dict:
    """Section 4.1's data, features and the reference and retrained models; one instance per (α, seed) in specs.

    x^f ~ N(α·1, I), P(y=1|x) = σ((x - μ_f)ᵀθ_f + 1); x^r ~ N(-α·1, I), P(y=1|x) = σ(-(x - μ_r)ᵀθ_f - 1); θ_f = 1/√d.
    Sampled in float64, returned in float32 (the distances agree to 4 digits and every step costs half).
    """
    d = args.dim
    theta_f = torch.ones(d, dtype=torch.float64) / math.sqrt(d)
    task = {k: [] for k in ("Z_f", "y_f", "y_idk", "Z_r", "y_r", "Z_ef", "Z_er")}
    for alpha, seed in specs:
        gen = torch.Generator().manual_seed(seed)

        def sample(n, sign, alpha=alpha, gen=gen):  # sign +1: the forget distribution, -1: the retain one
            x = sign * alpha + torch.randn(n, d, generator=gen, dtype=torch.float64)
            return x, torch.bernoulli(torch.sigmoid(sign * ((x - sign * alpha) @ theta_f + 1)), generator=gen)

        W = torch.randn(args.num_features, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
        (x_f, y_f), (x_r, y_r) = sample(args.num_forget, 1), sample(args.num_retain, -1)
        x_ef, x_er = sample(args.num_eval, 1)[0], sample(args.num_eval, -1)[0]
        for key, x in (("Z_f", x_f), ("Z_r", x_r), ("Z_ef", x_ef), ("Z_er", x_er)):
            task[key].append(F.relu(x @ W.T))
        task["y_f"].append(y_f)
        task["y_r"].append(y_r)
        task["y_idk"].append(torch.bernoulli(torch.full_like(y_f, 0.5), generator=gen))  # IDK's label, DPO's y_w
    task = {k: torch.stack(v).float() for k, v in task.items()}
    Z, y = torch.cat([task["Z_f"], task["Z_r"]], 1), torch.cat([task["y_f"], task["y_r"]], 1)
    task["theta_ref"], task["theta_retr"] = train(Z, y, args.num_forget, args.train_steps, args.train_learning_rate)
    return task


# ----------------------------------------------------------------------------------------------- Theorem 2


def theorem2(args: ScriptArguments) -> dict:
    """Theorem 2: on σ(⟨x, θ⟩) with n_f ≤ d nearly orthogonal forget inputs, ‖θ_t - θ_init‖_{XᵀX} grows linearly in t
    under GA but only logarithmically under NPO. Both run from the same reference; each drift is fit both ways, on
    t ≥ T/10: the theorem is about rates, and before that both pass through the same transient (NPO ≈ GA while
    π_θ ≈ π_ref). The R²'s over all t are reported too."""
    gen = torch.Generator().manual_seed(args.seed)
    n, d, T = args.theorem_num_forget, args.theorem_dim, args.theorem_steps
    X = torch.randn(n, d, generator=gen, dtype=torch.float64) / math.sqrt(d)  # |⟨x_i, x_j⟩| ~ 1/√d ≪ |x_i|² ≈ 1
    y = torch.ones(1, n, dtype=torch.float64)  # y_i = 1 without loss of generality: a label's sign folds into x_i
    theta_init = torch.linalg.pinv(X) @ torch.full((n,), args.theorem_ref_logit, dtype=torch.float64)
    ref_logps = label_logps(logits_of(theta_init[None, None], X[None]), y)
    theta = theta_init.repeat(1, 2, 1)  # config 0 runs GA, config 1 NPO
    every = max(1, T // 250)
    t, drift = [], []
    for step in range(T + 1):
        if step % every == 0:
            t.append(step)
            drift.append(logits_of(theta - theta_init, X[None])[0].norm(dim=-1))  # ‖X(θ - θ_init)‖ = ‖·‖_{XᵀX}
        theta.requires_grad_(True)
        lp = label_logps(logits_of(theta, X[None]), y)
        total = losses.ga_loss(lp[:, :1]) + losses.npo_loss(lp[:, 1:], ref_logps, args.theorem_beta)
        (grad,) = torch.autograd.grad(total, theta)
        theta = (theta - args.theorem_learning_rate * grad).detach()
    t, drift = np.array(t, dtype=float), torch.stack(drift).numpy()
    window = t >= T / 10
    out = {"t": t.tolist(), "fit_from_step": T / 10}
    for j, method in enumerate(("GA", "NPO")):
        r2_linear, linear, _, _ = line_fit(drift[window, j], t[window])
        r2_log, logarithmic, _, _ = line_fit(drift[window, j], np.log1p(t[window]))
        out[method] = {"drift": drift[:, j].tolist(), "final_drift": float(drift[-1, j]), "r2_linear": r2_linear,
                       "r2_log": r2_log, "fit_linear": linear.tolist(), "fit_log": logarithmic.tolist(),
                       "r2_linear_all_t": line_fit(drift[:, j], t)[0],
                       "r2_log_all_t": line_fit(drift[:, j], np.log1p(t))[0],
                       "final_over_midway": float(drift[-1, j] / drift[len(t) // 2, j])}
    # The exponential gap: by NPO's log fit, log10 of the steps it needs to drift as far as GA does in T steps.
    _, _, a, b = line_fit(drift[window, 1], np.log1p(t[window]))
    out["log10_npo_steps_to_ga_final_drift"] = float((drift[-1, 0] - a) / b / math.log(10))
    return out


# ----------------------------------------------------------------------------------------------- the experiment


def summary(curves: dict, step: list) -> dict:
    """Mean and sd over instances of (evals, I, C) curves, per config column."""
    return {k: {"mean": v.mean(1), "sd": v.std(1, ddof=1) if v.shape[1] > 1 else np.zeros_like(v[:, 0])}
            for k, v in curves.items()} | {"step": step}


def rounded(obj):
    """Floats to 5 significant digits, for a results.json small enough to commit."""
    if isinstance(obj, float):
        return float(f"{obj:.5g}")
    if isinstance(obj, dict):
        return {k: rounded(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [rounded(v) for v in obj]
    return obj


def pm(values: np.ndarray) -> list[float]:
    """[mean, sd] over instances (sd 0 for a single instance)."""
    return [float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0]


def run(args: ScriptArguments) -> dict:
    """The whole experiment; returns (and writes to args.output_dir) every number the figures and
    docs/synthetic/README.md use."""
    threads = torch.get_num_threads()
    torch.set_num_threads(args.num_threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: ScriptArguments) -> dict:
    start = time.time()
    os.makedirs(args.output_dir, exist_ok=True)
    # One tuning instance per α (seed + num_instances), then num_instances reported ones per α; all trained at once.
    specs = [(a, args.seed + args.num_instances) for a in args.alphas]
    specs += [(a, args.seed + k) for a in args.alphas for k in range(args.num_instances)]
    everything = make_task(args, specs)

    def instances(idx):
        return {k: v[idx] for k, v in everything.items()}

    grid = [(m, lr, beta) for m in METHODS for beta in (args.betas if m in USES_BETA else [0.0])
            for lr in args.learning_rates]
    tuning = unlearn(instances(slice(0, len(args.alphas))), grid, args.steps, args.eval_every)
    results, curves_by_alpha, col = {"args": asdict(args), "alpha": {}}, {}, {m: i for i, m in enumerate(METHODS)}
    for j, alpha in enumerate(args.alphas):
        picks = select(tuning["forget"][:, j], tuning["retain"][:, j], grid)
        score = tuning["forget"][:, j] + tuning["retain"][:, j]
        first = len(args.alphas) + j * args.num_instances
        rec = unlearn(instances(slice(first, first + args.num_instances)), [grid[picks[m]] for m in METHODS],
                      args.steps, args.eval_every)
        s = curves_by_alpha[alpha] = summary({"forget": rec["forget"], "retain": rec["retain"]}, rec["step"])
        f_mean, r_mean = s["forget"]["mean"], s["retain"]["mean"]
        levels = np.linspace(max(f_mean[:, col["GA+RT"]].min(), f_mean[:, col["NPO+RT"]].min()), f_mean[0, 0], 50)
        fronts = {m: frontier(f_mean[:, col[m]], r_mean[:, col[m]], levels) for m in ("GA+RT", "NPO+RT")}
        gap = fronts["GA+RT"] - fronts["NPO+RT"]
        results["alpha"][str(alpha)] = {
            "start": {"forget": pm(rec["forget"][0, :, 0]), "retain": pm(rec["retain"][0, :, 0])},
            "selected": {m: {"learning_rate": grid[picks[m]][1], "beta": grid[picks[m]][2] if m in USES_BETA else None,
                             "stable": bool(score[-1, picks[m]] <= score[0, picks[m]])} for m in METHODS},
            "final": {m: {"forget": pm(rec["forget"][-1, :, col[m]]), "retain": pm(rec["retain"][-1, :, col[m]])}
                      for m in METHODS},
            "min_forget": {m: {"forget": float(f_mean[:, col[m]].min()),
                               "step": int(rec["step"][f_mean[:, col[m]].argmin()]),
                               "retain_there": float(r_mean[f_mean[:, col[m]].argmin(), col[m]])} for m in METHODS},
            "pareto": {"levels": levels.tolist(), "frontier": {m: v.tolist() for m, v in fronts.items()},
                       "npo_rt_dominates_ga_rt": bool((gap >= -1e-4).all()), "mean_retain_gap": float(gap.mean()),
                       "fraction_npo_rt_strictly_below": float((gap > 1e-4).mean())},
            "curves": {"step": rec["step"], **{m: {f"{k}_{stat}": s[k][stat][:, col[m]].tolist()
                                                   for k in ("forget", "retain") for stat in ("mean", "sd")}
                                               for m in METHODS}},
            "tuning_grid": [{"method": c[0], "learning_rate": c[1], "beta": c[2] if c[0] in USES_BETA else None,
                             "final_forget": float(tuning["forget"][-1, j, i]),
                             "final_retain": float(tuning["retain"][-1, j, i])} for i, c in enumerate(grid)],
        }

    # Figure 3: NPO's gradient tends to GA's as β → 0 (Proposition 1); all at one learning rate, on the first α.
    configs3 = [("GA", args.figure3_learning_rate, 0.0)]
    configs3 += [("NPO", args.figure3_learning_rate, b) for b in args.figure3_betas]
    rec3 = unlearn(instances(slice(len(args.alphas), len(args.alphas) + args.num_instances)), configs3, args.steps,
                   args.eval_every)
    f3, r3 = rec3["forget"].mean(1), rec3["retain"].mean(1)
    results["figure3"] = {
        "alpha": args.alphas[0], "learning_rate": args.figure3_learning_rate, "betas": args.figure3_betas,
        "sup_forget_gap_to_ga": np.abs(f3[:, 1:] - f3[:, :1]).max(0).tolist(),
        "sup_retain_gap_to_ga": np.abs(r3[:, 1:] - r3[:, :1]).max(0).tolist(),
        "curves": {"step": rec3["step"], "forget_mean": f3.T.tolist(), "retain_mean": r3.T.tolist()},
    }
    results["theorem2"] = theorem2(args)
    results["runtime_s"] = time.time() - start
    if args.plot:
        plot(results, curves_by_alpha, args.output_dir)
    with open(os.path.join(args.output_dir, "results.json"), "w") as fh:
        json.dump(rounded(results), fh, indent=1)
    return results


def main(args: ScriptArguments) -> dict:
    results = run(args)
    for alpha, r in results["alpha"].items():
        print(f"α = {alpha}: start forget {r['start']['forget'][0]:.3f}, retain {r['start']['retain'][0]:.3f}")
        for m in METHODS:
            sel, fin = r["selected"][m], r["final"][m]
            print(f"  {m:7s} lr {sel['learning_rate']:<7g} β {str(sel['beta']):5s} final forget "
                  f"{fin['forget'][0]:.4f} ± {fin['forget'][1]:.4f}, "
                  f"retain {fin['retain'][0]:.4f} ± {fin['retain'][1]:.4f}")
        print(f"  NPO+RT frontier dominates GA+RT's: {r['pareto']['npo_rt_dominates_ga_rt']}")
    th = results["theorem2"]
    for m in ("GA", "NPO"):
        print(f"Theorem 2 {m}: R² linear {th[m]['r2_linear']:.4f}, log {th[m]['r2_log']:.4f}")
    print(f"done in {results['runtime_s']:.1f} s; outputs in {args.output_dir}")
    return results


if __name__ == "__main__":
    main(TrlParser(ScriptArguments).parse_args_and_config()[0])
