"""Session fixtures: a tokenizer trained here and tiny Llama models built from a config (nothing downloaded)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

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
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def tiny_llama(vocab_size: int, seed: int = 0, hidden: int = 64, layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(config)


def fine_tune(model, tokenizer, dataset: Dataset, steps: int = 150, lr: float = 3e-3) -> None:
    """Plain next-token training on prompt+completion so the tiny model has something to forget."""
    texts = [p + c + tokenizer.eos_token for p, c in zip(dataset["prompt"], dataset["completion"])]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


@pytest.fixture(scope="session")
def tokenizer():
    texts = [p + c for p, c in zip(*toy_qa(0, 64)[:].values())]
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


CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


@pytest.fixture(scope="session")
def chat_tokenizer(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = CHAT_TEMPLATE
    return tok
