"""Greedy generation for evaluation: the answers ROUGE scores, as `model.generate` would give them, for less work.

`generate_ids` decodes a batch greedily on the model's own key-value cache (any model `scoring.can_share_prefix`
accepts; others go through `model.generate`) and saves work as follows, none of which changes a token beyond
float rounding:

- A row leaves the batch once it has produced EOS: the steps after that run only the rows still decoding.
- A row may come with a *draft*, tokens greedy decoding is expected to give (TOFU: the answer tokens the scoring pass
  already shows it reproduces, `scoring.greedy_agreement`; MUSE VerbMem: the reference continuation). One forward
  pass over prompt + draft gives the model's greedy choice at every draft position; the leading draft tokens that are
  those choices are what greedy decoding would produce first (each is the argmax given the tokens before it, which
  are the draft's), and the first choice that differs is the next token. Decoding goes on from there. A model that
  still knows an answer reproduces it in that one pass; for one that does not, the draft's tokens cost a little
  prefill (TOFU's drafts stop at the first token greedy would not give, so they cost nothing). Speculative
  decoding (Leviathan et al. 2023, arXiv 2211.17192) with the reference answer as the draft model's output,
  verified greedily.
- A prompt start common to every row of the batch (MUSE's KnowMem few-shot examples) runs once; its key-value cache
  is repeated for the rows, as `scoring.candidate_logps` does for a question's candidate answers. Otherwise prompts
  of similar length are prefilled together (`scoring.length_groups`) and their caches stacked for decoding.
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
from .scoring import can_share_prefix, length_groups, model_device, pad_id_of, shared_prefix_length

# Key-value cache positions of a greedy-generation batch when its rows are not given: 8192 positions are 0.4 GB for a
# 135M Llama in float32, 4 GB for a 7B one in bfloat16.
GENERATION_CACHE_TOKENS = 8192
# A prompt start common to a batch runs once from this many tokens on (shorter: not worth a forward pass of its own).
MIN_SHARED_PREFIX = 16


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


def _prefill(model, prompts, drafts, pad_id: int, device, mask_pad_tokens: bool, keep_logits: bool, shared: int = 0,
             prefix_cache=None, prefix_mask=None):
    """One forward pass over these rows' prompts (after the first `shared` tokens, whose cache `prefix_cache` holds)
    and drafts: (cache, attention mask, each row's last position, its accepted draft tokens, greedy's choice after
    them). The draft tokens after the accepted ones are masked out of the context."""
    input_ids, attention_mask = _prompt_batch([p[shared:] for p in prompts], pad_id, device, mask_pad_tokens)
    width = max(len(d) for d in drafts)
    draft_ids = pad([torch.tensor(d, dtype=torch.long) for d in drafts], padding_value=pad_id).to(device) \
        if width else input_ids[:, :0]
    draft_mask = (torch.arange(width, device=device)[None] < torch.tensor([len(d) for d in drafts],
                                                                          device=device)[:, None]).long()
    parts = [prefix_mask.expand(len(prompts), -1)] if shared else []
    attention_mask = torch.cat([*parts, attention_mask, draft_mask], dim=1)
    positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    out = model(input_ids=torch.cat([input_ids, draft_ids], dim=1), attention_mask=attention_mask,
                position_ids=positions[:, shared:], use_cache=True, cache=prefix_cache,
                **({"logits_to_keep": width + 1} if keep_logits else {}))
    choices = out.logits[:, -(width + 1):].argmax(-1)  # greedy's token after the prompt and after each draft token
    accepted = ((choices[:, :width] == draft_ids) & draft_mask.bool()).long().cumprod(1).sum(1)
    prompt_end = shared + input_ids.size(1)
    attention_mask[:, prompt_end:] *= (torch.arange(width, device=device)[None] < accepted[:, None]).long()
    following = choices.gather(1, accepted[:, None]).squeeze(1)
    return out.cache, attention_mask, positions[:, prompt_end - 1] + accepted, accepted, following


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
                  device=None, mask_pad_tokens: bool = False) -> list[list[int]]:
    """Each prompt's greedy continuation, up to and including its first EOS token, at most `max_new_tokens` tokens
    (one number, or one per row; see the module docstring for `drafts`). Under `synced_gpus` (ZeRO-3, FSDP) every
    process runs a forward pass for as long as any process has a row decoding."""
    device = device or model_device(model)
    limits = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    drafts = [list(d or [])[:limit] for d, limit in zip(drafts or [None] * len(prompts), limits, strict=True)]
    keep_logits = getattr(model, "_supports_logits_to_keep", lambda: False)()
    # a prompt start common to the batch (MUSE's KnowMem few-shot examples) runs once, its cache repeated per row
    shared = shared_prefix_length(prompts) - 1 if len(prompts) > 1 else 0
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
    else:  # prompts of similar length prefilled together, then decoded as one batch (one pass under synced_gpus)
        groups = [list(range(len(prompts)))] if synced_gpus else \
            length_groups([len(p) + len(d) for p, d in zip(prompts, drafts, strict=True)])
        prefills = [_prefill(model, [prompts[i] for i in g], [drafts[i] for i in g], pad_id, device, mask_pad_tokens,
                             keep_logits) for g in groups]
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
    rows = order
    while _any_process(bool(active), synced_gpus, device):
        kept = [rows.index(r) for r in active] or [0]  # a process with no row left runs one for the others
        if len(kept) < len(rows):
            index = torch.tensor(kept, device=device)
            cache.batch_select_indices(index)
            attention_mask, last_position = attention_mask[index], last_position[index]
            rows = [rows[i] for i in kept]
        next_ids = torch.tensor([[generated[r][-1]] for r in rows], device=device)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(rows), 1))], dim=1)
        last_position = last_position + 1
        out = model(input_ids=next_ids, attention_mask=attention_mask, position_ids=last_position[:, None],
                    cache=cache, use_cache=True, **({"logits_to_keep": 1} if keep_logits else {}))
        cache = out.cache
        for r, token in zip(rows, out.logits[:, -1].argmax(-1).tolist(), strict=True):
            if r in active:
                generated[r].append(token)
                if token in eos_ids or len(generated[r]) >= limits[r]:
                    active.remove(r)
    return generated


@torch.no_grad()
def generate_ids(model, processing_class, prompts: Sequence[list[int]], max_new_tokens: int | Sequence[int] = 200,
                 synced_gpus: bool = False, device=None, mask_pad_tokens: bool = False, timer=None,
                 drafts: Sequence[list[int] | None] | None = None) -> torch.Tensor:
    """Greedy continuations of a batch of prompts, stopping at EOS or after `max_new_tokens` (one number, or one per
    row): the new token ids, (rows, new tokens), padded with the pad token after a row's end, as
    `model.generate(do_sample=False)` returns them. `drafts`, optional, are the
    answers expected (see the module docstring); `mask_pad_tokens` hides pad-token ids inside the prompts from
    attention (`npo_trl.eval.scoring`'s); `timer` (a `npo_trl.eval.runner.PassTimer`) counts the "generated_tokens"
    (up to each answer's EOS). A model `scoring.can_share_prefix` refuses goes through `model.generate`."""
    pad_id, eos_ids = pad_id_of(processing_class), eos_token_ids(model, processing_class)
    device = device or model_device(model)
    if can_share_prefix(model):
        rows = greedy_decode(model, prompts, max_new_tokens, eos_ids, pad_id, drafts, synced_gpus, device,
                             mask_pad_tokens)
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
                     strip: bool = True, drafts: Sequence[list[int] | None] | None = None) -> list[str]:
    """`generate_ids`' greedy answers, decoded (special tokens skipped, surrounding whitespace stripped unless
    `strip=False`)."""
    out = generate_ids(model, processing_class, prompts, max_new_tokens, synced_gpus, device, mask_pad_tokens, timer,
                       drafts)
    answers = tokenizer_of(processing_class).batch_decode(out, skip_special_tokens=True)
    return [answer.strip() for answer in answers] if strip else answers
