"""Greedy generation for evaluation: the answers ROUGE scores, as `model.generate` would give them, for less work.

`generate_ids` decodes a batch greedily on the model's own key-value cache (any model `scoring.can_share_prefix`
accepts; others go through `model.generate`) and saves work as follows, none of which changes a token beyond
float rounding:

- A row leaves the batch once it has produced EOS: the steps after that run only the rows still decoding.
- A row may come with a *draft*, tokens greedy decoding is expected to give (TOFU: the answer tokens the scoring pass
  already shows it reproduces, `logit_stats.greedy_agreement`). One forward pass over prompt + draft gives the model's
  greedy choice at every draft position; the leading draft tokens that are those choices are what greedy decoding
  would produce first (each is the argmax given the tokens before it, which are the draft's), and the first choice
  that differs is the next token. Decoding goes on from there. Speculative decoding (Leviathan et al. 2023, arXiv
  2211.17192) with the answer as the draft model's output, verified greedily.
- Each decoding pass verifies the same way a few tokens per row proposed by `propose_draft`: a row's *hint* (MUSE
  VerbMem: the true continuation, for as long as the row follows it), else what followed the last two tokens where
  they occurred before (prompt-lookup decoding: a model repeating itself, as untrained and collapsed models do, has
  its repetition proposed). A draft taken whole doubles the row's next one, up to `MAX_DRAFT`; a rejected one
  shrinks it; `draft_width` keeps rows with short or no drafts from padding the batch. Where nothing is proposed a
  pass decodes one token, as plain decoding does.
- A row's prompt may come with its key-value cache from an earlier pass (TOFU: the scoring pass runs every question
  but its last token; `scoring.candidate_logps`): the prefill then runs only the rest of the prompt.
- A prompt start common to every row of the batch (MUSE's KnowMem few-shot examples) runs once; its key-value cache
  is repeated for the rows, as `scoring.candidate_logps` does for a question's candidate answers. Otherwise prompts
  of similar length are prefilled together (`runner.length_groups`) and their caches stacked for decoding.
- Positions, attention masks and the end of generation follow `model.generate` (`GenerationConfig(do_sample=False)`:
  positions counted from the attention mask, a row's output padded with the pad token after its EOS).

Greedy choices are float argmaxes: a pass over several tokens and a one-token step compute the same logits up to
rounding, so two candidates within ~1e-6 of each other could in principle swap; the tests compare the answers with
`model.generate`'s on trained and untrained models.
"""

from collections.abc import Sequence

import torch
from transformers import DynamicCache, GenerationConfig
from trl.trainer.utils import pad

from ..prompts import tokenizer_of
from .runner import length_groups
from .scoring import can_share_prefix, model_device, pad_id_of, shared_prefix_length

# Key-value cache positions of a greedy-generation batch when its rows are not given: 8192 positions are 0.4 GB for a
# 135M Llama in float32, 4 GB for a 7B one in bfloat16.
GENERATION_CACHE_TOKENS = 8192
# A prompt start common to a batch runs once from this many tokens on (shorter: not worth a forward pass of its own).
MIN_SHARED_PREFIX = 16
# Drafts in the decoding loop (`propose_draft`): the n-gram looked up, a row's first draft length, and the longest
# (a draft taken whole doubles the next one's length).
LOOKUP_NGRAM, FIRST_DRAFT, MAX_DRAFT = 2, 4, 32
# A decoding pass with drafts runs at most this many tokens (rows × (1 + draft width)), unless its rows alone are more:
# a pass's fixed cost (the weights read once) is paid off by then (on one CPU core, a 135M model's pass costs ~86 ms
# + 3.6 ms per token).
DRAFT_PASS_TOKENS = 128


