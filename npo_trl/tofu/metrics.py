"""TOFU's metrics (Maini et al. 2024, arXiv 2401.06121), as the NPO paper reports them.

The definitions are those of TOFU's evaluation code, which the papers' numbers come from:

- **Probability** P(y|x) is length-normalised: exp of the mean log-prob of the answer tokens, averaged over rows.
  On real authors and world facts it is normalised over the options: P(a) / (P(a) + Σ_j P(perturbed_j)).
- **ROUGE** is the ROUGE-L recall (with stemming) of the greedy answer against the true answer.
- **Truth ratio** R = (Π_j P(perturbed_j))^(1/n) / P(correct), all length-normalised; "correct" is the paraphrased
  answer on forget/retain, the answer on real authors/world facts. The forget set reports mean(min(R, 1/R)), the
  others mean(max(0, 1 − R)).
- **Forget quality** is the p-value of the two-sample KS test between the forget-set truth ratios of the unlearned
  model and of the retain model (a model never trained on the forget set). The paper reads ≥ 0.05 as forgotten.
- **Model utility** is the harmonic mean of the 9 retain / real-authors / world-facts numbers above.

Answers are scored on the token sequences [`~npo_trl.NPOTrainer`] trains on, in a `npo_trl.prompts.PromptFormat`
(DPOTrainer's tokenization: the prompt, then the completion plus EOS for plain text, or the chat template), or with
the reference evaluator's token boundary (`token_boundary="prompt_length"`). This module holds the formulas, the
batched model passes and the evaluation sets; `evaluator.py` puts them together and `reference.py` reads the retain
model's statistics.
"""

import hashlib
import json
import math
import random
from collections.abc import Sequence

import numpy as np
import torch
from rouge_score import rouge_scorer
from scipy.special import softmax
from scipy.stats import hmean, ks_2samp
from transformers import DynamicCache, GenerationConfig
from transformers.cache_utils import DynamicLayer
from trl.trainer.utils import pad

from .. import losses
from ..data import DataCollatorForUnlearning
from ..prompts import _tokenizer, generation_prompt_ids, get_prompt_format, tokenize_qa

EVAL_SETS = ("forget", "retain", "real_authors", "world_facts")
UTILITY_SETS = ("retain", "real_authors", "world_facts")
PARAPHRASED_SETS = ("forget", "retain")  # sets whose truth ratio compares with the paraphrased answer
# The 9 numbers whose harmonic mean is the model utility.
UTILITY_METRICS = tuple(f"tofu/{name}_{m}" for name in UTILITY_SETS for m in ("prob", "rouge", "truth_ratio"))
METRICS = ("tofu/forget_quality", "tofu/model_utility", "tofu/forget_prob", "tofu/forget_rouge",
           "tofu/forget_truth_ratio", "tofu/forget_kl") + UTILITY_METRICS


# ---------------------------------------------------------------- metrics on scores
def truth_ratios(correct_logps, perturbed_logps) -> np.ndarray:
    """Per row R = (Π_j P(perturbed_j))^(1/n) / P(correct), from length-normalised log-probs.

    `correct_logps` is (rows,), `perturbed_logps` (rows, n). Computed in log space, so nothing underflows.
    """
    return np.exp(np.mean(perturbed_logps, axis=-1) - np.asarray(correct_logps))


def truth_ratio_score(ratios, forget: bool) -> float:
    """TOFU's aggregate: mean(min(R, 1/R)) on the forget set (1 = no preference left), else mean(max(0, 1 − R))."""
    ratios = np.asarray(ratios, dtype=np.float64)
    if forget:
        return float(np.mean(np.minimum(ratios, 1.0 / ratios)))
    return float(np.mean(np.maximum(0.0, 1.0 - ratios)))


def option_probs(answer_logps, perturbed_logps) -> np.ndarray:
    """Per row P(a) / (P(a) + Σ_j P(perturbed_j)), the answer's share among the options (length-normalised P)."""
    logps = np.concatenate([np.asarray(answer_logps)[:, None], np.asarray(perturbed_logps)], axis=1)
    return softmax(logps, axis=1)[:, 0]


