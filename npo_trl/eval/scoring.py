"""Batched model passes shared by every benchmark: scoring answers given their prompts, the KL to a reference model,
and greedy generation. Each takes token ids (see `npo_trl.prompts` for how text becomes them) and works on any
process's model, unwrapped; `npo_trl.eval.runner` shards rows across processes and gathers the results.

Rows are collated exactly as `NPOTrainer` collates its training rows (`DataCollatorForUnlearning`, right padding),
so a score is the log-probability the trainer would compute for the same tokens, length-normalised.
"""

import contextlib
from collections.abc import Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer
from trl.data_utils import common_prefix_length

from .. import losses
from ..data import DataCollatorForUnlearning
from ..prompts import tokenizer_of
from .logit_stats import (
    LOGSUMEXP_ROWS,
    at_least_fp32,
    completion_logps,
    completion_token_statistics,
    greedy_agreement,
    normaliser,
)
from .prefix_tree import PrefixTree, tree_batch
from .runner import length_groups

# Padding allowed when trees of different sizes share a pass (`length_groups`' slack): a padded node costs as much as
# a tree's, a pass more a little fixed cost.
TREE_SLACK = 0.02


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


@contextlib.contextmanager
def _lm_head_at(model, positions: torch.Tensor | None):
    """While open, the model's LM head (its output embeddings) projects only the hidden states at `positions`, a
    boolean (rows, length) mask over the last `length` positions of its input (prompt-learning PEFT prepends virtual
    tokens), flattened in row order: the model's logits come out (1, positions.sum(), vocab). The model's forward still
    applies whatever follows the head (soft-capping, scaling), so these are its logits at those positions, without
    the (rows, length, vocab) tensor of all of them (at a 50k vocabulary the largest tensor of a pass). `None`, or a
    model without output embeddings: every position, as usual."""
    get_head = getattr(model, "get_output_embeddings", None)  # a callable reference model may have none
    head = get_head() if positions is not None and get_head is not None else None
    if head is None:
        yield False
        return

    def select(module, args):
        return (args[0][:, -positions.size(1):][positions][None], *args[1:])

    handle = head.register_forward_pre_hook(select)
    try:
        yield True
    finally:
        handle.remove()


def _predicting(completion_mask: torch.Tensor) -> torch.Tensor:
    """The positions whose next token is a completion token: (rows, length), boolean."""
    positions = torch.zeros_like(completion_mask, dtype=torch.bool)
    positions[:, :-1] = completion_mask[:, 1:].bool()
    return positions


def _completion_logits(model, input_ids, completion_mask, **kwargs) -> torch.Tensor:
    """The model's next-token logits at the positions that predict a completion token, (completion tokens, vocab),
    in row order: one forward pass of `input_ids` (with `kwargs`: attention mask, cache, positions), the LM head run
    at those positions only (`_lm_head_at`). With `use_cache=True`, also the pass's cache: (logits, cache)."""
    positions = _predicting(completion_mask)
    with _lm_head_at(model, positions) as selected:
        out = model(input_ids=input_ids, **kwargs)
    logits = out.logits[0] if selected else out.logits[:, -input_ids.size(1):][positions]
    return (logits, out.cache) if kwargs.get("use_cache") else logits


def _row_caches(cache, tokens: Sequence[list[int]], lengths: Sequence[int], attention_mask) -> list:
    """Per row of a pass, the key-value cache of its first `lengths[r]` tokens (of `tokens[r]`), as
    `npo_trl.eval.generation.greedy_decode` takes a prompt's: (tokens, [(keys, values, None) per layer], attention
    mask); None where the length is 0, or where a pad token inside is hidden from attention (which generation would
    place differently)."""
    return [(list(tokens[r][:n]), [(keys[r:r + 1, :, :n].clone(), values[r:r + 1, :, :n].clone(), None)
                                   for keys, values, _ in cache], attention_mask[r:r + 1, :n].clone())
            if n > 0 and bool(attention_mask[r, :n].all()) else None for r, n in enumerate(lengths)]


@torch.no_grad()
def sequence_logps(model, prompts: Sequence[list[int]], completions: Sequence[list[int]], pad_token_id: int,
                   device=None, mask_pad_tokens: bool = False, statistics_rows: slice | None = None):
    """Length-normalised log-probability of each completion given its prompt: the mean over the completion tokens
    of log π(token | prefix), for the whole batch in one forward pass. Returns a tensor of shape (rows,), float32
    (float64 for a float64 model); with `statistics_rows` (a slice of the rows), also the `token_statistics` of those
    rows from the same pass: (logps, statistics)."""
    batch = _collate(prompts, completions, pad_token_id, device or model_device(model), mask_pad_tokens)
    logits = _completion_logits(model, batch["input_ids"], batch["completion_mask"],
                                attention_mask=batch["attention_mask"], use_cache=False)
    logps = completion_logps(logits, batch["input_ids"], batch["completion_mask"])
    if statistics_rows is None:
        return logps
    return logps, completion_token_statistics(logits, batch["input_ids"], batch["completion_mask"], statistics_rows)


