"""Batched model passes shared by every benchmark: scoring answers given their prompts, the KL to a reference model,
and greedy generation. Each takes token ids (see `npo_trl.prompts` for how text becomes them) and works on any
process's model, unwrapped; `npo_trl.eval.runner` shards rows across processes and gathers the results.

Rows are collated exactly as `NPOTrainer` collates its training rows (`DataCollatorForUnlearning`, right padding),
so a score is the log-probability the trainer would compute for the same tokens, length-normalised.
"""

from collections.abc import Sequence

import torch
from transformers import DynamicCache, GenerationConfig
from transformers.cache_utils import DynamicLayer
from trl.data_utils import common_prefix_length
from trl.trainer.utils import pad

from .. import losses
from ..data import DataCollatorForUnlearning
from ..prompts import tokenizer_of


def pad_id_of(processing_class) -> int:
    """The pad token's id, or the EOS token's when the tokenizer has none (what the trainer pads with then)."""
    tokenizer = tokenizer_of(processing_class)
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def model_device(model, accelerator=None) -> torch.device:
    """Where a model's inputs go: `accelerator.device` when given (each process's), else the model's own device (its
    `device`, or its first parameter's)."""
    if accelerator is not None:
        return accelerator.device
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else next(model.parameters()).device


def _collate(prompts, completions, pad_token_id: int, device, mask_pad_tokens: bool = False
             ) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and completion_mask, collated exactly as for training.

    `mask_pad_tokens` also hides every token equal to the pad token inside the text from attention, as the reference
    evaluator's collator does (attention_mask = input_ids != pad_token_id); see `npo_trl.tofu.TOFUEvaluator`.
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


def _completion_token_statistics(logits, input_ids, completion_mask) -> dict[str, torch.Tensor]:
    """Per completion token of each row: `logps` = log π(token | prefix), the mean `expected_logps` =
    E_{v∼π}[log π(v | prefix)] and variance `logp_variance` of the log-probabilities over the vocabulary at that
    position (what Min-K%++ standardises with), and `is_argmax` (the token is the most likely one); each
    (rows, longest completion), left-aligned and zero past a row's end, with `mask` 1 on a row's completion tokens."""
    mask = completion_mask[:, 1:].bool()
    logprobs = _at_least_fp32(logits[:, :-1][mask]).log_softmax(-1)  # (completion tokens, vocab)
    targets = input_ids[:, 1:][mask]
    probs = logprobs.exp()
    weighted = probs.mul_(logprobs)  # p·log p in place of p: one (tokens, vocab) temporary fewer at a large vocabulary
    expected = weighted.sum(-1)
    flat = {"logps": logprobs.gather(-1, targets[:, None]).squeeze(-1), "expected_logps": expected,
            "logp_variance": weighted.mul_(logprobs).sum(-1) - expected.square(),
            "is_argmax": logprobs.argmax(-1) == targets}
    lengths = mask.sum(1)
    aligned = torch.arange(int(lengths.max()), device=mask.device)[None] < lengths[:, None]
    out = {"mask": aligned.long()}
    for name, values in flat.items():  # completion tokens are contiguous in a row, so the order is kept
        out[name] = torch.zeros(aligned.shape, dtype=values.dtype, device=values.device)
        out[name][aligned] = values
    return out


@torch.no_grad()
def sequence_logps(model, prompts: Sequence[list[int]], completions: Sequence[list[int]], pad_token_id: int,
                   device=None, mask_pad_tokens: bool = False, statistics_rows: slice | None = None):
    """Length-normalised log-probability of each completion given its prompt: the mean over the completion tokens
    of log π(token | prefix), for the whole batch in one forward pass. Returns a tensor of shape (rows,), float32
    (float64 for a float64 model); with `statistics_rows` (a slice of the rows), also the `token_statistics` of those
    rows from the same pass: (logps, statistics)."""
    batch = _collate(prompts, completions, pad_token_id, device or model_device(model), mask_pad_tokens)
    logits = _logits(model, batch)
    logps = _completion_logps(logits, batch["input_ids"], batch["completion_mask"])
    if statistics_rows is None:
        return logps
    return logps, _completion_token_statistics(logits[statistics_rows], batch["input_ids"][statistics_rows],
                                               batch["completion_mask"][statistics_rows])


@torch.no_grad()
def token_statistics(model, prompts: Sequence[list[int]], completions: Sequence[list[int]], pad_token_id: int,
                     device=None, mask_pad_tokens: bool = False) -> dict[str, torch.Tensor]:
    """Per completion token, in one forward pass: `logps` = log π(token | prefix), the mean `expected_logps` and
    variance `logp_variance` of the log-probabilities over the vocabulary at that position, and `is_argmax`; each
    (rows, longest completion), zero past a row's end, with `mask` (1 on a row's completion tokens). The token-level
    statistics membership-inference and memorization scores are built from (`npo_trl.eval.privacy`)."""
    batch = _collate(prompts, completions, pad_token_id, device or model_device(model), mask_pad_tokens)
    return _completion_token_statistics(_logits(model, batch), batch["input_ids"], batch["completion_mask"])


