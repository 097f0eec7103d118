"""examples/wmdp.py, run as a script on a tiny configuration (the stand-in, target, unlearning, the report), a second
run that skips finished stages, and the arguments it refuses; and its report functions (npo_trl.wmdp.report) on
hand-made numbers."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import refusals
from npo_trl.wmdp.report import accuracy_keys, format_table, summarize, write_report

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "wmdp.py"
TINY = ["--num_forget", "4", "--num_retain", "4", "--hidden_size", "32", "--num_layers", "2", "--vocab_size", "400",
        "--target_epochs", "2", "--num_train_epochs", "1", "--methods", "rmu", "npo+rt", "--seeds", "0",
        "--max_length", "64", "--eval_batch_size", "16", "--disable_tqdm", "true"]
FORGET, GENERAL = "lm_eval/wmdp_synthetic/acc", "lm_eval/mmlu_synthetic/acc"


def run_example(output_dir: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(SCRIPT), "--output_dir", str(output_dir), *TINY],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("wmdp")
    return output_dir, run_example(output_dir)


def test_every_stage_writes_its_outputs_and_the_table_is_printed(tiny_run):
    out, result = tiny_run
    for name in ("wmdp.jsonl", "mmlu.jsonl", "forget_corpus.jsonl", "retain_corpus.jsonl", "wmdp_synthetic.yaml"):
        assert (out / "data" / name).exists(), name
    for stage in ("tokenizer/tokenizer.json", "target/config.json", "unlearn/rmu/seed0/final/config.json",
                  "unlearn/npo+rt/seed0/final/config.json", "arguments.json"):
        assert (out / stage).exists(), stage
    for method in ("rmu", "npo+rt"):  # one evaluation per epoch, none before training
        rows = [json.loads(line) for line in (out / "unlearn" / method / "seed0" / "lm_eval_metrics.jsonl").open()]
        assert [row["epoch"] for row in rows] == [1.0] and 0 <= rows[0][FORGET] <= 1 and 0 <= rows[0][GENERAL] <= 1
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"chance", "keys", "target", "methods", "runs"} and results["chance"] == 0.25
    assert results["keys"] == {"forget": FORGET, "general": GENERAL}
    assert list(results["methods"]) == ["rmu", "npo+rt"] and results["methods"]["rmu"]["seeds"] == [0]
    for row in results["methods"].values():
        assert set(row["forget"]) == {"median", "min", "max"} and 0 <= row["general"]["median"] <= 1
    target = json.loads((out / "target" / "lm_eval_metrics.json").read_text())
    assert results["target"] == {"forget": target[FORGET], "general": target[GENERAL]}
    table = (out / "results.md").read_text()
    assert table.startswith("| model | seeds | forget acc (WMDP) | general acc (MMLU) |")
    assert table.strip() in result.stdout
    comparison = (out / "comparison.md").read_text().splitlines()
    assert comparison[0] == "| method | seeds | WMDP stand-in acc | general acc |" and len(comparison) == 2 + 2


def test_a_second_run_skips_finished_stages(tiny_run):
    out, _ = tiny_run
    before = {p: p.stat().st_mtime for p in out.glob("**/model.safetensors")}
    run_example(out)
    assert before and {p: p.stat().st_mtime for p in out.glob("**/model.safetensors")} == before


def test_the_defaults_parse():
    """The default run's settings (docs/guides/wmdp.md): three methods, three seeds, β 0.05, RMU's α and rate."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("wmdp_example", SCRIPT)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    script_args, _, args, _ = example.make_parser().parse_args_and_config(args=[])
    assert script_args.methods == ["rmu", "npo", "npo+rt"] and script_args.seeds == [0, 1, 2]
    assert (args.beta, args.learning_rate, args.num_train_epochs, args.rmu_alpha) == (0.05, 3e-4, 5, 100.0)
    rmu = example.method_config(script_args, args, "rmu")
    assert rmu.learning_rate == 1e-2 and example.method_config(script_args, args, "npo") is args


def test_impossible_arguments_are_refused_up_front(tmp_path):
    refused = {"--methods 'idk+rt'": ["--methods", "idk+rt"],
               "--methods 'nonsense'": ["--methods", "nonsense"],
               "--seeds [0, 0]": ["--seeds", "0", "0"],
               "--num_forget 0": ["--num_forget", "0"]}
    messages = refusals(SCRIPT, [["--output_dir", str(tmp_path / "out"), *args] for args in refused.values()])
    for expected, message in zip(refused, messages, strict=True):
        assert message is not None and expected in message, (expected, message)
    assert not (tmp_path / "out").exists()


FINALS = {"rmu": {0: {FORGET: 0.25, GENERAL: 1.0}, 1: {FORGET: 0.3, GENERAL: 0.9}, 2: {FORGET: 0.2, GENERAL: 0.95}},
          "npo": {0: {FORGET: 0.5, GENERAL: 0.5}}}
TARGET = {FORGET: 1.0, GENERAL: 0.99, "lm_eval/wmdp_synthetic/acc_norm": 1.0}


def test_summary_is_the_median_and_range_over_seeds():
    summary = summarize(FINALS, TARGET)
    assert summary["chance"] == 0.25 and summary["keys"] == accuracy_keys()
    assert summary["target"] == {"forget": 1.0, "general": 0.99}
    assert summary["methods"]["rmu"] == {"seeds": [0, 1, 2], "forget": {"median": 0.25, "min": 0.2, "max": 0.3},
                                         "general": {"median": 0.95, "min": 0.9, "max": 1.0}}
    assert summary["methods"]["npo"]["forget"] == {"median": 0.5, "min": 0.5, "max": 0.5}
    assert summarize({"ga": {0: {}}}, {})["methods"]["ga"]["forget"] is None  # no seed has the metric


def test_table_and_files():
    lines = format_table(summarize(FINALS, TARGET)).splitlines()
    assert lines[:5] == ["| model | seeds | forget acc (WMDP) | general acc (MMLU) |", "|---|---:|---:|---:|",
                         "| target | – | 1 | 0.99 |", "| rmu | 3 | 0.25 [0.2, 0.3] | 0.95 [0.9, 1] |",
                         "| npo | 1 | 0.5 | 0.5 |"]
    assert "Chance: 25%" in lines[-1]


def test_write_report(tmp_path):
    summary = write_report(str(tmp_path), FINALS, TARGET)
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["runs"]["rmu"]["1"] == {FORGET: 0.3, GENERAL: 0.9}
    assert (tmp_path / "results.md").read_text().strip() == format_table(summary)
    comparison = (tmp_path / "comparison.md").read_text().splitlines()
    assert comparison[2:] == ["| rmu | 3 | 0.25 [0.2, 0.3] | 0.95 [0.9, 1] |", "| npo | 1 | 0.5 | 0.5 |"]
