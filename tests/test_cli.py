"""The `npo-trl` command (npo_trl/cli.py, npo_trl/scripts/): unlearning from local files (plain, LoRA, QLoRA,
--config), `npo-trl eval tofu` on TOFU's local files, `npo-trl eval muse` on synthetic MUSE written in the hub's
layout, each with --attacks, and bad input."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from helpers import TOFU_DIR, needs_tofu_files, tiny_llama
from muse_helpers import muse_tokenizer, small_muse
from npo_trl.cli import main as cli
from npo_trl.scripts import eval_muse, eval_tofu, unlearn
from npo_trl.tofu import TOFUEvalSettings

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--report_to", "none", "--save_strategy", "no",
         "--logging_steps", "1", "--learning_rate", "1e-3", "--disable_tqdm", "true"]


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, forget_ds, retain_ds):
    folder = tmp_path_factory.mktemp("cli_data")
    (folder / "forget.jsonl").write_text("".join(json.dumps(dict(r)) + "\n" for r in forget_ds))
    retain = folder / "retain"  # a local folder of data files, as datasets.load_dataset reads it
    retain.mkdir()
    (retain / "train.json").write_text(json.dumps([dict(r) for r in retain_ds]))
    return folder / "forget.jsonl", retain


def test_the_console_script_unlearns_from_local_files_and_saves_with_a_model_card(tmp_path, finetuned_dir,
                                                                                   cli_files):
    command = [os.path.join(os.path.dirname(sys.executable), "npo-trl"), "--model_name_or_path", finetuned_dir,
               "--dataset_name", str(cli_files[0]), "--retain_dataset_name", str(cli_files[1]), "--retain_loss",
               "nll", "--output_dir", str(tmp_path / "out"), *TRAIN]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-4000:]
    assert (tmp_path / "out" / "model.safetensors").exists()
    card = (tmp_path / "out" / "README.md").read_text()
    assert "npo" in card and "2404.05868" in card  # NPOTrainer's tags and paper, through TRL's model card


def test_lora_and_a_recipe_file(tmp_path, finetuned_dir, cli_files):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("\n".join([
        f"model_name_or_path: {finetuned_dir}", f"dataset_name: {cli_files[0]}", "forget_loss: simnpo",
        "use_peft: true", "lora_r: 4", "lora_target_modules: [q_proj, v_proj]", f"output_dir: {tmp_path / 'lora'}",
    ]))
    cli(["--config", str(recipe), *TRAIN])
    assert (tmp_path / "lora" / "adapter_config.json").exists() and not (tmp_path / "lora" / "config.json").exists()
    assert json.loads((tmp_path / "lora" / "adapter_config.json").read_text())["r"] == 4


def test_qlora_from_local_files(tmp_path, finetuned_dir, cli_files):
    """`--load_in_4bit --use_peft`, parsed as the command parses them: LoRA on the model loaded in 4 bits (NF4,
    bitsandbytes on this CPU), the base with adapters off as π_ref, so the first forget loss is 2 ln 2 / β; the
    adapters are saved."""
    argv = ["--model_name_or_path", finetuned_dir, "--dataset_name", str(cli_files[0]), "--retain_dataset_name",
            str(cli_files[1]), "--retain_loss", "nll", "--load_in_4bit", "--use_peft", "--lora_r", "4",
            "--lora_target_modules", "q_proj", "v_proj", "--output_dir", str(tmp_path / "qlora"), *TRAIN]
    trainer = unlearn.main(*unlearn.make_parser().parse_args_and_config(args=argv))
    assert trainer.model.is_loaded_in_4bit
    first = trainer.state.log_history[0]
    assert first["loss/forget"] == pytest.approx(2 * math.log(2) / trainer.args.beta, abs=1e-5)
    assert math.isfinite(first["loss"]) and first["loss"] > first["loss/forget"]  # + the retain set's NLL
    assert json.loads((tmp_path / "qlora" / "adapter_config.json").read_text())["r"] == 4
    assert not (tmp_path / "qlora" / "config.json").exists()


@needs_tofu_files
def test_eval_tofu_on_local_files(tmp_path, finetuned_dir):
    """The toy model (its own byte-level tokenizer reads any text) as both the evaluated and the retain model."""
    out = tmp_path / "metrics.json"
    cli(["eval", "tofu", "--model_name_or_path", finetuned_dir, "--dataset", str(TOFU_DIR), "--forget_split",
         "forget01", "--retain_model", finetuned_dir, "--max_samples", "6", "--max_new_tokens", "4",
         "--output_json", str(out)])
    result = json.loads(out.read_text())
    assert result["rows"] == {"forget": 6, "retain": 6, "real_authors": 6, "world_facts": 6, "holdout": 6}
    assert result["settings"] == TOFUEvalSettings(max_samples=6, max_new_tokens=4).to_dict()  # parsed as one value
    metrics = result["metrics"]
    assert metrics["tofu/forget_quality"] == 1.0  # the same model as the reference
    assert 0 <= metrics["tofu/model_utility"] <= 1 and metrics["privacy/mia_reference_auc"] == 0.5


@needs_tofu_files
def test_eval_tofu_attacks_on_local_files(tmp_path, finetuned_dir):
    """--attacks on TOFU's forget01: the forget rows split per author (relearn half, scored half), each attack's keys,
    and the baselines: the same folder as retain and fine-tuned model gets the same attacked scores as the model."""
    out = tmp_path / "metrics.json"
    cli(["eval", "tofu", "--model_name_or_path", finetuned_dir, "--dataset", str(TOFU_DIR), "--forget_split",
         "forget01", "--retain_model", finetuned_dir, "--finetuned_model", finetuned_dir, "--privacy", "false",
         "--max_samples", "6", "--max_new_tokens", "4", "--attacks", "quantize8", "relearn", "--relearn_steps", "1",
         "--relearn_learning_rate", "1e-3", "--output_json", str(out)])
    attacks = json.loads(out.read_text())["attacks"]
    assert attacks["tofu/forget_quality"] == 1.0  # scored on the held-out half against the same model's ratios
    for attack in ("quantize8", "relearn1"):
        for baseline in ("retain", "finetuned"):
            assert attacks[f"attack/{attack}/{baseline}/tofu/forget_prob"] == pytest.approx(
                attacks[f"attack/{attack}/tofu/forget_prob"], rel=1e-4)
        # the model is the fine-tuned one: unlearning moved nothing, so no recovery can be measured
        assert attacks[f"attack/{attack}/recovery/tofu/forget_prob"] is None
    assert attacks["attack/relearn1/tofu/forget_prob"] != attacks["tofu/forget_prob"]  # it trained
    with pytest.raises(ValueError, match=r"attacks: unknown \['quantize3'\]; choose among"):
        cli(["eval", "tofu", "--model_name_or_path", finetuned_dir, "--attacks", "quantize3"])


@pytest.fixture(scope="module")
def muse_files(tmp_path_factory):
    """Small synthetic MUSE written as <subset>/<split>.jsonl (the hub's layout), and two tiny untrained Llamas (the
    evaluated model and a retrain model) saved with a tokenizer trained on its text."""
    folder, data = tmp_path_factory.mktemp("muse"), small_muse()
    for subset, splits in data.items():
        (folder / subset).mkdir()
        for split, rows in splits.items():
            (folder / subset / f"{split}.jsonl").write_text("".join(json.dumps(dict(r)) + "\n" for r in rows))
    tokenizer = muse_tokenizer(data)
    models = []
    for seed in (0, 1):
        path = folder / f"model{seed}"
        tiny_llama(len(tokenizer), seed=seed, hidden=32).save_pretrained(path)
        tokenizer.save_pretrained(path)
        models.append(str(path))
    return str(folder), *models


MUSE_FLAGS = ["--verbmem_max_new_tokens", "4", "--knowmem_max_new_tokens", "4", "--batch_size", "6"]


def test_eval_muse_on_local_files_equals_the_evaluator(tmp_path, muse_files):
    from trl import ModelConfig

    from npo_trl.models import load_model
    from npo_trl.muse import MUSEEvalSettings, MUSEEvaluator, compute_reference_stats, muse_eval_sets
    from npo_trl.muse.evaluator import METRICS

    folder, model, retrain = muse_files
    out = tmp_path / "metrics.json"
    cli(["eval", "muse", "--model_name_or_path", model, "--dataset", folder, "--retrain_model", retrain, *MUSE_FLAGS,
         "--output_json", str(out)])
    result = json.loads(out.read_text())
    settings = MUSEEvalSettings(verbmem_max_new_tokens=4, knowmem_max_new_tokens=4, batch_size=6)
    assert result["settings"] == settings.to_dict() and result["reference"] == retrain
    assert result["rows"] == {name: 6 for name in ("verbmem_forget", "knowmem_forget", "knowmem_retain",
                                                   "privleak_forget", "privleak_holdout")}
    assert set(result["metrics"]) == set(METRICS) and None not in result["metrics"].values()
    tokenizer, sets = AutoTokenizer.from_pretrained(model), muse_eval_sets(folder)
    stats = compute_reference_stats(load_model(retrain), tokenizer, sets, settings,
                                    cache_path=tmp_path / "retrain_stats.json")
    assert result["metrics"] == MUSEEvaluator(tokenizer, sets, stats, settings).evaluate(load_model(model))
    # the retrain model's AUCs from their file give the same PrivLeak; without them PrivLeak is null, the AUCs stay
    from_file = eval_muse.main(eval_muse.MUSEEvalArguments(dataset=folder, reference_stats=str(
        tmp_path / "retrain_stats.json"), output_json=str(tmp_path / "from_file.json")), settings,
        ModelConfig(model_name_or_path=model))
    assert from_file["metrics"] == result["metrics"]
    alone = eval_muse.main(eval_muse.MUSEEvalArguments(dataset=folder, output_json=str(tmp_path / "alone.json")),
                           settings, ModelConfig(model_name_or_path=model))["metrics"]
    assert alone["muse/privleak"] is None and alone["muse/abs_privleak"] is None
    assert alone == {**result["metrics"], "muse/privleak": None, "muse/abs_privleak": None}
    no_privleak = eval_muse.main(eval_muse.MUSEEvalArguments(dataset=folder, privleak=False, output_json=str(
        tmp_path / "no_privleak.json")), settings, ModelConfig(model_name_or_path=model))
    assert "privleak_forget" not in no_privleak["rows"] and no_privleak["metrics"] == {
        key: None if "privleak" in key or "_auc" in key else value for key, value in result["metrics"].items()}


def test_eval_muse_attacks_on_local_files(tmp_path, muse_files):
    """--attacks on MUSE: the synthetic corpus's articles align with their VerbMem and KnowMem rows, so relearning
    trains on half the articles and the other half's rows are scored; the target model given is the model itself."""
    folder, model, retrain = muse_files
    out = tmp_path / "metrics.json"
    cli(["eval", "muse", "--model_name_or_path", model, "--dataset", folder, "--retrain_model", retrain,
         "--target_model", model, *MUSE_FLAGS, "--attacks", "relearn", "quantize4", "--relearn_steps", "2",
         "--relearn_learning_rate", "1e-3", "--output_json", str(out)])
    attacks = json.loads(out.read_text())["attacks"]
    for attack in ("relearn2", "quantize4"):
        for key in ("muse/verbmem_forget", "muse/knowmem_forget"):
            assert attacks[f"attack/{attack}/finetuned/{key}"] == pytest.approx(attacks[f"attack/{attack}/{key}"])
            assert f"attack/{attack}/retain/{key}" in attacks and f"attack/{attack}/recovery/{key}" in attacks
        assert attacks[f"attack/{attack}/muse/privleak"] is None  # the PrivLeak texts are not scored under attack