def rouge_l_recall(generations: Sequence[str], answers: Sequence[str]) -> np.ndarray:
    """ROUGE-L recall of each generation against its answer, with stemming (what `evaluate`'s rouge wraps)."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return np.array([scorer.score(answer, generation)["rougeL"].recall
                     for generation, answer in zip(generations, answers, strict=True)])


def forget_quality(ratios, reference_ratios) -> float:
    """p-value of the KS test between the unlearned model's and the retain model's forget-set truth ratios."""
    return float(ks_2samp(ratios, reference_ratios).pvalue)


def model_utility(components: Sequence[float]) -> float:
    """Harmonic mean of the utility numbers (TOFU: the 9 of `UTILITY_METRICS`); 0 if any of them is 0."""
    values = np.asarray(list(components), dtype=np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"model_utility needs finite, non-negative components, got {values.tolist()}.")
    return float(hmean(values))


# ---------------------------------------------------------------- rows and tokens
def _required_fields(name: str) -> tuple[str, ...]:
    if name in PARAPHRASED_SETS:
        return "question", "answer", "paraphrased_answer", "perturbed_answer"
    return "question", "answer", "perturbed_answer"


def validate_rows(rows: Sequence[dict], name: str) -> None:
    """Refuse an evaluation set that does not follow TOFU's schema, naming the row, the field and the fix."""
    if name not in EVAL_SETS:
        raise ValueError(f"Unknown TOFU evaluation set {name!r}: name the sets {list(EVAL_SETS)}.")
    if len(rows) == 0:
        raise ValueError(f"The TOFU evaluation set {name!r} is empty.")
    num_perturbed = None
    for index, row in enumerate(rows):
        for field in _required_fields(name):
            if field not in row:
                raise ValueError(
                    f"TOFU set {name!r}, row {index}: missing field {field!r}. Use TOFU's evaluation files (for "
                    f"{name!r}: {list(_required_fields(name))}), e.g. `npo_trl.tofu.tofu_eval_sets`."
                )
        perturbed = row["perturbed_answer"]
        if not isinstance(perturbed, (list, tuple)) or not perturbed:
            raise ValueError(
                f"TOFU set {name!r}, row {index}: field 'perturbed_answer' must be a non-empty list of strings, got "
                f"{type(perturbed).__name__}: {perturbed!r:.80}."
            )
        for field in _required_fields(name):
            for text in (perturbed if field == "perturbed_answer" else [row[field]]):
                if not isinstance(text, str) or not text.strip():
                    raise ValueError(f"TOFU set {name!r}, row {index}: field {field!r} must hold non-empty strings, "
                                     f"got {text!r:.80}.")
        if num_perturbed is not None and len(perturbed) != num_perturbed:
            raise ValueError(
                f"TOFU set {name!r}, row {index}: field 'perturbed_answer' has {len(perturbed)} answers but row 0 has "
                f"{num_perturbed}; every row of a set needs the same number."
            )
        num_perturbed = len(perturbed)


def select_indices(num_rows: int, max_samples: int | None = None, seed: int | None = 0) -> list[int]:
    """The rows to score: all of them (`max_samples=None`, what the reference evaluator open-unlearning does), else at
    most `max_samples`, a fixed subset drawn with `seed` (in their original order), or with `seed=None` the first
    `max_samples` (what TOFU's original code, `ds_size: 300`, did)."""
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1 or None for every row (got {max_samples}).")
    if max_samples is None or num_rows <= max_samples:
        return list(range(num_rows))
    if seed is None:
        return list(range(max_samples))
    return sorted(random.Random(seed).sample(range(num_rows), max_samples))


def select_rows(rows: Sequence[dict], max_samples: int | None = None, seed: int | None = 0) -> list[dict]:
    """The rows `select_indices` keeps."""
    rows = list(rows)
    return [rows[i] for i in select_indices(len(rows), max_samples, seed)]


