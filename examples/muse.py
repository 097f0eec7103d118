# Copyright 2026 The npo-trl developers. Licensed under the Apache License, Version 2.0.
"""MUSE's News experiment in one run: target model, retrain model, unlearning with each method, Table 3, C5 and C6.

    accelerate launch examples/muse.py                                   # offline synthetic default, a tiny Llama
    accelerate launch examples/muse.py --dataset ./MUSE-News             # a local copy in the hub's layout
    accelerate launch --config_file examples/accelerate_configs/zero3.yaml examples/muse.py \
        --config examples/configs/muse_news_llama2.yaml                  # MUSE's target and retrain models

Stages (each writes under --output_dir and is skipped when its output exists, so a crashed run resumes):

1. `target/`: with no --target_model, a small Llama built from a config and a tokenizer trained on the corpus,
   trained on the forget articles (scal forget_4, every fold) and retain1 + retain2, each article a sequence;
2. `retrain/`: the same model trained on retain1 + retain2 alone (skipped with --retrain_model), and its PrivLeak
   AUCs (`retrain_stats.json`), against which PrivLeak is measured;
3. `unlearn/<method>/`: the target unlearned on raw forget with each method of --methods (retain set: retain1), both
   chunked by MUSE's rule (`npo_trl.muse.chunk_texts`), MUSE's criteria every epoch (`MUSECallback`);
4. `c5/<method>/`, `c6/<method>/`: scalability (scal forget_1..4, each from the target) and sustainability (sust
   forget_1..4, one after another) for each of --criteria_methods;
5. `results.csv` (method × epoch), `results.json`, `table3.md` (target, retrain and each method's final model:
   VerbMem D_f, KnowMem D_f, PrivLeak, KnowMem D_r), `fig_per_epoch.png` and `fig_c5_c6.png`.
"""

import gc
import json
import os
import shutil
from dataclasses import dataclass, field

import torch
from accelerate import PartialState
from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser, get_peft_config

from npo_trl import NPOConfig, NPOTrainer
from npo_trl.models import model_init_kwargs, outside_zero3
from npo_trl.config import method_losses
from npo_trl.muse import (
    MUSECallback,
    MUSEEvaluator,
    chunk_texts,
    compute_reference_stats,
    load_muse,
    make_synthetic_muse,
    muse_eval_sets,
)
from npo_trl.muse.criteria import scalability, sustainability


@dataclass
class MUSEScriptArguments:
    """Arguments of the experiment; the unlearning stage's training arguments are `NPOConfig`'s."""

    dataset: str = field(default="synthetic", metadata={
        "help": "'synthetic' (the offline generator), 'news' or 'books' (MUSE's hub datasets), or a local folder in "
                "their layout (<subset>/<split>.parquet|.jsonl|.json)."})
    target_model: str | None = field(default=None, metadata={
        "help": "A model trained on the corpus (e.g. muse-bench/MUSE-News_target): skips the target stage."})
    retrain_model: str | None = field(default=None, metadata={
        "help": "A model trained on the retain set only (e.g. muse-bench/MUSE-News_retrain): skips the retrain "
                "stage. PrivLeak is relative to its AUC."})
    tokenizer_name_or_path: str | None = field(default=None, metadata={
        "help": "The tokenizer of every model, when the target model has none of its own (MUSE's: "
                "meta-llama/Llama-2-7b-hf). Default: the target model's."})
    methods: list[str] = field(default_factory=lambda: ["npo", "npo+rt", "npo+kl", "ga", "ga+rt", "ga+kl"],
                               metadata={"help": "Unlearning methods: <forget_loss>[+rt|+kl]."})
    criteria: bool = field(default=True, metadata={
        "help": "Run C5 (scalability) and C6 (sustainability) for --criteria_methods (MUSE-Books has no scal/sust "
                "subsets: --criteria false)."})
    criteria_methods: list[str] = field(default_factory=lambda: ["npo+rt"], metadata={
        "help": "Methods also run for C5 and C6."})
    num_forget: int = field(default=16, metadata={"help": "Synthetic data: articles per forget fold."})
    hidden_size: int = field(default=128, metadata={"help": "Built-in model: hidden size."})
    num_layers: int = field(default=4, metadata={"help": "Built-in model: number of layers."})
    vocab_size: int = field(default=2048, metadata={"help": "Built-in model: size of its BPE vocabulary."})
    target_epochs: float = field(default=40, metadata={"help": "Epochs of the target and retrain models' training."})
    target_learning_rate: float = field(default=2e-3, metadata={"help": "Learning rate of that training."})
    target_batch_size: int = field(default=8, metadata={"help": "Per-device batch size of that training."})
    join_documents: bool | None = field(default=None, metadata={
        "help": "Unlearning rows: MUSE's chunks of the joined forget (and retain) articles (true), or each article "
                "cut on its own (false). Default: MUSE's rule, except with the built-in target model, which was "
                "trained one article per sequence."})
    eval_batch_size: int = field(default=16, metadata={"help": "Prompts or texts per evaluation batch per process."})
    verbmem_max_new_tokens: int = field(default=128, metadata={"help": "VerbMem continuation length (MUSE: 128)."})
    knowmem_max_new_tokens: int = field(default=32, metadata={"help": "KnowMem answer length limit (MUSE: 32)."})
    knowmem_trailing_space: bool | None = field(default=None, metadata={
        "help": "End KnowMem prompts with 'Answer: ' as MUSE does. Default: yes, except with the built-in byte-level "
                "tokenizer, where that space is a token never seen before an answer."})


