"""How far each difference between npo-trl's TOFU evaluation and the reference evaluator's (open-unlearning) moves
TOFU's numbers, measured on tiny Llamas trained here on TOFU's own files.

    python -m benchmarks.tofu_protocol        # ~10 min on 2 CPU cores; writes benchmarks/PROTOCOL.md

Two formats, each with a fine-tuned model (TRL's SFTTrainer on the forget10 authors, the first 20 retain authors and
the real-author and world-fact answers) and a retain model (the same without forget10):
- "Question/Answer": TOFU's phi-1.5 tags (preset `tofu_phi`), whose prompt ends in a space;
- "chat, pad = end of turn": a zephyr-style chat template whose turns end in the EOS token, with pad = EOS (preset
  `chat_system`), the case of Llama-3.x-Instruct and zephyr in open-unlearning.
Each fine-tuned model is evaluated (every metric; forget quality against its retain model under the same settings)
with npo-trl's defaults, then with one difference at a time: the reference evaluator's token boundary, its attention
mask over pad tokens, TOFU's original row selection (the first 300) and a seeded 300-row subset. The tokenizer is the
examples' (`npo_trl.stages.train_tokenizer`), trained on the data. Nothing is patched: every variant is a
TOFUEvalSettings value.
"""

import argparse
import json
import os
import sys
import time

import torch
from datasets import concatenate_datasets
from transformers import LlamaConfig, LlamaForCausalLM
from trl import SFTConfig, SFTTrainer

from npo_trl.stages import train_tokenizer
from npo_trl.tofu import (
    TOFUEvalSettings,
    TOFUEvaluator,
    compute_reference_stats,
    load_tofu,
    to_prompt_completion,
    tofu_eval_sets,
    tokenizer_corpus,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A zephyr-style template: each turn ends with the EOS token, which is also the pad token.
ZEPHYR_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
                   "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
FORMATS = {"Question/Answer (tofu_phi)": "tofu_phi", "chat, pad = end of turn (chat_system)": "chat_system"}
VARIANTS = {  # name -> TOFUEvalSettings fields changed from npo-trl's defaults
    "npo-trl default (every row)": {},
    "token_boundary='prompt_length'": {"token_boundary": "prompt_length"},
    "mask_pad_tokens=True": {"mask_pad_tokens": True},
    "both (the reference evaluator)": {"token_boundary": "prompt_length", "mask_pad_tokens": True},
    "first 300 rows (TOFU's code)": {"max_samples": 300, "sample_seed": None},
    "300 random rows (seed 0)": {"max_samples": 300, "sample_seed": 0},
}
SHOWN = ["tofu/forget_quality", "tofu/model_utility", "tofu/forget_prob", "tofu/forget_rouge",
         "tofu/forget_truth_ratio", "tofu/retain_prob", "tofu/retain_rouge", "tofu/world_facts_prob"]


def data(tofu_dir: str) -> dict:
    retain = load_tofu(tofu_dir, "retain90").select(range(400))  # the authors TOFU's retain evaluation set covers
    facts = concatenate_datasets([load_tofu(tofu_dir, f"{name}_perturbed").select_columns(["question", "answer"])
                                  for name in ("real_authors", "world_facts")])
    return {"full": concatenate_datasets([retain, load_tofu(tofu_dir, "forget10"), facts]),
            "retain": concatenate_datasets([retain, facts]), "eval": tofu_eval_sets(tofu_dir, "forget10")}


def fine_tune(tokenizer, rows, prompt_format: str, epochs: float, seed: int, output_dir: str):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=2, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    args = SFTConfig(output_dir=output_dir, num_train_epochs=epochs, learning_rate=2e-3,
                     per_device_train_batch_size=32,
                     lr_scheduler_type="linear", warmup_steps=0.05, save_strategy="no", report_to="none", seed=seed,
                     logging_steps=1000, max_length=512, disable_tqdm=True,
                     bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    trainer = SFTTrainer(LlamaForCausalLM(config), args=args, train_dataset=to_prompt_completion(rows, prompt_format)
                         .shuffle(seed=seed), processing_class=tokenizer)
    trainer.train()
    return trainer.model.eval()


def measure(tofu_dir: str, epochs: float, max_new_tokens: int, workdir: str, formats=None, log=print) -> dict:
    splits = data(tofu_dir)
    results = {}
    for label, prompt_format in FORMATS.items():
        if formats and prompt_format not in formats:
            continue
        tokenizer = train_tokenizer(tokenizer_corpus(splits["full"], *splits["eval"].values()), vocab_size=2048)
        if prompt_format == "chat_system":
            tokenizer.chat_template, tokenizer.pad_token = ZEPHYR_TEMPLATE, tokenizer.eos_token
        start = time.perf_counter()
        model = fine_tune(tokenizer, splits["full"], prompt_format, epochs, 0, os.path.join(workdir, "full"))
        retain = fine_tune(tokenizer, splits["retain"], prompt_format, epochs, 0, os.path.join(workdir, "retain"))
        log(f"{label}: trained in {time.perf_counter() - start:.0f} s")
        results[label] = {}
        for variant, changes in VARIANTS.items():
            settings = TOFUEvalSettings(prompt_format=prompt_format, batch_size=32, generation_batch_size=128,
                                        max_new_tokens=max_new_tokens, **changes)
            stats = compute_reference_stats(retain, tokenizer, splits["eval"]["forget"], settings)
            evaluator = TOFUEvaluator(tokenizer, splits["eval"], reference_stats=stats, settings=settings)
            results[label][variant] = evaluator.evaluate(model)
            log(f"  {variant}: " + ", ".join(f"{k[5:]} {results[label][variant][k]:.4g}" for k in SHOWN))
    return results


def markdown(results: dict, argv: str) -> str:
    lines = ["# TOFU evaluation protocol: the effect of each difference, measured", "",
             f"Written by `python -m benchmarks.tofu_protocol{' ' + argv if argv else ''}` "
             f"({time.strftime('%Y-%m-%d')}); see the script's docstring for the models.", ""]
    for label, variants in results.items():
        lines += [f"## {label}", "", "| evaluation | " + " | ".join(k[5:] for k in SHOWN) + " |",
                  "|---|" + "---:|" * len(SHOWN)]
        for variant, metrics in variants.items():
            lines.append(f"| {variant} | " + " | ".join(f"{metrics[k]:.4g}" for k in SHOWN) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tofu_dir", default=os.environ.get("TOFU_DIR", os.path.join(ROOT, "..", "shared", "tofu")))
    parser.add_argument("--epochs", type=float, default=8.0)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--workdir", default="/tmp/tofu_protocol")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "PROTOCOL.md"))
    parser.add_argument("--formats", nargs="+", choices=list(FORMATS.values()),
                        help="measure these formats only; the others' results are kept from the JSON beside --out")
    args = parser.parse_args(argv)
    results_path = os.path.splitext(args.out)[0] + ".json"
    results = {}
    if args.formats and os.path.exists(results_path):
        with open(results_path) as f:
            results = {label: runs for label, runs in json.load(f).items() if FORMATS[label] not in args.formats}
    results.update(measure(args.tofu_dir, args.epochs, args.max_new_tokens, args.workdir, args.formats))
    results = {label: results[label] for label in FORMATS if label in results}
    with open(args.out, "w") as f:
        f.write(markdown(results, " ".join(sys.argv[1:] if argv is None else argv)))
    with open(results_path, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