@torch.no_grad()
def token_statistics(model, prompts: Sequence[list[int]], completions: Sequence[list[int]], pad_token_id: int,
                     device=None, mask_pad_tokens: bool = False, cache_lengths: Sequence[int] | None = None
                     ) -> dict[str, torch.Tensor]:
    """Per completion token, in one forward pass: `logps` = log π(token | prefix), the mean `expected_logps` and
    variance `logp_variance` of the log-probabilities over the vocabulary at that position, and `is_argmax`; each
    (rows, longest completion), zero past a row's end, with `mask` (1 on a row's completion tokens). The token-level
    statistics membership-inference and memorization scores are built from (`npo_trl.eval.privacy`). With
    `cache_lengths` (per row, a number of leading tokens), also `prompt_caches`: per row, the pass's cache of those
    tokens (`_row_caches`; None where 0), for generating from a prompt they begin (MUSE: VerbMem's, PrivLeak's)."""
    batch = _collate(prompts, completions, pad_token_id, device or model_device(model), mask_pad_tokens)
    keep = cache_lengths is not None and any(cache_lengths)
    out = _completion_logits(model, batch["input_ids"], batch["completion_mask"],
                             attention_mask=batch["attention_mask"], use_cache=keep)
    logits, cache = out if keep else (out, None)
    table = completion_token_statistics(logits, batch["input_ids"], batch["completion_mask"])
    if keep:
        table["prompt_caches"] = _row_caches(cache, [p + c for p, c in zip(prompts, completions, strict=True)],
                                             cache_lengths, batch["attention_mask"])
    return table


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


def can_run_tree(model) -> bool:
    """Whether `candidate_logps` may run: a full-attention cache (`can_share_prefix`) and an attention that takes a
    4D mask (PyTorch's SDPA or the eager one; flash-attention kernels take none), from the config, so every process
    decides alike."""
    config = getattr(model, "config", None)
    return can_share_prefix(model) and getattr(config, "_attn_implementation", None) in ("sdpa", "eager")


