"""`MUSEEvaluator`: MUSE's criteria C1-C4 of a model (VerbMem, KnowMem on the forget and retain sets, PrivLeak), on one
or several processes, with the evaluation core (`npo_trl.eval`)."""

import hashlib
import json
import os
from collections.abc import Sequence

import numpy as np
import torch
from trl.data_utils import common_prefix_length

from ..eval import privacy, scoring
from ..eval.evaluator import Evaluator
from ..eval.generation import (
    GENERATION_CACHE_TOKENS,
    MIN_SHARED_PREFIX,
    generate_answers,
    generate_ids,
    generation_rows,
)
from ..eval.runner import batches, evaluation_model, gather_rows, length_sorted, one_process, shard
from ..prompts import tokenizer_of
from .data import EVAL_SETS, check_rows
from .metrics import criterion, cut_answer, knowmem_prompt, rouge_l_f1
from .settings import MUSEEvalSettings

MUSE_ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus")  # the reference attack would need per-row retrain losses
METRICS = ("muse/verbmem_forget", "muse/knowmem_forget", "muse/knowmem_retain", "muse/privleak",
           "muse/abs_privleak") + tuple(f"muse/mia_{attack}_auc" for attack in MUSE_ATTACKS)
PRIVLEAK_SETS = ("privleak_forget", "privleak_holdout")


