"""MUSE's metrics (Shi et al. 2025, "MUSE: Machine Unlearning Six-Way Evaluation for Language Models", arXiv
2407.06460), as pure functions of generations and per-row scores (like `npo_trl.losses`).

The definitions are those of MUSE's own evaluation code (swj0419/muse_bench), which its tables come from; where the
reference toolkit open-unlearning differs, the difference is named and we follow MUSE:

- **C1 VerbMem** on D_f: the greedy continuation of each verbmem prompt, scored by ROUGE-L F1 against the true
  continuation cut to its first `VERBMEM_MAX_NEW_TOKENS` = 128 tokens, the continuation being as many tokens long
  (MUSE generates 128 tokens; its true continuations are all longer, ours are shorter); the mean × 100.
  open-unlearning stems words and does not cut the true continuation.
- **C2/C4 KnowMem** on D_f / D_r: each question asked after the few-shot examples (`knowmem_prompt`), a greedy answer
  of at most `KNOWMEM_MAX_NEW_TOKENS` = 32 tokens cut at the next question (`cut_answer`), scored by ROUGE-L F1
  against the answer; the mean × 100. open-unlearning stems words.
- **C3 PrivLeak**: the Min-K% (k = 0.4) membership-inference AUC of privleak `forget` (members) vs `holdout`
  (non-members) over every token of each text, relative to the retrain model's AUC (`npo_trl.eval.privacy.privleak`:
  0 = leaks as the retrain model does, < 0 under-unlearned, > 0 over-unlearned). MUSE's tables read the retrain AUC
  from a constant and open-unlearning falls back to 0.5 without the retrain model's logs; npo-trl computes it from
  the retrain model (`npo_trl.muse.compute_reference_stats`) and refuses to report PrivLeak without it.
- **C5 scalability / C6 sustainability**: the criteria above after unlearning larger forget sets (`scal` forget_1..4,
  nested) and after successive unlearning requests (`sust` forget_1..4, disjoint); see `npo_trl.muse.criteria`.

`npo_trl.muse.evaluator` turns MUSE's rows into generations and scores with the evaluation core (`npo_trl.eval`).
"""

from collections.abc import Sequence

import numpy as np
from rouge_score import rouge_scorer

VERBMEM_MAX_NEW_TOKENS = 128  # MUSE generates 128 tokens and cuts the true continuation to 128 tokens
KNOWMEM_MAX_NEW_TOKENS = 32
ANSWER_STOPS = ("\n\n", "\nQuestion", "Question:")  # MUSE cuts a KnowMem answer at the first of these, in this order


def rouge_l_f1(generations: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """ROUGE-L F1 (rouge_score's `rougeL` F-measure, no stemming, as MUSE scores) of each generation against its
    reference."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return np.array([scorer.score(reference, generation)["rougeL"].fmeasure
                     for generation, reference in zip(generations, references, strict=True)])


def knowmem_prompt(question: str, examples: Sequence[tuple[str, str]]) -> str:
    """MUSE's few-shot prompt: each (question, answer) example as "Question: {q}\\nAnswer: {a}\\n\\n", then
    "Question: {question}\\nAnswer: " (with its trailing space, as MUSE writes it)."""
    shots = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in examples)
    return f"{shots}Question: {question}\nAnswer: "


def cut_answer(generation: str) -> str:
    """A KnowMem answer cut where the model starts the next example: at MUSE's `ANSWER_STOPS`, each in turn; then
    stripped."""
    for stop in ANSWER_STOPS:
        generation = generation.split(stop)[0]
    return generation.strip()


def criterion(scores) -> float:
    """A MUSE criterion from per-row scores in [0, 1]: their mean × 100, as MUSE's tables print it."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("A MUSE criterion needs at least one row's score.")
    return float(scores.mean() * 100.0)
