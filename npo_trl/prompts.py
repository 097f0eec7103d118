"""Prompt formats: how a question and its answer become the tokens a model is trained on and evaluated on.

One [`PromptFormat`] serves both sides. `format_qa` gives the (prompt, completion) row that [`~npo_trl.NPOTrainer`]
tokenizes as TRL's DPOTrainer does (plain text: prompt, then completion + EOS; chat: the tokenizer's chat template
over an optional system turn, a user turn and an assistant turn), and `tokenize_qa` / `generation_prompt_ids` give an
evaluator exactly those tokens. The named presets of `PROMPT_FORMATS` are the formats TOFU's published models were
fine-tuned on; docs/guides/prompt-formats.md's table says which model uses which.

Token boundary. The answer's first token is where scoring starts. `"common_prefix"` (the default, TRL's rule) starts
it where the tokenized prompt and the tokenized prompt+answer diverge, so a prompt ending in a space ("Answer: ")
whose space merges into the answer's first token still has that token scored. `"prompt_length"` is the rule of the
field's reference evaluator (open-unlearning, `src/data/utils.py`): the answer is everything after `len(prompt_ids)`
tokens of the full text, which then skips the merged first answer token, and a chat-templated text that does not end
in the EOS token gets one appended.
"""

import string
from dataclasses import asdict, dataclass, field
from typing import Any

TOKEN_BOUNDARIES = ("common_prefix", "prompt_length")
HELPFUL_ASSISTANT = "You are a helpful assistant."


@dataclass(frozen=True)
class PromptFormat:
    r"""
    How a question and an answer are written out for the model.

    Parameters:
        chat (`bool`, *optional*, defaults to `False`):
            Render with the tokenizer's chat template (a user turn, then an assistant turn, after the system turn if
            `system_prompt` is set), as TRL does for conversational rows; otherwise plain text, prompt then
            completion, the completion ending with the EOS token as DPOTrainer adds it.
        prompt_template (`str`, *optional*, defaults to `"{question}"`):
            The prompt (plain) or the user turn (chat); `{question}` is replaced by the question.
        completion_template (`str`, *optional*):
            The completion (plain) or the assistant turn (chat); `{answer}` is replaced by the answer. Defaults to
            `" {answer}"` for plain text (the space separates it from the question) and `"{answer}"` for chat.
        system_prompt (`str`, *optional*):
            Chat only: the content of a system turn before the user turn.
        chat_template_kwargs (`dict`, *optional*):
            Chat only: extra variables of the chat template, e.g. `{"date_string": "10 Apr 2025"}` for the date line of
            Llama-3.x's template (without it, the template writes today's date, so the text changes day by day).
    """

    chat: bool = False
    prompt_template: str = "{question}"
    completion_template: str | None = None
    system_prompt: str | None = None
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.completion_template is None:
            object.__setattr__(self, "completion_template", "{answer}" if self.chat else " {answer}")
        if not self.chat and (self.system_prompt is not None or self.chat_template_kwargs):
            raise ValueError("system_prompt and chat_template_kwargs need chat=True (the chat template renders them); "
                             "write a plain format's system text into prompt_template instead.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The formats TOFU's fine-tuned models were trained on (TOFU's config/model_config.yaml and open-unlearning's
# configs/model/*.yaml, read at their published commits); docs/guides/prompt-formats.md has the model → preset
# table.
PROMPT_FORMATS: dict[str, PromptFormat] = {
    # npo-trl's default: the bare question, then " " + the answer.
    "plain": PromptFormat(),
    # the tokenizer's chat template, a user and an assistant turn (open-unlearning's gemma-7b-it).
    "chat": PromptFormat(chat=True),
    # the chat template after a "You are a helpful assistant." system turn (Qwen2.5-Instruct, Phi-3.5-mini-instruct).
    "chat_system": PromptFormat(chat=True, system_prompt=HELPFUL_ASSISTANT),
    # Llama-3.x-Instruct as open-unlearning runs it: that system turn and a fixed date line.
    "llama3_instruct": PromptFormat(chat=True, system_prompt=HELPFUL_ASSISTANT,
                                    chat_template_kwargs={"date_string": "10 Apr 2025"}),
    # TOFU's Llama-2-7b-chat format ("[INST] " + question + " [/INST]", answer right after), also open-unlearning's.
    "tofu_llama2": PromptFormat(prompt_template="[INST] {question} [/INST]", completion_template="{answer}"),
    # TOFU's phi-1.5 tags, open-unlearning's Llama-2-7b-hf format: "Question: …\nAnswer: " then the answer.
    "tofu_phi": PromptFormat(prompt_template="Question: {question}\nAnswer: ", completion_template="{answer}"),
}


def get_prompt_format(prompt_format: "str | PromptFormat" = "plain", prompt_template: str | None = None,
                      completion_template: str | None = None) -> PromptFormat:
    """A preset by name (or a `PromptFormat` as is), with `prompt_template`/`completion_template` replacing its own."""
    if isinstance(prompt_format, str):
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format={prompt_format!r} is unknown: use one of {list(PROMPT_FORMATS)} or a "
                             "npo_trl.prompts.PromptFormat.")
        prompt_format = PROMPT_FORMATS[prompt_format]
    elif not isinstance(prompt_format, PromptFormat):
        raise ValueError(f"prompt_format must be a preset name or a PromptFormat, got {type(prompt_format).__name__}.")
    values = prompt_format.to_dict()
    if prompt_template is not None:
        values["prompt_template"] = prompt_template
    if completion_template is not None:
        values["completion_template"] = completion_template
    return PromptFormat(**values)


