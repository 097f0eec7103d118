"""examples/synthetic.py and npo_trl.synthetic_check: a reduced run of the NPO paper's Section 4 must show the
paper's qualitative findings."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from npo_trl import losses, synthetic_check

_spec = importlib.util.spec_from_file_location("synthetic", Path(__file__).parents[1] / "examples" / "synthetic.py")
synthetic = importlib.util.module_from_spec(_spec)
sys.modules["synthetic"] = synthetic
_spec.loader.exec_module(synthetic)

ALPHAS = ("1.0", "0.0")


@pytest.fixture
def one_thread():
    """As `run` does: tiny matmuls on a shared CPU are many times slower with more threads than cores are free."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    """One instance per α, 600 steps, a 4-point learning-rate grid: ~20 s on 2 shared cores."""
    args = synthetic.ScriptArguments(
        output_dir=str(tmp_path_factory.mktemp("synthetic")), num_instances=1, steps=600,
        learning_rates=[5e-4, 2e-3, 1e-2, 5e-2], betas=[0.3, 1.0, 3.0], figure3_betas=[0.01, 0.1, 1.0],
        theorem_steps=2000,
    )
    return args, synthetic.run(args)


def test_outputs_are_written(reduced):
    args, results = reduced
    for name in ("figure3.png", "figure4.png", "theorem2.png"):
        assert (Path(args.output_dir) / name).stat().st_size > 10_000
    saved = json.loads((Path(args.output_dir) / "results.json").read_text())
    assert set(saved["alpha"]) == set(ALPHAS)
    for alpha in ALPHAS:
        for method in synthetic_check.METHODS:
            final, saved_final = results["alpha"][alpha]["final"][method], saved["alpha"][alpha]["final"][method]
            assert saved_final["retain"][0] == pytest.approx(final["retain"][0], rel=1e-4)
        assert len(saved["alpha"][alpha]["curves"]["step"]) == args.steps // args.eval_every + 1


def test_reference_is_far_from_retrained_on_forget_only(reduced):
    """The paper's Pareto curves start at about (1.70, 0.02) for α = 1: forgetting is needed, retaining is done."""
    start = reduced[1]["alpha"]["1.0"]["start"]
    assert 1.2 < start["forget"][0] < 2.4
    assert start["retain"][0] < 0.05


@pytest.mark.parametrize("alpha", ALPHAS)
def test_ga_rt_ends_farther_from_retrained_on_retain_set_than_npo_rt(reduced, alpha):
    final = reduced[1]["alpha"][alpha]["final"]
    assert final["GA+RT"]["retain"][0] > 2 * final["NPO+RT"]["retain"][0]


@pytest.mark.parametrize("alpha", ALPHAS)
def test_npo_rt_pareto_frontier_dominates_ga_rt(reduced, alpha):
    result = reduced[1]["alpha"][alpha]
    curves = result["curves"]
    ga = np.array([curves["GA+RT"]["forget_mean"], curves["GA+RT"]["retain_mean"]]).T
    npo = np.array([curves["NPO+RT"]["forget_mean"], curves["NPO+RT"]["retain_mean"]]).T
    # every point GA+RT visits is weakly dominated by one NPO+RT visits: as forgotten, and no more damage to D_RT
    dominated = ((npo[None, :, 0] <= ga[:, None, 0] + 1e-6) & (npo[None, :, 1] <= ga[:, None, 1] + 1e-4)).any(1)
    assert dominated.all()
    assert result["pareto"]["npo_rt_dominates_ga_rt"]
    assert result["pareto"]["mean_retain_gap"] > 0


def test_theorem2_ga_drifts_linearly_npo_logarithmically(reduced):
    th = reduced[1]["theorem2"]
    assert th["GA"]["r2_linear"] > 0.999 and th["GA"]["r2_linear"] > th["GA"]["r2_log"] + 0.03
    assert th["NPO"]["r2_log"] > 0.99 and th["NPO"]["r2_log"] > th["NPO"]["r2_linear"] + 0.03
    assert th["GA"]["final_over_midway"] > 1.8  # doubling t doubles the drift ...
    assert th["NPO"]["final_over_midway"] < 1.3  # ... but adds only a constant to NPO's
    assert th["NPO"]["final_drift"] < th["GA"]["final_drift"] / 10
    assert th["log10_npo_steps_to_ga_final_drift"] > 10  # the exponential gap


def test_figure3_npo_approaches_ga_as_beta_shrinks(reduced):
    fig3 = reduced[1]["figure3"]
    assert fig3["betas"] == sorted(fig3["betas"])
    for gaps in (fig3["sup_forget_gap_to_ga"], fig3["sup_retain_gap_to_ga"]):
        assert all(a < b for a, b in zip(gaps, gaps[1:], strict=False))
    assert fig3["sup_forget_gap_to_ga"][0] < 0.05


