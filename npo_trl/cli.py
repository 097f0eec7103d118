"""`npo-trl`: unlearn from the command line (`npo_trl.scripts.unlearn`), or evaluate a model on a benchmark.

    npo-trl [unlearn] --model_name_or_path M --dataset_name FORGET [--retain_dataset_name RETAIN --retain_loss nll] ...
    npo-trl eval tofu --model_name_or_path M --forget_split forget10 [--retain_model R | --reference_stats FILE] ...
    npo-trl eval muse --model_name_or_path M --dataset news [--retrain_model R | --reference_stats FILE] ...
    npo-trl eval lm-eval --model_name_or_path M --tasks wmdp_bio wmdp_cyber mmlu [--include_path DIR] ...

`npo-trl <subcommand> --help` lists every argument.
"""

import importlib
import sys

BENCHMARKS = ("tofu", "muse", "lm-eval")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return
    if argv[:1] == ["eval"]:
        if argv[1:2] in ([], ["-h"], ["--help"]):
            print(f"usage: npo-trl eval {{{','.join(BENCHMARKS)}}} ARGS  (npo-trl eval <benchmark> --help lists them)")
            return
        if argv[1] not in BENCHMARKS:
            raise SystemExit(f"npo-trl eval: name the benchmark, one of {list(BENCHMARKS)}: "
                             "npo-trl eval tofu --model_name_or_path ...")
        script = importlib.import_module(f"npo_trl.scripts.eval_{argv[1].replace('-', '_')}")  # eval_lm_eval, ...
        script.run(argv[2:], prog=f"npo-trl eval {argv[1]}")
        return
    from npo_trl.scripts import unlearn

    unlearn.run(argv[1:] if argv[:1] == ["unlearn"] else argv, prog="npo-trl unlearn")


if __name__ == "__main__":
    main()