@torch.no_grad()
def candidate_logps(model, prompts: Sequence[list[int]], completions: Sequence[list[int]], num_candidates: int,
                    pad_token_id: int, device=None, mask_pad_tokens: bool = False,
                    first_candidate_statistics: bool = False, first_candidate_greedy: bool = False,
                    synced_gpus: bool = False, prompt_caches: bool = False):
    """`sequence_logps` of rows that each hold `num_candidates` consecutive (prompt, completion) pairs with a common
    question (TOFU scores an answer, its paraphrase and its perturbations), shape (rows, num_candidates).

    Each row's shared prompt, all but its last token, runs once; the rest of its candidates (from that last token
    on) runs as one prefix tree (`npo_trl.eval.prefix_tree`): a token sequence that begins several candidates runs
    once, and the LM head runs once per node that predicts a completion token. The values are `sequence_logps'` up to
    float rounding (4e-6 in fp32), for a third to a half fewer token-passes on TOFU's rows. Every row needs a shared
    prompt of >= 2 tokens, and the model a full-attention cache and an attention that takes a 4D mask
    (`can_run_tree`). Trees of similar size run together (`length_groups`); under `synced_gpus` (ZeRO-3, FSDP: every
    process must run as many passes) all of them at once. With `first_candidate_statistics`, also returns the
    `token_statistics` of each row's first candidate (its answer) from the same pass: (logps, statistics); with
    `first_candidate_greedy`, that dict also holds `greedy_agreement` and `greedy_next` (see `greedy_agreement`); with
    `prompt_caches`, also `prompt_caches`: per row, the cache of the part of its prompt that ran once (`_row_caches`).
    """
    if not can_run_tree(model):
        raise ValueError(f"candidate_logps needs a full-attention key-value cache and an attention that takes a 4D "
                         f"mask (sdpa, eager), which {type(model).__name__} does not have (see can_run_tree): use "
                         "sequence_logps.")
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
    trees = [PrefixTree([(p + c)[n:] for p, c in zip(prompts[r * k:(r + 1) * k], completions[r * k:(r + 1) * k],
                                                      strict=True)]) for r, n in enumerate(shared)]
    dtype = next(model.parameters()).dtype
    token_logps, owners = [], []  # per completion token: log π(token | prefix), and the candidate it belongs to
    firsts = [None] * len(groups)  # per row, its answer's logits, one row per answer token
    batches = [list(range(len(trees)))] if synced_gpus else length_groups([len(t) for t in trees], TREE_SLACK)
    for batch in batches:
        inputs = tree_batch([trees[r] for r in batch], [shared[r] for r in batch], prefix["attention_mask"][batch],
                            pad_token_id, dtype, mask_pad_tokens)
        # per completion token of the batch's candidates: the node that predicts it (row of the batch, node)
        spots, targets, owner = [], [], []
        for b, r in enumerate(batch):
            for j in range(r * k, (r + 1) * k):
                start = len(prompts[j]) - shared[r] - 1
                spots += [(b, node) for node in trees[r].paths[j - r * k][start:-1]]
                targets += completions[j]
                owner += [j] * len(completions[j])
        spot_rows, spot_nodes = (torch.tensor(x) for x in zip(*spots, strict=True))
        predicting = torch.zeros(inputs["input_ids"].shape, dtype=torch.bool)
        predicting[spot_rows, spot_nodes] = True
        place = ((predicting.flatten().cumsum(0) - 1).view(predicting.shape)[spot_rows, spot_nodes]).to(device)
        predicting = predicting.to(device)
        with _lm_head_at(model, predicting) as selected:
            logits = model(**inputs, cache=DynamicCache(ddp_cache_data=[(keys[batch], values[batch])
                                                                        for keys, values, _ in cache]),
                           use_cache=True).logits
        logits = logits[0] if selected else logits[predicting]
        # log π(v | node) = logit − logsumexp, in slices that keep the temporaries small (a fresh (nodes, vocab)
        # tensor costs page faults as well as its arithmetic)
        normalisers = torch.cat([normaliser(part) for part in logits.split(LOGSUMEXP_ROWS)])
        token_logps.append(at_least_fp32(logits[place, torch.tensor(targets, device=device)]) - normalisers[place])
        owner = torch.tensor(owner, device=device)
        owners.append(owner)
        if first_candidate_statistics or first_candidate_greedy:  # the answers' logits, for their statistics
            answer_logits = logits[place[owner % k == 0]].split([len(completions[r * k]) for r in batch])
            for r, row_logits in zip(batch, answer_logits, strict=True):
                firsts[r] = row_logits
    token_logps = torch.cat(token_logps)
    lengths = torch.tensor([len(c) for c in completions], device=device)
    logps = (token_logps.new_zeros(len(prompts)).index_add_(0, torch.cat(owners), token_logps) / lengths).view(-1, k)
    if not (first_candidate_statistics or first_candidate_greedy or prompt_caches):
        return logps
    answers = _collate([[0]] * len(groups), [completions[r * k] for r in range(len(groups))], pad_token_id, device)
    answer_logits = torch.cat(firsts) if first_candidate_statistics or first_candidate_greedy else None
    table = completion_token_statistics(answer_logits, answers["input_ids"], answers["completion_mask"]) \
        if first_candidate_statistics else {}
    if first_candidate_greedy:
        agreement, following = greedy_agreement(answer_logits, answers["input_ids"], answers["completion_mask"],
                                                torch.arange(len(groups), device=device))
        table.update(greedy_agreement=agreement[:, None], greedy_next=following[:, None])
    if prompt_caches:
        table["prompt_caches"] = _row_caches(cache, prompts[::k], shared, prefix["attention_mask"])
    return logps, table


@torch.no_grad()
def reference_kl(model, ref_model, prompts: Sequence[list[int]], completions: Sequence[list[int]],
                 pad_token_id: int, device=None, mask_pad_tokens: bool = False) -> torch.Tensor:
    """Per row, KL(π_ref ‖ π_θ) between next-token distributions, averaged over the completion tokens (the direction
    of `npo_trl.losses.kl_loss` and of the NPO authors' code)."""
    batch = _collate(prompts, completions, pad_token_id, device or model_device(model), mask_pad_tokens)
    logprobs, ref_logprobs = (at_least_fp32(_completion_logits(m, batch["input_ids"], batch["completion_mask"],
                                                                attention_mask=batch["attention_mask"],
                                                                use_cache=False)).log_softmax(-1)
                              for m in (model, ref_model))
    lengths = batch["completion_mask"][:, 1:].sum(1).tolist()
    return torch.stack([losses.kl_loss(lp, ref_lp) for lp, ref_lp in zip(logprobs.split(lengths),
                                                                          ref_logprobs.split(lengths), strict=True)])
