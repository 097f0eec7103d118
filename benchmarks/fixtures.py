"""The same model, tokenizer, rows and training arguments for every trainer compared, and the trainers themselves."""

import copy
import dataclasses
import random
import time

import torch

from benchmarks.sizes import CONFIGS, Sizes, on_gpu


def build_tokenizer(vocab_size: int):
    """A word-level tokenizer: 'w17' is one token, so every trainer sees exactly the same token sequences."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {token: i for i, token in enumerate(specials)}
    vocab.update({f"w{i}": i + len(specials) for i in range(vocab_size - len(specials))})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def build_model(sizes: Sizes, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=sizes.vocab_size, hidden_size=sizes.hidden_size,
                         intermediate_size=sizes.intermediate_size, num_hidden_layers=sizes.num_layers,
                         num_attention_heads=sizes.num_heads, num_key_value_heads=sizes.num_kv_heads,
                         max_position_embeddings=max(256, sizes.seq_len), pad_token_id=0, bos_token_id=1,
                         eos_token_id=2, tie_word_embeddings=False)
    return LlamaForCausalLM(config)


def make_rows(sizes: Sizes, seed: int) -> list[dict]:
    """Rows of `prompt_len` prompt words and two `completion_len`-word answers: every row has the same length."""
    rng = random.Random(seed)
    words = sizes.vocab_size - 4

    def text(n):
        return " ".join(f"w{rng.randrange(words)}" for _ in range(n))

    return [{"prompt": text(sizes.prompt_len), "completion": " " + text(sizes.completion_len),
             "other": " " + text(sizes.completion_len)} for _ in range(sizes.num_rows)]


def datasets_for(kind: str, rows: list[dict]):
    from datasets import Dataset

    if kind == "dpo":  # the forget answer is DPO's rejected one; a second answer of the same length the chosen one
        return Dataset.from_list([{"prompt": r["prompt"], "chosen": r["other"], "rejected": r["completion"]}
                                  for r in rows])
    return Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])


def common_args(sizes: Sizes, output_dir: str, max_steps: int) -> dict:
    """The same training arguments for every trainer: no checkpointing, logging, evaluation or saving."""
    from transformers import TrainingArguments

    # TRL's configs default gradient checkpointing on; transformers ≥ 5.23 names it activation_checkpointing
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return dict(
        **{checkpointing: False},
        output_dir=output_dir, per_device_train_batch_size=sizes.batch_size, max_steps=max_steps,
        max_length=sizes.seq_len, learning_rate=1e-5, lr_scheduler_type="constant", warmup_steps=0,
        optim="adamw_torch", weight_decay=0.0, max_grad_norm=1.0,
        gradient_accumulation_steps=1, bf16=on_gpu(), fp16=False, logging_strategy="no", logging_steps=10**9,
        save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        dataloader_pin_memory=on_gpu(), seed=0, data_seed=0,
    )


def build_trainer(key: str, model, tokenizer, rows, retain_rows, sizes: Sizes, output_dir: str, callbacks=()):
    """The trainer of configuration `key` on `model` (which it trains); the live reference is a frozen copy."""
    _, kind, live_ref, retain, options = CONFIGS[key]
    args = common_args(sizes, output_dir, max_steps=sizes.warmup + sizes.steps)
    ref_model = copy.deepcopy(model).eval().requires_grad_(False) if live_ref else None
    dataset = datasets_for(kind, rows)
    if kind == "sft":
        from trl import SFTConfig, SFTTrainer

        config = SFTConfig(**args, packing=False, padding_free=False, completion_only_loss=True)
        trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                             callbacks=list(callbacks))
    elif kind == "dpo":
        from trl import DPOConfig, DPOTrainer

        config = DPOConfig(**args, beta=0.1, precompute_ref_log_probs=False, **options)
        trainer = DPOTrainer(model=model, ref_model=ref_model, args=config, train_dataset=dataset,
                             processing_class=tokenizer, callbacks=list(callbacks))
    else:
        from npo_trl import NPOConfig, NPOTrainer

        class TimedNPOTrainer(NPOTrainer):  # records the one-off precompute pass; changes nothing else
            precompute_seconds = None

            def _precompute_ref_logps(self, dataset, name, batch_size):
                start = time.perf_counter()
                out = super()._precompute_ref_logps(dataset, name, batch_size)
                if self.args.precompute_ref_log_probs and self.args.needs_reference:
                    self.precompute_seconds = (self.precompute_seconds or 0.0) + time.perf_counter() - start
                return out

        config = NPOConfig(**args, beta=0.1, **options)
        trainer = TimedNPOTrainer(model, ref_model=ref_model, args=config, train_dataset=dataset,
                                  processing_class=tokenizer, callbacks=list(callbacks),
                                  retain_dataset=datasets_for("npo", retain_rows) if retain else None)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # no per-run log lines on stdout
    return trainer


def batch_shape(key: str, trainer) -> dict:
    """What one step processes: sequences × length, and the completion tokens scored (the fairness check)."""
    batch = next(iter(trainer.get_train_dataloader()))
    ids = batch["input_ids"]
    if "completion_mask" in batch:
        scored = int(batch["completion_mask"][:, 1:].sum())
    else:
        scored = int((batch["labels"][:, 1:] != -100).sum())
    out = {"sequences": int(ids.shape[0]), "length": int(ids.shape[1]), "scored_tokens": scored}
    model = trainer.model
    checkpointing = getattr(model, "is_activation_checkpointing", None)
    if checkpointing is None:
        checkpointing = getattr(model, "is_gradient_checkpointing", False)
    if checkpointing or trainer.args.gradient_checkpointing:
        raise RuntimeError(f"{key}: gradient checkpointing is on; the comparison needs it off for every trainer.")
    if CONFIGS[key][3]:
        rows = [trainer.retain_dataset[i] for i in range(trainer.args.per_device_train_batch_size)]
        retain_shape = trainer.data_collator(rows)["input_ids"].shape
        out["retain_sequences"], out["retain_length"] = int(retain_shape[0]), int(retain_shape[1])
    return out


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())
