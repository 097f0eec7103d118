"""Session fixtures: a tokenizer trained here and tiny Llama models built from a config (nothing downloaded); the
functions behind them are in helpers.py."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch thread per test process: pytest runs two workers (pyproject.toml), and results are bit-identical across
# thread counts.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from transformers import LlamaForCausalLM

from helpers import CHAT_TEMPLATE, build_tokenizer, fine_tune, tiny_llama, toy_qa


@pytest.fixture(scope="session")
def tokenizer():
    texts = [p + c for p, c in zip(*toy_qa(0, 64)[:].values(), strict=False)]
    return build_tokenizer(texts + ["I don't know. I have no idea. That is unknown to me."])


@pytest.fixture(scope="session")
def forget_ds():
    return toy_qa(0, 4)


@pytest.fixture(scope="session")
def retain_ds():
    return toy_qa(4, 16)


@pytest.fixture(scope="session")
def finetuned_dir(tmp_path_factory, tokenizer, forget_ds, retain_ds):
    """A tiny model that has learned the forget and retain facts, saved so TRL can load a reference copy."""
    from datasets import concatenate_datasets

    model = tiny_llama(len(tokenizer))
    fine_tune(model, tokenizer, concatenate_datasets([forget_ds, retain_ds]))
    path = tmp_path_factory.mktemp("finetuned")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture
def finetuned(finetuned_dir):
    return LlamaForCausalLM.from_pretrained(finetuned_dir, dtype=torch.float32)


@pytest.fixture(scope="session")
def chat_tokenizer(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = CHAT_TEMPLATE
    return tok


@pytest.fixture(scope="session")
def llama3_tokenizer():
    """A Llama-3-style chat tokenizer whose pad token is its end-of-turn token (see tofu_reference_impl)."""
    from helpers import toy_eval_sets
    from tofu_reference_impl import llama3_style_tokenizer

    texts = [f"{row['question']} {text}" for rows in toy_eval_sets().values() for row in rows
             for text in [row["answer"], *row["perturbed_answer"]]]
    return llama3_style_tokenizer(texts + ["You are a helpful assistant. Cutting Knowledge Date: December 2023"])


@pytest.fixture(scope="module")
def data_files(tmp_path_factory, forget_ds, retain_ds):
    """The forget and retain rows as JSON files, for the scripts launched under accelerate."""
    import json

    folder = tmp_path_factory.mktemp("data")
    paths = folder / "forget.json", folder / "retain.json"
    for path, dataset in zip(paths, (forget_ds, retain_ds), strict=False):
        path.write_text(json.dumps([dict(r) for r in dataset]))
    return paths


def pytest_collection_modifyitems(config, items):
    """Groups for pytest-xdist's two workers (`--dist loadgroup`, pyproject.toml): the tests that launch several
    processes run one after another on one worker, so that two of them never share the two cores (their ranks wait on
    each other, and two such runs at once take several times as long), together with the rest of their files, whose
    module fixtures are then built once; every other test runs with the rest of its file. The files with slow
    tests are sent first, so that none starts last."""
    launching = {item.module.__name__ for item in items if item.get_closest_marker("processes")}
    slow = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    for item in items:
        group = "processes" if item.module.__name__ in launching else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: item.module.__name__ not in slow)  # a file's tests stay together, in their order
