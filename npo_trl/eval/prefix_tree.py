"""Token sequences that share beginnings, run once as a prefix tree (a trie) in one forward pass.

A question's candidate answers often begin alike (TOFU's perturbed answers copy the answer's opening words: "The
author's full name is ..."). Laid out as a tree, each distinct beginning is one node; a node attends to the cached
prompt and to its ancestors only (an attention mask of the tree, "tree attention" as in SpecInfer, Miao et al. 2024,
arXiv 2305.09781, and Medusa, Cai et al. 2024, arXiv 2401.10774), at the position its depth gives. Every node then
computes what it would compute in each sequence through it, up to float rounding, and a token shared by several
sequences runs once. On TOFU's candidate answers that is a fifth fewer token passes.

The functions here build the tree and its masks; `npo_trl.eval.scoring.candidate_logps` runs it.
"""

from collections.abc import Sequence

import torch


class PrefixTree:
    """The prefix tree of token sequences: `tokens[i]` is node i's token, `parents[i]` its parent (-1 for a first
    token), `depths[i]` its distance from the first token (0 there), and `paths[j]` the nodes sequence j runs
    through, one per token. Nodes are numbered in the order they are first met, so a parent comes before its
    children."""

    def __init__(self, sequences: Sequence[Sequence[int]]):
        self.tokens, self.parents, self.depths, self.paths = [], [], [], []
        children = {}
        for sequence in sequences:
            node, path = -1, []
            for token in sequence:
                if (node, token) not in children:
                    children[node, token] = len(self.tokens)
                    self.tokens.append(int(token))
                    self.parents.append(node)
                    self.depths.append(self.depths[node] + 1 if node >= 0 else 0)
                node = children[node, token]
                path.append(node)
            self.paths.append(path)

    def __len__(self):
        return len(self.tokens)

    def ancestors(self) -> torch.Tensor:
        """(nodes, nodes) boolean: entry [i, a] is True when node a is node i or one of its ancestors (what node i
        attends to within the tree)."""
        mask = torch.eye(len(self), dtype=torch.bool)
        depths, parents = torch.tensor(self.depths), torch.tensor(self.parents)
        for depth in range(1, int(depths.max()) + 1 if len(self) else 0):  # a level at a time, parents first
            nodes = (depths == depth).nonzero().flatten()
            mask[nodes] |= mask[parents[nodes]]
        return mask


def tree_batch(trees: Sequence[PrefixTree], offsets: Sequence[int], prefix_mask: torch.Tensor, pad_token_id: int,
               dtype: torch.dtype, mask_pad_tokens: bool = False) -> dict[str, torch.Tensor]:
    """The model inputs of a batch of trees, each continuing a cached prefix: `input_ids` (trees, most nodes), padded
    with the pad token; `position_ids`, each node at its prefix's length (`offsets`) + its depth; and the additive
    4D `attention_mask` (trees, 1, most nodes, prefix length + most nodes) in `dtype`: 0 where a node may attend (its
    row of the prefix's 2D `prefix_mask`, and its ancestors), the dtype's minimum elsewhere. A padding node attends
    to the prefix and itself, so that every query has a key. `mask_pad_tokens` also hides nodes whose token is the
    pad token, as `npo_trl.eval.scoring`'s collation does."""
    width, device = max(len(tree) for tree in trees), prefix_mask.device
    input_ids = torch.full((len(trees), width), pad_token_id, dtype=torch.long)
    positions = torch.tensor(offsets, dtype=torch.long)[:, None].repeat(1, width)
    allowed = torch.eye(width, dtype=torch.bool).repeat(len(trees), 1, 1)
    for row, tree in enumerate(trees):
        n = len(tree)
        input_ids[row, :n] = torch.tensor(tree.tokens)
        positions[row, :n] += torch.tensor(tree.depths)
        allowed[row, :n, :n] = tree.ancestors()
    input_ids = input_ids.to(device)
    if mask_pad_tokens:
        allowed &= (input_ids != pad_token_id).cpu()[:, None, :]
    allowed = torch.cat([prefix_mask.bool()[:, None, :].expand(-1, width, -1), allowed.to(device)], dim=2)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)
    return {"input_ids": input_ids, "position_ids": positions.to(device), "attention_mask": mask[:, None]}
