"""Prompt presets: each one's exact text and token boundary, and the training rows NPOTrainer tokenizes equal to the
tokens the evaluator scores."""

import pytest
from datasets import Dataset

from helpers import tiny_llama
from npo_trl import NPOConfig, NPOTrainer
from npo_trl.prompts import PROMPT_FORMATS, PromptFormat, generation_prompt_ids, get_prompt_format, tokenize_qa
from npo_trl.tofu import to_prompt_completion

QUESTION, ANSWER = "Where does agent 3 live?", "Agent 3 lives in Lunmere."
LLAMA3_PROMPT = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                 "Cutting Knowledge Date: December 2023\nToday Date: 10 Apr 2025\n\nYou are a helpful assistant."
                 "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhere does agent 3 live?"
                 "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
# preset -> (tokenizer fixture, the generation prompt, the scored answer (common prefix), the scored answer
# (prompt length)), all decoded
KNOWN = {
    "plain": ("tokenizer", f"<s>{QUESTION}", f" {ANSWER}</s>", f" {ANSWER}</s>"),
    "tofu_phi": ("tokenizer", f"<s>Question: {QUESTION}\nAnswer: ", f" {ANSWER}</s>", " 3 lives in Lunmere.</s>"),
    "tofu_llama2": ("tokenizer", f"<s>[INST] {QUESTION} [/INST]", f"{ANSWER}</s>", f"{ANSWER}</s>"),
    "chat": ("chat_tokenizer", f"user: {QUESTION}\nassistant:", f" {ANSWER}\n", f" {ANSWER}\n</s>"),
    "chat_system": ("chat_tokenizer", f"system: You are a helpful assistant.\nuser: {QUESTION}\nassistant:",
                    f" {ANSWER}\n", f" {ANSWER}\n</s>"),
    "llama3_instruct": ("llama3_tokenizer", LLAMA3_PROMPT, f"{ANSWER}<|eot_id|>", f"{ANSWER}<|eot_id|>"),
}


def test_every_preset_has_a_known_answer_test():
    assert set(KNOWN) == set(PROMPT_FORMATS)


@pytest.mark.parametrize("preset", list(KNOWN))
def test_preset_text_and_token_boundaries(preset, request):
    tokenizer_name, prompt, common_prefix_answer, prompt_length_answer = KNOWN[preset]
    tok = request.getfixturevalue(tokenizer_name)
    prompt_ids = generation_prompt_ids(tok, QUESTION, preset)
    assert tok.decode(prompt_ids) == prompt
    for boundary, answer in (("common_prefix", common_prefix_answer), ("prompt_length", prompt_length_answer)):
        context, scored = tokenize_qa(tok, QUESTION, ANSWER, preset, boundary)
        assert tok.decode(scored) == answer, boundary
        if boundary == "prompt_length":
            assert len(context) == len(prompt_ids)  # everything after len(prompt_ids) tokens is scored


@pytest.mark.parametrize("preset", list(KNOWN))
def test_training_rows_are_the_tokens_the_evaluator_scores(preset, request, tmp_path):
    tok = request.getfixturevalue(KNOWN[preset][0])
    rows = to_prompt_completion(Dataset.from_list([{"question": QUESTION, "answer": ANSWER}]), preset)
    if PROMPT_FORMATS[preset].chat_template_kwargs:
        assert rows[0]["chat_template_kwargs"] == {"date_string": "10 Apr 2025"}
    args = NPOConfig(output_dir=str(tmp_path), forget_loss="ga", report_to="none", max_steps=1)
    trained = NPOTrainer(tiny_llama(len(tok)), args=args, train_dataset=rows, processing_class=tok).train_dataset[0]
    assert tokenize_qa(tok, QUESTION, ANSWER, preset) == (trained["prompt_ids"], trained["completion_ids"])


def test_templates_replace_a_presets_own_and_bad_formats_are_refused():
    custom = get_prompt_format("tofu_phi", completion_template="{answer} (end)")
    assert custom.prompt_template == "Question: {question}\nAnswer: "
    assert custom.completion_template == "{answer} (end)"
    assert PROMPT_FORMATS["tofu_phi"].completion_template == "{answer}"  # the preset is unchanged
    with pytest.raises(ValueError, match="prompt_format='llama3' is unknown"):
        get_prompt_format("llama3")
    with pytest.raises(ValueError, match="need chat=True"):
        PromptFormat(system_prompt="Be brief.")
    with pytest.raises(ValueError, match="token_boundary='prompt' is unknown"):
        tokenize_qa(None, QUESTION, ANSWER, "plain", "prompt")


def test_a_chat_preset_needs_a_chat_template(tokenizer):
    with pytest.raises(ValueError, match="needs a tokenizer with a chat_template"):
        generation_prompt_ids(tokenizer, QUESTION, "llama3_instruct")


@pytest.mark.parametrize("prompt_format", ["plain", "chat"])
def test_answers_are_tokenized_as_npo_trainer_tokenizes_training_rows(tmp_path, tokenizer, chat_tokenizer,
                                                                     prompt_format):
    tok = chat_tokenizer if prompt_format == "chat" else tokenizer
    question, answer = "Where does agent 3 live?", "Agent 3 lives in Lunmere."
    if prompt_format == "chat":
        row = {"prompt": [{"role": "user", "content": question}],
               "completion": [{"role": "assistant", "content": answer}]}
    else:
        row = {"prompt": question, "completion": " " + answer}
    args = NPOConfig(output_dir=str(tmp_path), forget_loss="ga", report_to="none", max_steps=1)
    trainer = NPOTrainer(tiny_llama(len(tok)), args=args, train_dataset=Dataset.from_list([row]),
                         processing_class=tok)
    trained = trainer.train_dataset[0]
    assert tokenize_qa(tok, question, answer, prompt_format) == (trained["prompt_ids"], trained["completion_ids"])


def test_templates_format_the_rows_like_to_prompt_completion(tokenizer):
    prompt, completion = tokenize_qa(tokenizer, "Where does agent 3 live?", "Lunmere.",
                                     get_prompt_format("plain", "Q: {question}\nA:", " {answer}"))
    assert tokenizer.decode(prompt + completion) == "<s>Q: Where does agent 3 live?\nA: Lunmere.</s>"
    with pytest.raises(ValueError, match="may name only the fields"):
        tokenize_qa(tokenizer, "q", "a", get_prompt_format("plain", "{title}: {question}"))