def tiny_task(**overrides):
    args = synthetic.ScriptArguments(num_features=16, num_forget=20, num_retain=50, num_eval=30, train_steps=200,
                                     **overrides)
    return synthetic.make_task(args, [(1.0, 0), (0.0, 1)])


def test_batched_configs_train_exactly_as_alone(one_thread):
    """One θ per config in one tensor: each must follow its own gradient, whatever else shares the batch."""
    task = tiny_task()
    configs = [("GA", 1e-2, 0.0), ("NPO", 1e-2, 0.5), ("NPO", 3e-2, 0.5), ("NPO", 1e-2, 2.0), ("GA+RT", 1e-2, 0.0),
               ("NPO+RT", 2e-2, 1.0), ("IDK+RT", 1e-2, 0.0), ("DPO+RT", 1e-2, 1.0)]
    together = synthetic_check.unlearn(task, configs, steps=30, eval_every=10)
    for i, config in enumerate(configs):
        alone = synthetic_check.unlearn(task, [config], steps=30, eval_every=10)
        np.testing.assert_allclose(alone["forget"][..., 0], together["forget"][..., i], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(alone["retain"][..., 0], together["retain"][..., i], rtol=1e-4, atol=1e-6)
    assert not np.allclose(together["forget"][-1, :, 1], together["forget"][-1, :, 2])  # the configs do differ


def test_every_objective_goes_through_npo_trl_losses(monkeypatch, one_thread):
    task = tiny_task()
    calls = {}
    for name in ("ga_loss", "npo_loss", "nll_loss", "dpo_loss"):
        original = getattr(losses, name)

        def spy(*a, _name=name, _original=original, **k):
            calls[_name] = calls.get(_name, 0) + 1
            return _original(*a, **k)

        monkeypatch.setattr(losses, name, spy)
    for method, expected in [("GA", {"ga_loss"}), ("NPO", {"npo_loss"}), ("GA+RT", {"ga_loss", "nll_loss"}),
                             ("IDK+RT", {"nll_loss"}), ("DPO+RT", {"dpo_loss", "nll_loss"})]:
        calls.clear()
        synthetic_check.unlearn(task, [(method, 1e-2, 1.0)], steps=2, eval_every=10)
        assert set(calls) == expected, method


def test_grid_search_rule():
    configs = [("GA", 1e-3, 0.0), ("GA", 1e-2, 0.0), ("GA", 1e-1, 0.0), ("GA+RT", 1e-3, 0.0), ("GA+RT", 1e-2, 0.0),
               ("NPO+RT", 1e-3, 1.0), ("NPO+RT", 1e-2, 1.0), ("NPO+RT", 1e-2, 3.0)]
    forget = np.array([[1.0] * 8, [0.5, 0.3, 0.9, 1.5, 2.0, 0.4, 0.2, 0.1]])
    retain = np.array([[0.1] * 8, [0.1, 0.3, 0.9, 0.1, np.nan, 0.1, 0.1, 0.05]])
    picks = synthetic_check.select(forget, retain, configs)
    assert picks["GA"] == 1  # the largest lr whose final forget + retain (0.6) is still ≤ the start's (1.1)
    assert picks["GA+RT"] == 3  # none stable (1.6 and nan): the smallest lr
    assert picks["NPO+RT"] == 7  # argmin of the final forget + retain


def test_cli_parses_lists_and_flags():
    from trl import TrlParser

    (args,) = TrlParser(synthetic.ScriptArguments).parse_args_and_config(
        ["--alphas", "1.0", "--learning_rates", "1e-3", "2e-3", "--plot", "false", "--steps", "7"])
    assert args.alphas == [1.0] and args.learning_rates == [1e-3, 2e-3] and args.plot is False and args.steps == 7


def test_run_restores_thread_count(tmp_path):
    before = torch.get_num_threads()
    args = synthetic.ScriptArguments(output_dir=str(tmp_path), num_instances=1, steps=4, eval_every=2, alphas=[1.0],
                                     num_features=8, num_forget=10, num_retain=20, num_eval=10, train_steps=20,
                                     learning_rates=[1e-3], betas=[1.0], figure3_betas=[0.1], theorem_steps=20,
                                     theorem_dim=20, num_threads=1, plot=False)
    results = synthetic.run(args)
    assert torch.get_num_threads() == before
    assert results["alpha"]["1.0"]["curves"]["step"] == [0, 2, 4]
    assert (tmp_path / "results.json").exists() and not (tmp_path / "figure4.png").exists()


def test_a_method_with_other_hyperparameters_is_refused():
    lp = {key: torch.zeros(1, 1, 2) for key in ("forget", "forget_ref", "idk", "idk_ref", "retain")}
    with pytest.raises(ValueError, match=r"'SimNPO' reads \['beta', 'gamma'\]; this experiment sets β only"):
        synthetic_check.method_loss("SimNPO", lp, 1.0)
