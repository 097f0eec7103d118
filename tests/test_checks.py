"""NPOTrainer's input checks (npo_trl.checks): the processing class, loaded from the model's path when not given, with
a pad token."""

import pytest

from helpers import build_tokenizer, tiny_llama
from npo_trl.checks import checked_processing_class


def test_checked_processing_class_loads_the_models_and_pads_with_eos(tmp_path):
    tokenizer = build_tokenizer(["a few words to train on", "and some more"])
    tokenizer.pad_token = None
    tiny_llama(len(tokenizer)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = checked_processing_class(str(tmp_path))  # from the model's path, as the hub's name would be
    assert loaded.pad_token == loaded.eos_token == "</s>"
    assert checked_processing_class(None, tokenizer) is tokenizer and tokenizer.pad_token_id == tokenizer.eos_token_id
    tokenizer.pad_token = tokenizer.eos_token = None
    with pytest.raises(ValueError, match="neither a pad_token nor an eos_token: set tokenizer.pad_token"):
        checked_processing_class(None, tokenizer)
