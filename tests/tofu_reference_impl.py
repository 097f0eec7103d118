"""TOFU's metrics written out independently of npo_trl, one row and one unpadded forward pass at a time, with the
text built by hand: the reference definitions the evaluator's batched passes are checked against.

The definitions (TOFU, arXiv 2401.06121; open-unlearning's src/evals/metrics, read at its published commit):
- a candidate's score is the mean over its answer tokens of log p(token | everything before it);
- probability = exp(score), averaged over rows; on real authors / world facts p_answer / (p_answer + Σ p_perturbed);
- truth ratio R = exp(mean_j score(perturbed_j) − score(correct)); forget: mean(min(R, 1/R)), others
  mean(max(0, 1 − R));
- ROUGE-L recall (rouge_score, stemming) of the greedy answer against the answer;
- forget quality = KS-test p-value of R against the retain model's R; model utility = harmonic mean of 9 numbers.

Token boundary: "common_prefix" scores from the first position where prompt ids and full-text ids differ;
"prompt_length" scores from len(prompt ids) on, after appending EOS to a text that does not end in it. With
`mask_token`, every position holding that id gets attention mask 0 (the reference evaluator's collator).
"""

import math

import numpy as np
import torch
from rouge_score import rouge_scorer
from scipy.stats import ks_2samp
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
# A Llama-3.x-Instruct-like chat template: a system turn with a date line, turns closed by <|eot_id|>.
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% if date_string is not defined %}{% set date_string = '26 Jul 2024' %}{% endif %}"
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set messages = messages[1:] %}{% else %}{% set system = '' %}{% endif %}"
    "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
    "Today Date: {{ date_string }}\n\n{{ system }}<|eot_id|>"
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def llama3_style_tokenizer(texts) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `texts` with Llama-3's special tokens and template; pad = EOS = <|eot_id|>, as a
    Llama-3.x-Instruct tokenizer gets when the pad token is set to its EOS."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=LLAMA3_SPECIAL,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                       special_tokens=[("<|begin_of_text|>", 0)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                        pad_token="<|eot_id|>",
                                        additional_special_tokens=["<|start_header_id|>", "<|end_header_id|>"])
    tokenizer.chat_template = LLAMA3_TEMPLATE
    return tokenizer


# ---------------------------------------------------------------- text and tokens, by hand
def question_answer_ids(tokenizer, question: str, answer: str, style: str, token_boundary: str):
    """(context ids, answer ids) of one candidate. `style` is "qa" ("Question: …\\nAnswer: " then the answer and EOS,
    TOFU's phi tags) or "llama3" (the chat template after a "You are a helpful assistant." system turn, date
    10 Apr 2025)."""
    if style == "qa":
        prompt = tokenizer(f"Question: {question}\nAnswer: ")["input_ids"]
        full = tokenizer(f"Question: {question}\nAnswer: {answer}{tokenizer.eos_token}")["input_ids"]
    else:
        messages = [{"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": question}]
        kwargs = {"tokenize": True, "return_dict": True, "date_string": "10 Apr 2025"}
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, **kwargs)["input_ids"]
        full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}],
                                             **kwargs)["input_ids"]
    prompt, full = list(prompt), list(full)
    if token_boundary == "prompt_length":
        if full[-1] != tokenizer.eos_token_id:
            full.append(tokenizer.eos_token_id)
        start = len(prompt)
    else:
        start = next((i for i, (a, b) in enumerate(zip(prompt, full, strict=False)) if a != b), len(prompt))
    return full[:start], full[start:], prompt


def _mask(ids: torch.Tensor, mask_token) -> torch.Tensor:
    return torch.ones_like(ids) if mask_token is None else (ids != mask_token).long()


@torch.no_grad()
def mean_answer_logp(model, context: list[int], answer: list[int], mask_token=None) -> float:
    """Mean over the answer tokens of log p(token | prefix): one unpadded sequence, positions 0, 1, 2, …"""
    ids = torch.tensor([context + answer])
    logprobs = model(input_ids=ids, attention_mask=_mask(ids, mask_token)).logits[0].double().log_softmax(-1)
    targets = range(len(context), ids.size(1))
    return sum(logprobs[t - 1, ids[0, t]].item() for t in targets) / len(answer)


@torch.no_grad()
def greedy_answer(model, tokenizer, prompt: list[int], max_new_tokens: int, mask_token=None) -> str:
    """Greedy decoding without a cache, one token at a time, positions counted over the attended tokens (as
    transformers' generate derives them from the attention mask); the new tokens decoded and stripped."""
    ids = list(prompt)
    for _ in range(max_new_tokens):
        x = torch.tensor([ids])
        mask = _mask(x, mask_token)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        next_id = model(input_ids=x, attention_mask=mask, position_ids=positions).logits[0, -1].argmax().item()
        ids.append(next_id)
        if next_id == tokenizer.eos_token_id:
            break
    return tokenizer.decode(ids[len(prompt):], skip_special_tokens=True).strip()


# ---------------------------------------------------------------- per-row values and aggregates
def row_values(model, tokenizer, name: str, rows, style: str, token_boundary: str, mask_token=None,
               max_new_tokens: int = 6) -> dict[str, np.ndarray]:
    """Per row: every candidate's score (answer, [paraphrase,] perturbed), the truth ratio and the ROUGE-L recall."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    paraphrased = name in ("forget", "retain")
    scores, ratios, rouge = [], [], []
    for row in rows:
        texts = [row["answer"]] + ([row["paraphrased_answer"]] if paraphrased else []) + list(row["perturbed_answer"])
        row_scores = []
        for text in texts:
            context, answer, prompt = question_answer_ids(tokenizer, row["question"], text, style, token_boundary)
            row_scores.append(mean_answer_logp(model, context, answer, mask_token))
        correct = row_scores[1] if paraphrased else row_scores[0]
        perturbed = row_scores[2:] if paraphrased else row_scores[1:]
        ratios.append(math.exp(sum(perturbed) / len(perturbed) - correct))
        generation = greedy_answer(model, tokenizer, prompt, max_new_tokens, mask_token)
        rouge.append(scorer.score(row["answer"], generation)["rougeL"].recall)
        scores.append(row_scores)
    return {"scores": np.array(scores), "truth_ratios": np.array(ratios), "rouge": np.array(rouge)}


def set_values(name: str, values: dict[str, np.ndarray]) -> dict[str, float]:
    """A set's probability, ROUGE and truth-ratio score from its per-row values."""
    probs = np.exp(values["scores"])
    if name in ("forget", "retain"):
        prob = probs[:, 0].mean()
    else:
        prob = (probs[:, 0] / probs.sum(axis=1)).mean()
    ratios = values["truth_ratios"]
    if name == "forget":
        truth = np.mean([min(r, 1 / r) for r in ratios])
    else:
        truth = np.mean([max(0.0, 1 - r) for r in ratios])
    return {f"tofu/{name}_prob": prob, f"tofu/{name}_rouge": values["rouge"].mean(), f"tofu/{name}_truth_ratio": truth}


def harmonic_mean(values) -> float:
    return len(values) / sum(1 / v for v in values)


def forget_quality(ratios, reference_ratios) -> float:
    return ks_2samp(ratios, reference_ratios).pvalue
