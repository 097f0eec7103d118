"""npo_trl.stages: stages skipped when done, an interrupted stage cleaned, the tokenizer and tiny Llama built here, the
SFT configuration taken from NPOConfig, the supervised and unlearning stages (QLoRA included), and the run's files."""

import json
import math

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback
from trl import ModelConfig

from npo_trl import NPOConfig
from npo_trl.stages import (
    clean_interrupted_stage,
    is_done,
    read_jsonl,
    save_arguments,
    sft_config,
    sft_stage,
    tiny_llama,
    train_tokenizer,
    unlearning_stage,
)

TEXTS = ["Where does Adra Ashvane live? She lives in Kessford.", "Who wrote 'The Quiet Tower'? Maren Oakwell did.",
         "I have no idea about that."] * 5


def test_a_stage_is_done_when_its_model_or_adapters_are_saved(tmp_path):
    assert not is_done(tmp_path / "missing") and not is_done(tmp_path)
    (tmp_path / "trainer_state.json").write_text("{}")  # what an interrupted run may leave
    assert not is_done(tmp_path)
    for name in ("config.json", "adapter_config.json"):
        stage = tmp_path / name.split(".")[0]
        stage.mkdir()
        (stage / name).write_text("{}")
        assert is_done(stage)


def test_an_interrupted_stage_is_removed(tmp_path):
    stage = tmp_path / "unlearn" / "npo"
    (stage / "checkpoint-3").mkdir(parents=True)
    (stage / "tofu_metrics.jsonl").write_text('{"step": 0}\n')
    clean_interrupted_stage(str(stage))
    assert not stage.exists() and (tmp_path / "unlearn").is_dir()
    clean_interrupted_stage(str(stage))  # nothing there: nothing to do


def test_the_tokenizer_is_trained_here_and_round_trips():
    tokenizer = train_tokenizer(TEXTS, vocab_size=300)
    assert len(tokenizer) <= 300
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    ids = tokenizer(TEXTS[0])["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and tokenizer.eos_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == TEXTS[0]
    unseen = "Zanthovia's río: 42 €"  # bytes never seen in training still round-trip (byte-level BPE)
    assert tokenizer.decode(tokenizer(unseen)["input_ids"], skip_special_tokens=True) == unseen


def test_tiny_llama_follows_the_tokenizer_and_the_seed():
    tokenizer = train_tokenizer(TEXTS, vocab_size=300)
    model = tiny_llama(tokenizer, hidden_size=128, num_layers=2, max_position_embeddings=96, seed=3)
    config = model.config
    assert (config.vocab_size, config.hidden_size, config.intermediate_size, config.num_hidden_layers,
            config.num_attention_heads, config.max_position_embeddings) == (len(tokenizer), 128, 512, 2, 2, 96)
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (0, 1, 2)
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    same = tiny_llama(tokenizer, hidden_size=128, num_layers=2, max_position_embeddings=96, seed=3)
    other = tiny_llama(tokenizer, hidden_size=128, num_layers=2, max_position_embeddings=96, seed=4)
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, same.model.layers[0].mlp.up_proj.weight)
    assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, other.model.layers[0].mlp.up_proj.weight)


def test_sft_config_takes_the_unlearning_configurations_shared_settings(tmp_path):
    args = NPOConfig(output_dir=str(tmp_path / "npo"), seed=7, bf16=False, report_to="none", disable_tqdm=True,
                     activation_checkpointing=True, max_length=96, use_cpu=True, learning_rate=1e-5)
    sft_args = sft_config(args, str(tmp_path / "full"), num_train_epochs=3, learning_rate=2e-3, max_length=None)
    assert sft_args.output_dir == str(tmp_path / "full") and sft_args.seed == 7 and sft_args.use_cpu
    assert sft_args.activation_checkpointing and sft_args.disable_tqdm and sft_args.report_to == args.report_to
    assert (sft_args.num_train_epochs, sft_args.learning_rate, sft_args.max_length) == (3, 2e-3, None)
    assert sft_args.lr_scheduler_type == "linear" and sft_args.weight_decay == 0.01
    assert sft_args.save_strategy == "no"
    assert sft_config(args, str(tmp_path / "full")).max_length == 96


def test_sft_stage_trains_once_and_saves_the_tokenizer(tmp_path):
    tokenizer = train_tokenizer(TEXTS, vocab_size=300)
    rows = Dataset.from_dict({"prompt": ["Where does Adra Ashvane live?"] * 4,
                              "completion": [" She lives in Kessford."] * 4})
    args = NPOConfig(output_dir=str(tmp_path / "npo"), report_to="none", disable_tqdm=True)
    sft_args = sft_config(args, str(tmp_path / "base"), num_train_epochs=1, per_device_train_batch_size=4,
                          logging_steps=1)
    assert sft_stage(tiny_llama(tokenizer, 32, 1), sft_args, rows, tokenizer) == str(tmp_path / "base")
    assert is_done(tmp_path / "base") and (tmp_path / "base" / "tokenizer.json").exists()
    weights = tmp_path / "base" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    sft_stage(tiny_llama(tokenizer, 32, 1), sft_args, rows, tokenizer)  # done: skipped
    assert weights.stat().st_mtime_ns == before