def generation_rows(num_rows: int, longest_prompt: int, max_new_tokens: int, batch_size: int | None = None) -> int:
    """Rows per greedy-generation batch for `num_rows` rows whose longest prompt has `longest_prompt` tokens:
    `batch_size`, or as many as keep the key-value cache within `GENERATION_CACHE_TOKENS` positions (rows × (longest
    prompt + `max_new_tokens`)); then evened out, so that no batch is much smaller than the others. A decoding step
    costs nearly as much for a few rows as for many (benchmarks/RESULTS.md), so the batch is as large as memory
    allows."""
    size = batch_size or max(1, GENERATION_CACHE_TOKENS // (longest_prompt + max_new_tokens))
    return -(-num_rows // -(-num_rows // size)) if num_rows else 1


def eos_token_ids(model, processing_class) -> set[int]:
    """The tokens that end an answer: the model's generation config's EOS token(s), else the tokenizer's."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos = tokenizer_of(processing_class).eos_token_id if eos is None else eos
    return set(eos) if isinstance(eos, (list, tuple)) else {eos}


def _prompt_batch(prompts, pad_id: int, device, mask_pad_tokens: bool):
    input_ids = pad([torch.tensor(p) for p in prompts], padding_value=pad_id, padding_side="left").to(device)
    attention_mask = pad([torch.ones(len(p), dtype=torch.long) for p in prompts], padding_value=0,
                         padding_side="left").to(device)
    if mask_pad_tokens:
        attention_mask = attention_mask * (input_ids != pad_id)
    return input_ids, attention_mask


def _any_process(flag: bool, synced_gpus: bool, device) -> bool:
    """Whether `flag` holds on any process (under `synced_gpus`), else on this one."""
    if not synced_gpus:
        return flag
    value = torch.tensor(float(flag), device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def _prefill(model, prompts, drafts, pad_id: int, device, mask_pad_tokens: bool, keep_logits: bool,
             starts: int | Sequence[int] = 0, prefix_cache=None, prefix_mask=None):
    """One forward pass over these rows' prompts (after each row's first `starts` tokens, whose cache `prefix_cache`
    holds, with its attention mask `prefix_mask`) and drafts: (cache, attention mask, each row's last position, its
    accepted draft tokens, greedy's choice after them). The draft tokens after the accepted ones are masked out of
    the context."""
    starts = [starts] * len(prompts) if isinstance(starts, int) else starts
    input_ids, attention_mask = _prompt_batch([p[s:] for p, s in zip(prompts, starts, strict=True)], pad_id, device,
                                              mask_pad_tokens)
    width = max(len(d) for d in drafts)
    draft_ids = pad([torch.tensor(d, dtype=torch.long) for d in drafts], padding_value=pad_id).to(device) \
        if width else input_ids[:, :0]
    draft_mask = (torch.arange(width, device=device)[None] < torch.tensor([len(d) for d in drafts],
                                                                          device=device)[:, None]).long()
    parts = [prefix_mask.expand(len(prompts), -1)] if prefix_mask is not None else []
    attention_mask = torch.cat([*parts, attention_mask, draft_mask], dim=1)
    positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    prompt_end = (prefix_mask.size(1) if prefix_mask is not None else 0) + input_ids.size(1)
    out = model(input_ids=torch.cat([input_ids, draft_ids], dim=1), attention_mask=attention_mask,
                position_ids=positions[:, prompt_end - input_ids.size(1):], use_cache=True, cache=prefix_cache,
                **({"logits_to_keep": width + 1} if keep_logits else {}))
    choices = out.logits[:, -(width + 1):].argmax(-1)  # greedy's token after the prompt and after each draft token
    accepted = ((choices[:, :width] == draft_ids) & draft_mask.bool()).long().cumprod(1).sum(1)
    attention_mask[:, prompt_end:] *= (torch.arange(width, device=device)[None] < accepted[:, None]).long()
    following = choices.gather(1, accepted[:, None]).squeeze(1)
    return out.cache, attention_mask, positions[:, prompt_end - 1] + accepted, accepted, following


def _usable_caches(prompt_caches, prompts) -> list:
    """Of each row's prompt cache (`(tokens, layers, mask)`: the key-value cache of the prompt's first tokens, one
    (keys, values, None) per layer, and their attention mask; see `scoring.candidate_logps`), those that hold the
    beginning of the row's prompt and leave at least one prompt token to run; None for the others."""
    return [cache if cache is not None and len(cache[0]) < len(prompt) and list(prompt[:len(cache[0])]) ==
            list(cache[0]) else None for cache, prompt in zip(prompt_caches or [None] * len(prompts), prompts,
                                                              strict=True)]


def _stacked_prompt_caches(caches):
    """Rows' prompt caches (`_usable_caches`', some None) as one left-padded cache and its attention mask."""
    template = next(c for c in caches if c is not None)
    empty = ([], [(k[:, :, :0], v[:, :, :0], None) for k, v, _ in template[1]], template[2][:, :0])
    return _stack_caches([(c or empty)[1] for c in caches], [(c or empty)[2] for c in caches])


def _stack_caches(caches, masks):
    """Several prefills' caches and attention masks as one batch: each left-padded with masked-out zero positions to
    the widest (positions are explicit, so where a masked position sits does not matter)."""
    width = max(mask.size(1) for mask in masks)
    layers = []
    for tensors in zip(*[list(cache) for cache in caches], strict=True):
        keys = [torch.nn.functional.pad(k, (0, 0, width - k.size(2), 0)) for k, _, _ in tensors]
        values = [torch.nn.functional.pad(v, (0, 0, width - v.size(2), 0)) for _, v, _ in tensors]
        layers.append((torch.cat(keys), torch.cat(values)))
    return DynamicCache(ddp_cache_data=layers), torch.cat([torch.nn.functional.pad(m, (width - m.size(1), 0))
                                                           for m in masks])


@torch.no_grad()
def greedy_decode(model, prompts: Sequence[list[int]], max_new_tokens: int | Sequence[int], eos_ids: set[int],
                  pad_id: int, drafts: Sequence[list[int] | None] | None = None, synced_gpus: bool = False,
                  device=None, mask_pad_tokens: bool = False, hints: Sequence[list[int] | None] | None = None,
                  prompt_caches: Sequence | None = None) -> list[list[int]]:
    """Each prompt's greedy continuation, up to and including its first EOS token, at most `max_new_tokens` tokens
    (one number, or one per row; see the module docstring for `drafts`, `hints` and `prompt_caches`). Under
    `synced_gpus` (ZeRO-3, FSDP) every process runs a forward pass for as long as any process has a row decoding."""
    device = device or model_device(model)
    limits = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    drafts = [list(d or [])[:limit] for d, limit in zip(drafts or [None] * len(prompts), limits, strict=True)]
    keep_logits = getattr(model, "_supports_logits_to_keep", lambda: False)()
    caches = _usable_caches(prompt_caches, prompts)
    starts = [len(c[0]) if c is not None else 0 for c in caches]
    # a prompt start common to the batch (MUSE's KnowMem few-shot examples) runs once, its cache repeated per row
    shared = shared_prefix_length(prompts) - 1 if len(prompts) > 1 and not any(starts) else 0
    if _any_process(shared < MIN_SHARED_PREFIX, synced_gpus, device):  # every process, or none, runs it once
        shared = 0
    if shared:
        prefix_ids = torch.tensor([prompts[0][:shared]], dtype=torch.long, device=device)
        prefix_mask = (prefix_ids != pad_id).long() if mask_pad_tokens else torch.ones_like(prefix_ids)
        cache = model(input_ids=prefix_ids, attention_mask=prefix_mask, use_cache=True,
                      position_ids=(prefix_mask.cumsum(-1) - 1).masked_fill(prefix_mask == 0, 0),
                      **({"logits_to_keep": 1} if keep_logits else {})).cache
        cache.batch_repeat_interleave(len(prompts))
        cache, attention_mask, last_position, accepted, following = _prefill(
            model, prompts, drafts, pad_id, device, mask_pad_tokens, keep_logits, shared, cache, prefix_mask)
        order = list(range(len(prompts)))
    else:  # prompts of similar length prefilled together (after their cached starts), then decoded as one batch
        groups = [list(range(len(prompts)))] if synced_gpus else \
            length_groups([len(p) - s + len(d) for p, s, d in zip(prompts, starts, drafts, strict=True)])
        prefills = []
        for g in groups:
            cached = _stacked_prompt_caches([caches[i] for i in g]) if any(starts[i] for i in g) else (None, None)
            prefills.append(_prefill(model, [prompts[i] for i in g], [drafts[i] for i in g], pad_id, device,
                                     mask_pad_tokens, keep_logits, [starts[i] for i in g], *cached))
        cache, attention_mask = _stack_caches([p[0] for p in prefills], [p[1] for p in prefills])
        last_position, accepted, following = (torch.cat([p[k] for p in prefills]) for k in (2, 3, 4))
        order = [i for g in groups for i in g]  # the cache's rows, as rows of the batch

    generated, active = [None] * len(prompts), []
    for slot, row in enumerate(order):
        tokens = drafts[row][:int(accepted[slot])] + [int(following[slot])]
        end = next((i + 1 for i, t in enumerate(tokens) if t in eos_ids), None)
        generated[row] = tokens[:min(end or limits[row], limits[row])]
        if end is None and len(generated[row]) < limits[row]:
            active.append(row)
    rows, lengths = order, dict.fromkeys(active, FIRST_DRAFT)
    while _any_process(bool(active), synced_gpus, device):
        kept = [rows.index(r) for r in active] or [0]  # a process with no row left runs one for the others
        if len(kept) < len(rows):
            index = torch.tensor(kept, device=device)
            cache.batch_select_indices(index)
            attention_mask, last_position = attention_mask[index], last_position[index]
            rows = [rows[i] for i in kept]
        room = DRAFT_PASS_TOKENS // len(rows) - 1  # draft tokens a row may have in this pass (none: no lookup)
        proposals = [propose_draft(prompts[r] + generated[r], generated[r], hints[r] if hints else None,
                                   min(lengths[r], limits[r] - len(generated[r]) - 1, room))
                     if r in active and room > 0 else [] for r in rows]
        width = draft_width([len(p) for p in proposals])
        proposals = [p[:width] for p in proposals]
        step_ids = torch.tensor([[generated[r][-1]] + p + [pad_id] * (width - len(p)) for r, p in
                                 zip(rows, proposals, strict=True)], device=device)
        step_mask = (torch.arange(width + 1, device=device)[None] <=
                     torch.tensor([len(p) for p in proposals], device=device)[:, None]).long()
        attention_mask = torch.cat([attention_mask, step_mask], dim=1)
        out = model(input_ids=step_ids, attention_mask=attention_mask, use_cache=True, cache=cache,
                    position_ids=last_position[:, None] + 1 + torch.arange(width + 1, device=device),
                    **({"logits_to_keep": width + 1} if keep_logits else {}))
        cache, choices = out.cache, out.logits[:, -(width + 1):].argmax(-1).tolist()
        taken = []  # per row, how many of its proposed tokens greedy decoding confirms
        for r, p, row_choices in zip(rows, proposals, choices, strict=True):
            n = next((i for i, t in enumerate(p) if row_choices[i] != t), len(p))
            taken.append(n)
            if r not in active:
                continue
            if p:  # a draft taken whole doubles the next one; a rejected one shrinks it (to none after misses)
                lengths[r] = min(2 * lengths[r], MAX_DRAFT) if n == len(p) else n or lengths[r] // 2
            for token in p[:n] + [row_choices[n]]:
                generated[r].append(token)
                if token in eos_ids or len(generated[r]) >= limits[r]:
                    active.remove(r)
                    break
        taken = torch.tensor(taken, device=device)
        attention_mask[:, -width - 1:] = step_mask * (torch.arange(width + 1, device=device)[None] <= taken[:, None])
        last_position = last_position + 1 + taken
    return generated


def propose_draft(context: Sequence[int], generated: Sequence[int], hint: Sequence[int] | None, length: int
                  ) -> list[int]:
    """Up to `length` tokens greedy decoding may give next, for the decoding loop to verify in its next pass: the
    `hint`'s next tokens while the row has generated its beginning (MUSE VerbMem: the true continuation), else what
    followed the last earlier occurrence of the `context`'s last `LOOKUP_NGRAM` tokens (prompt-lookup decoding,
    Saxena 2023; as in `transformers`' `prompt_lookup_num_tokens`), copied on into the draft itself where it runs past
    the end, so that a repeated token or phrase is proposed as many times as `length` allows. `[]` when there is none:
    the pass then decodes one token, as without drafts."""
    if length < 1:
        return []
    if hint is not None and list(hint[:len(generated)]) == list(generated):
        return list(hint[len(generated):len(generated) + length])
    tail, context = list(context[-LOOKUP_NGRAM:]), list(context)
    for start in range(len(context) - LOOKUP_NGRAM - 1, -1, -1):
        if context[start:start + LOOKUP_NGRAM] == tail:
            source = start + LOOKUP_NGRAM  # the token after the earlier occurrence
            for i in range(length):
                context.append(context[source + i])
            return context[-length:]
    return []


def draft_width(lengths: Sequence[int]) -> int:
    """Draft tokens per row of the next decoding pass: the longest such that at least half of the batch's draft
    positions hold a proposed token (rows with shorter or no drafts are padded: a pass costs rows × (1 + width)
    token-passes), so that a few rows with long drafts do not make the whole batch run padding."""
    width = 0
    for candidate in sorted(set(lengths)):
        if candidate and sum(min(n, candidate) for n in lengths) >= 0.5 * len(lengths) * candidate:
            width = candidate
    return min(width, max(0, DRAFT_PASS_TOKENS // max(1, len(lengths)) - 1))


@torch.no_grad()
def generate_ids(model, processing_class, prompts: Sequence[list[int]], max_new_tokens: int | Sequence[int] = 200,
                 synced_gpus: bool = False, device=None, mask_pad_tokens: bool = False, timer=None,
                 drafts: Sequence[list[int] | None] | None = None, hints: Sequence[list[int] | None] | None = None,
                 prompt_caches: Sequence | None = None) -> torch.Tensor:
    """Greedy continuations of a batch of prompts, stopping at EOS or after `max_new_tokens` (one number, or one per
    row): the new token ids, (rows, new tokens), padded with the pad token after a row's end, as
    `model.generate(do_sample=False)` returns them. `drafts` and `hints`, optional, are the answers expected,
    `prompt_caches` the rows' prompts already run (see the module docstring); `mask_pad_tokens` hides pad-token ids
    inside the prompts from attention (`npo_trl.eval.scoring`'s); `timer` (a `npo_trl.eval.runner.PassTimer`) counts
    the "generated_tokens" (up to each answer's EOS). A model `scoring.can_share_prefix` refuses goes through
    `model.generate`."""
    pad_id, eos_ids = pad_id_of(processing_class), eos_token_ids(model, processing_class)
    device = device or model_device(model)
    if can_share_prefix(model):
        rows = greedy_decode(model, prompts, max_new_tokens, eos_ids, pad_id, drafts, synced_gpus, device,
                             mask_pad_tokens, hints, prompt_caches)
        out = pad([torch.tensor(r, dtype=torch.long) for r in rows], padding_value=pad_id).to(device)
    else:
        input_ids, attention_mask = _prompt_batch(prompts, pad_id, device, mask_pad_tokens)
        limits = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
        config = GenerationConfig(max_new_tokens=max(limits), do_sample=False, pad_token_id=pad_id,
                                  eos_token_id=sorted(eos_ids))
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                             synced_gpus=synced_gpus)[:, input_ids.size(1):]
        out = out.masked_fill(torch.arange(out.size(1), device=device)[None] >= torch.tensor(limits, device=device)[
            :, None], pad_id)  # each row cut at its own limit
    if timer is not None:
        timer.count("generated_tokens", (out != pad_id).sum().item())
    return out


@torch.no_grad()
def generate_answers(model, processing_class, prompts: Sequence[list[int]], max_new_tokens: int | Sequence[int] = 200,
                     synced_gpus: bool = False, device=None, mask_pad_tokens: bool = False, timer=None,
                     strip: bool = True, drafts: Sequence[list[int] | None] | None = None,
                     prompt_caches: Sequence | None = None) -> list[str]:
    """`generate_ids`' greedy answers, decoded (special tokens skipped, surrounding whitespace stripped unless
    `strip=False`)."""
    out = generate_ids(model, processing_class, prompts, max_new_tokens, synced_gpus, device, mask_pad_tokens, timer,
                       drafts, prompt_caches=prompt_caches)
    answers = tokenizer_of(processing_class).batch_decode(out, skip_special_tokens=True)
    return [answer.strip() for answer in answers] if strip else answers
