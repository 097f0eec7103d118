"""TOFU's evaluation sets: rows validated, selected and tokenized once, then scored per row with the evaluation core
(`npo_trl.eval`): every candidate answer's length-normalised log-probability, the greedy answer's ROUGE-L recall, the
KL to a reference model, the truth ratio, and the membership-inference and memorization scores of the answer
(`npo_trl.eval.privacy`), which compare the forget set with the never-trained `holdout` set."""

import hashlib
import json
import random
from collections.abc import Sequence

import numpy as np
import torch

from ..eval import privacy, scoring
from ..eval.generation import generate_answers
from ..eval.runner import PassTimer, batches, gather_rows, length_sorted, one_process, shard
from ..prompts import generation_prompt_ids, tokenize_qa
from .metrics import EVAL_SETS, PARAPHRASED_SETS, rouge_l_recall, truth_ratios
from .settings import TOFUEvalSettings

# TOFU's holdoutNN: questions about authors in no fine-tune, the non-members of the privacy metrics
HOLDOUT = "holdout"
SET_NAMES = EVAL_SETS + (HOLDOUT,)


def _required_fields(name: str) -> tuple[str, ...]:
    if name == HOLDOUT:
        return "question", "answer"
    if name in PARAPHRASED_SETS:
        return "question", "answer", "paraphrased_answer", "perturbed_answer"
    return "question", "answer", "perturbed_answer"


def validate_rows(rows: Sequence[dict], name: str) -> None:
    """Refuse an evaluation set that does not follow TOFU's schema, naming the row, the field and the fix."""
    if name not in SET_NAMES:
        raise ValueError(f"Unknown TOFU evaluation set {name!r}: name the sets {list(SET_NAMES)}.")
    if len(rows) == 0:
        raise ValueError(f"The TOFU evaluation set {name!r} is empty: give its rows (e.g. `npo_trl.tofu."
                         f"tofu_eval_sets`), or leave {name!r} out of eval_sets.")
    num_perturbed = None
    for index, row in enumerate(rows):
        for field in _required_fields(name):
            if field not in row:
                raise ValueError(
                    f"TOFU set {name!r}, row {index}: missing field {field!r}. Use TOFU's evaluation files (for "
                    f"{name!r}: {list(_required_fields(name))}), e.g. `npo_trl.tofu.tofu_eval_sets`."
                )
        if name == HOLDOUT:
            for field in _required_fields(name):
                if not isinstance(row[field], str) or not row[field].strip():
                    raise ValueError(f"TOFU set {name!r}, row {index}: field {field!r} must be a non-empty string, "
                                     f"got {row[field]!r:.80}.")
            continue
        perturbed = row["perturbed_answer"]
        if not isinstance(perturbed, (list, tuple)) or not perturbed:
            raise ValueError(
                f"TOFU set {name!r}, row {index}: field 'perturbed_answer' must be a non-empty list of strings, got "
                f"{type(perturbed).__name__}: {perturbed!r:.80}."
            )
        for field in _required_fields(name):
            for text in (perturbed if field == "perturbed_answer" else [row[field]]):
                if not isinstance(text, str) or not text.strip():
                    raise ValueError(f"TOFU set {name!r}, row {index}: field {field!r} must hold non-empty strings, "
                                     f"got {text!r:.80}.")
        if num_perturbed is not None and len(perturbed) != num_perturbed:
            raise ValueError(
                f"TOFU set {name!r}, row {index}: field 'perturbed_answer' has {len(perturbed)} answers but row 0 has "
                f"{num_perturbed}; every row of a set needs the same number."
            )
        num_perturbed = len(perturbed)


def select_indices(num_rows: int, max_samples: int | None = None, seed: int | None = 0) -> list[int]:
    """The rows to score: all of them (`max_samples=None`, what the reference evaluator open-unlearning does), else at
    most `max_samples`, a fixed subset drawn with `seed` (in their original order), or with `seed=None` the first
    `max_samples` (what TOFU's original code, `ds_size: 300`, did)."""
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1 or None for every row (got {max_samples}).")
    if max_samples is None or num_rows <= max_samples:
        return list(range(num_rows))
    if seed is None:
        return list(range(max_samples))
    return sorted(random.Random(seed).sample(range(num_rows), max_samples))


