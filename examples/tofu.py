# Copyright 2026 The npo-trl developers. Licensed under the Apache License, Version 2.0.
"""The TOFU experiment of the NPO paper in one run: base model, fine-tune, retain model, unlearning, table and plots.

    accelerate launch examples/tofu.py                          # offline synthetic default, a tiny Llama, CPU or GPU
    accelerate launch examples/tofu.py --dataset ../shared/tofu --forget_split forget05
    accelerate launch --config_file examples/accelerate_configs/zero3.yaml examples/tofu.py \
        --config examples/configs/tofu_llama2.yaml                # the paper's setting
    accelerate launch examples/tofu.py --config examples/configs/tofu_llama3.2_1b.yaml  # from published models

Stages (each writes its output under --output_dir and is skipped when that output exists, so a crashed run resumes
from the last finished stage):

1. `base/`: with no --model_name_or_path, a small Llama built from a config and a tokenizer trained on the data,
   "pre-trained" on general knowledge (the stand-in for what a base model knows of real authors and world facts);
2. `full/`: the base fine-tuned on every author (plus the real-author and world facts, which a tiny model would
   otherwise lose); skipped with --finetuned_model (an already fine-tuned model, e.g. TOFU's or open-unlearning's);
3. `retain/`: the base fine-tuned on the retain split alone, and its truth ratios on the forget set
   (`retain_stats.json`), against which forget quality is measured; --retain_model scores a given retain model
   instead, and --reference_stats reads its published evaluation log (no retain model at all);
4. `unlearn/<method>/`: the fine-tuned model unlearned with each method of --methods, TOFU's metrics every epoch;
   with --seeds 0 1 2 3 4, once per seed into `unlearn/<method>/seed<k>/`;
5. `results.csv`, `results.json`, `fig5_tradeoff.png`, `fig6_per_epoch.png`, `fig_privacy.png`, `samples.json`
   (npo_trl.tofu.report: each run's best epoch among those that kept half the fine-tuned model's utility, and the
   median and min-max over seeds, drawn as bands).

With --privacy (the default), every evaluation also reports the privacy metrics (npo_trl.eval.privacy): each
membership-inference attack's AUC of forget vs holdout rows (authors in no fine-tune), PrivLeak against the retain
model's AUC, exact memorization and extraction strength.

Training rows and evaluation prompts share one --prompt_format (npo_trl.prompts.PROMPT_FORMATS). Every model is
loaded with trl.ModelConfig's --dtype, --attn_implementation and --model_revision; the unlearning stage also takes its
--use_peft/--lora_* and --load_in_4bit/8bit flags (the fine-tunes are full fine-tunes, as in the paper).
"""

import gc
import json
import os
import shutil
from dataclasses import dataclass, field

import torch
from accelerate import PartialState
from datasets import Dataset, concatenate_datasets
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser, get_peft_config, get_quantization_config
from trl.trainer.utils import create_model_from_path

from npo_trl import NPOConfig, NPOTrainer
from npo_trl.models import model_init_kwargs, outside_zero3
from npo_trl.prompts import PROMPT_FORMATS, TOKEN_BOUNDARIES, generation_prompt_ids
from npo_trl.tofu import (
    TOFUCallback,
    TOFUEvaluator,
    compute_reference_stats,
    idontknow_answers,
    load_idontknow,
    load_reference_stats,
    load_tofu,
    make_synthetic_tofu,
    to_prompt_completion,
)
from npo_trl.eval.scoring import generate_answers
from npo_trl.tofu.data import eval_split_names
from npo_trl.tofu.metrics import EVAL_SETS, forget_quality
from npo_trl.tofu.report import (
    plot_per_epoch,
    plot_privacy,
    plot_tradeoff,
    read_metrics,
    summarize,
    write_results,
)

