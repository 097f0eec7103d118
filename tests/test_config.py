"""NPOConfig refuses bad settings before any model is loaded, naming the field and the fix."""

import re

import pytest

from npo_trl import NPOConfig


def make(tmp_path, **kwargs):
    return NPOConfig(output_dir=str(tmp_path), report_to="none", **kwargs)


def test_defaults_are_the_papers(tmp_path):
    args = make(tmp_path)
    assert (args.forget_loss, args.retain_loss, args.beta, args.learning_rate) == ("npo", None, 0.1, 1e-5)
    assert args.needs_reference and not args.needs_replacement
    assert args.bf16 is False  # no accelerator here: TRL's bf16 default would fail validation


@pytest.mark.parametrize("beta", [0.0, -0.1])
def test_beta_must_be_positive(tmp_path, beta):
    with pytest.raises(ValueError, match=r"beta must be > 0.*forget_loss='ga'"):
        make(tmp_path, beta=beta)


@pytest.mark.parametrize("field, value",
                         [("forget_loss", "npo_kl"), ("retain_loss", "l2"), ("nonfinite_loss", "ignore")])
def test_unknown_loss_names(tmp_path, field, value):
    with pytest.raises(ValueError, match=rf"{field}='{value}' is unknown: use"):
        make(tmp_path, **{field: value})


@pytest.mark.parametrize("field", ["forget_weight", "retain_weight"])
def test_negative_weights(tmp_path, field):
    with pytest.raises(ValueError, match=f"{field} must be >= 0"):
        make(tmp_path, **{field: -1.0})


def test_the_compared_methods_defaults_are_their_configs(tmp_path):
    """The five methods' hyper-parameters default to open-unlearning's configs (npo_trl.config cites each)."""
    args = make(tmp_path)
    assert (args.wga_alpha, args.satimp_beta1, args.satimp_beta2, args.undial_gamma, args.ceu_skip_first) == (
        1.0, 5.0, 1.0, 10.0, 1)
    assert (args.pdu_dual_init, args.pdu_dual_step, args.pdu_retain_bound, args.pdu_slack,
            args.pdu_dual_warmup_steps) == (1.0, 1.0, None, 0.0, 0)