def select_rows(rows: Sequence[dict], max_samples: int | None = None, seed: int | None = 0) -> list[dict]:
    """The rows `select_indices` keeps."""
    rows = list(rows)
    return [rows[i] for i in select_indices(len(rows), max_samples, seed)]


class TOFUEvalSet:
    """One TOFU evaluation set, selected, validated and tokenized once.

    Each row keeps its generation prompt and its candidate (context, answer) token pairs in a fixed order: the
    answer, then the paraphrased answer (forget and retain only), then the perturbed answers (none on `holdout`).
    `indices` are the selected rows' positions among the `num_source_rows` rows given (see `select_indices`). Of
    `settings` ([`~npo_trl.tofu.TOFUEvalSettings`], by default its defaults), the set uses the row selection
    (`max_samples`, `sample_seed`), the prompt format and `token_boundary` (`npo_trl.prompts.tokenize_qa`'s).
    """

    def __init__(self, name, rows, processing_class, settings: TOFUEvalSettings | None = None):
        settings = settings or TOFUEvalSettings()
        rows = list(rows)
        validate_rows(rows, name)
        self.name = name
        self.prompt_format, self.token_boundary = settings.resolved_prompt_format, settings.token_boundary
        self.num_source_rows, self.source_answers = len(rows), [row["answer"] for row in rows]
        self.indices = select_indices(len(rows), settings.max_samples, settings.sample_seed)
        self.rows = [rows[i] for i in self.indices]
        self.has_paraphrase = name in PARAPHRASED_SETS
        self.num_perturbed = 0 if name == HOLDOUT else len(self.rows[0]["perturbed_answer"])
        self.answers = [row["answer"] for row in self.rows]
        self.prompts = [generation_prompt_ids(processing_class, row["question"], self.prompt_format)
                        for row in self.rows]
        self.candidates = [
            [tokenize_qa(processing_class, row["question"], text, self.prompt_format, self.token_boundary, prompt)
             for text in self._texts(row)]
            for row, prompt in zip(self.rows, self.prompts, strict=True)
        ]
        # the answer as greedy generation's draft, where its tokens continue the generation prompt (`generate_ids`)
        self.drafts = [(c + a)[len(p):] if (c + a)[:len(p)] == p else None
                       for p, ((c, a), *_) in zip(self.prompts, self.candidates, strict=True)]
        # candidate_logps can run each question once when every row's candidates share >= 2 prompt tokens
        self.lengths = [max(len(p) + len(c) for p, c in pairs) for pairs in self.candidates]
        self.shares_prompt = self.num_perturbed > 0 and \
            min(scoring.shared_prefix_length([p for p, _ in c]) for c in self.candidates) >= 2
        fields = [[row["question"], *self._texts(row)] for row in self.rows]
        formatting = [self.prompt_format.to_dict(), self.token_boundary]
        self.fingerprint = hashlib.sha256(json.dumps([formatting, fields]).encode()).hexdigest()

    def _texts(self, row) -> list[str]:
        return [row["answer"]] + ([row["paraphrased_answer"]] if self.has_paraphrase else []) + \
            (list(row["perturbed_answer"]) if self.num_perturbed else [])

    def __len__(self):
        return len(self.rows)