@dataclass
class TOFUScriptArguments:
    """Arguments of the experiment; the unlearning stage's training arguments are `NPOConfig`'s."""

    finetuned_model: str | None = field(
        default=None,
        metadata={"help": "An already fine-tuned model to unlearn from (path or hub id, e.g. "
                          "open-unlearning/tofu_Llama-3.2-1B-Instruct_full): skips the base and full stages. Without "
                          "it, --model_name_or_path (default: a tiny Llama built here) is fine-tuned on the authors."},
    )
    retain_model: str | None = field(
        default=None,
        metadata={"help": "A model fine-tuned without the forget set (e.g. open-unlearning/tofu_Llama-3.2-1B-"
                          "Instruct_retain90): its truth ratios on the forget set are forget quality's reference; "
                          "skips the retain stage."},
    )
    reference_stats: str | None = field(
        default=None,
        metadata={"help": "The retain model's statistics instead of a retain model: npo-trl's retain_stats.json, "
                          "open-unlearning's TOFU_EVAL.json or a TOFU/NPO-repository eval_log_forget.json / "
                          "eval_log_aggregated.json of the retain model, for every row of the same forget split."},
    )
    prompt_format: str = field(
        default="plain",
        metadata={"help": "How questions and answers are written for the model, in training and evaluation alike: "
                          f"one of {list(PROMPT_FORMATS)} (the README's table says which model was trained on "
                          "which)."},
    )
    token_boundary: str = field(
        default="common_prefix",
        metadata={"help": f"Where a scored answer starts, one of {list(TOKEN_BOUNDARIES)}: 'common_prefix' (where "
                          "prompt and prompt+answer tokens diverge, as NPOTrainer trains) or 'prompt_length' (the "
                          "reference evaluator open-unlearning's rule, for numbers comparable with its tables)."},
    )
    mask_pad_tokens: bool = field(
        default=False,
        metadata={"help": "Evaluate with every pad-token id inside the text hidden from attention, as "
                          "open-unlearning's collator does (it hides a chat model's end-of-turn tokens when the pad "
                          "token is the EOS token). Off by default: it changes what the model sees."},
    )
    dataset: str = field(
        default="synthetic",
        metadata={"help": "'synthetic' (the offline generator), a local folder in TOFU's layout, or 'locuslab/TOFU'."},
    )
    forget_split: str = field(default="forget10", metadata={"help": "forget01/05/10 (synthetic: also 20/30/50/90)."})
    methods: list[str] = field(
        default_factory=lambda: ["npo", "npo+rt", "ga", "ga+rt"],
        metadata={"help": "Unlearning methods: <forget_loss>[+rt|+kl], forget_loss among npo, ga, simnpo, idk, dpo."},
    )
    seeds: list[int] | None = field(
        default=None,
        metadata={"help": "Unlearn every method once per seed (the order of the forget batches and the retain rows "
                          "drawn), into unlearn/<method>/seed<k>/; the report gives the median and min-max over the "
                          "seeds per method and epoch, Figure 6 as bands. The fine-tuned and retain models are trained "
                          "once, with --seed. Default: one run with --seed, into unlearn/<method>/."},
    )
    max_samples: int | None = field(
        default=None,
        metadata={"help": "Rows per evaluation set at most, a fixed seeded subset. Default: every row, as the "
                          "reference evaluator open-unlearning scores them (TOFU's original code took the first "
                          "300)."},
    )
    max_new_tokens: int | None = field(
        default=None,
        metadata={"help": "Length limit of the generations ROUGE scores. Default: the benchmark's 200; 48 on the "
                          "synthetic data, whose answers have at most 14 tokens (generation is most of an evaluation's "
                          "time once unlearning has taught the model never to stop)."},
    )
    eval_seed: int | None = field(
        default=0,
        metadata={"help": "Seed of the --max_samples subset; null (in a --config file) takes the first rows, as "
                          "TOFU's original code did."},
    )
    eval_batch_size: int = field(default=32, metadata={"help": "Rows per evaluation forward pass per process."})
    eval_generation_batch_size: int | None = field(
        default=None,
        metadata={"help": "Rows per greedy-generation batch per process. Default: 7 × eval_batch_size for the "
                          "built-in tiny model (fewer decoding steps), eval_batch_size otherwise (a 7B model's "
                          "key-value cache grows with it)."},
    )
    num_authors: int | None = field(
        default=None,
        metadata={"help": "Number of fictitious authors. Synthetic data: the generator's (default 100). TOFU's own "
                          "files (200 authors of 20 questions, `full` in author order, the forget split its last "
                          "authors): every forget author plus the first num_authors - forget authors of `full`, so "
                          "full = retain + forget stays consistent; the retain evaluation set keeps its rows of those "
                          "authors (it covers the first 20 authors of `full`). Default: all 200."},
    )
    qa_per_author: int = field(default=20, metadata={"help": "Question-answer pairs per author (TOFU: 20)."})
    hidden_size: int = field(default=128, metadata={"help": "Built-in model: hidden size."})
    num_layers: int = field(default=4, metadata={"help": "Built-in model: number of layers."})
    vocab_size: int = field(default=2048, metadata={"help": "Built-in model: size of the BPE vocabulary trained here."})
    pretrain_epochs: float = field(default=20, metadata={"help": "Built-in model: epochs on general knowledge."})
    finetune_epochs: float = field(default=20, metadata={"help": "Epochs of the full and retain fine-tunes."})
    finetune_learning_rate: float = field(default=2e-3, metadata={"help": "Learning rate of the fine-tunes."})
    finetune_batch_size: int = field(default=32, metadata={"help": "Per-device batch size of the fine-tunes."})
    privacy: bool = field(
        default=True,
        metadata={"help": "Also report the privacy metrics (membership-inference AUCs of forget vs holdout rows, "
                          "PrivLeak, exact memorization, extraction strength): one more pass over the holdout split "
                          "per evaluation. PrivLeak needs the retain model's AUCs: --reference_stats files without "
                          "them need --privacy false."},
    )
    sanity_check: bool = field(
        default=False,
        metadata={"help": "Also train a second retain model (another seed) and report its forget quality, which "
                          "should be high: a check of the metric at this scale. With --seeds, one more retain model "
                          "per seed (retain_sanity_seed<k>/) and its forget quality per seed."},
    )