class MUSEEvaluator(Evaluator):
    r"""
    Computes MUSE's criteria for a model (`npo_trl.muse.metrics` defines them): `muse/verbmem_forget` (C1),
    `muse/knowmem_forget` (C2), `muse/knowmem_retain` (C4), each ×100, and from the PrivLeak texts `muse/privleak`
    (C3, against the retrain model's AUC), `muse/abs_privleak` (|PrivLeak|, what best-model selection can minimise)
    and each attack's AUC `muse/mia_<attack>_auc` (open-unlearning's direction: 1 = every forget text stands out).
    A criterion whose sets are not given is `None`.

    Parameters:
        processing_class ([`~transformers.PreTrainedTokenizerBase`]):
            The model's tokenizer.
        eval_sets (`dict[str, Dataset | list[dict]]`):
            MUSE's evaluation sets by name (`npo_trl.muse.muse_eval_sets` reads them all): `"verbmem_forget"`
            (`prompt`, `gt`), `"knowmem_forget"` and `"knowmem_retain"` (`question`, `answer`), each with its few-shot
            examples `"knowmem_forget_icl"` / `"knowmem_retain_icl"`, and `"privleak_forget"` with
            `"privleak_holdout"` (`text`).
        reference_stats (`dict`, `str` or `None`, *optional*):
            The retrain model's AUCs on the PrivLeak sets, from [`~npo_trl.muse.compute_reference_stats`] (or its
            JSON file). Without them `muse/privleak` is `None`: never a constant in their place.
        settings ([`~npo_trl.muse.MUSEEvalSettings`] or `None`, *optional*):
            Batch size, generation lengths, the KnowMem prompt's trailing space, the PrivLeak texts' length limit and
            the Min-K% fraction; `None` takes its defaults. `reference_stats` must have been computed under the same
            PrivLeak settings.
        progress (`bool`, *optional*, defaults to `False`):
            Show progress bars (`MUSECallback` follows the trainer's `disable_tqdm`).
    """

    name = "muse"
    metric_names = METRICS
    higher_is_better = ("muse/knowmem_retain",)
    lower_is_better = ("muse/verbmem_forget", "muse/knowmem_forget", "muse/abs_privleak")

    def __init__(self, processing_class, eval_sets, reference_stats=None, settings: MUSEEvalSettings | None = None,
                 progress=False):
        super().__init__(progress)
        unknown = set(eval_sets) - set(EVAL_SETS)
        if unknown or not eval_sets:
            raise ValueError(f"eval_sets has {sorted(unknown) or 'no sets'}: name MUSE's sets among "
                             f"{list(EVAL_SETS)} (npo_trl.muse.muse_eval_sets reads them).")
        for name in ("knowmem_forget", "knowmem_retain"):
            if (name in eval_sets) != (f"{name}_icl" in eval_sets):
                raise ValueError(f"eval_sets has one of {name!r} and {name + '_icl'!r} without the other: KnowMem "
                                 "asks each question after its few-shot examples; give both.")
        if (PRIVLEAK_SETS[0] in eval_sets) != (PRIVLEAK_SETS[1] in eval_sets):
            raise ValueError("PrivLeak compares 'privleak_forget' (members) with 'privleak_holdout' (non-members): "
                             "give both sets, or neither.")
        for name, rows in eval_sets.items():
            check_rows(rows, *EVAL_SETS[name])
        tokenizer = tokenizer_of(processing_class)
        self.processing_class, self.settings = processing_class, settings or MUSEEvalSettings()
        verbmem_max_new_tokens = self.settings.verbmem_max_new_tokens
        self.generation_sets = {}  # name → (prompt ids, reference texts, per-row new-token limits, is KnowMem)
        self.hints = {}  # name → per row, the tokens greedy decoding may give (`generate_ids`' hints)
        if "verbmem_forget" in eval_sets:
            rows = eval_sets["verbmem_forget"]
            cut = [tokenizer(row["gt"])["input_ids"] for row in rows]  # as MUSE cuts it: special tokens counted
            references = [tokenizer.decode(ids[:verbmem_max_new_tokens], skip_special_tokens=True).strip()
                          for ids in cut]
            limits = [verbmem_max_new_tokens if len(ids) >= verbmem_max_new_tokens else
                      len(tokenizer(ref, add_special_tokens=False)["input_ids"])
                      for ids, ref in zip(cut, references, strict=False)]
            self.generation_sets["verbmem_forget"] = (
                [tokenizer(row["prompt"])["input_ids"] for row in rows], references, limits, False)
            self.hints["verbmem_forget"] = [tokenizer(row["gt"], add_special_tokens=False)["input_ids"][:limit]
                                             for row, limit in zip(rows, limits, strict=True)]
        for name in ("knowmem_forget", "knowmem_retain"):
            if name in eval_sets:
                shots = [(row["question"], row["answer"]) for row in eval_sets[f"{name}_icl"]]
                prompts = [knowmem_prompt(row["question"], shots) for row in eval_sets[name]]
                prompts = prompts if self.settings.knowmem_trailing_space else [p.removesuffix(" ") for p in prompts]
                self.generation_sets[name] = ([tokenizer(p)["input_ids"] for p in prompts],
                                          [row["answer"] for row in eval_sets[name]],
                                          [self.settings.knowmem_max_new_tokens] * len(prompts), True)
        max_length = self.settings.privleak_max_length
        self.privleak_sets = {name: ([tokenizer(row["text"])["input_ids"][:max_length] for row in eval_sets[name]],
                                     [row["text"] for row in eval_sets[name]])
                              for name in PRIVLEAK_SETS if name in eval_sets}
        for name, (ids, _) in self.privleak_sets.items():
            short = [i for i, row in enumerate(ids) if len(row) < 2]
            if short:
                raise ValueError(f"MUSE set {name!r}, row {short[0]}: its text is under 2 tokens, which leaves no "
                                 "token to score after the first; drop it.")
        self.fingerprint = privleak_fingerprint(self.privleak_sets) if self.privleak_sets else None
        # per VerbMem prompt, the PrivLeak forget text that begins it and for how many tokens (MUSE-News' VerbMem
        # prompts open its PrivLeak forget texts): generation starts from that text's cache
        self.prompt_sources = prompt_sources(self.generation_sets["verbmem_forget"][0], self.privleak_sets[
            PRIVLEAK_SETS[0]][0]) if "verbmem_forget" in self.generation_sets and self.privleak_sets else None
        path = None
        if isinstance(reference_stats, (str, os.PathLike)):
            path = str(reference_stats)
            with open(path) as f:
                reference_stats = json.load(f)
        if reference_stats is not None:
            check_reference_stats(reference_stats, self.fingerprint, self.settings, path)
        self.reference_stats = reference_stats

    def compute(self, model, ref_model, accelerator, synced_gpus) -> dict[str, float | None]:
        metrics, caches = dict.fromkeys(METRICS), {}
        if self.privleak_sets:  # first: on one process, its pass keeps the caches VerbMem's generation starts from
            aucs = self.aucs(model, accelerator, caches if one_process(accelerator) else None)
            metrics.update({f"muse/mia_{attack}_auc": auc for attack, auc in aucs.items()})
            if self.reference_stats is not None:
                leak = privacy.privleak(aucs[privacy.PRIVLEAK_ATTACK], self.reference_stats["auc"]["min_k"])
                metrics["muse/privleak"], metrics["muse/abs_privleak"] = leak, abs(leak)
        for name in self.generation_sets:
            metrics[f"muse/{name}"] = criterion(self._rouge(model, name, accelerator, synced_gpus, caches.get(name)))
        return metrics

    def _rouge(self, model, name, accelerator, synced_gpus, prompt_caches=None) -> np.ndarray:
        """Per row, the ROUGE-L F1 of the greedy generation for its prompt against its reference, on every process, in
        row order. A VerbMem continuation is `verbmem_max_new_tokens` generated tokens, or as many as a shorter
        reference has (MUSE's references are never shorter), decoded once (`decode_continuations`); a KnowMem answer
        is cut at the next question. `prompt_caches` (per row, or None) are passed to `generate_ids`."""
        prompts, references, limits, is_knowmem = self.generation_sets[name]
        hints = self.hints.get(name)
        tokenizer, device = tokenizer_of(self.processing_class), scoring.model_device(model, accelerator)
        indices = shard(len(prompts), accelerator)
        order = length_sorted(indices, [len(p) for p in prompts])
        size = generation_rows(len(indices), max(len(p) for p in prompts), max(limits),
                               self.settings.generation_batch_size)  # the same on every process
        scores = []
        for rows in batches(indices, order, size, self.progress, f"generating {name}"):
            batch_prompts, max_new_tokens = [prompts[i] for i in rows], max(limits[i] for i in rows)
            with self.timer("generate"):
                if is_knowmem:  # MUSE cuts the raw decoded text: an answer that opens a new example is empty
                    answers = [cut_answer(a) for a in generate_answers(
                        model, self.processing_class, batch_prompts, max_new_tokens, synced_gpus, device,
                        timer=self.timer, strip=False)]
                else:
                    answers = decode_continuations(tokenizer, generate_ids(
                        model, self.processing_class, batch_prompts, max_new_tokens, synced_gpus, device,
                        timer=self.timer, hints=hints and [hints[i] for i in rows],
                        prompt_caches=prompt_caches and [prompt_caches[i] for i in rows]).tolist(),
                        [limits[i] for i in rows])
            scores.append(torch.tensor(rouge_l_f1(answers, [references[i] for i in rows]), device=device))
        return gather_rows(torch.cat(scores).double()[:, None], order, accelerator, len(prompts))[:, 0]

    def aucs(self, model, accelerator=None, prompt_caches: dict | None = None) -> dict[str, float]:
        """Each attack's AUC of PrivLeak's forget (members) vs holdout (non-members) texts. Given a dict
        `prompt_caches` (one process), the forget texts' pass also puts there, under "verbmem_forget", per VerbMem
        prompt the cache of the forget text's tokens that begin it (`prompt_sources`; None for the others), up to
        `GENERATION_CACHE_TOKENS` positions."""
        lengths = None
        if prompt_caches is not None and self.prompt_sources is not None:
            lengths, budget = [0] * len(self.privleak_sets[PRIVLEAK_SETS[0]][0]), GENERATION_CACHE_TOKENS
            for text, n in filter(None, self.prompt_sources):
                if not lengths[text] and n <= budget:
                    lengths[text], budget = n, budget - n
        (forget, kept), (holdout, _) = (self._attack_scores(model, name, accelerator, lengths if name ==
                                                            PRIVLEAK_SETS[0] else None) for name in PRIVLEAK_SETS)
        if kept is not None:
            prompt_caches["verbmem_forget"] = [kept[s[0]] if s is not None else None for s in self.prompt_sources]
        return privacy.mia_aucs(forget, holdout)

    def _attack_scores(self, model, name, accelerator, cache_lengths=None) -> tuple[dict[str, np.ndarray], list]:
        """Per text, the LOSS, Min-K% and Min-K%++ scores over every token after the first (MUSE's `input_ids[1:]`:
        the first, BOS, is not predicted), and ZLib; and with `cache_lengths` (per text), each text's cache of that
        many leading tokens (`scoring.token_statistics`' `prompt_caches`), else None."""
        ids, texts = self.privleak_sets[name]
        kept = [None] * len(ids) if cache_lengths is not None else None
        pad_id, device = scoring.pad_id_of(self.processing_class), scoring.model_device(model, accelerator)
        indices = shard(len(ids), accelerator)
        order = length_sorted(indices, [len(i) for i in ids])
        columns = []
        for rows in batches(indices, order, self.settings.batch_size, self.progress, f"scoring {name}"):
            with self.timer("score"):
                token_stats = scoring.token_statistics(model, [ids[i][:1] for i in rows], [ids[i][1:] for i in rows],
                                                       pad_id, device, cache_lengths=kept and [cache_lengths[i]
                                                                                               for i in rows])
            for i, cache in zip(rows, token_stats.pop("prompt_caches", []), strict=False):
                kept[i] = cache
            logps, mask = token_stats["logps"], token_stats["mask"]
            columns.append(torch.stack([
                privacy.loss_score(logps, mask), privacy.min_k_score(logps, mask, self.settings.min_k_fraction),
                privacy.min_k_plus_plus_score(logps, token_stats["expected_logps"], token_stats["logp_variance"], mask,
                                              self.settings.min_k_fraction)], dim=1))
        table = gather_rows(torch.cat(columns).double(), order, accelerator, len(ids))
        scores = {"loss": table[:, 0], "min_k": table[:, 1], "min_k_plus_plus": table[:, 2]}
        scores["zlib"] = privacy.zlib_score(scores["loss"], texts)
        return scores, kept

    def check_metric(self, metric: str, has_reference_model: bool) -> None:
        super().check_metric(metric, has_reference_model)
        if metric == "muse/privleak":
            raise ValueError("metric_for_best_model='muse/privleak': its best value is 0 (the retrain model's), "
                             "which greater_is_better cannot express; select by 'muse/abs_privleak' "
                             "(greater_is_better=False).")
        if metric == "muse/abs_privleak" and self.reference_stats is None:
            raise ValueError(f"metric_for_best_model={metric!r} needs the retrain model's AUCs: pass "
                             "reference_stats=compute_reference_stats(retrain_model, tokenizer, eval_sets).")
        if metric.startswith("muse/mia_"):
            raise ValueError(f"metric_for_best_model={metric!r}: its best value is the retrain model's; select by "
                             "'muse/abs_privleak' (greater_is_better=False).")
        if metric.removeprefix("muse/") in ("verbmem_forget", "knowmem_forget", "knowmem_retain") and \
                metric.removeprefix("muse/") not in self.generation_sets:
            raise ValueError(f"metric_for_best_model={metric!r} needs its evaluation sets in eval_sets "
                             "(npo_trl.muse.muse_eval_sets reads them).")