@torch.no_grad()
def score_eval_set(model, processing_class, eval_set: TOFUEvalSet, settings: TOFUEvalSettings | None = None, *,
                   ref_model=None, generate: bool = True, accelerator=None, synced_gpus: bool = False,
                   membership: bool = False, timer: PassTimer | None = None, progress: bool = False,
                   prompt_cache_tokens: int = 0) -> dict[str, np.ndarray]:
    """Per-row scores of one set: `answer_logps`, `correct_logps`, `perturbed_logps` (rows, n) (length-normalised),
    `truth_ratios` (sets with perturbed answers), `rouge` (with `generate`) and `kl` (with `ref_model`); NaN where not
    computed. With `membership`, also the answer's `npo_trl.eval.privacy.ROW_SCORES` and `zlib`, from the same forward
    pass. Of `settings` (by default `TOFUEvalSettings()`), it uses the batch sizes, `max_new_tokens`,
    `mask_pad_tokens` (as for `npo_trl.eval.scoring`) and `min_k_fraction`; the rows and their tokens are
    `eval_set`'s. `timer` sums the seconds of the "score", "kl" and "generate" passes and counts "generated_tokens".

    With `accelerator`, each process scores its shard of the rows and the scores are gathered; the model must
    already be unwrapped and in eval mode (see `npo_trl.eval.runner.evaluation_model`). On one process, the question
    caches of the scoring pass (`scoring.candidate_logps`' `prompt_caches`), up to `prompt_cache_tokens` positions
    of them, are kept in `greedy_prompt_caches` (per row, or None), for `greedy_rouge` to start generating from.
    """
    settings, timer = settings or TOFUEvalSettings(), timer or PassTimer()
    batch_size, mask_pad_tokens = settings.batch_size, settings.mask_pad_tokens
    pad_id = scoring.pad_id_of(processing_class)
    device = scoring.model_device(model, accelerator)
    indices = shard(len(eval_set), accelerator)
    order = length_sorted(indices, eval_set.lengths)
    num_candidates = len(eval_set.candidates[0])
    share_prompt = eval_set.shares_prompt and scoring.can_run_tree(model)  # per set: ZeRO-3 ranks must agree

    logps, kl, members, greedy = [], [], [], []
    kept_caches = [None] * len(eval_set)  # the rows' question caches generation may start from (one process only)
    keep_caches = prompt_cache_tokens > 0 and one_process(accelerator)
    for rows in batches(indices, order, batch_size, progress, f"scoring {eval_set.name}"):
        pairs = [pair for i in rows for pair in eval_set.candidates[i]]  # every candidate of the batch, stacked
        with timer("score"):
            if share_prompt:
                batch_logps, statistics = scoring.candidate_logps(
                    model, *zip(*pairs, strict=False), num_candidates, pad_id, device, mask_pad_tokens,
                    first_candidate_statistics=membership, first_candidate_greedy=True,
                    synced_gpus=synced_gpus, prompt_caches=keep_caches)
                for i, cache in zip(rows, statistics.pop("prompt_caches", []), strict=False):
                    if cache is not None and len(cache[0]) <= prompt_cache_tokens:
                        kept_caches[i], prompt_cache_tokens = cache, prompt_cache_tokens - len(cache[0])
                greedy.append(torch.stack([statistics.pop("greedy_agreement")[:, 0],
                                           statistics.pop("greedy_next")[:, 0]], dim=1))
            else:
                out = scoring.sequence_logps(model, *zip(*pairs, strict=False), pad_id, device, mask_pad_tokens,
                                             statistics_rows=slice(None, None, num_candidates) if membership else None)
                batch_logps, statistics = out if membership else (out, None)
            logps.append(batch_logps.view(len(rows), num_candidates))
            if membership:
                scores = privacy.row_scores(statistics, settings.min_k_fraction)
                members.append(torch.stack([scores[name] for name in privacy.ROW_SCORES], dim=1))
        if ref_model is not None:
            with timer("kl"):
                kl.append(scoring.reference_kl(model, ref_model,
                                               *zip(*[eval_set.candidates[i][0] for i in rows], strict=False),
                                               pad_id, device, mask_pad_tokens))
    nan = torch.full((len(indices),), float("nan"), device=device)
    columns = [torch.cat(logps).double(), nan.double()[:, None], (torch.cat(kl) if kl else nan).double()[:, None],
               torch.cat(greedy).double() if greedy else torch.stack([nan, nan], dim=1).double()] + \
        ([torch.cat(members).double()] if members else [])
    table = gather_rows(torch.cat(columns, dim=1), order, accelerator, len(eval_set))
    first_perturbed = 2 if eval_set.has_paraphrase else 1
    scores = {
        "answer_logps": table[:, 0],
        "correct_logps": table[:, first_perturbed - 1],
        "perturbed_logps": table[:, first_perturbed:num_candidates],
        "rouge": table[:, num_candidates],
        "kl": table[:, num_candidates + 1],
        # how many leading answer tokens are greedy's choices, and its next choice (-1: all; NaN: not computed)
        "greedy_agreement": table[:, num_candidates + 2],
        "greedy_next": table[:, num_candidates + 3],
    }
    if any(cache is not None for cache in kept_caches):
        scores["greedy_prompt_caches"] = kept_caches
    if generate:
        scores["rouge"] = greedy_rouge(model, processing_class, [eval_set], settings, [scores],
                                       accelerator=accelerator, synced_gpus=synced_gpus, timer=timer,
                                       progress=progress)[0]
        scores.pop("greedy_prompt_caches", None)
    if eval_set.num_perturbed:
        scores["truth_ratios"] = truth_ratios(scores["correct_logps"], scores["perturbed_logps"])
    if membership:
        scores.update({name: table[:, num_candidates + 4 + j] for j, name in enumerate(privacy.ROW_SCORES)})
        scores["zlib"] = privacy.zlib_score(scores["loss"], eval_set.answers)
    return scores