def test_unlearning_stage_runs_one_method_once(tmp_path, finetuned_dir, tokenizer, forget_ds, retain_ds):
    stage = tmp_path / "unlearn" / "npo+rt"
    stage.mkdir(parents=True)
    (stage / "tofu_metrics.jsonl").write_text('{"step": 0, "from": "an interrupted run"}\n')
    args = NPOConfig(output_dir="unused", num_train_epochs=1, per_device_train_batch_size=4, report_to="none",
                     disable_tqdm=True, save_strategy="no", learning_rate=1e-3, seed=0)
    final = unlearning_stage(finetuned_dir, args, "npo+rt", str(stage), forget_ds, retain_ds,
                             processing_class=tokenizer, model_args=ModelConfig(dtype="float32"), seed=3)
    assert final == str(stage / "final") and is_done(final)
    assert not (stage / "tofu_metrics.jsonl").exists()  # the interrupted run's metrics are gone
    saved = json.loads((stage / "final" / "config.json").read_text())
    assert saved["dtype"] == "float32"
    before = (stage / "final" / "model.safetensors").stat().st_mtime_ns
    assert unlearning_stage(finetuned_dir, args, "npo+rt", str(stage), forget_ds) == final  # done: skipped
    assert (stage / "final" / "model.safetensors").stat().st_mtime_ns == before


def test_unlearning_stage_gives_replacement_answers_to_the_methods_that_need_them(tmp_path, finetuned_dir,
                                                                                 tokenizer, forget_ds):
    args = NPOConfig(output_dir="unused", max_steps=1, per_device_train_batch_size=4, report_to="none",
                     disable_tqdm=True, save_strategy="no")
    with pytest.raises(ValueError, match="replacement"):  # idk without answers: NPOConfig refuses
        unlearning_stage(finetuned_dir, args, "idk", str(tmp_path / "none"), forget_ds, processing_class=tokenizer)
    final = unlearning_stage(finetuned_dir, args, "idk", str(tmp_path / "idk"), forget_ds, processing_class=tokenizer,
                             replacement_answers=["I don't know."])
    assert is_done(final)


class _Recorder(TrainerCallback):
    """The trainer's logs, and its model's parameters when training begins and when it ends."""

    def __init__(self):
        self.logs, self.parameters = [], []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.parameters.append({name: p.detach().clone() for name, p in model.named_parameters()})

    on_train_end = on_train_begin


def test_unlearning_stage_runs_qlora_against_its_base_with_adapters_off(tmp_path, finetuned_dir, tokenizer,
                                                                          forget_ds):
    """`--load_in_4bit --use_peft`: the fp32 model loaded in 4 bits (NF4, bitsandbytes on this CPU) through the
    stage's own loading (model_init_kwargs, TRL's get_quantization_config and get_peft_config), LoRA on it, no
    ref_model: π_ref is the 4-bit base with the adapters off. LoRA B starts at zero, so at step 0 log π_θ = log π_ref
    and NPO's loss is -(2/β)·log σ(0) = 2 ln 2 / β. Forward and backward both run on bitsandbytes' CPU backend, with
    activation checkpointing (NPOConfig's default); the adapters train in float32 (`upcast_quantized_adapters`)."""
    args = NPOConfig(output_dir="unused", max_steps=2, per_device_train_batch_size=4, report_to="none",
                     disable_tqdm=True, save_strategy="no", logging_steps=1, learning_rate=1e-2, seed=0)
    model_args = ModelConfig(load_in_4bit=True, use_peft=True, lora_r=4, lora_target_modules=["q_proj", "v_proj"])
    recorder = _Recorder()
    final = unlearning_stage(finetuned_dir, args, "npo", str(tmp_path / "qlora"), forget_ds,
                             processing_class=tokenizer, model_args=model_args, callbacks=[recorder])
    first, second = recorder.logs[:2]
    assert first["loss"] == pytest.approx(2 * math.log(2) / args.beta, abs=1e-5)  # measured: 13.862943649 vs ...611
    assert first["forget/logps"] == first["forget/ref_logps"]
    assert all(math.isfinite(log[key]) for log in (first, second) for key in ("loss", "grad_norm"))
    assert second["forget/log_ratio"] < 0  # the adapters moved π_θ below the base
    begin, end = recorder.parameters
    lora = [name for name in begin if ".lora_" in name]
    quantized = [name for name in begin if begin[name].dtype == torch.uint8]  # the 4-bit NF4 weights, packed
    assert len(lora) == 8 and len(quantized) == 14
    assert all(begin[name].dtype == torch.float32 for name in lora)
    assert all(not end[name].equal(begin[name]) for name in lora)
    assert all(end[name].equal(begin[name]) for name in begin if name not in lora)  # base: 4-bit and fp32 alike
    assert (tmp_path / "qlora" / "final" / "adapter_config.json").exists()
    assert json.loads((tmp_path / "qlora" / "final" / "adapter_config.json").read_text())["r"] == 4
    assert final == str(tmp_path / "qlora" / "final")


def test_read_jsonl_and_save_arguments(tmp_path):
    (tmp_path / "rows.jsonl").write_text('{"step": 0}\n\n{"step": 5, "tofu/forget_quality": 0.5}\n')
    assert read_jsonl(tmp_path / "rows.jsonl") == [{"step": 0}, {"step": 5, "tofu/forget_quality": 0.5}]
    args = NPOConfig(output_dir=str(tmp_path), learning_rate=3e-4, beta=0.2, report_to="none", hub_token="hf_secret")
    save_arguments(str(tmp_path / "run"), training=args, model=ModelConfig(dtype="bfloat16"))
    saved = json.loads((tmp_path / "run" / "arguments.json").read_text())
    assert saved["model"]["dtype"] == "bfloat16"
    again = NPOConfig(**saved["training"])  # the unlearning configuration comes back whole
    assert (again.learning_rate, again.beta, again.output_dir) == (3e-4, 0.2, str(tmp_path))
    assert "hf_secret" not in json.dumps(saved) and again.hub_token is None and again.pad_token is None
