"""`TOFUEvalSettings`: how TOFU is evaluated, one frozen value for `TOFUEvaluator`, `TOFUCallback`,
`compute_reference_stats` and `npo-trl eval tofu` (which parses it as its flags)."""

from dataclasses import dataclass, field
from typing import ClassVar

from ..eval.privacy import MIN_K_FRACTION
from ..eval.settings import EvalSettings
from ..prompts import PROMPT_FORMATS, TOKEN_BOUNDARIES, PromptFormat, get_prompt_format


@dataclass(frozen=True)
class TOFUEvalSettings(EvalSettings):
    r"""
    How TOFU's metrics are computed. The fields marked *Scoring* (`scoring_fields`) change the retain model's
    statistics that forget quality and PrivLeak compare with; `compute_reference_stats` stores their `fingerprint`,
    and an evaluation under other values refuses those statistics.

    Parameters:
        max_samples (`int` or `None`, *optional*, defaults to `None`):
            *Scoring.* Rows scored per set: `None` scores every row, as the reference evaluator (open-unlearning)
            does; a number draws a fixed subset with `sample_seed` (TOFU's original code took the first 300).
        sample_seed (`int` or `None`, *optional*, defaults to `0`):
            *Scoring.* Seed of that subset; `None` takes the first rows.
        batch_size (`int`, *optional*, defaults to `8`):
            Rows per forward pass per process; each pass scores all of their candidate answers
            (`batch_size × (2 + 5)` sequences on the forget set), running each question once.
        generation_batch_size (`int` or `None`, *optional*, defaults to `None`):
            Rows per greedy-generation batch per process; `None` means as many as keep the key-value cache within
            `npo_trl.eval.generation.GENERATION_CACHE_TOKENS` (8192) positions, rows × (longest prompt +
            `max_new_tokens`): 31 rows of TOFU's 200-token answers after a 60-token prompt. A decoding step costs
            nearly as much for a few rows as for many, so more rows per step cut the time (benchmarks/RESULTS.md).
            It changes no answer.
        max_new_tokens (`int`, *optional*, defaults to `200`):
            Length limit of the greedy answers that ROUGE scores.
        prompt_format (`str` or [`~npo_trl.prompts.PromptFormat`], *optional*, defaults to `"plain"`):
            *Scoring.* The format the model was trained on: a preset of `npo_trl.prompts.PROMPT_FORMATS` (`"plain"`,
            `"chat"`, `"chat_system"`, `"llama3_instruct"`, `"tofu_llama2"`, `"tofu_phi"`) or a `PromptFormat`.
        prompt_template, completion_template (`str` or `None`, *optional*, defaults to `None`):
            *Scoring.* Replace the format's templates (as `npo_trl.tofu.to_prompt_completion` takes them), naming
            `{question}` and `{answer}`.
        token_boundary (`str`, *optional*, defaults to `"common_prefix"`):
            *Scoring.* Where the scored answer starts: `"common_prefix"` (where the tokenized prompt and prompt+answer
            diverge, as NPOTrainer trains) or `"prompt_length"` (after `len(prompt_ids)` tokens, the reference
            evaluator's rule, which skips a first answer token that merged with the prompt's trailing space). See
            `npo_trl.prompts`.
        mask_pad_tokens (`bool`, *optional*, defaults to `False`):
            *Scoring.* Hide every token equal to the pad token inside the text from attention, in scoring and in
            generation, as the reference evaluator's collator does. It matters for a chat model whose pad token is its
            end-of-turn token (Llama-3.x-Instruct with pad = EOS): its turn separators are then invisible to the
            model. Off by default because it changes what the model sees; docs/guides/prompt-formats.md gives its
            measured effect.
        min_k_fraction (`float`, *optional*, defaults to `0.4`):
            *Scoring.* The k of the Min-K% and Min-K%++ attacks (MUSE's and open-unlearning's 40%).
    """

    scoring_fields: ClassVar[tuple[str, ...]] = ("max_samples", "sample_seed", "prompt_format", "prompt_template",
                                                 "completion_template", "token_boundary", "mask_pad_tokens",
                                                 "min_k_fraction")

    max_samples: int | None = field(
        default=None,
        metadata={"help": "Rows scored per set: None scores every row; a number draws a fixed subset with "
                          "sample_seed."},
    )
    sample_seed: int | None = field(
        default=0, metadata={"help": "Seed of the max_samples subset; None takes the first rows."}
    )
    batch_size: int = field(
        default=8, metadata={"help": "Rows per forward pass per process (all their candidate answers at once)."}
    )
    generation_batch_size: int | None = field(
        default=None,
        metadata={"help": "Rows per greedy-generation batch per process; None: as many as keep the key-value cache "
                          "within 8192 positions (rows × (longest prompt + max_new_tokens))."}
    )
    max_new_tokens: int = field(
        default=200, metadata={"help": "Length limit of the greedy answers that ROUGE scores."}
    )
    prompt_format: str = field(
        default="plain",
        metadata={"help": f"The format the model was trained on: one of {list(PROMPT_FORMATS)} (or, in Python, a "
                          "npo_trl.prompts.PromptFormat)."},
    )
    prompt_template: str | None = field(
        default=None, metadata={"help": "Replaces the format's prompt template; names {question}."}
    )
    completion_template: str | None = field(
        default=None, metadata={"help": "Replaces the format's completion template; names {answer}."}
    )
    token_boundary: str = field(
        default="common_prefix",
        metadata={"help": f"Where a scored answer starts: one of {list(TOKEN_BOUNDARIES)} (see npo_trl.prompts)."},
    )
    mask_pad_tokens: bool = field(
        default=False,
        metadata={"help": "Hide pad-token ids inside the text from attention, as open-unlearning's collator does."},
    )
    min_k_fraction: float = field(
        default=MIN_K_FRACTION, metadata={"help": "The k of the Min-K%% and Min-K%%++ attacks."}
    )

    def __post_init__(self):
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, or None to score every row (got {self.max_samples}).")
        for name in ("batch_size", "max_new_tokens", "generation_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (got {value}).")
        get_prompt_format(self.prompt_format)  # raises naming prompt_format for an unknown preset or another type
        if self.token_boundary not in TOKEN_BOUNDARIES:
            raise ValueError(f"token_boundary={self.token_boundary!r} is unknown: use one of "
                             f"{list(TOKEN_BOUNDARIES)}.")
        if not 0 < self.min_k_fraction <= 1:
            raise ValueError(f"min_k_fraction must be in (0, 1], got {self.min_k_fraction}.")

    def generation_rows(self, longest_prompt: int, num_rows: int) -> int:
        """Rows per greedy-generation batch (`npo_trl.eval.generation.generation_rows`)."""
        from ..eval.generation import generation_rows

        return generation_rows(num_rows, longest_prompt, self.max_new_tokens, self.generation_batch_size)

    @property
    def resolved_prompt_format(self) -> PromptFormat:
        """The `PromptFormat` rows are written in: `prompt_format` with `prompt_template`/`completion_template`
        replacing its own."""
        return get_prompt_format(self.prompt_format, self.prompt_template, self.completion_template)

    def scored_values(self) -> dict:
        """The scoring fields, the prompt format resolved (a preset name and the `PromptFormat` it stands for
        fingerprint alike)."""
        values = super().scored_values()
        values.update(prompt_format=self.resolved_prompt_format.to_dict(), prompt_template=None,
                      completion_template=None)
        return values