@torch.no_grad()
def greedy_rouge(model, processing_class, eval_sets: Sequence[TOFUEvalSet], settings: TOFUEvalSettings | None = None,
                 scores: Sequence[dict] | None = None, *, accelerator=None, synced_gpus: bool = False,
                 timer: PassTimer | None = None, progress: bool = False) -> list[np.ndarray]:
    """Per set, per row, the ROUGE-L recall of the greedy answer against the answer (TOFU's ROUGE), generating for
    the rows of all `eval_sets` together, in order of prompt length, `settings.generation_rows(...)` rows at a time.
    The answers are `model.generate`'s; pooling the sets only makes the decoding batches larger (a decoding step
    costs nearly as much for a few rows as for many).

    Each set's `scores` (`score_eval_set`'s, of the same model), where given, say how much of each answer greedy
    decoding reproduces (`greedy_agreement`, `greedy_next`: from the scoring pass, at no cost): those tokens are the
    row's draft (`npo_trl.eval.generation`), verified again in the prefill, so decoding starts after them; and their
    `greedy_prompt_caches`, where kept, spare running the questions again."""
    settings, timer = settings or TOFUEvalSettings(), timer or PassTimer()
    pool = [(s, i) for s, eval_set in enumerate(eval_sets) for i in range(len(eval_set))]
    prompts = [eval_sets[s].prompts[i] for s, i in pool]
    device = scoring.model_device(model, accelerator)
    indices = shard(len(pool), accelerator)
    order = length_sorted(indices, [len(p) for p in prompts])
    size = settings.generation_rows(max(len(p) for p in prompts), len(indices))  # the same on every process
    drafts, caches = [None] * len(pool), [None] * len(pool)
    for j, (s, i) in enumerate(pool):
        if scores is not None and "greedy_prompt_caches" in scores[s]:
            caches[j] = scores[s]["greedy_prompt_caches"][i]
        agreement = scores[s]["greedy_agreement"][i] if scores is not None else float("nan")
        if eval_sets[s].drafts[i] is not None and not np.isnan(agreement):
            following = int(scores[s]["greedy_next"][i])
            drafts[j] = eval_sets[s].drafts[i][:int(agreement)] + ([following] if following >= 0 else [])
    rouge = []
    for rows in batches(indices, order, size, progress, "generating"):
        with timer("generate"):
            answers = generate_answers(model, processing_class, [prompts[j] for j in rows], settings.max_new_tokens,
                                       synced_gpus, device, settings.mask_pad_tokens, timer,
                                       drafts=[drafts[j] for j in rows], prompt_caches=[caches[j] for j in rows])
        rouge.extend(rouge_l_recall(answers, [eval_sets[pool[j][0]].answers[pool[j][1]] for j in rows]))
    table = gather_rows(torch.tensor(rouge, dtype=torch.float64, device=device)[:, None], order, accelerator,
                        len(pool))[:, 0]
    starts = np.cumsum([0] + [len(eval_set) for eval_set in eval_sets])
    return [table[start:stop] for start, stop in zip(starts[:-1], starts[1:], strict=True)]
