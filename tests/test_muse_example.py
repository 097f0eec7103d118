"""examples/muse.py, run as a script: the whole pipeline on a tiny configuration (target, retrain, unlearning, Table 3,
C5 and C6), a second run that skips finished stages, and the arguments it refuses. Its library functions are tested
with their modules (test_stages.py, test_muse_report.py)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import refusals

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "muse.py"
TINY = ["--num_forget", "5", "--hidden_size", "32", "--num_layers", "1", "--vocab_size", "400", "--target_epochs", "2",
        "--num_train_epochs", "1", "--methods", "npo", "ga+rt", "--criteria_methods", "npo", "--max_length", "64",
        "--verbmem_max_new_tokens", "8", "--knowmem_max_new_tokens", "4", "--batch_size", "8",
        "--disable_tqdm", "true", "--attacks", "relearn", "quantize8", "--relearn_steps", "2"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_example(output_dir: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(SCRIPT), "--output_dir", str(output_dir), *TINY],
                            capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("muse")
    run_example(output_dir)
    return output_dir


def test_every_stage_writes_its_outputs(tiny_run):
    for stage in ("target", "retrain", "unlearn/npo/final", "unlearn/ga+rt/final", "c5/npo/forget_4/final",
                  "c6/npo/forget_4/final"):
        assert (tiny_run / stage / "config.json").exists(), stage
    stats = json.loads((tiny_run / "retrain_stats.json").read_text())
    assert 0 <= stats["auc"]["min_k"] <= 1 and stats["model"] == str(tiny_run / "retrain")
    for method in ("npo", "ga+rt"):
        rows = [json.loads(line) for line in (tiny_run / "unlearn" / method / "muse_metrics.jsonl").open()]
        assert [r["epoch"] for r in rows] == [0, 1.0]
        assert all(r["muse/privleak"] is not None for r in rows)
    results = json.loads((tiny_run / "results.json").read_text())
    table = results["table3"]
    assert list(table) == ["target", "retrain", "npo", "ga+rt"]
    assert table["retrain"]["muse/privleak"] == 0.0  # against its own AUC
    assert table["target"]["muse/privleak"] < 0  # the target saw the forget articles
    c5, c6 = results["criteria"]["c5"]["npo"], results["criteria"]["c6"]["npo"]
    assert [r["forget_rows"] for r in c5] == [5, 10, 15, 20] and [r["forget_rows"] for r in c6] == [5] * 4
    assert all(0 <= r[key] <= 100 for r in c5 + c6 for key in ("muse/knowmem_retain", "muse/verbmem_forget"))
    assert all(r["muse/privleak"] is not None for r in c5 + c6)
    lines = (tiny_run / "table3.md").read_text().splitlines()
    assert lines[0].startswith("| model | VerbMem D_f") and len(lines) == 2 + 4
    for figure in ("fig_per_epoch.png", "fig_c5_c6.png"):
        assert (tiny_run / figure).read_bytes()[:8] == PNG_MAGIC
    assert (tiny_run / "results.csv").read_text().startswith("method,epoch,step,muse/")
    attacks = json.loads((tiny_run / "attacks.json").read_text())  # --attacks: each unlearned model, beside it
    assert attacks["attacks"] == ["relearn2", "quantize8"] and list(attacks["methods"]) == ["npo", "ga+rt"]
    assert results["attacks"] == attacks and (tiny_run / "fig_attacks.png").read_bytes()[:8] == PNG_MAGIC
    for method in ("npo", "ga+rt"):
        metrics = json.loads((tiny_run / "unlearn" / method / "robustness.json").read_text())["metrics"]
        assert 0 <= metrics["attack/relearn2/muse/verbmem_forget"] <= 100
        assert "attack/quantize8/retain/muse/knowmem_forget" in metrics
    comparison = (tiny_run / "comparison.md").read_text().splitlines()  # the every-method table
    assert comparison[0].startswith("| method | seeds | VerbMem D_f (lower) |") and len(comparison) == 2 + 2


def test_a_second_run_skips_finished_stages(tiny_run):
    before = {p: p.stat().st_mtime for p in tiny_run.glob("**/model.safetensors")}
    run_example(tiny_run)
    assert {p: p.stat().st_mtime for p in tiny_run.glob("**/model.safetensors")} == before


def test_the_real_setting_parses():
    """MUSE's config parses with the example's parser; its attacks are the quantization ones (they run under several
    processes) at the model's relearning learning rate."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("muse_example", SCRIPT)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    parsed = example.make_parser().parse_args_and_config(  # bf16 off: a CPU machine refuses it
        args=["--config", str(ROOT / "examples/configs/muse_news_llama2.yaml"), "--bf16", "false"])
    attack_args = next(p for p in parsed if type(p).__name__ == "AttackArguments")
    assert attack_args.attacks == ["quantize8", "quantize4"] and attack_args.relearn_learning_rate == 1e-5


def test_impossible_arguments_are_refused_up_front(tmp_path):
    """Refused with the fix before anything trains; --criteria_methods is not checked without --criteria (that run
    stops later, at the empty dataset folder)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = {"--target_model skips the base": ["--target_model", "some/target"],
               "--methods 'idk+rt'": ["--methods", "idk+rt"],
               "--criteria_methods 'dpo'": ["--criteria_methods", "dpo"],
               "MUSE split raw/retain1 is not in": ["--criteria", "false", "--criteria_methods", "dpo", "--dataset",
                                                   str(empty)]}
    messages = refusals(SCRIPT, [["--output_dir", str(tmp_path / "out"), *args] for args in refused.values()])
    for expected, message in zip(refused, messages, strict=True):
        assert message is not None and expected in message, (expected, message)
    assert not (tmp_path / "out").exists()