def shared_prefix_length(prompts: Sequence[list[int]]) -> int:
    """How many leading tokens all `prompts` have in common (TRL's `common_prefix_length`, over a group)."""
    return min(common_prefix_length(prompts[0], p) for p in prompts)


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
                    pad_token_id: int, device=None, mask_pad_tokens: bool = False,
                    first_candidate_statistics: bool = False):
    """`sequence_logps` of rows that each hold `num_candidates` consecutive (prompt, completion) pairs with a common
    question (TOFU scores an answer, its paraphrase and its perturbations), shape (rows, num_candidates).

    Each row's shared prompt, all but its last token, runs once; its key-value cache is repeated for the candidates,
    which then run from that last token on. The values are `sequence_logps`' up to float rounding (4e-6 in fp32),
    for a quarter to a half fewer token-passes on TOFU's rows (the question runs once instead of 5-7 times). Every row
    needs a shared prompt of >= 2 tokens, and the model a full-attention cache (`can_share_prefix`). With
    `first_candidate_statistics`, also returns the `token_statistics` of each row's first candidate (its answer) from
    the same pass: (logps, statistics).
    """
    if not can_share_prefix(model):
        raise ValueError(f"candidate_logps needs a full-attention key-value cache, which {type(model).__name__} does "
                         "not have (see can_share_prefix): use sequence_logps.")
    device = device or model_device(model)
    k = num_candidates
    groups = [prompts[i:i + k] for i in range(0, len(prompts), k)]
    shared = [shared_prefix_length(group) - 1 for group in groups]  # the cached part of each row's prompt
    if min(shared) < 1:
        raise ValueError("candidate_logps needs every row's candidates to share a prompt of >= 2 tokens.")
    prefix = _collate([g[0][:n] for g, n in zip(groups, shared, strict=False)], [[]] * len(groups), pad_token_id,
                      device, mask_pad_tokens)
    supports_keep = getattr(model, "_supports_logits_to_keep", lambda: False)()
    cache = model(input_ids=prefix["input_ids"], attention_mask=prefix["attention_mask"], use_cache=True,
                  position_ids=torch.arange(prefix["input_ids"].size(1), device=device).expand_as(prefix["input_ids"]),
                  **({"logits_to_keep": 1} if supports_keep else {})).cache
    cache.batch_repeat_interleave(k)
    offsets = [n for n in shared for _ in range(k)]
    rest = _collate([p[n:] for p, n in zip(prompts, offsets, strict=False)], completions, pad_token_id, device,
                    mask_pad_tokens)
    positions = torch.tensor(offsets, device=device)[:, None] + torch.arange(rest["input_ids"].size(1), device=device)
    logits = model(input_ids=rest["input_ids"], use_cache=True, cache=cache, position_ids=positions,
                   attention_mask=torch.cat([prefix["attention_mask"].repeat_interleave(k, 0),
                                             rest["attention_mask"]], dim=1)).logits
    logps = _completion_logps(logits, rest["input_ids"], rest["completion_mask"]).view(-1, k)
    if not first_candidate_statistics:
        return logps
    return logps, _completion_token_statistics(logits[::k], rest["input_ids"][::k], rest["completion_mask"][::k])


@torch.no_grad()
def reference_kl(model, ref_model, prompts: Sequence[list[int]], completions: Sequence[list[int]],
                 pad_token_id: int, device=None, mask_pad_tokens: bool = False) -> torch.Tensor:
    """Per row, KL(π_ref ‖ π_θ) between next-token distributions, averaged over the completion tokens (the direction
    of `npo_trl.losses.kl_loss` and of the NPO authors' code)."""
    batch = _collate(prompts, completions, pad_token_id, device or model_device(model), mask_pad_tokens)
    logprobs, ref_logprobs = (_at_least_fp32(_logits(m, batch)[:, :-1]).log_softmax(-1) for m in (model, ref_model))
    mask = batch["completion_mask"][:, 1:].bool()
    return torch.stack([losses.kl_loss(lp[m], ref_lp[m])
                        for lp, ref_lp, m in zip(logprobs, ref_logprobs, mask, strict=False)])


@torch.no_grad()
def generate_ids(model, processing_class, prompts: Sequence[list[int]], max_new_tokens: int = 200,
                 synced_gpus: bool = False, device=None, mask_pad_tokens: bool = False, timer=None) -> torch.Tensor:
    """Greedy continuations of a batch of left-padded prompts, stopping at EOS: the new token ids, (rows, new tokens),
    padded with the pad token after a row's EOS. `mask_pad_tokens` as for `_collate`; `timer` (a
    `npo_trl.eval.runner.PassTimer`) counts the "generated_tokens" (up to each answer's EOS)."""
    tokenizer, pad_id = tokenizer_of(processing_class), pad_id_of(processing_class)
    eos_token_id = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    device = device or model_device(model)
    input_ids = pad([torch.tensor(p) for p in prompts], padding_value=pad_id, padding_side="left").to(device)
    attention_mask = pad([torch.ones(len(p), dtype=torch.long) for p in prompts], padding_value=0,
                         padding_side="left").to(device)
    if mask_pad_tokens:
        attention_mask = attention_mask * (input_ids != pad_id)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
                              eos_token_id=eos_token_id if eos_token_id is not None else tokenizer.eos_token_id)
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                         synced_gpus=synced_gpus)[:, input_ids.size(1):]
    if timer is not None:
        timer.count("generated_tokens", (out != pad_id).sum().item())
    return out


@torch.no_grad()
def generate_answers(model, processing_class, prompts: Sequence[list[int]], max_new_tokens: int = 200,
                     synced_gpus: bool = False, device=None, mask_pad_tokens: bool = False, timer=None,
                     strip: bool = True) -> list[str]:
    """`generate_ids`' greedy answers, decoded (special tokens skipped, surrounding whitespace stripped unless
    `strip=False`)."""
    out = generate_ids(model, processing_class, prompts, max_new_tokens, synced_gpus, device, mask_pad_tokens, timer)
    answers = tokenizer_of(processing_class).batch_decode(out, skip_special_tokens=True)
    return [answer.strip() for answer in answers] if strip else answers
