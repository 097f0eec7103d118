"""What the scoring passes compute from the LM head's logits at the positions that predict completion tokens
(`npo_trl.eval.scoring`): normalisers, each token's log-probability, the vocabulary's statistics Min-K%++ standardises
with, and how far greedy decoding follows an answer. Pure functions on tensors, in at least float32."""

import torch

# Rows of a (rows, vocabulary) tensor normalised at a time: 128 × a 50k vocabulary in float32 is 25 MB, which the
# allocator reuses (larger blocks are mapped afresh, page by page, on every allocation).
LOGSUMEXP_ROWS = 128


def at_least_fp32(logits: torch.Tensor) -> torch.Tensor:
    """Logits in float32, or float64 when the model computes in it (log-softmax of bf16/fp16 logits loses digits)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def normaliser(logits: torch.Tensor) -> torch.Tensor:
    """log Σ_v exp(logit_v) of each row, in at least float32: a fused log-softmax's first entry subtracted from its
    logit (one pass fewer than `torch.logsumexp`)."""
    logits = at_least_fp32(logits)
    return logits[:, 0] - logits.log_softmax(-1)[:, 0]


def completion_targets(input_ids, completion_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """The completion tokens of a batch in row order, and the row each belongs to."""
    mask = completion_mask[:, 1:].bool()
    rows = torch.arange(len(input_ids), device=input_ids.device)[:, None].expand_as(mask)[mask]
    return input_ids[:, 1:][mask], rows


def completion_logps(logits, input_ids, completion_mask) -> torch.Tensor:
    """Mean log π(token | prefix) over the completion tokens of each row, from `scoring._completion_logits`' logits."""
    targets, rows = completion_targets(input_ids, completion_mask)
    # −cross-entropy = log-softmax at the target: one fused pass over the vocabulary (logsumexp takes four)
    token_logps = -torch.nn.functional.cross_entropy(at_least_fp32(logits), targets, reduction="none")
    sums = torch.zeros(len(input_ids), dtype=token_logps.dtype, device=input_ids.device).index_add_(0, rows,
                                                                                                  token_logps)
    return sums / completion_mask[:, 1:].sum(1)


def vocabulary_statistics(logits, targets) -> dict[str, torch.Tensor]:
    """Per row of (tokens, vocab) logits (a slice of `LOGSUMEXP_ROWS`: its temporaries are reused, not mapped afresh):
    the target's log-probability, the mean and variance of the log-probabilities over the vocabulary, and whether
    the target is the argmax."""
    logprobs = at_least_fp32(logits).log_softmax(-1)
    weighted = logprobs.exp().mul_(logprobs)  # p·log p in place of p: one (tokens, vocab) temporary fewer
    expected = weighted.sum(-1)
    return {"logps": logprobs.gather(-1, targets[:, None]).squeeze(-1), "expected_logps": expected,
            "logp_variance": weighted.mul_(logprobs).sum(-1) - expected.square(),
            "is_argmax": logprobs.argmax(-1) == targets}


def completion_token_statistics(logits, input_ids, completion_mask, rows=None) -> dict[str, torch.Tensor]:
    """Per completion token of each row (of the batch, or of `rows`, a slice of its rows), from the logits of the
    whole batch (`scoring._completion_logits`'): `logps` = log π(token | prefix), the mean `expected_logps` =
    E_{v∼π}[log π(v | prefix)] and variance `logp_variance` of the log-probabilities over the vocabulary at that
    position (what Min-K%++ standardises with), and `is_argmax` (the token is the most likely one); each
    (rows, longest completion), left-aligned and zero past a row's end, with `mask` 1 on a row's completion tokens."""
    targets, token_rows = completion_targets(input_ids, completion_mask)
    if rows is not None:
        kept = torch.zeros(len(input_ids), dtype=torch.bool, device=input_ids.device)
        kept[rows] = True
        logits, targets = logits[kept[token_rows]], targets[kept[token_rows]]
        completion_mask = completion_mask[rows]
    parts = [vocabulary_statistics(part, part_targets) for part, part_targets in
             zip(logits.split(LOGSUMEXP_ROWS), targets.split(LOGSUMEXP_ROWS), strict=True)]
    flat = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
    lengths = completion_mask[:, 1:].sum(1)
    aligned = torch.arange(int(lengths.max()), device=lengths.device)[None] < lengths[:, None]
    out = {"mask": aligned.long()}
    for name, values in flat.items():  # completion tokens are contiguous in a row, so the order is kept
        out[name] = torch.zeros(aligned.shape, dtype=values.dtype, device=values.device)
        out[name][aligned] = values
    return out


def greedy_agreement(logits, input_ids, completion_mask, rows) -> tuple[torch.Tensor, torch.Tensor]:
    """For the completions of `rows` (indices of the batch), from the logits of the whole batch
    (`scoring._completion_logits`'): how many leading completion tokens are the model's greedy choices (each the
    argmax given the tokens before it), and its greedy choice after those (-1 when the whole completion is greedy's).
    Greedy decoding from the prompt gives exactly those tokens, then that choice: `npo_trl.eval.generation` takes
    them as its draft."""
    targets, token_rows = completion_targets(input_ids, completion_mask)
    kept = torch.zeros(len(input_ids), dtype=torch.bool, device=input_ids.device)
    kept[rows] = True
    lengths = completion_mask[rows, 1:].sum(1)
    aligned = torch.arange(int(lengths.max()), device=lengths.device)[None] < lengths[:, None]
    choices, wanted = (torch.full(aligned.shape, -1, dtype=torch.long, device=lengths.device) for _ in range(2))
    choices[aligned], wanted[aligned] = logits[kept[token_rows]].argmax(-1), targets[kept[token_rows]]
    agreement = ((choices == wanted) & aligned).long().cumprod(1).sum(1)
    following = choices.gather(1, agreement.clamp(max=aligned.size(1) - 1)[:, None]).squeeze(1)
    return agreement, following.masked_fill(agreement == lengths, -1)
