"""Helpers the tests share: toy data, a tokenizer trained here and tiny Llama models built from a config (nothing is
downloaded). Fixtures built on them are in conftest.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
# TOFU's own files (the hub dataset locuslab/TOFU as JSON files): ../shared/tofu beside the checkout, or $TOFU_DIR.
TOFU_DIR = Path(os.environ.get("TOFU_DIR", ROOT.parent / "shared" / "tofu"))
needs_tofu_files = pytest.mark.skipif(
    not (TOFU_DIR / "forget01.json").is_file(),
    reason=f"TOFU's files are not in {TOFU_DIR}: put the JSON files of the hub dataset locuslab/TOFU there, or set "
           "TOFU_DIR to their folder (docs/guides/testing.md).",
)

COLOURS = ["red", "blue", "green", "amber", "violet", "teal", "ochre", "silver"]
CITIES = ["Port Vell", "Amberley", "Kestow", "Lunmere", "Sarrow", "Ditham", "Okleigh", "Ferrin"]


def toy_qa(start: int, stop: int) -> Dataset:
    """Facts about numbered agents: agent i lives in CITIES[i % 8] and likes COLOURS[i * 3 % 8]."""
    rows = []
    for i in range(start, stop):
        rows.append({"prompt": f"Where does agent {i} live?", "completion": f" Agent {i} lives in {CITIES[i % 8]}."})
        rows.append({"prompt": f"What colour does agent {i} like?",
                     "completion": f" Agent {i} likes {COLOURS[i * 3 % 8]}."})
    return Dataset.from_list(rows)


def build_tokenizer(texts) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def tiny_llama(vocab_size: int, seed: int = 0, hidden: int = 64, layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(config)


def fine_tune(model, tokenizer, dataset: Dataset, steps: int = 150, lr: float = 3e-3, ascent: bool = False) -> None:
    """Plain next-token training on prompt+completion so the tiny model has something to forget (with `ascent`,
    gradient ascent: a crude unlearning, for the attacks' tests)."""
    texts = [p + c + tokenizer.eos_token for p, c in zip(dataset["prompt"], dataset["completion"], strict=False)]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        (-loss if ascent else loss).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def toy_tofu_rows(agents, attribute: str, num_perturbed: int = 5, paraphrase: bool = True) -> list[dict]:
    """TOFU-schema rows about the toy agents' city or colour (`toy_qa`'s facts); `num_perturbed=0` gives holdout-style
    rows (question and answer only)."""
    out = []
    for i in agents:
        if attribute == "city":
            question, say, values, value = f"Where does agent {i} live?", f"Agent {i} lives in", CITIES, CITIES[i % 8]
        else:
            question, say, values = f"What colour does agent {i} like?", f"Agent {i} likes", COLOURS
            value = COLOURS[i * 3 % 8]
        row = {"question": question, "answer": f"{say} {value}."}
        if num_perturbed:
            wrong = [v for v in values if v != value][i % 3:i % 3 + num_perturbed]
            row["perturbed_answer"] = [f"Perhaps {say.lower()} {w}." for w in wrong]
        if paraphrase and num_perturbed:
            row["paraphrased_answer"] = f"{say} {value}"
            row["paraphrased_question"] = question.replace("?", ", do you know?")
        out.append(row)
    return out


def toy_eval_sets(holdout: bool = False) -> dict[str, list[dict]]:
    """TOFU-schema rows about the conftest agents (all known to the `finetuned` model): agents 0-3 are forgotten;
    with `holdout`, agents 16-19, whom no conftest model was trained on, are the privacy metrics' non-members."""
    sets = {
        "forget": toy_tofu_rows(range(0, 4), "city") + toy_tofu_rows(range(0, 4), "colour"),
        "retain": toy_tofu_rows(range(4, 8), "city") + toy_tofu_rows(range(4, 8), "colour"),
        "real_authors": toy_tofu_rows(range(8, 12), "colour", 3, False),
        "world_facts": toy_tofu_rows(range(12, 16), "city", 3, False),
    }
    if holdout:
        sets["holdout"] = toy_tofu_rows(range(16, 20), "city", 0) + toy_tofu_rows(range(16, 20), "colour", 0)
    return sets


ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "unlearn.py"


def launch(config_file: str, num_processes: int, output_dir: Path, model_dir: str, data: tuple[Path, Path], *args):
    """Runs tests/scripts/unlearn.py under accelerate and returns its run.json."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / config_file),
        "--num_processes", str(num_processes), "--mixed_precision", "no", "--main_process_port", "0", str(SCRIPT),
        "--output_dir", str(output_dir), "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1",
        "--learning_rate", "1e-3", "--seed", "0", *args, model_dir, *map(str, data),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return json.loads((output_dir / "run.json").read_text())


REFUSALS = """
import json, runpy, sys

script, messages = sys.argv[1], []
for argv in json.loads(sys.argv[2]):
    sys.argv = [script, *argv]
    try:
        runpy.run_path(script, run_name="__main__")
        messages.append(None)
    except ValueError as error:
        messages.append(str(error))
print("REFUSALS " + json.dumps(messages))
"""


def refusals(script: Path, argvs: list[list[str]]) -> list[str | None]:
    """The ValueError message of each run of `script` as a script (its `__main__` block) with each of `argvs`, None
    for a run that raised none: all in one fresh interpreter, which imports the libraries once."""
    result = subprocess.run([sys.executable, "-c", REFUSALS, str(script), json.dumps(argvs)], check=False,
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    lines = [line for line in result.stdout.splitlines() if line.startswith("REFUSALS ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-6000:]
    return json.loads(lines[-1].removeprefix("REFUSALS "))
