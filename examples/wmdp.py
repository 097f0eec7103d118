# Copyright 2026 The npo-trl developers. Licensed under the Apache License, Version 2.0.
"""Hazardous-knowledge unlearning in the WMDP style (Li et al. 2024, arXiv 2403.03218), offline: RMU, NPO and NPO+RT
on a stand-in of WMDP and MMLU, scored by lm-evaluation-harness.

    accelerate launch examples/wmdp.py                                   # the offline default, a tiny Llama
    accelerate launch examples/wmdp.py --methods all --seeds 0           # every method (npo_trl.comparison) and RMU

Stages (each writes under --output_dir and is skipped when its output exists, so a crashed run resumes):

1. `data/`: the stand-in (`npo_trl.wmdp.write_synthetic_wmdp`: a forget corpus about fictional microbes with their
   four-choice questions, a retain corpus about fictional towns with general questions, and the lm-eval task files);
   `tokenizer/`, a byte-level BPE tokenizer trained on its corpora;
2. `target/`: a small Llama built from a config (or --model_name_or_path) trained on both corpora, whose documents
   state each fact as prose and as the question and answer the tasks ask, until it answers both question sets;
3. `unlearn/<method>/seed<k>/`: the target unlearned with each of --methods, once per seed of --seeds: forget = the
   forget corpus (one text row per document), retain = the retain corpus (methods with a retain loss: +rt, rmu's
   activations); lm-eval's accuracy on the forget questions (`wmdp_synthetic`) and the general ones (`mmlu_synthetic`)
   after every epoch (`LMEvalCallback`, `lm_eval_metrics.jsonl`);
4. `results.json`, `results.md`, `comparison.md`: method × (forget accuracy, general accuracy), median [min, max] over
   seeds, beside the target model's; chance is 25% (`npo_trl.wmdp.report`). The table is printed at the end.

For the real WMDP (hub data and a 7B model) use `npo-trl unlearn --forget_loss rmu ...` and `npo-trl eval lm-eval
--tasks wmdp_bio wmdp_cyber mmlu` (docs/guides/wmdp.md).
"""

import dataclasses
import json
import os
from dataclasses import dataclass, field

from accelerate import PartialState
from datasets import Dataset
from transformers import AutoTokenizer
from trl import ModelConfig

from npo_trl import NPOConfig
from npo_trl.comparison import comparison_methods
from npo_trl.lm_eval import LMEvalCallback, LMEvalEvaluator
from npo_trl.methods import method_losses, method_names
from npo_trl.models import load_model, outside_zero3
from npo_trl.stages import (
    TinyLlamaArguments,
    experiment_parser,
    is_done,
    read_jsonl,
    run_script,
    save_arguments,
    sft_config,
    sft_stage,
    tiny_llama,
    train_tokenizer,
    unlearning_stage,
)
from npo_trl.wmdp import write_synthetic_wmdp
from npo_trl.wmdp.report import format_table, write_report