def _pad_token_id(processing_class) -> int:
    tokenizer = _tokenizer(processing_class)
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


# ---------------------------------------------------------------- batched model passes
def _device(model) -> torch.device:
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else next(model.parameters()).device


def _collate(prompts, completions, pad_token_id: int, device, mask_pad_tokens: bool = False
             ) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and completion_mask, collated exactly as for training.

    `mask_pad_tokens` also hides every token equal to the pad token inside the text from attention, as the reference
    evaluator's collator does (attention_mask = input_ids != pad_token_id): see `TOFUEvaluator`'s `mask_pad_tokens`.
    """
    collator = DataCollatorForUnlearning(pad_token_id=pad_token_id)
    batch = collator([{"prompt_ids": p, "completion_ids": c} for p, c in zip(prompts, completions, strict=True)])
    if mask_pad_tokens:
        batch["attention_mask"] = batch["attention_mask"] * (batch["input_ids"] != pad_token_id)
    return {k: v.to(device) for k, v in batch.items()}


def _logits(model, batch) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    return logits[:, -batch["input_ids"].size(1):]  # prompt-learning PEFT prepends virtual tokens


def _at_least_fp32(logits: torch.Tensor) -> torch.Tensor:
    """Logits in float32, or float64 when the model computes in it (log-softmax of bf16/fp16 logits loses digits)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def _completion_logps(logits, input_ids, completion_mask) -> torch.Tensor:
    """Mean log π(token | prefix) over the completion tokens of each row; log-softmax taken at those positions only."""
    mask = completion_mask[:, 1:].bool()
    selected = _at_least_fp32(logits[:, :-1][mask])  # (completion tokens, vocab)
    targets = input_ids[:, 1:][mask]
    token_logps = selected.gather(-1, targets[:, None]).squeeze(-1) - selected.logsumexp(-1)
    rows = torch.arange(len(input_ids), device=input_ids.device)[:, None].expand_as(mask)[mask]
    sums = torch.zeros(len(input_ids), dtype=token_logps.dtype, device=input_ids.device).index_add_(0, rows,
                                                                                                  token_logps)
    return sums / mask.sum(1)


@torch.no_grad()
def sequence_logps(model, prompts: Sequence[list[int]], completions: Sequence[list[int]], pad_token_id: int,
                   device=None, mask_pad_tokens: bool = False) -> torch.Tensor:
    """Length-normalised log-probability of each completion given its prompt: the mean over the completion tokens
    of log π(token | prefix), for the whole batch in one forward pass. Returns a tensor of shape (rows,), float32
    (float64 for a float64 model)."""
    batch = _collate(prompts, completions, pad_token_id, device or _device(model), mask_pad_tokens)
    return _completion_logps(_logits(model, batch), batch["input_ids"], batch["completion_mask"])


def shared_prefix_length(prompts: Sequence[list[int]]) -> int:
    """How many leading tokens all `prompts` have in common."""
    length = min(len(p) for p in prompts)
    for i in range(length):
        if any(p[i] != prompts[0][i] for p in prompts):
            return i
    return length


def can_share_prefix(model) -> bool:
    """Whether `candidate_logps` may run a shared prompt once: only for a key-value cache of full attention, and not
    with prompt-learning PEFT (virtual tokens). A sliding window counts cache positions, a row's padding included;
    recurrent or convolutional state would run the padding into itself. Decided from the config, so every process
    decides alike."""
    if getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False):
        return False
    config = getattr(model, "config", None)
    if config is None:
        return False
    text_config = config.get_text_config(decoder=True)
    if set(getattr(text_config, "layer_types", None) or ["full_attention"]) != {"full_attention"}:
        return False
    try:
        layers = DynamicCache(config=config).layers
    except Exception:  # a config the cache cannot read: take the path that needs no cache
        return False
    return all(type(layer) is DynamicLayer for layer in layers)


