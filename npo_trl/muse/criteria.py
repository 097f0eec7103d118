"""MUSE's C5 scalability and C6 sustainability (Shi et al. 2025, §3): the criteria C1-C4 after unlearning forget sets
of growing size, and after a sequence of unlearning requests.

- **Scalability** (`scal` forget_1..4, nested: forget_k holds k folds): each forget set is unlearned separately,
  starting from the target model.
- **Sustainability** (`sust` forget_1..4, disjoint folds): the folds are unlearned one after another, each run
  starting from the model the previous one left.

MUSE reports, after each run, the utility kept (KnowMem on the retain set) beside the forgetting (VerbMem and
KnowMem on the forget set). These functions run the unlearning through a callable, so any trainer, method or
hardware setup fits, and tabulate the evaluator's metrics.
"""

from collections.abc import Callable, Sequence


def scalability(unlearn: Callable[[str, object, str], str], evaluate: Callable[[str], dict], target_model: str,
                forget_sets: Sequence, output_dir: str) -> list[dict]:
    """Unlearns each of `forget_sets` (scal forget_1..4) from `target_model`: `unlearn(model_path, forget_set,
    output_dir) -> unlearned model path`, into `output_dir/forget_<k>`; returns, per set, `{"forget_set": k,
    "forget_rows": its size, "model": path, **evaluate(path)}`."""
    rows = []
    for k, forget in enumerate(forget_sets, start=1):
        path = unlearn(target_model, forget, f"{output_dir}/forget_{k}")
        rows.append({"forget_set": k, "forget_rows": len(forget), "model": path, **evaluate(path)})
    return rows


def sustainability(unlearn: Callable[[str, object, str], str], evaluate: Callable[[str], dict], target_model: str,
                   forget_sets: Sequence, output_dir: str) -> list[dict]:
    """Unlearns `forget_sets` (sust forget_1..4) one after another, each from the model the previous run left,
    starting from `target_model`; returns, per request k, `{"forget_set": k, "forget_rows": its size, "model": path,
    **evaluate(path)}`."""
    rows, model = [], target_model
    for k, forget in enumerate(forget_sets, start=1):
        model = unlearn(model, forget, f"{output_dir}/forget_{k}")
        rows.append({"forget_set": k, "forget_rows": len(forget), "model": model, **evaluate(model)})
    return rows
