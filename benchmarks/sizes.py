"""What the benchmark measures and at which sizes: the model and batch (`Sizes`), the configurations compared, and
the targets they are held to."""

import dataclasses

import torch


@dataclasses.dataclass
class Sizes:
    """Model, batch and repetition sizes. The default: a 30.3M-parameter Llama, 4 × 128 tokens (an SFT step ~0.8 s on
    one CPU thread)."""

    vocab_size: int = 8000
    hidden_size: int = 512
    intermediate_size: int = 1376
    num_layers: int = 7
    num_heads: int = 8
    num_kv_heads: int = 8
    prompt_len: int = 63  # prompt + completion + EOS = 128 tokens
    completion_len: int = 64
    batch_size: int = 4
    num_rows: int = 32  # forget rows (and as many retain rows)
    warmup: int = 2  # steps discarded at the start of every round
    steps: int = 3  # steps timed per round
    rounds: int = 4
    memory_steps: int = 2  # steps each memory subprocess trains
    memory_repeats: int = 2  # subprocesses per configuration (median)
    profile_steps: int = 2  # steps profiled per configuration (--profile)
    # evaluation (TOFUCallback)
    eval_rows: int = 300  # rows of each of the four sets at most (TOFU's real_authors/world_facts have ~100)
    eval_batch_size: int = 0  # 0: the example's default
    eval_max_new_tokens: int = 0  # 0: the example's default (48 on its synthetic data, whose answers are short)
    eval_authors: int = 200  # synthetic authors: 200 × 20 QA make forget10 400 rows, like TOFU's
    eval_epochs: float = 1  # unlearning epochs run (the share is extrapolated to the example's default)
    eval_pretrain_epochs: float = 1  # short stages 1-3 of the example: the models only need to answer briefly
    eval_finetune_epochs: float = 0.5
    eval_tiny_model: bool = False  # a toy model and data for the smoke test
    # torch CPU threads (0: torch's default, one per core). One thread by default: on a CPU shared with other jobs,
    # several threads wait for the slowest at every op and a step's time varies several-fold (2-10 s against 0.8 s).
    threads: int = 1

    @property
    def seq_len(self) -> int:
        return self.prompt_len + self.completion_len + 1


DEFAULT = Sizes()
TINY = Sizes(vocab_size=200, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
             prompt_len=7, completion_len=8, batch_size=2, num_rows=8, warmup=1, steps=2, rounds=1, memory_steps=2,
             memory_repeats=1, profile_steps=1, eval_rows=4, eval_batch_size=4, eval_max_new_tokens=4, eval_authors=10,
             eval_pretrain_epochs=0.1, eval_finetune_epochs=0.1, eval_tiny_model=True)


# key: (label, trainer, reference model, retain set, NPOConfig/DPOConfig options). RT and KL use the precomputed forget
# reference (the targets of 2.1× and 2.4× SFT assume it: a live one adds a third of an SFT step); KL also
# needs the live reference model for its full next-token distributions on the retain rows.
CONFIGS = {
    "sft": ("SFT (trl SFTTrainer)", "sft", False, False, {}),
    "npo_live": ("NPO, live reference", "npo", True, False, {"forget_loss": "npo"}),
    "npo_pre": ("NPO, precomputed reference", "npo", False, False,
                {"forget_loss": "npo", "precompute_ref_log_probs": True}),
    "npo_rt": ("NPO+RT (precomputed forget ref)", "npo", False, True,
               {"forget_loss": "npo", "retain_loss": "nll", "precompute_ref_log_probs": True}),
    "npo_kl": ("NPO+KL (precomputed forget ref, live retain ref)", "npo", True, True,
               {"forget_loss": "npo", "retain_loss": "kl", "precompute_ref_log_probs": True}),
    "npo_rt_joint": ("NPO+RT, one backward of the sum", "npo", False, True,
                     {"forget_loss": "npo", "retain_loss": "nll", "precompute_ref_log_probs": True,
                      "separate_backward": False}),
    "npo_kl_joint": ("NPO+KL, one backward of the sum", "npo", True, True,
                     {"forget_loss": "npo", "retain_loss": "kl", "precompute_ref_log_probs": True,
                      "separate_backward": False}),
    "simnpo": ("SimNPO (no reference)", "npo", False, False, {"forget_loss": "simnpo"}),
    "dpo": ("DPO (trl DPOTrainer, live reference)", "dpo", True, False, {}),
}

# (key, what, measure, limit, relative to)
TARGETS = [
    ("npo_pre", "time", "time", 1.05, "sft"),
    ("npo_pre", "peak memory", "peak_rss", 1.05, "sft"),
    ("npo_live", "time", "time", 1.40, "sft"),
    ("npo_rt", "time", "time", 2.10, "sft"),
    ("npo_rt", "peak memory", "peak_rss", 1.05, "sft"),
    ("npo_kl", "peak memory", "peak_rss", 1.05, "sft"),
    ("npo_kl", "time", "time", 2.40, "sft"),
    ("npo_live", "time", "time", 0.55, "dpo"),
    ("npo_pre", "time", "time", 0.55, "dpo"),
]
EVAL_SHARE_TARGET = 0.15


def on_gpu() -> bool:
    return torch.cuda.is_available()


def apply_threads(sizes) -> None:
    if sizes.threads and not on_gpu():
        torch.set_num_threads(sizes.threads)