@torch.no_grad()
def candidate_logps(model, prompts: Sequence[list[int]], completions: Sequence[list[int]], num_candidates: int,
                    pad_token_id: int, device=None, mask_pad_tokens: bool = False) -> torch.Tensor:
    """`sequence_logps` of rows that each hold `num_candidates` consecutive (prompt, completion) pairs with a common
    question (TOFU scores an answer, its paraphrase and its perturbations), shape (rows, num_candidates).

    Each row's shared prompt, all but its last token, runs once; its key-value cache is repeated for the candidates,
    which then run from that last token on. The values are `sequence_logps`' up to float rounding (4e-6 in fp32),
    for a quarter to a half fewer token-passes on TOFU's rows (the question runs once instead of 5-7 times). Every row
    needs a shared prompt of >= 2 tokens, and the model a full-attention cache (`can_share_prefix`).
    """
    if not can_share_prefix(model):
        raise ValueError(f"candidate_logps needs a full-attention key-value cache, which {type(model).__name__} does "
                         "not have (see can_share_prefix): use sequence_logps.")
    device = device or _device(model)
    k = num_candidates
    groups = [prompts[i:i + k] for i in range(0, len(prompts), k)]
    shared = [shared_prefix_length(group) - 1 for group in groups]  # the cached part of each row's prompt
    if min(shared) < 1:
        raise ValueError("candidate_logps needs every row's candidates to share a prompt of >= 2 tokens.")
    prefix = _collate([g[0][:n] for g, n in zip(groups, shared)], [[]] * len(groups), pad_token_id, device,
                      mask_pad_tokens)
    supports_keep = getattr(model, "_supports_logits_to_keep", lambda: False)()
    cache = model(input_ids=prefix["input_ids"], attention_mask=prefix["attention_mask"], use_cache=True,
                  position_ids=torch.arange(prefix["input_ids"].size(1), device=device).expand_as(prefix["input_ids"]),
                  **({"logits_to_keep": 1} if supports_keep else {})).cache
    cache.batch_repeat_interleave(k)
    offsets = [n for n in shared for _ in range(k)]
    rest = _collate([p[n:] for p, n in zip(prompts, offsets)], completions, pad_token_id, device, mask_pad_tokens)
    positions = torch.tensor(offsets, device=device)[:, None] + torch.arange(rest["input_ids"].size(1), device=device)
    logits = model(input_ids=rest["input_ids"], use_cache=True, cache=cache, position_ids=positions,
                   attention_mask=torch.cat([prefix["attention_mask"].repeat_interleave(k, 0),
                                             rest["attention_mask"]], dim=1)).logits
    return _completion_logps(logits, rest["input_ids"], rest["completion_mask"]).view(-1, k)


@torch.no_grad()
def reference_kl(model, ref_model, prompts: Sequence[list[int]], completions: Sequence[list[int]],
                 pad_token_id: int, device=None, mask_pad_tokens: bool = False) -> torch.Tensor:
    """Per row, KL(π_ref ‖ π_θ) between next-token distributions, averaged over the completion tokens (the direction
    of `npo_trl.losses.kl_loss` and of the NPO authors' code)."""
    batch = _collate(prompts, completions, pad_token_id, device or _device(model), mask_pad_tokens)
    logprobs, ref_logprobs = (_at_least_fp32(_logits(m, batch)[:, :-1]).log_softmax(-1) for m in (model, ref_model))
    mask = batch["completion_mask"][:, 1:].bool()
    return torch.stack([losses.kl_loss(lp[m], ref_lp[m]) for lp, ref_lp, m in zip(logprobs, ref_logprobs, mask)])