# ---------------------------------------------------------------- data and models
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


def forget_folds(source) -> list[Dataset]:
    """Every forget article the target model was trained on: scal forget_4 (all folds), or raw forget where the
    corpus has no scal subset (MUSE-Books)."""
    try:
        return [load_muse(source, "scal", "forget_4")]
    except ValueError:
        return [load_muse(source, "raw", "forget")]


def is_done(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, name)) for name in ("config.json", "adapter_config.json"))


def train_lm(model, tokenizer, texts: list[str], path: str, script_args, args: NPOConfig):
    """Language modelling with TRL's SFTTrainer, every token counted: each text a sequence of its own (BOS, the text,
    EOS), cut into pieces of at most max_length tokens. Unlike unlearning, which takes MUSE's chunks of the joined
    corpus, the models here do not learn an article's facts keyed on whichever article precedes it in a chunk: that is
    what lets a small model answer a KnowMem question asked out of that context."""
    rows = []
    for text in texts:
        ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
        rows += [ids[start:start + args.max_length] for start in range(0, len(ids), args.max_length)]
    sft_args = SFTConfig(
        output_dir=path, num_train_epochs=script_args.target_epochs, learning_rate=script_args.target_learning_rate,
        per_device_train_batch_size=script_args.target_batch_size, lr_scheduler_type="linear", warmup_steps=0.05,
        weight_decay=0.01, logging_steps=25, save_strategy="no", report_to=args.report_to, seed=args.seed,
        bf16=args.bf16, fp16=args.fp16, ddp_backend=args.ddp_backend, use_cpu=args.use_cpu, max_length=None,
        gradient_checkpointing=args.gradient_checkpointing, dataloader_pin_memory=args.dataloader_pin_memory,
        disable_tqdm=args.disable_tqdm)
    trainer = SFTTrainer(model, args=sft_args, train_dataset=Dataset.from_dict({"input_ids": rows}).shuffle(args.seed),
                         processing_class=tokenizer)
    trainer.train()
    trainer.save_model(path)
    tokenizer.save_pretrained(path)