def test_bad_input_is_refused_naming_the_fix(tmp_path, finetuned_dir, cli_files, monkeypatch):
    from trl import ModelConfig

    from npo_trl import NPOConfig
    from npo_trl.muse import MUSEEvalSettings

    args = NPOConfig(output_dir=str(tmp_path), retain_loss="nll", report_to="none")
    script_args = unlearn.UnlearnScriptArguments(dataset_name=str(cli_files[0]))
    with pytest.raises(ValueError, match="--retain_loss nll trains on a retain set: give it with --retain_dataset"):
        unlearn.check_arguments(script_args, args, ModelConfig(model_name_or_path=finetuned_dir))
    with pytest.raises(ValueError, match="--model_name_or_path is required"):
        unlearn.check_arguments(script_args, args, ModelConfig())
    monkeypatch.setattr("transformers.utils.is_peft_available", lambda: False)
    with pytest.raises(ValueError, match=r"--use_peft needs the peft package: pip install 'npo-trl\[peft\]'"):
        unlearn.check_arguments(unlearn.UnlearnScriptArguments(dataset_name="x", retain_dataset_name="y"), args,
                                ModelConfig(model_name_or_path=finetuned_dir, use_peft=True))
    with pytest.raises(ValueError, match=r"has no split 'validation' \(.*\['train'\].*\); set --retain_dataset_split"):
        unlearn.load_rows(str(cli_files[1]), None, "validation", "--retain_dataset_name")
    (tmp_path / "rows.txt").write_text("a\n")
    with pytest.raises(ValueError, match=r"a local file must be one of \['.csv', '.json', '.jsonl', '.parquet'\]"):
        unlearn.load_rows(str(tmp_path / "rows.txt"), None, "train", "--dataset_name")
    (tmp_path / "tofu").mkdir()
    (tmp_path / "tofu" / "forget10.json").write_text("[]")  # a folder in TOFU's layout, without forget20
    with pytest.raises(ValueError, match="Unknown TOFU split 'forget20_perturbed'.*available splits.*'forget10'"):
        eval_tofu.main(eval_tofu.TOFUEvalArguments(dataset=str(tmp_path / "tofu"), forget_split="forget20"),
                       TOFUEvalSettings(), ModelConfig(model_name_or_path=finetuned_dir))
    muse_args = eval_muse.MUSEEvalArguments
    with pytest.raises(ValueError, match="--model_name_or_path is required"):
        eval_muse.main(muse_args(dataset="synthetic"), MUSEEvalSettings(), ModelConfig())
    with pytest.raises(ValueError, match="--retrain_model and --reference_stats both give PrivLeak's.*pass one"):
        eval_muse.main(muse_args(retrain_model="r", reference_stats="s"), MUSEEvalSettings(),
                       ModelConfig(model_name_or_path=finetuned_dir))
    with pytest.raises(ValueError, match="--privleak false leaves out: drop them, or pass --privleak true"):
        eval_muse.main(muse_args(privleak=False, reference_stats="s"), MUSEEvalSettings(),
                       ModelConfig(model_name_or_path=finetuned_dir))
    with pytest.raises(ValueError, match="pass one"):
        eval_tofu.main(eval_tofu.TOFUEvalArguments(retain_model="r", reference_stats="s"), TOFUEvalSettings(),
                       ModelConfig(model_name_or_path=finetuned_dir))
    with pytest.raises(SystemExit, match=r"name the benchmark, one of \['tofu', 'muse', 'lm-eval'\]"):
        cli(["eval", "mmlu"])
    with pytest.warns(UserWarning, match="--retain_dataset_name 'y' is not used without --retain_loss"):
        unlearn.check_arguments(unlearn.UnlearnScriptArguments(dataset_name="x", retain_dataset_name="y"),
                                NPOConfig(output_dir=str(tmp_path), report_to="none"),
                                ModelConfig(model_name_or_path=finetuned_dir))
