"""Helpers of the lm-eval and WMDP stand-in tests: a small stand-in, a tokenizer trained on it, a tiny Llama that has
learned its answers, and an independent count of the choices a model scores highest."""

import torch
from datasets import Dataset

from helpers import build_tokenizer, fine_tune, tiny_llama
from npo_trl.wmdp import write_synthetic_wmdp


def small_standin(folder, num_forget: int = 8, num_retain: int = 8, seed: int = 0):
    """The WMDP stand-in written to `folder`: 32 forget and 32 general questions by default."""
    return write_synthetic_wmdp(folder, num_forget=num_forget, num_retain=num_retain, seed=seed)


def standin_tokenizer(standin):
    return build_tokenizer(list(standin.datasets["forget_corpus"]["text"]) +
                           list(standin.datasets["retain_corpus"]["text"]))


def answer_rows(standin) -> Dataset:
    """Each question with its correct choice as a completion, as the lm-eval tasks ask it."""
    rows = [row for name in ("wmdp", "mmlu") for row in standin.datasets[name]]
    return Dataset.from_list([{"prompt": f"Question: {row['question']}\nAnswer:",
                               "completion": " " + row["choices"][row["answer"]]} for row in rows])


def memorising_model(standin, tokenizer, steps: int = 150, seed: int = 0):
    """A tiny Llama trained on every question with its correct answer."""
    model = tiny_llama(len(tokenizer), seed=seed)
    fine_tune(model, tokenizer, answer_rows(standin), steps=steps)
    return model


@torch.no_grad()
def argmax_accuracy(model, tokenizer, rows) -> tuple[float, float]:
    """(acc, acc_norm) counted here, independently of lm-eval: each choice's score is the sum of its tokens'
    log-probabilities after "<s>Question: <question>\\nAnswer:" (the choice follows after a space); a question counts
    when its correct choice scores highest (acc), or highest divided by its length in characters (acc_norm)."""
    hits, norm_hits = 0, 0
    for row in rows:
        context = tokenizer(f"Question: {row['question'].strip()}\nAnswer:")["input_ids"]
        scores = []
        for choice in row["choices"]:
            continuation = tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([context + continuation])
            logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
            targets = ids[0, 1:]
            scores.append(logps[torch.arange(len(targets)), targets][-len(continuation):].sum().item())
        scores = torch.tensor(scores, dtype=torch.float64)
        lengths = torch.tensor([float(len(c)) for c in row["choices"]], dtype=torch.float64)
        hits += int(scores.argmax()) == row["answer"]
        norm_hits += int((scores / lengths).argmax()) == row["answer"]
    return hits / len(rows), norm_hits / len(rows)
