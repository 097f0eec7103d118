"""What a robustness evaluation costs against a plain one, in one run, measured through the evaluators' own timers:
one unlearned model of an `examples/tofu.py` run (its `arguments.json` rebuilds the data and settings) evaluated on
every TOFU set (`TOFUEvaluator`, what the example runs every epoch) and under each attack (`RobustnessEvaluator`:
each attack's own seconds and its evaluation's), alternately, `--repeats` times each; medians.

    python -m benchmarks.robustness --run results/tofu --method npo+rt      # a finished run of examples/tofu.py

Prints a table and writes `benchmarks/robustness.json`; the numbers go into RESULTS.md's findings by hand.
"""

import argparse
import json
import os
import statistics

HERE = os.path.dirname(os.path.abspath(__file__))


def measure(run: str, method: str, seed: int | None, repeats: int, attacks: list[str], relearn_steps: list[int],
            relearn_learning_rate: float) -> dict:
    from transformers import AutoTokenizer
    from trl import ModelConfig

    from npo_trl.attacks.arguments import AttackArguments
    from npo_trl.models import load_model
    from npo_trl.tofu import TOFUEvalSettings, TOFUEvaluator, evaluation_sets, load_reference_stats, load_splits
    from npo_trl.tofu.robustness import tofu_robustness_evaluator

    with open(os.path.join(run, "arguments.json")) as f:
        arguments = json.load(f)
    script, settings = arguments["script"], TOFUEvalSettings(**arguments["settings"])
    model_args = ModelConfig(**arguments["model"])
    splits = load_splits(script["dataset"], script["forget_split"], num_authors=script["num_authors"],
                         qa_per_author=script["qa_per_author"], holdout=script["privacy"])
    eval_sets = evaluation_sets(splits)
    full = os.path.join(run, "full")
    tokenizer = AutoTokenizer.from_pretrained(full)
    unlearned = os.path.join(run, "unlearn", method, *([f"seed{seed}"] if seed is not None else []), "final")
    plain = TOFUEvaluator(tokenizer, eval_sets, load_reference_stats(os.path.join(run, "retain_stats.json")),
                          settings)
    attack_args = AttackArguments(attacks=attacks, relearn_steps=relearn_steps,
                                  relearn_learning_rate=relearn_learning_rate)
    robustness = tofu_robustness_evaluator(tokenizer, eval_sets["forget"], attack_args, settings,
                                           retain_model=os.path.join(run, "retain"), retain_rows=splits["retain"],
                                           qa_per_author=script["qa_per_author"], model_args=model_args)
    model = load_model(unlearned, model_args).eval()
    plain.evaluate(model), robustness.evaluate(model)  # warm-up, not counted
    seconds = {"plain": [], "robustness": []}
    parts: dict[str, list[float]] = {}
    for _ in range(repeats):
        plain.evaluate(model)
        seconds["plain"].append(plain.timer.seconds["total"])
        robustness.evaluate(model)
        seconds["robustness"].append(robustness.timer.seconds["total"])
        for key, value in robustness.timer.seconds.items():
            parts.setdefault(f"robustness/{key}", []).append(value)
    median = {key: statistics.median(values) for key, values in {**seconds, **parts}.items()}
    base = median["plain"]
    ratios = {"robustness evaluation (every attack)": median["robustness"] / base,
              "held-out forget rows, unattacked": median["robustness/plain"] / base}
    for name in robustness.attacks:
        ratios[f"{name}: the attack"] = median[f"robustness/attack/{name}"] / base
        ratios[f"{name}: its evaluation"] = median[f"robustness/attack/{name}/evaluate"] / base
    return {"run": run, "method": method, "seed": seed, "repeats": repeats, "seconds": seconds, "median": median,
            "ratio_to_plain": ratios,
            "rows": {name: len(s) for name, s in plain.sets.items()},
            "attacked_rows": len(robustness.evaluator.sets["forget"])}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="The output folder of a finished examples/tofu.py run.")
    parser.add_argument("--method", default="npo+rt")
    parser.add_argument("--seed", type=int, default=None, help="The run's seed folder (runs with --seeds).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--attacks", nargs="+", default=["relearn", "quantize8", "quantize4"])
    parser.add_argument("--relearn_steps", nargs="+", type=int, default=[80])
    parser.add_argument("--relearn_learning_rate", type=float, default=1e-4)
    parser.add_argument("--output", default=os.path.join(HERE, "robustness.json"))
    options = parser.parse_args(argv)
    result = measure(options.run, options.method, options.seed, options.repeats, options.attacks,
                     options.relearn_steps, options.relearn_learning_rate)
    print(f"one plain TOFU evaluation ({sum(result['rows'].values())} rows): {result['median']['plain']:.2f} s "
          f"(median of {options.repeats}); attacked models scored on {result['attacked_rows']} held-out forget rows")
    for name, ratio in result["ratio_to_plain"].items():
        print(f"  {name:<55} {ratio:6.2f} × plain")
    with open(options.output, "w") as f:
        json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