@pytest.mark.parametrize("field, value, message", [
    ("wga_alpha", -1.0, "wga_alpha must be >= 0 (got -1.0): weights, wga_alpha, satimp_beta1/2, undial_gamma"),
    ("satimp_beta1", -0.5, "satimp_beta1 must be >= 0"), ("satimp_beta2", float("nan"), "satimp_beta2 must be >= 0"),
    ("undial_gamma", -3.0, "undial_gamma must be >= 0"), ("ceu_skip_first", -1, "ceu_skip_first must be >= 0"),
    ("ceu_skip_first", 1.5, "ceu_skip_first counts tokens or steps: give a whole number"),
    ("pdu_dual_init", -1.0, "pdu_dual_init must be >= 0"), ("pdu_dual_step", -1.0, "pdu_dual_step must be >= 0"),
    ("pdu_slack", -0.1, "pdu_slack must be >= 0"), ("pdu_dual_warmup_steps", -2, "pdu_dual_warmup_steps must be >= 0"),
    ("pdu_retain_bound", 0.0, "pdu_retain_bound=0.0 can never hold (the retain NLL is > 0): give ε > 0, or None"),
])
def test_bad_method_hyperparameters_name_the_field_and_the_range(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make(tmp_path, **{field: value})


def test_pdu_needs_the_retain_nll_and_owns_the_retain_weight(tmp_path):
    others = "['npo', 'ga', 'simnpo', 'idk', 'dpo', 'wga', 'satimp', 'undial', 'ceu']"
    for retain_loss in (None, "kl"):
        with pytest.raises(ValueError, match=re.escape(f"forget_loss='pdu' does not combine with retain_loss="
                                                       f"{retain_loss!r}: use one of ['nll'], or a forget_loss among "
                                                       f"{others}")):
            make(tmp_path, forget_loss="pdu", retain_loss=retain_loss)
    with pytest.raises(ValueError, match="retain_weight=2.0 does not apply to forget_loss='pdu'.*set pdu_dual_init"):
        make(tmp_path, forget_loss="pdu", retain_loss="nll", retain_weight=2.0)
    copy = make(tmp_path).for_method("pdu")  # its bare name: with the retain loss it needs
    assert (copy.forget_loss, copy.retain_loss) == ("pdu", "nll") and not copy.needs_reference
    with pytest.raises(ValueError, match=r"'undial' reads π_ref per token.*precompute_ref_log_probs=False"):
        make(tmp_path, forget_loss="undial", precompute_ref_log_probs=True)


def test_retain_loss_none_from_the_command_line(tmp_path):
    assert make(tmp_path, retain_loss="None").retain_loss is None


def test_dpo_only_options_are_refused(tmp_path):
    with pytest.raises(ValueError, match="loss_type, use_weighting and ld_alpha"):
        make(tmp_path, loss_type="ipo")


def test_empty_replacement_answers(tmp_path):
    with pytest.raises(ValueError, match="replacement_answers holds no non-empty string"):
        make(tmp_path, forget_loss="idk", replacement_answers=["", "  "])


@pytest.mark.parametrize(
    "forget_loss, retain_loss, reference",
    [("npo", None, True), ("dpo", None, True), ("ga", "kl", True), ("ga", None, False), ("simnpo", "nll", False),
     ("idk", "nll", False), ("wga", None, False), ("satimp", "nll", False), ("undial", None, True),
     ("ceu", None, False), ("ceu", "kl", True), ("pdu", "nll", False)],
)
def test_which_objectives_need_a_reference(tmp_path, forget_loss, retain_loss, reference):
    assert make(tmp_path, forget_loss=forget_loss, retain_loss=retain_loss).needs_reference is reference


def test_gloo_is_chosen_for_several_cpu_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    args = NPOConfig.__new__(NPOConfig)  # only __post_init__'s CPU branch is under test: no process group here
    monkeypatch.setattr("trl.DPOConfig.__post_init__", lambda self: None)
    NPOConfig.__init__(args, output_dir=str(tmp_path), report_to="none")
    assert args.ddp_backend == "gloo" and args.use_cpu


def test_a_deepspeed_launch_asking_for_mixed_precision_on_a_cpu_names_the_fix(tmp_path, monkeypatch):
    """zero3.yaml asks for bf16; on a machine without an accelerator NPOConfig trains in fp32, which DeepSpeed would
    contradict ("ds bf16.enabled=True vs hf bf16=False") deep inside the trainer: refuse at once, naming the flag."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    monkeypatch.setattr("trl.DPOConfig.__post_init__", lambda self: None)  # no process group or DeepSpeed here
    with pytest.raises(ValueError, match="add --mixed_precision no to accelerate launch"):
        NPOConfig(output_dir=str(tmp_path), report_to="none")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    args = NPOConfig(output_dir=str(tmp_path), report_to="none")
    assert args.ddp_backend == "gloo" and not args.use_cpu  # DeepSpeed places the model itself


def test_an_fsdp_launch_on_a_cpu_is_refused_rather_than_run_as_plain_data_parallelism(tmp_path, monkeypatch):
    """accelerate enables FSDP only on GPU-like devices: on a CPU its FSDP config would silently give DDP."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setattr("trl.DPOConfig.__post_init__", lambda self: None)  # no process group here
    with pytest.raises(ValueError, match="FSDP was asked for.*without an accelerator.*DeepSpeed ZeRO-3"):
        NPOConfig(output_dir=str(tmp_path), report_to="none")


def test_separate_backward_is_the_default(tmp_path):
    assert make(tmp_path).separate_backward and not make(tmp_path, separate_backward=False).separate_backward


def test_method_names_give_the_losses_and_a_config_per_method(tmp_path):
    from npo_trl.config import method_losses

    assert method_losses("npo") == ("npo", None) and method_losses("npo+rt") == ("npo", "nll")
    assert method_losses("ga+kl") == ("ga", "kl") and method_losses("idk+rt") == ("idk", "nll")
    assert method_losses("wga+rt") == ("wga", "nll")
    assert method_losses("pdu") == method_losses("pdu+rt") == ("pdu", "nll")  # PDU needs the retain NLL
    for bad in ("npo+nll", "sgd", "npo+rt+kl"):
        with pytest.raises(ValueError, match=re.escape(f"method {bad!r}: use <forget_loss>")):
            method_losses(bad)
    args = NPOConfig(output_dir=str(tmp_path), beta=0.3, learning_rate=1e-4, report_to="none")
    copy = args.for_method("simnpo+kl", output_dir=str(tmp_path / "simnpo"))
    assert (copy.forget_loss, copy.retain_loss, copy.beta, copy.learning_rate) == ("simnpo", "kl", 0.3, 1e-4)
    assert copy.output_dir == str(tmp_path / "simnpo") and args.forget_loss == "npo" and args.retain_loss is None


def test_a_method_copy_keeps_tokens_and_raises_no_deprecation(tmp_path, recwarn):
    """`for_method` copies the fields themselves: `to_dict()` would put "<HUB_TOKEN>" in place of the hub token and set
    TRL's deprecated `pad_token` to "<PAD_TOKEN>"; and NPOConfig sets activation checkpointing by its new name, so
    neither the config nor its copy raises transformers' or TRL's FutureWarning."""
    args = NPOConfig(output_dir=str(tmp_path), report_to="none", hub_token="hf_secret")
    copy = args.for_method("npo+rt", output_dir=str(tmp_path / "rt"))
    assert copy.hub_token == "hf_secret" and copy.pad_token is None
    assert copy.activation_checkpointing is True and copy.gradient_checkpointing is True  # TRL's default, mirrored
    assert not [w for w in recwarn if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    with pytest.warns(FutureWarning, match="`gradient_checkpointing` is deprecated"):  # the old name still counts
        assert NPOConfig(output_dir=str(tmp_path), report_to="none", gradient_checkpointing=False
                         ).activation_checkpointing is False