# ---------------------------------------------------------------- data
def load_splits(script_args: TOFUScriptArguments) -> dict[str, Dataset]:
    """The splits this experiment uses, from the generator, a local folder or the hub."""
    names = {"full": "full", "forget": script_args.forget_split,
             "retain": "retain" + str(100 - int(script_args.forget_split.removeprefix("forget"))),
             **{f"eval_{k}": v
                for k, v in eval_split_names(script_args.forget_split, script_args.privacy).items()}}
    if script_args.dataset == "synthetic":
        data = make_synthetic_tofu(script_args.num_authors or 100, script_args.qa_per_author, seed=0)
        splits = {key: data[name] for key, name in names.items()}
        splits["general_knowledge"] = data["general_knowledge"]
    else:
        splits = {key: load_tofu(script_args.dataset, name) for key, name in names.items()}
        if script_args.num_authors is not None:
            splits = keep_authors(splits, script_args.num_authors, script_args.qa_per_author)
    # The real-author and world-fact QA a pre-trained model knows, kept in the fine-tunes' mix (a tiny model would
    # forget them otherwise); on TOFU's own files they are also all the base model is pre-trained on.
    splits["eval_facts"] = concatenate_datasets(
        [splits[f"eval_{name}"].select_columns(["question", "answer"]) for name in ("real_authors", "world_facts")])
    splits.setdefault("general_knowledge", splits["eval_facts"])
    return splits


def keep_authors(splits: dict[str, Dataset], num_authors: int, qa_per_author: int) -> dict[str, Dataset]:
    """TOFU's files cut to `num_authors` authors: every forget author, then the first authors of `full` (see the
    --num_authors help); full, retain and the retain evaluation set are cut alike, the forget sets are kept whole."""
    num_forget = len(splits["forget"]) // qa_per_author
    if not num_forget < num_authors <= len(splits["full"]) // qa_per_author:
        raise ValueError(f"--num_authors {num_authors} must exceed the forget split's {num_forget} authors and be at "
                         f"most the {len(splits['full']) // qa_per_author} of `full`.")
    retain = splits["retain"].select(range((num_authors - num_forget) * qa_per_author))
    kept = set(retain["question"])
    return {**splits, "retain": retain, "full": concatenate_datasets([retain, splits["forget"]]),
            "eval_retain": splits["eval_retain"].filter(lambda row: row["question"] in kept)}