def decode_continuations(tokenizer, generated_ids: Sequence[Sequence[int]], limits: Sequence[int]) -> list[str]:
    """The VerbMem continuations MUSE scores: each row's first `limit` generated token ids, decoded once (special
    tokens skipped) and stripped. Cutting the ids, not a re-encoding of the decoded text, keeps every generated word:
    decoding and encoding again need not give the same tokens (with its leading space stripped off, a one-token
    " lives" may become "li" + "v" + "es"), so a text cut after re-encoding can lose its last words."""
    return [tokenizer.decode(ids[:limit], skip_special_tokens=True).strip()
            for ids, limit in zip(generated_ids, limits, strict=True)]


def prompt_sources(prompts: Sequence[list[int]], texts: Sequence[list[int]], minimum: int = MIN_SHARED_PREFIX
                   ) -> list[tuple[int, int] | None]:
    """Per prompt, `(text, n)`: the text (its index) whose first `n` tokens begin the prompt, `n` as many as they
    share (the text that shares the most) but at most all the prompt's tokens but its last (which generation must
    run), and at least `minimum`; None where no text begins the prompt."""
    by_start = {}
    for j, text in enumerate(texts):
        by_start.setdefault(tuple(text[:minimum]), []).append(j)
    sources = []
    for prompt in prompts:
        shared = {j: common_prefix_length(prompt, texts[j]) for j in by_start.get(tuple(prompt[:minimum]), [])}
        j = max(shared, key=shared.get) if shared and len(prompt) > minimum else None
        n = min(shared[j], len(prompt) - 1) if j is not None else 0
        sources.append((j, n) if n >= minimum else None)
    return sources