@dataclass
class WMDPScriptArguments:
    """Arguments of the experiment; unlearning's are `NPOConfig`'s, the built-in model's `TinyLlamaArguments`'."""

    methods: list[str] = field(default_factory=lambda: ["rmu", "npo", "npo+rt"], metadata={
        "help": "Unlearning methods: rmu, or <forget_loss>[+rt|+kl] with a forget loss that needs no replacement "
                "answer; 'all': npo_trl.comparison's methods (those without replacement answers) and rmu."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={
        "help": "Unlearn every method once per seed, into unlearn/<method>/seed<k>/; the table gives median "
                "[min, max] over them."})
    num_forget: int = field(default=24, metadata={
        "help": "Stand-in: fictional microbes to forget (4 questions each)."})
    num_retain: int = field(default=24, metadata={"help": "Stand-in: fictional towns to keep (4 questions each)."})
    standin_seed: int = field(default=0, metadata={"help": "Stand-in: the seed of its facts and questions."})
    target_model: str | None = field(default=None, metadata={
        "help": "A model already trained on this stand-in (e.g. another run's target/): skips the target stage."})
    target_epochs: float = field(default=60, metadata={"help": "Epochs of the target model's training."})
    target_learning_rate: float = field(default=3e-3, metadata={"help": "Learning rate of that training."})
    target_batch_size: int = field(default=16, metadata={"help": "Per-device batch size of that training."})
    eval_batch_size: int = field(default=32, metadata={"help": "lm-eval's requests per forward pass."})
    rmu_learning_rate: float | None = field(default=1e-2, metadata={
        "help": "RMU's learning rate, over --learning_rate (RMU trains three down projections only; None: "
                "--learning_rate)."})
    rmu_epochs: float | None = field(default=None, metadata={
        "help": "RMU's epochs, over --num_train_epochs (None: --num_train_epochs)."})


def check_arguments(script_args: WMDPScriptArguments) -> None:
    """Refuse, before anything trains, what this run cannot do."""
    raw_text = method_names(lambda row: not row.needs_replacement)
    for method in script_args.methods:
        try:
            forget_loss = method_losses(method)[0]
        except ValueError as error:
            raise ValueError(f"--methods {method!r}: {error}") from error
        if forget_loss not in raw_text:
            raise ValueError(f"--methods {method!r}: the forget corpus is raw text, with no replacement answer for "
                             f"{'/'.join(method_names(lambda row: row.needs_replacement))}; use "
                             f"<{'|'.join(raw_text)}>[+rt|+kl].")
    if not script_args.seeds or len(set(script_args.seeds)) != len(script_args.seeds):
        raise ValueError(f"--seeds {script_args.seeds}: give one or more distinct seeds, e.g. --seeds 0 1 2.")
    for name in ("num_forget", "num_retain", "target_batch_size", "eval_batch_size"):
        if getattr(script_args, name) < 1:
            raise ValueError(f"--{name} {getattr(script_args, name)}: give a number >= 1.")


def paragraphs(texts) -> list[str]:
    """Each document's paragraphs (its prose; each question with its answer), the rows of training and unlearning."""
    return [paragraph for text in texts for paragraph in text.split("\n\n")]


def build_target(script_args, tiny_args, args, model_args, standin) -> str:
    """Stages 1-2: the tokenizer (built-in model only) and the target model trained on both corpora, each paragraph
    of a document (its prose; each question with its answer) a sequence of its own (BOS, the text, EOS), so that the
    model answers a question asked with no document before it, as lm-eval asks. Returns its folder."""
    path = script_args.target_model or os.path.join(args.output_dir, "target")
    if is_done(path):
        return path
    texts = [text for name in ("forget_corpus", "retain_corpus") for text in standin.datasets[name]["text"]]
    tokenizer_path = model_args.model_name_or_path or os.path.join(args.output_dir, "tokenizer")
    state = PartialState()
    if model_args.model_name_or_path is None:
        with state.main_process_first():
            if state.is_main_process and not os.path.exists(os.path.join(tokenizer_path, "tokenizer.json")):
                train_tokenizer(texts, tiny_args.vocab_size).save_pretrained(tokenizer_path)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    model = model_args.model_name_or_path or tiny_llama(tokenizer, tiny_args.hidden_size, tiny_args.num_layers,
                                                        max(args.max_length, 256), args.seed)
    rows = []
    for paragraph in paragraphs(texts):
        ids = tokenizer(paragraph)["input_ids"] + [tokenizer.eos_token_id]
        rows += [ids[start:start + args.max_length] for start in range(0, len(ids), args.max_length)]
    sft_args = sft_config(args, path, num_train_epochs=script_args.target_epochs, max_length=None,
                          learning_rate=script_args.target_learning_rate, warmup_steps=0.05,
                          per_device_train_batch_size=script_args.target_batch_size)
    return sft_stage(model, sft_args, Dataset.from_dict({"input_ids": rows}).shuffle(args.seed), tokenizer)


def method_config(script_args, args: NPOConfig, method: str) -> NPOConfig:
    """`args` for one method: RMU with its own learning rate and epochs (it trains three down projections only)."""
    if method_losses(method)[0] != "rmu":
        return args
    changes = {"learning_rate": script_args.rmu_learning_rate, "num_train_epochs": script_args.rmu_epochs}
    return dataclasses.replace(args, **{name: value for name, value in changes.items() if value is not None})


def target_metrics(path: str, evaluator, args, model_args) -> dict:
    """The target model's accuracies, computed once by the main process and cached in its folder."""
    cache = os.path.join(path, "lm_eval_metrics.json")
    if not os.path.exists(cache):
        with outside_zero3(args):
            metrics = evaluator.evaluate(load_model(path, model_args))
        with open(cache, "w") as f:
            json.dump(metrics, f, indent=1)
    with open(cache) as f:
        return json.load(f)


def main(script_args: WMDPScriptArguments, tiny_args: TinyLlamaArguments, args: NPOConfig,
         model_args: ModelConfig | None = None) -> dict | None:
    model_args = model_args or ModelConfig()
    if script_args.methods == ["all"]:  # the every-method comparison, of the methods raw text allows, and RMU
        script_args = dataclasses.replace(script_args, methods=comparison_methods(replacement=False) + ["rmu"])
    check_arguments(script_args)
    state, out = PartialState(), args.output_dir
    save_arguments(out, script=script_args, tiny_model=tiny_args, training=args, model=model_args)
    data_dir = os.path.join(out, "data")
    with state.main_process_first():  # the main process writes the stand-in; the others then read the same files
        standin = write_synthetic_wmdp(data_dir, script_args.num_forget, script_args.num_retain,
                                       script_args.standin_seed)
    target = build_target(script_args, tiny_args, args, model_args, standin)
    tokenizer = AutoTokenizer.from_pretrained(target)
    forget, retain = (Dataset.from_dict({"text": paragraphs(standin.datasets[name]["text"])})
                      for name in ("forget_corpus", "retain_corpus"))
    finals = {}
    for method in script_args.methods:
        for seed in script_args.seeds:
            path = os.path.join(out, "unlearn", method, f"seed{seed}")
            callback = LMEvalCallback(standin.tasks, tokenizer, batch_size=script_args.eval_batch_size,
                                      eval_on_start=False)
            unlearning_stage(target, method_config(script_args, args, method), method, path, forget, retain,
                             processing_class=tokenizer, model_args=model_args, callbacks=[callback], seed=seed)
            finals.setdefault(method, {})[seed] = read_jsonl(os.path.join(path, "lm_eval_metrics.jsonl"))[-1]
    if not state.is_main_process:
        return None
    evaluator = LMEvalEvaluator(standin.tasks, tokenizer, batch_size=script_args.eval_batch_size)
    summary = write_report(out, finals, target_metrics(target, evaluator, args, model_args))
    print(format_table(summary))
    return summary


def make_parser():
    """The experiment's arguments, with the defaults of its offline run (the built-in tiny model on a CPU), chosen on
    seed 0 (docs/guides/wmdp.md): β 0.05, as at NPO's 0.1 the weight σ(β · log-ratio) vanishes while the forget
    accuracy is still 0.35; RMU's α 100 with --rmu_learning_rate 1e-2."""
    parser = experiment_parser((WMDPScriptArguments, TinyLlamaArguments, NPOConfig, ModelConfig),
                               output_dir="results/wmdp", num_train_epochs=5, learning_rate=3e-4,
                               per_device_train_batch_size=4, max_length=256, rmu_alpha=100.0)
    parser.set_defaults(beta=0.05)  # over experiment_parser's 0.1
    return parser


if __name__ == "__main__":
    run_script(main, make_parser())