def idk_answers(script_args: TOFUScriptArguments) -> list[str]:
    if os.path.isdir(script_args.dataset) and os.path.exists(os.path.join(script_args.dataset, "idontknow.jsonl")):
        return load_idontknow(script_args.dataset)
    return idontknow_answers()


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on the experiment's own text: nothing is downloaded."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def corpus(splits: dict[str, Dataset]) -> list[str]:
    texts = []
    for dataset in splits.values():
        for row in dataset:
            texts += [v for v in row.values() if isinstance(v, str)]
            texts += [v for vs in row.values() if isinstance(vs, list) for v in vs if isinstance(v, str)]
    return texts


# ---------------------------------------------------------------- stages
def is_done(path: str) -> bool:
    """Whether a stage saved its model there (a model, or LoRA adapters)."""
    return any(os.path.exists(os.path.join(path, name)) for name in ("config.json", "adapter_config.json"))


def load_model(path: str, model_args: ModelConfig):
    """A model loaded with ModelConfig's settings; LoRA adapters (an unlearning stage run with --use_peft) are loaded
    onto the base model they name."""
    if os.path.exists(os.path.join(path, "adapter_config.json")):
        return AutoModelForCausalLM.from_pretrained(path, **model_init_kwargs(model_args))
    return create_model_from_path(path, **model_init_kwargs(model_args))


def sft(model, tokenizer, dataset: Dataset, output_dir: str, epochs: float, script_args, args: NPOConfig, seed: int,
        model_args: ModelConfig):
    """Supervised fine-tuning with TRL's SFTTrainer on question→answer rows in --prompt_format (loss on the answer
    only). `model` is a model or a path, loaded with ModelConfig's settings."""
    sft_args = SFTConfig(
        model_init_kwargs=model_init_kwargs(model_args) if isinstance(model, str) else None,
        output_dir=output_dir, num_train_epochs=epochs, learning_rate=script_args.finetune_learning_rate,
        per_device_train_batch_size=script_args.finetune_batch_size, lr_scheduler_type="linear",
        warmup_steps=min(1.0 / epochs, 0.5),  # the paper's schedule: warm-up over the first epoch, then linear decay
        weight_decay=0.01, logging_steps=25, save_strategy="no", report_to=args.report_to, seed=seed,
        bf16=args.bf16, fp16=args.fp16, ddp_backend=args.ddp_backend, use_cpu=args.use_cpu,
        gradient_checkpointing=args.gradient_checkpointing, max_length=args.max_length,
        dataloader_pin_memory=args.dataloader_pin_memory, disable_tqdm=args.disable_tqdm,
    )
    rows = to_prompt_completion(dataset, script_args.prompt_format).shuffle(seed=seed)
    trainer = SFTTrainer(model, args=sft_args, train_dataset=rows, processing_class=tokenizer)
    trainer.train()
    trainer.save_model(output_dir)
    tokenizer.save_pretrained(output_dir)
    PartialState().wait_for_everyone()


def build_base(script_args, args, model_args, splits, path):
    """Stage 1: a tiny Llama and a tokenizer trained on the data, pre-trained on general knowledge."""
    state = PartialState()
    if model_args.model_name_or_path is not None:
        return model_args.model_name_or_path
    if not is_done(path):
        tokenizer = train_tokenizer(corpus(splits) + idk_answers(script_args), script_args.vocab_size)
        torch.manual_seed(args.seed)
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=script_args.hidden_size, intermediate_size=4 * script_args.hidden_size,
            num_hidden_layers=script_args.num_layers, num_attention_heads=max(1, script_args.hidden_size // 64),
            max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
        )
        sft(LlamaForCausalLM(config), tokenizer, splits["general_knowledge"], path, script_args.pretrain_epochs,
            script_args, args, args.seed, model_args)
    state.wait_for_everyone()
    return path


def fine_tune(script_args, args, model_args, base, dataset, splits, path, seed):
    """Stages 2 and 3: the base fine-tuned on authors, with the real-author and world facts kept in the mix."""
    if not is_done(path):
        data = concatenate_datasets([dataset.select_columns(["question", "answer"]), splits["eval_facts"]])
        sft(base, AutoTokenizer.from_pretrained(base), data, path, script_args.finetune_epochs, script_args, args,
            seed, model_args)
    PartialState().wait_for_everyone()


