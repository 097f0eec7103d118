"""npo_trl.lazy: a benchmark package's names import on first use, and importing the package imports nothing heavy."""

import subprocess
import sys

import pytest


def test_benchmark_packages_import_light_and_load_names_on_use():
    code = ("import sys, npo_trl.tofu as tofu, npo_trl.muse as muse; "
            "heavy = [m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules]; "
            "assert not heavy, heavy; "
            "assert 'TOFUEvalSettings' in dir(tofu) and 'MUSEEvalSettings' in dir(muse); "
            "print(tofu.TOFUEvalSettings.__module__, muse.MUSEEvalSettings.__module__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["npo_trl.tofu.settings", "npo_trl.muse.settings"]


def test_an_unknown_name_is_an_attribute_error():
    import npo_trl.tofu

    with pytest.raises(AttributeError, match="module 'npo_trl.tofu' has no attribute 'TOFUTrainer'"):
        npo_trl.tofu.TOFUTrainer  # noqa: B018