def privleak_fingerprint(privleak_sets: dict) -> str:
    """The rows the retrain model's AUCs are computed on: the scored tokens of both PrivLeak sets."""
    return hashlib.sha256(json.dumps({n: ids for n, (ids, _) in privleak_sets.items()}).encode()).hexdigest()


def check_reference_stats(stats: dict, fingerprint: str | None, settings: MUSEEvalSettings, path=None) -> None:
    """Refuse reference statistics (read from `path`, if from a file) without the retrain model's Min-K% AUC,
    computed under other settings, or computed on other PrivLeak texts."""
    if not isinstance(stats, dict) or not isinstance(stats.get("auc"), dict) or \
            stats["auc"].get(privacy.PRIVLEAK_ATTACK) is None:
        raise ValueError("reference_stats holds no retrain-model Min-K% AUC: compute them with "
                         "npo_trl.muse.compute_reference_stats(retrain_model, tokenizer, eval_sets, settings).")
    if fingerprint is None:
        raise ValueError("reference_stats were given but eval_sets has no PrivLeak sets to compare them with: add "
                         "'privleak_forget' and 'privleak_holdout'.")
    settings.check_stats(stats, path)
    if stats.get("fingerprint") != fingerprint:
        raise ValueError(f"{path or 'reference_stats'} was computed on other PrivLeak texts or another tokenizer: "
                         "compute them again with these eval_sets.")


