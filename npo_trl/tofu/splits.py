"""TOFU's split names: those of the `locuslab/TOFU` hub dataset, and those `make_synthetic_tofu` builds (the larger
forget sizes and `general_knowledge` besides). Names only, no data: `npo_trl.tofu.data` and `npo_trl.tofu.synthetic`
both read them."""

TOFU_FORGET_PERCENTS = (1, 5, 10)
SYNTHETIC_FORGET_PERCENTS = (1, 5, 10, 20, 30, 50, 90)


def split_names(forget_percents: tuple[int, ...], synthetic: bool) -> list[str]:
    """The splits of a TOFU dataset with forget sets of `forget_percents` % of the authors: the shared ones, then per
    percentage `forgetNN`, `retain(100-NN)`, `forgetNN_perturbed` and `holdoutNN`, and for the synthetic stand-in
    `general_knowledge` last."""
    names = ["full", "retain_perturbed", "real_authors", "real_authors_perturbed", "world_facts",
             "world_facts_perturbed"]
    for pct in forget_percents:
        names += [f"forget{pct:02d}", f"retain{100 - pct}", f"forget{pct:02d}_perturbed", f"holdout{pct:02d}"]
    return names + ["general_knowledge"] if synthetic else names


# The configurations of the `locuslab/TOFU` hub dataset (each has a single "train" split).
TOFU_HUB_SPLITS = tuple(split_names(TOFU_FORGET_PERCENTS, synthetic=False))
