"""EvalSettings and its benchmarks' subclasses: frozen, validated naming the field, fingerprinted over the fields that
change reference statistics, and parsed from the command line beside NPOConfig and ModelConfig."""

import dataclasses

import pytest
from trl import ModelConfig, TrlParser

from npo_trl import NPOConfig
from npo_trl.muse import MUSEEvalSettings
from npo_trl.prompts import PROMPT_FORMATS
from npo_trl.tofu import TOFUEvalSettings

SETTINGS = (TOFUEvalSettings, MUSEEvalSettings)


@pytest.mark.parametrize("cls", SETTINGS)
def test_settings_are_frozen_and_every_field_says_what_it_does(cls):
    settings = cls()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.batch_size = 2
    assert all(f.metadata["help"] for f in dataclasses.fields(cls))
    assert set(cls.scoring_fields) <= {f.name for f in dataclasses.fields(cls)}
    assert settings.to_dict() == {f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)}
    assert dataclasses.replace(settings, batch_size=2).batch_size == 2 and settings.batch_size == 8


@pytest.mark.parametrize(("cls", "field", "value", "message"), [
    (TOFUEvalSettings, "max_samples", 0, "max_samples must be >= 1, or None"),
    (TOFUEvalSettings, "batch_size", 0, "batch_size must be >= 1"),
    (TOFUEvalSettings, "generation_batch_size", 0, "generation_batch_size must be >= 1"),
    (TOFUEvalSettings, "max_new_tokens", 0, "max_new_tokens must be >= 1"),
    (TOFUEvalSettings, "prompt_format", "llama", r"prompt_format='llama' is unknown: use one of \['plain'"),
    (TOFUEvalSettings, "prompt_format", 3, "prompt_format must be a preset name or a PromptFormat"),
    (TOFUEvalSettings, "token_boundary", "prompt", r"token_boundary='prompt' is unknown: use one of"),
    (TOFUEvalSettings, "min_k_fraction", 0, r"min_k_fraction must be in \(0, 1\]"),
    (MUSEEvalSettings, "batch_size", 0, "batch_size must be >= 1"),
    (MUSEEvalSettings, "verbmem_max_new_tokens", 0, "verbmem_max_new_tokens must be >= 1"),
    (MUSEEvalSettings, "knowmem_max_new_tokens", 0, "knowmem_max_new_tokens must be >= 1"),
    (MUSEEvalSettings, "privleak_max_length", 2, "privleak_max_length must be >= 3, or None"),
    (MUSEEvalSettings, "min_k_fraction", 1.5, r"min_k_fraction must be in \(0, 1\]"),
])
def test_bad_values_are_refused_naming_the_field(cls, field, value, message):
    with pytest.raises(ValueError, match=message):
        cls(**{field: value})


def test_the_fingerprint_changes_with_the_scoring_fields_only():
    default = TOFUEvalSettings()
    assert TOFUEvalSettings(batch_size=2, generation_batch_size=64, max_new_tokens=3).fingerprint() == \
        default.fingerprint()
    changed = [TOFUEvalSettings(max_samples=10), TOFUEvalSettings(max_samples=10, sample_seed=1),
               TOFUEvalSettings(prompt_format="tofu_phi"), TOFUEvalSettings(prompt_template="Q: {question}"),
               TOFUEvalSettings(completion_template=" A: {answer}"), TOFUEvalSettings(token_boundary="prompt_length"),
               TOFUEvalSettings(mask_pad_tokens=True), TOFUEvalSettings(min_k_fraction=0.2)]
    fingerprints = {s.fingerprint() for s in changed}
    assert len(fingerprints) == len(changed) and default.fingerprint() not in fingerprints
    # A preset by name and the PromptFormat it stands for score alike.
    assert TOFUEvalSettings(prompt_format=PROMPT_FORMATS["tofu_phi"]).fingerprint() == changed[2].fingerprint()
    assert TOFUEvalSettings(prompt_format="tofu_phi").resolved_prompt_format == PROMPT_FORMATS["tofu_phi"]
    muse = MUSEEvalSettings()
    assert MUSEEvalSettings(batch_size=1, verbmem_max_new_tokens=5, knowmem_max_new_tokens=5,
                            knowmem_trailing_space=False).fingerprint() == muse.fingerprint()
    assert MUSEEvalSettings(privleak_max_length=2048).fingerprint() != muse.fingerprint()
    assert MUSEEvalSettings(min_k_fraction=0.2).fingerprint() != muse.fingerprint()


def test_statistics_of_other_settings_are_refused_naming_the_fields_and_the_fix():
    stored = TOFUEvalSettings(token_boundary="prompt_length", max_samples=5)
    stats = {"settings_fingerprint": stored.fingerprint(), "settings": stored.to_dict()}
    TOFUEvalSettings(token_boundary="prompt_length", max_samples=5, batch_size=1).check_stats(stats)
    with pytest.raises(ValueError, match=r"max_samples=5 there, None here; token_boundary='prompt_length' there, "
                                         r"'common_prefix' here\): recompute .* or delete the cache file at s.json"):
        TOFUEvalSettings().check_stats(stats, "s.json")
    with pytest.raises(ValueError, match="no settings fingerprint"):
        TOFUEvalSettings().check_stats({"truth_ratios": [1.0]})


def test_trl_parser_reads_tofu_settings_beside_npo_config_and_model_config():
    names = {f.name for f in dataclasses.fields(TOFUEvalSettings)}
    assert not names & {f.name for cls in (NPOConfig, ModelConfig) for f in dataclasses.fields(cls)}
    parser = TrlParser((TOFUEvalSettings, NPOConfig, ModelConfig))
    settings, args, model_args = parser.parse_args_and_config(args=[
        "--output_dir", "out", "--max_samples", "50", "--sample_seed", "3", "--batch_size", "4",
        "--prompt_format", "llama3_instruct", "--token_boundary", "prompt_length", "--mask_pad_tokens", "true",
        "--min_k_fraction", "0.2", "--model_name_or_path", "m", "--forget_loss", "simnpo"])
    assert settings == TOFUEvalSettings(max_samples=50, sample_seed=3, batch_size=4, prompt_format="llama3_instruct",
                                        token_boundary="prompt_length", mask_pad_tokens=True, min_k_fraction=0.2)
    assert args.forget_loss == "simnpo" and model_args.model_name_or_path == "m"
    (defaults,) = TrlParser((TOFUEvalSettings,)).parse_args_and_config(args=[])
    assert defaults == TOFUEvalSettings()
    with pytest.raises(ValueError, match="token_boundary='x' is unknown"):
        TrlParser((TOFUEvalSettings,)).parse_args_and_config(args=["--token_boundary", "x"])