@torch.no_grad()
def generate_answers(model, processing_class, prompts: Sequence[list[int]], max_new_tokens: int = 200,
                     synced_gpus: bool = False, device=None, mask_pad_tokens: bool = False) -> list[str]:
    """Greedy answers to a batch of left-padded prompts, stopping at EOS; the new tokens, decoded (special tokens
    skipped, surrounding whitespace stripped). `mask_pad_tokens` as for `_collate`."""
    tokenizer, pad_token_id = _tokenizer(processing_class), _pad_token_id(processing_class)
    eos_token_id = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    device = device or _device(model)
    input_ids = pad([torch.tensor(p) for p in prompts], padding_value=pad_token_id, padding_side="left").to(device)
    attention_mask = pad([torch.ones(len(p), dtype=torch.long) for p in prompts], padding_value=0,
                         padding_side="left").to(device)
    if mask_pad_tokens:
        attention_mask = attention_mask * (input_ids != pad_token_id)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_token_id,
                              eos_token_id=eos_token_id if eos_token_id is not None else tokenizer.eos_token_id)
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                         synced_gpus=synced_gpus)
    return [answer.strip() for answer in tokenizer.batch_decode(out[:, input_ids.size(1):], skip_special_tokens=True)]


# ---------------------------------------------------------------- evaluation sets
class TOFUEvalSet:
    """One TOFU evaluation set, selected, validated and tokenized once.

    Each row keeps its generation prompt and its candidate (context, answer) token pairs in a fixed order: the
    answer, then the paraphrased answer (forget and retain only), then the perturbed answers. `indices` are the
    selected rows' positions among the `num_source_rows` rows given (see `select_indices`); `prompt_format` is a preset
    name or a `npo_trl.prompts.PromptFormat`, and `token_boundary` is `npo_trl.prompts.tokenize_qa`'s.
    """

    def __init__(self, name, rows, processing_class, max_samples=None, seed=0, prompt_format="plain",
                 prompt_template=None, completion_template=None, token_boundary="common_prefix"):
        rows = list(rows)
        validate_rows(rows, name)
        self.name = name
        self.prompt_format = get_prompt_format(prompt_format, prompt_template, completion_template)
        self.token_boundary = token_boundary
        self.num_source_rows, self.source_answers = len(rows), [row["answer"] for row in rows]
        self.indices = select_indices(len(rows), max_samples, seed)
        self.rows = [rows[i] for i in self.indices]
        self.has_paraphrase = name in PARAPHRASED_SETS
        self.num_perturbed = len(self.rows[0]["perturbed_answer"])
        self.answers = [row["answer"] for row in self.rows]
        self.prompts = [generation_prompt_ids(processing_class, row["question"], self.prompt_format)
                        for row in self.rows]
        self.candidates = [
            [tokenize_qa(processing_class, row["question"], text, self.prompt_format, token_boundary)
             for text in self._texts(row)]
            for row in self.rows
        ]
        # candidate_logps can run each question once when every row's candidates share >= 2 prompt tokens
        self.lengths = [max(len(p) + len(c) for p, c in pairs) for pairs in self.candidates]
        self.shares_prompt = min(shared_prefix_length([p for p, _ in c]) for c in self.candidates) >= 2
        fields = [[row["question"], *self._texts(row)] for row in self.rows]
        formatting = [self.prompt_format.to_dict(), token_boundary]
        self.fingerprint = hashlib.sha256(json.dumps([formatting, fields]).encode()).hexdigest()

    def _texts(self, row) -> list[str]:
        return [row["answer"]] + ([row["paraphrased_answer"]] if self.has_paraphrase else []) + \
            list(row["perturbed_answer"])

    def __len__(self):
        return len(self.rows)


def _shard(num_rows: int, accelerator) -> list[int]:
    """This process's rows: equal-sized contiguous blocks, the last padded by repeating the final row, so that
    every process runs the same number of forward passes (ZeRO-3 needs it) and a gather restores the order."""
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    per_process = math.ceil(num_rows / world)
    return [min(i, num_rows - 1) for i in range(rank * per_process, (rank + 1) * per_process)]


