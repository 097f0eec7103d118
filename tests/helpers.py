"""Helpers the tests share: toy data, a tokenizer trained here and tiny Llama models built from a config (nothing is
downloaded). Fixtures built on them are in conftest.py."""

import torch
from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
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


CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def toy_eval_sets() -> dict[str, list[dict]]:
    """TOFU-schema rows about the conftest agents (all known to the `finetuned` model): agents 0-3 are forgotten."""

    def rows(agents, attribute, num_perturbed, paraphrase):
        out = []
        for i in agents:
            if attribute == "city":
                question, say, values = f"Where does agent {i} live?", f"Agent {i} lives in", CITIES
                value = CITIES[i % 8]
            else:
                question, say, values = f"What colour does agent {i} like?", f"Agent {i} likes", COLOURS
                value = COLOURS[i * 3 % 8]
            wrong = [v for v in values if v != value][i % 3:i % 3 + num_perturbed]
            row = {"question": question, "answer": f"{say} {value}.",
                   "perturbed_answer": [f"Perhaps {say.lower()} {w}." for w in wrong]}
            if paraphrase:
                row["paraphrased_answer"] = f"{say} {value}"
                row["paraphrased_question"] = question.replace("?", ", do you know?")
            out.append(row)
        return out

    return {
        "forget": rows(range(0, 4), "city", 5, True) + rows(range(0, 4), "colour", 5, True),
        "retain": rows(range(4, 8), "city", 5, True) + rows(range(4, 8), "colour", 5, True),
        "real_authors": rows(range(8, 12), "colour", 3, False),
        "world_facts": rows(range(12, 16), "city", 3, False),
    }