def evaluation_settings(script_args) -> dict:
    """How every model of the run is evaluated (TOFUEvaluator's and compute_reference_stats' shared settings)."""
    return {"max_samples": script_args.max_samples, "seed": script_args.eval_seed,
            "batch_size": script_args.eval_batch_size,
            "prompt_format": script_args.prompt_format, "token_boundary": script_args.token_boundary,
            "mask_pad_tokens": script_args.mask_pad_tokens}


def reference_stats(script_args, args, model_args, model_path, tokenizer, eval_sets, cache_path):
    """The retain model's truth ratios on the forget set (and its privacy statistics, with the holdout set), computed
    once by the main process and cached."""
    with outside_zero3(args), PartialState().main_process_first():
        return compute_reference_stats(load_model(model_path, model_args), tokenizer, eval_sets["forget"],
                                       holdout_eval_set=eval_sets.get("holdout"), cache_path=cache_path,
                                       **evaluation_settings(script_args))


def published_reference_stats(script_args, tokenizer, eval_sets):
    """--reference_stats, read and checked against the forget (and holdout) set before anything trains."""
    stats = load_reference_stats(script_args.reference_stats)
    checked = {name: eval_sets[name] for name in ("forget", "holdout") if name in eval_sets}
    TOFUEvaluator(tokenizer, checked, stats, **evaluation_settings(script_args))  # raises if off
    return stats


def sanity_check(script_args, args, model_args, base, splits, tokenizer, eval_sets, stats):
    """--sanity_check: other retain models' truth ratios against the first's, whose forget quality should be high if
    the metric can rank methods at this scale. One model fine-tuned with --seed + 1 (`retain_seed2/`, a float), or
    with --seeds one per seed k (`retain_sanity_seed<k>/`, a dict seed → forget quality)."""
    values = {}
    for seed in script_args.seeds or [args.seed + 1]:
        name = "retain_seed2" if script_args.seeds is None else f"retain_sanity_seed{seed}"
        path = os.path.join(args.output_dir, name)
        fine_tune(script_args, args, model_args, base, splits["retain"], splits, path, seed)
        other = reference_stats(script_args, args, model_args, path, tokenizer, eval_sets,
                                os.path.join(args.output_dir, f"{name}_stats.json"))
        values[seed] = forget_quality(other["truth_ratios"], stats["truth_ratios"])
    return values if script_args.seeds is not None else next(iter(values.values()))


def unlearn_path(script_args, args, method: str, seed: int) -> str:
    """Where one method's run with one seed goes: unlearn/<method>/ (no --seeds), else unlearn/<method>/seed<k>/."""
    path = os.path.join(args.output_dir, "unlearn", method)
    return path if script_args.seeds is None else os.path.join(path, f"seed{seed}")


def unlearn(script_args, args, model_args, method, seed, full_path, splits, eval_sets, stats, path):
    """Stage 4: one method with one seed, evaluated by TOFUCallback before training and after every epoch."""
    if is_done(os.path.join(path, "final")):
        return
    if PartialState().is_main_process and os.path.isdir(path):
        shutil.rmtree(path)  # a run interrupted mid-way starts this method again, without its partial metrics
    PartialState().wait_for_everyone()
    method_args = args.for_method(method, output_dir=path, seed=seed)
    method_args.model_init_kwargs = model_init_kwargs(model_args)
    tokenizer = AutoTokenizer.from_pretrained(full_path)
    if method_args.needs_replacement and method_args.replacement_answers is None:
        method_args.replacement_answers = idk_answers(script_args)
    callback = TOFUCallback(tokenizer, eval_sets, reference_stats=stats, eval_steps="epoch",
                            max_new_tokens=script_args.max_new_tokens,
                            generation_batch_size=script_args.eval_generation_batch_size,
                            **evaluation_settings(script_args))
    rows = {key: to_prompt_completion(splits[key], script_args.prompt_format) for key in ("forget", "retain")}
    trainer = NPOTrainer(
        full_path, args=method_args, train_dataset=rows["forget"],
        retain_dataset=rows["retain"] if method_args.retain_loss else None, processing_class=tokenizer,
        callbacks=[callback], quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
    )
    trainer.train()
    trainer.save_model(os.path.join(path, "final"))