@torch.no_grad()
def compute_reference_stats(model, processing_class, eval_sets, settings: MUSEEvalSettings | None = None, *,
                            cache_path=None, model_name=None, accelerator=None) -> dict:
    """The retrain model's (never trained on the forget set) AUCs on the PrivLeak sets, which `muse/privleak` is
    relative to: `{"auc": {attack: AUC}, "fingerprint": ..., "settings_fingerprint": ..., "settings": ...}`, under
    `settings` ([`MUSEEvalSettings`], by default its defaults; an evaluation under other PrivLeak settings refuses
    them). With `cache_path`, read from that JSON file when its rows fingerprint (and `model_name`, the retrain
    model's name or path, when given) matches, else computed and written there (by the main process); a file written
    under other settings raises a ValueError naming the fields that differ. With `accelerator`, every process scores
    its shard."""
    if not all(name in eval_sets for name in PRIVLEAK_SETS):
        raise ValueError("compute_reference_stats needs eval_sets with 'privleak_forget' and 'privleak_holdout' "
                         "(npo_trl.muse.muse_eval_sets reads them).")
    evaluator = MUSEEvaluator(processing_class, {name: eval_sets[name] for name in PRIVLEAK_SETS}, settings=settings)
    settings = evaluator.settings
    if cache_path is not None and os.path.exists(cache_path):
        with open(cache_path) as f:
            cached = json.load(f)
        if "settings_fingerprint" in cached:  # an older file without it is recomputed
            settings.check_stats(cached, cache_path)
            if cached.get("fingerprint") == evaluator.fingerprint and cached.get("model") == model_name:
                return cached
    with evaluation_model(model, accelerator) as (unwrapped, _):
        stats = {"auc": evaluator.aucs(unwrapped, accelerator), "fingerprint": evaluator.fingerprint,
                 "settings_fingerprint": settings.fingerprint(), "settings": settings.to_dict(), "model": model_name}
    if cache_path is not None and (accelerator is None or accelerator.is_main_process):
        with open(cache_path, "w") as f:
            json.dump(stats, f, indent=1)
    return stats
