"""`npo-trl eval lm-eval` on a saved model with the WMDP stand-in's local task files: the evaluator's numbers, printed
and written as JSON; bad input refused before the model loads."""

import json

import pytest
from transformers import AutoTokenizer

from helpers import tiny_llama
from lm_eval_helpers import small_standin, standin_tokenizer
from npo_trl.cli import main as cli
from npo_trl.lm_eval import LMEvalEvaluator
from npo_trl.models import load_model
from npo_trl.scripts import eval_lm_eval


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The stand-in's files and a tiny random Llama saved with its tokenizer."""
    standin = small_standin(tmp_path_factory.mktemp("wmdp"))
    tokenizer = standin_tokenizer(standin)
    folder = tmp_path_factory.mktemp("model")
    tiny_llama(len(tokenizer), seed=2).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return standin, str(folder)


def test_eval_lm_eval_on_a_saved_model_equals_the_evaluator(tmp_path, saved, capsys):
    standin, model_dir = saved
    output = tmp_path / "out" / "lm_eval.json"
    cli(["eval", "lm-eval", "--model_name_or_path", model_dir, "--include_path", standin.directory, "--tasks",
         "wmdp_synthetic", "mmlu_synthetic", "--batch_size", "4", "--output_json", str(output)])
    written = json.loads(output.read_text())
    expected = LMEvalEvaluator(standin.tasks, AutoTokenizer.from_pretrained(model_dir)).evaluate(load_model(model_dir))
    assert written["metrics"] == expected
    assert written["rows"] == {"wmdp_synthetic": 32, "mmlu_synthetic": 32}
    assert written["lm_eval_results"]["wmdp_synthetic"]["acc,none"] == expected["lm_eval/wmdp_synthetic/acc"]
    printed = capsys.readouterr().out
    assert f"lm_eval/mmlu_synthetic/acc       {expected['lm_eval/mmlu_synthetic/acc']:.6g}" in printed
    # --limit: the first rows of each task; --metrics: only those reported.
    limited = eval_lm_eval.run(["--model_name_or_path", model_dir, "--include_path", standin.directory, "--tasks",
                                "wmdp_synthetic", "--limit", "5", "--metrics", "acc", "--output_json",
                                str(tmp_path / "limited.json")])
    assert limited["rows"] == {"wmdp_synthetic": 5} and list(limited["metrics"]) == ["lm_eval/wmdp_synthetic/acc"]


def test_bad_input_is_refused_before_the_model_loads(tmp_path, saved):
    standin, model_dir = saved
    with pytest.raises(ValueError, match="--tasks is required"):
        cli(["eval", "lm-eval", "--model_name_or_path", model_dir])
    with pytest.raises(ValueError, match="--model_name_or_path is required"):
        cli(["eval", "lm-eval", "--tasks", "wmdp_synthetic"])
    with pytest.raises(ValueError, match=r"no task 'wmdp_synthetic_typo'.*`lm-eval ls tasks`"):
        cli(["eval", "lm-eval", "--model_name_or_path", str(tmp_path / "not_loaded"), "--tokenizer_name_or_path",
             model_dir, "--include_path", standin.directory, "--tasks", "wmdp_synthetic_typo"])