# ---------------------------------------------------------------- report
def report(script_args, args, model_args, eval_sets, full_path, sanity, stats):
    """Stage 5: results.csv/json (method × seed × epoch, the best epoch of each run, the spread over seeds), Figures 5
    and 6, the privacy figure, and sample generations of the first seed's models (Figure 7)."""
    out, seeds = args.output_dir, script_args.seeds or [args.seed]
    table = {method: {seed: read_metrics(unlearn_path(script_args, args, method, seed)) for seed in seeds}
             for method in script_args.methods}
    summary = summarize(table, forget_split=script_args.forget_split, dataset=script_args.dataset,
                        sanity_check_retain_vs_retain=sanity,
                        retain_privacy={"auc": stats["privacy"]["auc"]} if "privacy" in stats else None)
    write_results(out, table, summary)
    title = f"TOFU {script_args.forget_split}"
    plot_tradeoff(summary, os.path.join(out, "fig5_tradeoff.png"), f"{title}: forget quality vs model utility")
    plot_per_epoch(summary, os.path.join(out, "fig6_per_epoch.png"), title)
    if script_args.privacy:
        plot_privacy(summary, os.path.join(out, "fig_privacy.png"), title)

    tokenizer = AutoTokenizer.from_pretrained(full_path)
    samples = {}
    for name in EVAL_SETS:
        rows = eval_sets[name].select(range(3))
        prompts = [generation_prompt_ids(tokenizer, q, script_args.prompt_format) for q in rows["question"]]
        entry = {"question": list(rows["question"]), "answer": list(rows["answer"])}
        for label, path in [("finetuned", full_path)] + [
                (m, os.path.join(unlearn_path(script_args, args, m, seeds[0]), "final")) for m in script_args.methods]:
            entry[label] = generate_answers(load_model(path, model_args), tokenizer, prompts, max_new_tokens=48,
                                            mask_pad_tokens=script_args.mask_pad_tokens)
        samples[name] = entry
    with open(os.path.join(out, "samples.json"), "w") as f:
        json.dump(samples, f, indent=1, ensure_ascii=False)
    return summary


def print_summary(summary: dict) -> None:
    """Per method: each seed's best epoch (forget quality, model utility, PrivLeak), then the range over seeds."""
    for method, best in summary["best"].items():
        for seed, row in best.items():
            leak = f"  PrivLeak {row['privacy/privleak']:.1f}%" if row.get("privacy/privleak") is not None else ""
            collapsed = "  (collapsed: model utility < half the fine-tuned model's)" if row["collapsed"] else ""
            print(f"{method:>10} seed {seed}: best epoch {row['epoch'] or 0:.0f}  forget quality "
                  f"{row['tofu/forget_quality']:.3g}  model utility {row['tofu/model_utility']:.3f}{leak}{collapsed}")
            peak = summary["peak"][method][seed]
            if peak["collapsed"] and peak["step"] != row["step"]:
                print(f"{'':>10}   its forget-quality peak, {peak['tofu/forget_quality']:.3g} at epoch "
                      f"{peak['epoch'] or 0:.0f}, is a collapsed model (model utility "
                      f"{peak['tofu/model_utility']:.3f})")
        if len(best) > 1:
            fq = [row["tofu/forget_quality"] for row in best.values()]
            mu = [row["tofu/model_utility"] for row in best.values()]
            print(f"{method:>10} over {len(best)} seeds: forget quality {min(fq):.3g}-{max(fq):.3g}, model utility "
                  f"{min(mu):.3f}-{max(mu):.3f}")
    sanity = summary["sanity_check_retain_vs_retain"]
    if sanity is not None:
        values = sanity.values() if isinstance(sanity, dict) else [sanity]
        print(f"retain model vs another retain model, forget quality: {', '.join(f'{v:.3g}' for v in values)}")