def build_models(script_args, args, model_args, source, paths) -> tuple[str, str]:
    """Stages 1 and 2: (target model, retrain model), each trained here from the base unless given. The base is
    --model_name_or_path, or a small Llama built from a config with a tokenizer trained on the corpus."""
    state = PartialState()
    retain = [text for split in ("retain1", "retain2") for text in load_muse(source, "raw", split)["text"]]
    forget = [text for fold in forget_folds(source) for text in fold["text"]]
    tokenizer_path = model_args.model_name_or_path or os.path.join(args.output_dir, "tokenizer")
    for kind, texts, given in (("target", forget + retain, script_args.target_model),
                               ("retrain", retain, script_args.retrain_model)):
        if given is not None or is_done(paths[kind]):
            continue
        if model_args.model_name_or_path is None:
            with state.main_process_first():
                if state.is_main_process and not os.path.exists(os.path.join(tokenizer_path, "tokenizer.json")):
                    holdout = list(load_muse(source, "raw", "holdout")["text"])
                    train_tokenizer(forget + retain + holdout, script_args.vocab_size).save_pretrained(tokenizer_path)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        model = model_args.model_name_or_path or tiny_llama(tokenizer, script_args, args)
        train_lm(model, tokenizer, texts, paths[kind], script_args, args)
        state.wait_for_everyone()
    return script_args.target_model or paths["target"], script_args.retrain_model or paths["retrain"]


def tiny_llama(tokenizer, script_args, args) -> LlamaForCausalLM:
    """The built-in base: a small Llama from a config, seeded, long enough for a chunk and a VerbMem continuation."""
    torch.manual_seed(args.seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=script_args.hidden_size, intermediate_size=4 * script_args.hidden_size,
        num_hidden_layers=script_args.num_layers, num_attention_heads=max(1, script_args.hidden_size // 64),
        max_position_embeddings=max(args.max_length, 512) + script_args.verbmem_max_new_tokens,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True))


def evaluator_settings(script_args, args, model_args) -> dict:
    trailing = script_args.knowmem_trailing_space
    return {"batch_size": script_args.eval_batch_size, "verbmem_max_new_tokens": script_args.verbmem_max_new_tokens,
            "knowmem_max_new_tokens": script_args.knowmem_max_new_tokens, "max_length": args.max_length,
            "knowmem_trailing_space": (script_args.target_model or model_args.model_name_or_path) is not None
            if trailing is None else trailing}


def unlearn(args, model_args, tokenizer, method, model_path, forget_texts, retain_texts, path, join,
            callback=None) -> str:
    """One unlearning run on MUSE-chunked forget (and retain) text; returns the saved model's path."""
    final = os.path.join(path, "final")
    if is_done(final):
        return final
    state = PartialState()
    if state.is_main_process and os.path.isdir(path):
        shutil.rmtree(path)  # an interrupted run starts again, without its partial metrics
    state.wait_for_everyone()
    method_args = args.for_method(method, output_dir=path)
    method_args.model_init_kwargs = model_init_kwargs(model_args)
    trainer = NPOTrainer(
        model_path, args=method_args, train_dataset=chunk_texts(forget_texts, tokenizer, args.max_length, join),
        retain_dataset=chunk_texts(retain_texts, tokenizer, args.max_length, join) if method_args.retain_loss
        else None, processing_class=tokenizer, callbacks=[callback] if callback else None,
        peft_config=get_peft_config(model_args))
    trainer.train()
    trainer.save_model(final)
    tokenizer.save_pretrained(final)
    del trainer
    gc.collect()
    return final


def load_model(path, model_args, args):
    """A saved model, whole, on this process's device."""
    with outside_zero3(args):
        return AutoModelForCausalLM.from_pretrained(path, **model_init_kwargs(model_args)).to(PartialState().device)


def evaluate_model(path, tokenizer, model_args, args, eval_sets, stats, settings) -> dict:
    """MUSE's criteria of a saved model, by the main process alone (outside training; the others get {})."""
    if not PartialState().is_main_process:
        return {}
    return MUSEEvaluator(tokenizer, eval_sets, stats, **settings).evaluate(
        load_model(path, model_args, args))