@torch.no_grad()
def score_eval_set(model, processing_class, eval_set: TOFUEvalSet, *, ref_model=None, batch_size: int = 8,
                   max_new_tokens: int = 200, generate: bool = True, accelerator=None, synced_gpus: bool = False,
                   generation_batch_size: int | None = None, mask_pad_tokens: bool = False) -> dict[str, np.ndarray]:
    """Per-row scores of one set: `answer_logps`, `correct_logps`, `perturbed_logps` (rows, n) (length-normalised),
    `rouge` (with `generate`, `generation_batch_size` rows at a time, by default `batch_size`) and `kl` (with
    `ref_model`). `mask_pad_tokens` as for `_collate`.

    With `accelerator`, each process scores its shard of the rows and the scores are gathered; the model must
    already be unwrapped (see `TOFUEvaluator.evaluate`).
    """
    pad_token_id = _pad_token_id(processing_class)
    device = accelerator.device if accelerator is not None else _device(model)
    indices = _shard(len(eval_set), accelerator)
    num_candidates = len(eval_set.candidates[0])
    share_prompt = eval_set.shares_prompt and can_share_prefix(model)  # decided per set: ZeRO-3 ranks must agree
    # Rows in order of length, so that a batch pads little; `columns` goes back to shard order below.
    order = sorted(range(len(indices)), key=lambda j: (eval_set.lengths[indices[j]], j))

    def batches(size):
        for start in range(0, len(order), size):
            yield [indices[j] for j in order[start:start + size]]

    logps, rouge, kl = [], [], []
    for rows in batches(batch_size):
        pairs = [pair for i in rows for pair in eval_set.candidates[i]]  # every candidate of the batch, stacked
        if share_prompt:
            logps.append(candidate_logps(model, *zip(*pairs), num_candidates, pad_token_id, device, mask_pad_tokens))
        else:
            logps.append(sequence_logps(model, *zip(*pairs), pad_token_id, device, mask_pad_tokens)
                         .view(len(rows), num_candidates))
        if ref_model is not None:
            kl.append(reference_kl(model, ref_model, *zip(*[eval_set.candidates[i][0] for i in rows]), pad_token_id,
                                   device, mask_pad_tokens))
    if generate:
        for rows in batches(generation_batch_size or batch_size):
            answers = generate_answers(model, processing_class, [eval_set.prompts[i] for i in rows], max_new_tokens,
                                       synced_gpus, device, mask_pad_tokens)
            rouge.append(torch.tensor(rouge_l_recall(answers, [eval_set.answers[i] for i in rows]), device=device))
    nan = torch.full((len(indices),), float("nan"), device=device)
    columns = torch.cat([torch.cat(logps).double(), (torch.cat(rouge) if rouge else nan).double()[:, None],
                         (torch.cat(kl) if kl else nan).double()[:, None]], dim=1)
    table = columns[torch.argsort(torch.tensor(order, device=device))]  # back to shard order
    if accelerator is not None:
        table = accelerator.gather(table)
    table = table[:len(eval_set)].cpu().numpy()
    first_perturbed = 2 if eval_set.has_paraphrase else 1
    return {
        "answer_logps": table[:, 0],
        "correct_logps": table[:, first_perturbed - 1],
        "perturbed_logps": table[:, first_perturbed:num_candidates],
        "rouge": table[:, num_candidates],
        "kl": table[:, num_candidates + 1],
    }


def set_metrics(name: str, scores: dict[str, np.ndarray]) -> dict[str, float | None]:
    """A set's probability, ROUGE and truth-ratio score (and, on the forget set, the KL) from its per-row scores."""
    if name in PARAPHRASED_SETS:
        prob = float(np.mean(np.exp(scores["answer_logps"])))
    else:
        prob = float(np.mean(option_probs(scores["answer_logps"], scores["perturbed_logps"])))
    ratios = truth_ratios(scores["correct_logps"], scores["perturbed_logps"])
    metrics = {
        f"tofu/{name}_prob": prob,
        f"tofu/{name}_rouge": float(np.mean(scores["rouge"])),
        f"tofu/{name}_truth_ratio": truth_ratio_score(ratios, forget=name == "forget"),
    }
    if name == "forget":
        kl = scores["kl"]
        metrics["tofu/forget_kl"] = None if np.isnan(kl).all() else float(np.mean(kl))
    return metrics