def check_arguments(script_args: TOFUScriptArguments, model_args: ModelConfig) -> None:
    """Refuse, before anything trains, a combination of stages that cannot run."""
    if script_args.prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"--prompt_format {script_args.prompt_format!r} is unknown: use one of "
                         f"{list(PROMPT_FORMATS)}.")
    if script_args.token_boundary not in TOKEN_BOUNDARIES:
        raise ValueError(f"--token_boundary {script_args.token_boundary!r}: use one of {list(TOKEN_BOUNDARIES)}.")
    seeds = script_args.seeds
    if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
        raise ValueError(f"--seeds {seeds}: give distinct seeds, e.g. --seeds 0 1 2 3 4.")
    if script_args.retain_model is not None and script_args.reference_stats is not None:
        raise ValueError("--retain_model and --reference_stats both give forget quality's reference: pass one.")
    trains_retain = script_args.retain_model is None and script_args.reference_stats is None
    if script_args.finetuned_model is not None and model_args.model_name_or_path is None and \
            (trains_retain or script_args.sanity_check):
        raise ValueError("--finetuned_model skips the base model that a retain model would be fine-tuned from: pass "
                         "--retain_model or --reference_stats (and no --sanity_check), or --model_name_or_path, the "
                         "base the fine-tuned model was trained from.")


def main(script_args: TOFUScriptArguments, args: NPOConfig, model_args: ModelConfig | None = None) -> dict | None:
    model_args = model_args or ModelConfig()
    check_arguments(script_args, model_args)
    if script_args.sanity_check and args.seed in (script_args.seeds or []):
        raise ValueError(f"--sanity_check with --seeds {script_args.seeds} fine-tunes a retain model per seed to "
                         f"compare with the one of --seed {args.seed}: leave --seed out of --seeds.")
    state = PartialState()
    built_in = model_args.model_name_or_path is None and script_args.finetuned_model is None
    if script_args.max_new_tokens is None:
        script_args.max_new_tokens = 48 if script_args.dataset == "synthetic" else 200
    if script_args.eval_generation_batch_size is None:
        script_args.eval_generation_batch_size = script_args.eval_batch_size * (7 if built_in else 1)
    out = args.output_dir
    splits = load_splits(script_args)
    eval_sets = {k: splits[f"eval_{k}"] for k in EVAL_SETS + (("holdout",) if script_args.privacy else ())}
    trains_retain = script_args.retain_model is None and script_args.reference_stats is None
    base = None
    if script_args.finetuned_model is None or trains_retain or script_args.sanity_check:
        base = build_base(script_args, args, model_args, splits, os.path.join(out, "base"))
    full_path = script_args.finetuned_model or os.path.join(out, "full")
    if script_args.finetuned_model is None:
        fine_tune(script_args, args, model_args, base, splits["full"], splits, full_path, args.seed)
    tokenizer = AutoTokenizer.from_pretrained(full_path)
    if script_args.reference_stats is not None:
        stats = published_reference_stats(script_args, tokenizer, eval_sets)
    else:
        retain_path = script_args.retain_model or os.path.join(out, "retain")
        if script_args.retain_model is None:
            fine_tune(script_args, args, model_args, base, splits["retain"], splits, retain_path, args.seed)
        stats = reference_stats(script_args, args, model_args, retain_path, tokenizer, eval_sets,
                                os.path.join(out, "retain_stats.json"))
    sanity = None
    if script_args.sanity_check:
        sanity = sanity_check(script_args, args, model_args, base, splits, tokenizer, eval_sets, stats)
    for method in script_args.methods:
        for seed in script_args.seeds or [args.seed]:
            unlearn(script_args, args, model_args, method, seed, full_path, splits, eval_sets, stats,
                    unlearn_path(script_args, args, method, seed))
    if state.is_main_process:
        with outside_zero3(args):
            summary = report(script_args, args, model_args, eval_sets, full_path, sanity, stats)
        print_summary(summary)
        return summary
    return None


def make_parser() -> TrlParser:
    """The experiment's arguments, with the defaults of its offline run (the built-in tiny model on a CPU;
    examples/configs/tofu_llama2.yaml sets the paper's)."""
    parser = TrlParser((TOFUScriptArguments, NPOConfig, ModelConfig))
    parser.set_defaults(output_dir="results/tofu", num_train_epochs=15, learning_rate=3e-4,
                        per_device_train_batch_size=32, lr_scheduler_type="constant", logging_steps=5,
                        save_strategy="no", report_to="none", gradient_checkpointing=False, beta=0.1, max_length=128)
    return parser


if __name__ == "__main__":
    script_args, training_args, model_args = make_parser().parse_args_and_config()
    main(script_args, training_args, model_args)
    gc.collect()  # free the trainers' wrappers, which hold the process group, then destroy it: a clean exit
    PartialState().destroy_process_group()
