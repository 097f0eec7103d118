"""Helpers of the MUSE tests: small synthetic MUSE data, a tokenizer trained on it, and tiny models trained on its
raw text (a "target" that saw the forget articles, a "retrain" that did not)."""

import torch

from helpers import build_tokenizer, tiny_llama
from npo_trl.muse import make_synthetic_muse


def small_muse():
    return make_synthetic_muse(num_forget=6, seed=1)


def muse_tokenizer(data):
    return build_tokenizer([t for split in data["raw"].values() for t in split["text"]])


def train_on_texts(tokenizer, texts, steps: int = 100, seed: int = 0):
    """A tiny Llama trained by next-token prediction on `texts`, each a sequence (BOS, text, EOS), as examples/muse.py
    trains its target and retrain models (here all in one batch)."""
    model = tiny_llama(len(tokenizer), seed=seed)
    ids = [tokenizer(text)["input_ids"] + [tokenizer.eos_token_id] for text in texts]
    width = max(map(len, ids))
    input_ids = torch.tensor([i + [tokenizer.pad_token_id] * (width - len(i)) for i in ids])
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=input_ids, attention_mask=mask, labels=input_ids.masked_fill(mask == 0, -100)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def target_texts(data):
    """The forget articles and retain2 (whose articles the KnowMem retain questions ask about)."""
    return list(data["raw"]["forget"]["text"]) + list(data["raw"]["retain2"]["text"])