def template_fields(template: str) -> set[str]:
    """The `{field}` names a template uses."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def format_qa(prompt_format: PromptFormat, fields: dict[str, Any]):
    """The training row's (prompt, completion) of one record: strings for plain text (no EOS: DPOTrainer adds it),
    message lists for chat. The templates are filled from `fields` (e.g. a TOFU row's `question` and `answer`)."""
    try:
        prompt = prompt_format.prompt_template.format(**fields)
        completion = prompt_format.completion_template.format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"prompt_template {prompt_format.prompt_template!r} and completion_template "
                         f"{prompt_format.completion_template!r} may name only the fields {sorted(fields)}.") from e
    if not prompt_format.chat:
        return prompt, completion
    system = [{"role": "system", "content": prompt_format.system_prompt}] if prompt_format.system_prompt else []
    return system + [{"role": "user", "content": prompt}], [{"role": "assistant", "content": completion}]


def tokenizer_of(processing_class):
    """The tokenizer of a processing class: a processor's `tokenizer`, or the tokenizer itself."""
    return getattr(processing_class, "tokenizer", processing_class)


def _ids(processing_class, text, prompt_format: PromptFormat, add_generation_prompt: bool = False) -> list[int]:
    """Token ids of a plain string (the tokenizer's special tokens added) or of messages (the chat template)."""
    if not prompt_format.chat:
        return list(tokenizer_of(processing_class)(text)["input_ids"])
    out = processing_class.apply_chat_template(text, tokenize=True, return_dict=True,
                                               add_generation_prompt=add_generation_prompt,
                                               **prompt_format.chat_template_kwargs)
    ids = out["input_ids"]
    return list(ids[0] if ids and isinstance(ids[0], list) else ids)


def _check_chat_template(processing_class, prompt_format: PromptFormat) -> None:
    if prompt_format.chat and getattr(tokenizer_of(processing_class), "chat_template", None) is None:
        raise ValueError("A chat prompt_format needs a tokenizer with a chat_template: set one, or use a plain format "
                         "such as 'plain', 'tofu_llama2' or 'tofu_phi'.")


def generation_prompt_ids(processing_class, question: str, prompt_format: "str | PromptFormat" = "plain"
                          ) -> list[int]:
    """The tokens a model is prompted with to answer `question` (for chat, up to the assistant's generation prompt)."""
    prompt_format = get_prompt_format(prompt_format) if isinstance(prompt_format, str) else prompt_format
    _check_chat_template(processing_class, prompt_format)
    prompt, _ = format_qa(prompt_format, {"question": question, "answer": ""})
    return _ids(processing_class, prompt, prompt_format, add_generation_prompt=True)


def tokenize_qa(processing_class, question: str, answer: str, prompt_format: "str | PromptFormat" = "plain",
                token_boundary: str = "common_prefix", prompt_ids: list[int] | None = None
                ) -> tuple[list[int], list[int]]:
    """(context ids, answer ids): the scored sequence is their concatenation and the answer ids are the scored tokens.

    See the module docstring for `token_boundary`; with `"common_prefix"` these are the tokens NPOTrainer trains on.
    `prompt_ids`, the question's `generation_prompt_ids` if already computed, saves tokenizing it again.
    """
    prompt_format = get_prompt_format(prompt_format) if isinstance(prompt_format, str) else prompt_format
    if token_boundary not in TOKEN_BOUNDARIES:
        raise ValueError(f"token_boundary={token_boundary!r} is unknown: use one of {list(TOKEN_BOUNDARIES)}.")
    tokenizer = tokenizer_of(processing_class)
    prefix = prompt_ids if prompt_ids is not None else generation_prompt_ids(processing_class, question, prompt_format)
    prompt, completion = format_qa(prompt_format, {"question": question, "answer": answer})
    full = _ids(processing_class, prompt + (completion if prompt_format.chat else completion + tokenizer.eos_token),
                prompt_format)
    if token_boundary == "prompt_length":
        if full[-1] != tokenizer.eos_token_id:  # the reference evaluator's rule (plain text already ends in EOS)
            full = full + [tokenizer.eos_token_id]
        start = len(prefix)
    else:
        from trl.data_utils import common_prefix_length  # TRL's rule; imported here to keep this module light

        start = common_prefix_length(prefix, full)
    if start >= len(full):
        raise ValueError(f"The answer {answer!r:.60} leaves no token to score after the question {question!r:.60} "
                         f"(token_boundary={token_boundary!r}).")
    return full[:start], full[start:]

