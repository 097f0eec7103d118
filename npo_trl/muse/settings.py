"""`MUSEEvalSettings`: how MUSE is evaluated, one frozen value for `MUSEEvaluator`, `MUSECallback` and
`compute_reference_stats`."""

from dataclasses import dataclass, field
from typing import ClassVar

from ..eval.privacy import MIN_K_FRACTION
from ..eval.settings import EvalSettings
from .metrics import KNOWMEM_MAX_NEW_TOKENS, VERBMEM_MAX_NEW_TOKENS


@dataclass(frozen=True)
class MUSEEvalSettings(EvalSettings):
    r"""
    How MUSE's criteria are computed. The fields marked *Scoring* (`scoring_fields`) change the retrain model's
    PrivLeak AUCs that `muse/privleak` compares with; `compute_reference_stats` stores their `fingerprint`, and an
    evaluation under other values refuses those statistics. The generation settings change VerbMem and KnowMem,
    which are computed from the evaluated model alone (the reference statistics hold no generations).

    Parameters:
        batch_size (`int`, *optional*, defaults to `8`):
            Texts per PrivLeak forward pass, per process.
        generation_batch_size (`int` or `None`, *optional*, defaults to `None`):
            Prompts per greedy-generation batch per process; `None` means as many as keep the key-value cache within
            `npo_trl.eval.generation.GENERATION_CACHE_TOKENS` (8192) positions (`generation_rows`). It changes no
            answer.
        verbmem_max_new_tokens (`int`, *optional*, defaults to `128`):
            Tokens of the true VerbMem continuation kept (MUSE: 128); the greedy continuation is as long (a shorter
            true continuation, as on the synthetic data, shortens it alike).
        knowmem_max_new_tokens (`int`, *optional*, defaults to `32`):
            Length limit of a KnowMem answer (MUSE: 32).
        knowmem_trailing_space (`bool`, *optional*, defaults to `True`):
            End the KnowMem prompt with "Answer: " as MUSE does. A byte-level BPE tokenizer (GPT-2's, the tiny
            model's) makes that space a token of its own, which it never saw before an answer in training; `False`
            ends the prompt at "Answer:".
        privleak_max_length (`int` or `None`, *optional*, defaults to `None`):
            *Scoring.* Tokens of a PrivLeak text scored at most (BOS included): `None` scores every token, as MUSE
            does; a number cuts longer texts (open-unlearning cuts at 2048).
        min_k_fraction (`float`, *optional*, defaults to `0.4`):
            *Scoring.* The k of the Min-K% and Min-K%++ attacks (MUSE's PrivLeak uses Min-40%).
    """

    scoring_fields: ClassVar[tuple[str, ...]] = ("privleak_max_length", "min_k_fraction")

    batch_size: int = field(
        default=8, metadata={"help": "Texts per PrivLeak forward pass, per process."}
    )
    generation_batch_size: int | None = field(
        default=None,
        metadata={"help": "Prompts per greedy-generation batch per process; None: as many as keep the key-value cache "
                          "within 8192 positions (rows × (longest prompt + new tokens))."}
    )
    verbmem_max_new_tokens: int = field(
        default=VERBMEM_MAX_NEW_TOKENS,
        metadata={"help": "Tokens of the true VerbMem continuation kept, and of the greedy one (MUSE: 128)."},
    )
    knowmem_max_new_tokens: int = field(
        default=KNOWMEM_MAX_NEW_TOKENS, metadata={"help": "Length limit of a KnowMem answer (MUSE: 32)."}
    )
    knowmem_trailing_space: bool = field(
        default=True, metadata={"help": "End the KnowMem prompt with 'Answer: ' as MUSE does (False: 'Answer:')."}
    )
    privleak_max_length: int | None = field(
        default=None, metadata={"help": "Tokens of a PrivLeak text scored at most (BOS included); None scores every "
                                        "token, as MUSE does."}
    )
    min_k_fraction: float = field(
        default=MIN_K_FRACTION, metadata={"help": "The k of the Min-K%% and Min-K%%++ attacks."}
    )

    def __post_init__(self):
        for name in ("batch_size", "verbmem_max_new_tokens", "knowmem_max_new_tokens", "generation_batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (got {getattr(self, name)}).")
        if self.privleak_max_length is not None and self.privleak_max_length < 3:
            raise ValueError(f"privleak_max_length must be >= 3, or None to score whole texts (got "
                             f"{self.privleak_max_length}).")
        if not 0 < self.min_k_fraction <= 1:
            raise ValueError(f"min_k_fraction must be in (0, 1], got {self.min_k_fraction}.")
