"""npo_trl.comparison: `--methods all` and the every-method table (median [min, max] over seeds, collapsed seeds,
recoveries), on hand-made rows."""

from npo_trl.comparison import COMPARISON_METHODS, comparison_methods, comparison_table
from npo_trl.methods import method_losses


def test_all_methods_are_registry_methods_and_muse_drops_replacement_answers():
    assert all(method_losses(m) for m in COMPARISON_METHODS)  # every name resolves in the registry
    assert comparison_methods() == list(COMPARISON_METHODS)
    assert comparison_methods(replacement=False) == [m for m in COMPARISON_METHODS if m not in ("idk+rt", "dpo+rt")]


def test_the_table_gives_the_spread_collapsed_seeds_and_recoveries():
    finals = {"npo": {"0": {"fq": 0.25, "mu": 0.5}, "1": {"fq": 0.75, "mu": 0.125}, "2": {"fq": 0.5, "mu": None}},
              "ga": {"0": {"fq": 0.0625, "mu": 0.0}}}
    attacks = {"methods": {"npo": {"quantize4": {"recovery/fq": {"median": 0.5, "min": 0.25, "max": 0.75}}}}}
    text = comparison_table(finals, [("fq", "forget quality"), ("mu", "utility")],
                            lambda row: (row["mu"] or 0.0) < 0.25, attacks, [("quantize4", "tofu/fq")])
    lines = text.splitlines()
    assert lines[0] == "| method | seeds | forget quality | utility | collapsed | recovery of fq, quantize4 |"
    assert lines[1] == "|---|---:|---:|---:|---:|---:|"
    assert lines[2] == "| npo | 3 | 0.5 [0.25, 0.75] | 0.312 [0.125, 0.5] | 2 of 3 | – |"
    assert lines[3] == "| ga | 1 | 0.0625 | 0 | 1 of 1 | – |"
    # the recovery's key is the attack summary's: "recovery/<key>"
    text = comparison_table(finals, [("fq", "fq")], attacks=attacks, recoveries=[("quantize4", "fq")])
    assert text.splitlines()[2] == "| npo | 3 | 0.5 [0.25, 0.75] | 0.5 [0.25, 0.75] |"