# ---------------------------------------------------------------- report
def read_metrics(path: str) -> list[dict]:
    with open(os.path.join(path, "muse_metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


TABLE_COLUMNS = {"muse/verbmem_forget": "VerbMem D_f (lower)", "muse/knowmem_forget": "KnowMem D_f (lower)",
                 "muse/privleak": "PrivLeak (near 0)", "muse/knowmem_retain": "KnowMem D_r (higher)"}


def table3(rows: dict[str, dict]) -> str:
    """MUSE's Table 3 shape: a row per model, its four numbers."""
    def cell(value):
        return "" if value is None else f"{value:.1f}"
    lines = ["| model | " + " | ".join(TABLE_COLUMNS.values()) + " |", "|---" * (len(TABLE_COLUMNS) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(cell(row.get(key)) for key in TABLE_COLUMNS) + " |"
              for name, row in rows.items()]
    return "\n".join(lines) + "\n"


def report(script_args, args, table, reference, criteria):
    """Stage 5: results.csv/json, table3.md, the per-epoch figure and the C5/C6 figure."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = args.output_dir
    keys = [k for k in table[script_args.methods[0]][0] if k.startswith("muse/")]
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "epoch", "step", *keys])
        for method, rows in table.items():
            for row in rows:
                writer.writerow([method, round(row["epoch"] or 0.0, 3), row["step"], *(row[k] for k in keys)])
    final = {**reference, **{method: rows[-1] for method, rows in table.items()}}
    with open(os.path.join(out, "table3.md"), "w") as f:
        f.write(table3(final))
    summary = {"dataset": script_args.dataset, "table3": final, "per_epoch": table, "criteria": criteria}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for method, rows in table.items():
        epochs = [r["epoch"] or 0.0 for r in rows]
        for ax, key in zip(axes, TABLE_COLUMNS):
            ax.plot(epochs, [r[key] if r[key] is not None else float("nan") for r in rows], marker="o", label=method)
    for ax, (key, label) in zip(axes, TABLE_COLUMNS.items()):
        ax.axhline(reference["retrain"][key] or 0.0, ls=":", c="k", lw=1)
        ax.set_xlabel("epoch"), ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.suptitle("MUSE, per epoch (dotted: the retrain model)")
    fig.tight_layout(rect=(0, 0, 1, 0.94)), fig.savefig(os.path.join(out, "fig_per_epoch.png"), dpi=110)
    plt.close(fig)

    if criteria:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, (name, xlabel) in zip(axes, (("c5", "forget articles (scal forget_k)"),
                                             ("c6", "unlearning requests (sust forget_1..k)"))):
            for method, rows in criteria[name].items():
                x = [r["forget_rows"] if name == "c5" else r["forget_set"] for r in rows]
                for key, style in (("muse/knowmem_retain", "o-"), ("muse/knowmem_forget", "s--"),
                                   ("muse/verbmem_forget", "^:")):
                    ax.plot(x, [r[key] for r in rows], style, label=f"{method} {TABLE_COLUMNS[key]}")
            ax.set_xlabel(xlabel), ax.set_ylabel("×100")
        axes[0].set_title("C5 scalability"), axes[1].set_title("C6 sustainability"), axes[0].legend(fontsize=7)
        fig.tight_layout(), fig.savefig(os.path.join(out, "fig_c5_c6.png"), dpi=110), plt.close(fig)
    return summary


def check_arguments(script_args: MUSEScriptArguments, model_args: ModelConfig) -> None:
    """Refuse, before anything trains, a combination that cannot run."""
    if script_args.target_model is not None and script_args.retrain_model is None and \
            model_args.model_name_or_path is None:
        raise ValueError("--target_model skips the base that a retrain model would be trained from: pass "
                         "--retrain_model (e.g. muse-bench/MUSE-News_retrain), or --model_name_or_path, the base.")
    if script_args.retrain_model is not None and script_args.target_model is None and \
            model_args.model_name_or_path is None:
        raise ValueError("--retrain_model without --target_model: the built-in target has a tokenizer trained here, "
                         "which the given retrain model does not share; pass --target_model too, or "
                         "--model_name_or_path, the base both come from.")
    for flag, methods in (("--methods", script_args.methods),
                          ("--criteria_methods", script_args.criteria_methods if script_args.criteria else [])):
        for method in methods:
            if method_losses(method)[0] not in ("npo", "ga", "simnpo"):
                raise ValueError(f"{flag} {method!r}: use <npo|ga|simnpo>[+rt|+kl] (MUSE's forget sets are raw text, "
                                 "with no replacement answer for idk/dpo).")


def main(script_args: MUSEScriptArguments, args: NPOConfig, model_args: ModelConfig | None = None) -> dict | None:
    model_args = model_args or ModelConfig()
    check_arguments(script_args, model_args)
    state, out = PartialState(), args.output_dir
    source = make_synthetic_muse(script_args.num_forget) if script_args.dataset == "synthetic" else script_args.dataset
    if script_args.criteria:
        try:
            load_muse(source, "scal", "forget_1"), load_muse(source, "sust", "forget_1")
        except ValueError as error:
            raise ValueError(f"--criteria needs the scal and sust subsets, which {script_args.dataset!r} lacks "
                             f"(MUSE-Books has none): pass --criteria false. ({error})") from error
    paths = {"target": os.path.join(out, "target"), "retrain": os.path.join(out, "retrain")}
    target, retrain = build_models(script_args, args, model_args, source, paths)
    tokenizer = AutoTokenizer.from_pretrained(script_args.tokenizer_name_or_path or target)
    eval_sets = muse_eval_sets(source)
    settings = evaluator_settings(script_args, args, model_args)
    with state.main_process_first():  # the main process computes them; the others read its cache
        stats = compute_reference_stats(load_model(retrain, model_args, args), tokenizer, eval_sets,
                                        cache_path=os.path.join(out, "retrain_stats.json"), model_name=retrain,
                                        **{k: settings[k] for k in ("batch_size", "max_length")})
    join = script_args.join_documents
    if join is None:
        join = (script_args.target_model or model_args.model_name_or_path) is not None
    forget = list(load_muse(source, "raw", "forget")["text"])
    retain = list(load_muse(source, "raw", "retain1")["text"])
    for method in script_args.methods:
        callback = MUSECallback(tokenizer, eval_sets, reference_stats=stats, **settings)
        unlearn(args, model_args, tokenizer, method, target, forget, retain, os.path.join(out, "unlearn", method), join,
                callback)

    def evaluate(path):
        return evaluate_model(path, tokenizer, model_args, args, eval_sets, stats, settings)

    criteria = {"c5": {}, "c6": {}}
    for method in script_args.criteria_methods if script_args.criteria else []:
        def run(model_path, forget_set, path, method=method):
            return unlearn(args, model_args, tokenizer, method, model_path, list(forget_set["text"]), retain, path,
                           join)
        folds = [load_muse(source, subset, f"forget_{k}") for subset in ("scal", "sust") for k in range(1, 5)]
        criteria["c5"][method] = scalability(run, evaluate, target, folds[:4], os.path.join(out, "c5", method))
        criteria["c6"][method] = sustainability(run, evaluate, target, folds[4:], os.path.join(out, "c6", method))
    if not state.is_main_process:
        return None
    reference = {"target": evaluate(target), "retrain": evaluate(retrain)}
    table = {method: read_metrics(os.path.join(out, "unlearn", method)) for method in script_args.methods}
    summary = report(script_args, args, table, reference, criteria if script_args.criteria else None)
    print(table3(summary["table3"]))
    return summary


def make_parser() -> TrlParser:
    """The experiment's arguments, with the defaults of its offline run (the built-in tiny model on a CPU;
    examples/configs/muse_news_llama2.yaml sets MUSE's)."""
    parser = TrlParser((MUSEScriptArguments, NPOConfig, ModelConfig))
    parser.set_defaults(output_dir="results/muse", num_train_epochs=10, learning_rate=1e-3,
                        per_device_train_batch_size=4, lr_scheduler_type="constant", logging_steps=5,
                        save_strategy="no", report_to="none", gradient_checkpointing=False, beta=0.1, max_length=256)
    return parser


if __name__ == "__main__":
    script_args, training_args, model_args = make_parser().parse_args_and_config()
    main(script_args, training_args, model_args)
    gc.collect()  # free the trainers' wrappers, which hold the process group, then destroy it: a clean exit
    PartialState().destroy_process_group()
