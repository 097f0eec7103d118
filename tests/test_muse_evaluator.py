"""MUSEEvaluator, compute_reference_stats and MUSECallback on tiny models trained on synthetic MUSE text."""

import copy
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tokenizers import processors

from muse_helpers import muse_tokenizer, small_muse, target_texts, train_on_texts
from npo_trl import NPOConfig, NPOTrainer
from npo_trl.eval.generation import generate_answers
from npo_trl.muse import MUSECallback, MUSEEvalSettings, MUSEEvaluator, compute_reference_stats, muse_eval_sets
from npo_trl.muse.evaluator import METRICS, decode_continuations, prompt_sources
from npo_trl.muse.metrics import cut_answer, knowmem_prompt, rouge_l_f1

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = MUSEEvalSettings(verbmem_max_new_tokens=24, knowmem_max_new_tokens=8, knowmem_trailing_space=False,
                            batch_size=5)


@pytest.fixture(scope="module")
def muse(tmp_path_factory):
    """(data, eval sets, tokenizer, target model dir, retrain model)."""
    data = small_muse()
    tokenizer = muse_tokenizer(data)
    target = train_on_texts(tokenizer, target_texts(data))
    retrain = train_on_texts(tokenizer, list(data["raw"]["retain2"]["text"]))
    path = tmp_path_factory.mktemp("muse_target")
    target.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return data, muse_eval_sets(data), tokenizer, str(path), target, retrain


def test_target_leaks_and_remembers_more_than_the_retrain_model(muse, tmp_path):
    _, sets, tokenizer, _, target, retrain = muse
    cache = tmp_path / "retrain_stats.json"
    stats = compute_reference_stats(retrain, tokenizer, sets, MUSEEvalSettings(batch_size=5), cache_path=cache)
    assert json.loads(cache.read_text()) == stats
    assert compute_reference_stats(None, tokenizer, sets, SETTINGS, cache_path=cache) == stats  # from the cache
    with pytest.raises(ValueError, match="min_k_fraction=0.4 there, 0.2 here.*delete the cache file at"):
        compute_reference_stats(None, tokenizer, sets, MUSEEvalSettings(min_k_fraction=0.2), cache_path=cache)
    evaluator = MUSEEvaluator(tokenizer, sets, stats, SETTINGS)
    on_target, on_retrain = evaluator.evaluate(target), evaluator.evaluate(retrain)
    assert set(on_target) == set(METRICS)
    # the target saw the forget articles: every attack singles them out, PrivLeak near -100 (MUSE's target: -99.8)
    assert all(on_target[f"muse/mia_{a}_auc"] > 0.9 for a in ("loss", "min_k", "min_k_plus_plus"))
    assert on_target["muse/privleak"] < -70 and on_target["muse/abs_privleak"] == -on_target["muse/privleak"]
    assert on_retrain["muse/privleak"] == 0.0  # against its own AUC
    assert on_retrain["muse/mia_min_k_auc"] == stats["auc"]["min_k"]
    assert on_target["muse/verbmem_forget"] > on_retrain["muse/verbmem_forget"] + 50
    # KnowMem is its definition: greedy answers to the few-shot prompts, cut at the next question, ROUGE-L F1 × 100
    # (a model this small answers few questions, so its value is checked, not its size)
    shots = [(row["question"], row["answer"]) for row in sets["knowmem_retain_icl"]]
    prompts = [tokenizer(knowmem_prompt(row["question"], shots).rstrip(" "))["input_ids"]
               for row in sets["knowmem_retain"]]
    answers = [cut_answer(a) for a in generate_answers(target, tokenizer, prompts, SETTINGS.knowmem_max_new_tokens)]
    assert on_target["muse/knowmem_retain"] == pytest.approx(
        100 * rouge_l_f1(answers, sets["knowmem_retain"]["answer"]).mean())
    timing = evaluator.timer.summary()
    assert timing["seconds"]["generate"] > 0 and timing["counts"]["generated_tokens"] > 0


def test_privleak_needs_the_retrain_models_statistics(muse):
    _, sets, tokenizer, _, target, retrain = muse
    no_stats = MUSEEvaluator(tokenizer, sets, settings=SETTINGS).evaluate(target)
    assert no_stats["muse/privleak"] is None and no_stats["muse/mia_min_k_auc"] > 0.9  # never a constant
    stats = compute_reference_stats(retrain, tokenizer, sets, MUSEEvalSettings(batch_size=5))
    with pytest.raises(ValueError, match="privleak_max_length=None there, 16 here.*recompute"):
        MUSEEvaluator(tokenizer, sets, stats, MUSEEvalSettings(privleak_max_length=16))
    with pytest.raises(ValueError, match="other PrivLeak texts"):
        MUSEEvaluator(tokenizer, {**sets, "privleak_forget": sets["privleak_forget"].select(range(3))}, stats)
    with pytest.raises(ValueError, match="no retrain-model Min-K% AUC"):
        MUSEEvaluator(tokenizer, sets, {"auc": {"loss": 0.5}})
    with pytest.raises(ValueError, match="no PrivLeak sets"):
        MUSEEvaluator(tokenizer, {k: v for k, v in sets.items() if not k.startswith("privleak")}, stats)
    with pytest.raises(ValueError, match="needs eval_sets with 'privleak_forget'"):
        compute_reference_stats(retrain, tokenizer, {"verbmem_forget": sets["verbmem_forget"]})


def test_bad_eval_sets_name_the_fix(muse):
    _, sets, tokenizer, *_ = muse
    with pytest.raises(ValueError, match=r"eval_sets has \['forget'\]: name MUSE's sets"):
        MUSEEvaluator(tokenizer, {"forget": sets["privleak_forget"]})
    with pytest.raises(ValueError, match="'knowmem_retain' and 'knowmem_retain_icl' without the other"):
        MUSEEvaluator(tokenizer, {"knowmem_retain": sets["knowmem_retain"]})
    with pytest.raises(ValueError, match="give both sets, or neither"):
        MUSEEvaluator(tokenizer, {"privleak_forget": sets["privleak_forget"]})
    with pytest.raises(ValueError, match=r"verbmem/forget has columns \['text'\] but needs \['prompt', 'gt'\]"):
        MUSEEvaluator(tokenizer, {"verbmem_forget": sets["privleak_forget"]})
    no_bos = copy.deepcopy(tokenizer)  # a tokenizer that adds no BOS token: a one-token text has nothing to score
    no_bos.backend_tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    with pytest.raises(ValueError, match="'privleak_forget', row 0: its text is under 2 tokens"):
        MUSEEvaluator(no_bos, {**sets, "privleak_forget": [{"text": "a"}]})
    # MUSE's KnowMem prompt ends with "Answer: "; knowmem_trailing_space=False drops that space
    for trailing, ending in ((True, "Answer: "), (False, "Answer:")):
        settings = MUSEEvalSettings(knowmem_trailing_space=trailing)
        prompts = MUSEEvaluator(tokenizer, sets, settings=settings).generation_sets["knowmem_retain"][0]
        assert tokenizer.decode(prompts[0], skip_special_tokens=True).endswith(ending)


def test_verbmem_generates_from_the_privleak_passs_caches(muse):
    """A VerbMem prompt opens a PrivLeak forget text (MUSE-News': the texts VerbMem's prompts are cut from; the
    synthetic data's too). The PrivLeak pass runs first and keeps those tokens' cache, and VerbMem's generation runs
    only each prompt's last token: every metric is the one of the sets evaluated apart, for fewer tokens run."""
    _, sets, tokenizer, _, target, _ = muse
    evaluator = MUSEEvaluator(tokenizer, sets, None, SETTINGS)
    prompts, texts = evaluator.generation_sets["verbmem_forget"][0], evaluator.privleak_sets["privleak_forget"][0]
    assert all(source is not None and source[1] == len(prompt) - 1 and texts[source[0]][:source[1]] == prompt[:-1]
               for source, prompt in zip(evaluator.prompt_sources, prompts, strict=True))
    apart = [MUSEEvaluator(tokenizer, {k: v for k, v in sets.items() if k.startswith("privleak") == privleak}, None,
                           SETTINGS) for privleak in (False, True)]
    assert apart[0].prompt_sources is None and apart[1].prompt_sources is None
    tokens = []
    hook = target.register_forward_pre_hook(lambda m, a, k: tokens.append(k["input_ids"].numel()), with_kwargs=True)
    try:
        counts = []
        for each in (evaluator, *apart):
            tokens.clear()
            metrics = each.evaluate(target)
            counts.append(sum(tokens))
            if each is evaluator:
                together = metrics
            else:
                assert all(together[key] == value for key, value in metrics.items() if value is not None)
    finally:
        hook.remove()
    assert counts[0] <= counts[1] + counts[2] - sum(len(p) - 1 for p in prompts)


def test_prompt_sources_take_the_tokens_a_text_begins_a_prompt_with():
    texts = [[1, 2, 3, 4, 5, 6], [1, 9, 9, 9], [1, 2, 8, 8, 8]]
    prompts = [[1, 2, 3, 4], [1, 2, 3, 7, 8], [1, 2, 8], [5, 5, 5, 5], [1, 9], [1, 9, 9, 9, 9], [1, 2, 8, 8, 8, 7]]
    # the text sharing the most, for at most all but the prompt's last token and at least `minimum`; a prompt no text
    # begins has none
    assert prompt_sources(prompts, texts, minimum=2) == [(0, 3), (0, 3), (2, 2), None, None, (1, 4), (2, 5)]


def test_verbmem_scores_the_whole_decode_of_the_generated_ids(tokenizer):
    """MUSE decodes the generated ids once. Re-encoding the decoded, stripped text and cutting it to as many tokens
    (what the evaluator did) lost words: " lives" is one token, "lives" at the start of a text three, so the four
    generated tokens re-encoded and cut to four dropped "Kestow."."""
    generated = tokenizer(" lives in Kestow.", add_special_tokens=False)["input_ids"]
    re_encoded = tokenizer("lives in Kestow.", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(re_encoded[:len(generated)]).strip() == "lives in"  # the old cut dropped "Kestow."
    row = generated + [tokenizer.eos_token_id, tokenizer.pad_token_id]  # a row of generate_ids: EOS, then padding
    assert decode_continuations(tokenizer, [row, row, row], [len(generated), len(row), 2]) == [
        "lives in Kestow.", "lives in Kestow.", "lives in"]


def test_privleak_texts_are_scored_whole_unless_a_length_is_set(muse):
    """MUSE scores every token of a PrivLeak text; open-unlearning cut them at 2048 tokens, as npo-trl did."""
    _, sets, tokenizer, _, target, _ = muse
    long_text = " ".join(sets["privleak_forget"]["text"])
    while len(tokenizer(long_text)["input_ids"]) <= 2100:
        long_text += " " + long_text
    privleak = {"privleak_forget": [{"text": long_text}, *sets["privleak_forget"]],
                "privleak_holdout": sets["privleak_holdout"]}
    whole = MUSEEvaluator(tokenizer, privleak)
    assert whole.privleak_sets["privleak_forget"][0][0] == tokenizer(long_text)["input_ids"]
    cut = MUSEEvaluator(tokenizer, privleak, settings=MUSEEvalSettings(privleak_max_length=2048))
    assert cut.privleak_sets["privleak_forget"][0][0] == tokenizer(long_text)["input_ids"][:2048]
    assert 0 <= whole.evaluate(target)["muse/mia_min_k_auc"] <= 1


def test_callback_logs_selects_and_refuses(muse, tmp_path):
    data, sets, tokenizer, target_dir, _, retrain = muse
    from npo_trl.muse import chunk_texts

    stats = compute_reference_stats(retrain, tokenizer, sets, SETTINGS)
    forget = chunk_texts(data["raw"]["forget"]["text"], tokenizer, 64)
    args = NPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_train_epochs=2, learning_rate=1e-3,
                     report_to="none", activation_checkpointing=False, logging_steps=1, max_length=64, seed=0,
                     eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
                     metric_for_best_model="muse/knowmem_retain", greater_is_better=True)
    callback = MUSECallback(tokenizer, sets, reference_stats=stats, settings=SETTINGS)
    trainer = NPOTrainer(target_dir, args=args, train_dataset=forget, eval_dataset=forget, processing_class=tokenizer,
                         callbacks=[callback])
    trainer.train()
    logged = [h for h in trainer.state.log_history if "muse/verbmem_forget" in h]
    steps_per_epoch = -(-len(forget) // 4)
    assert [h["step"] for h in logged] == [0, steps_per_epoch, 2 * steps_per_epoch]
    assert logged[0]["muse/privleak"] < -70 and logged[-1]["muse/verbmem_forget"] < logged[0]["muse/verbmem_forget"]
    rows = [json.loads(line) for line in (tmp_path / "muse_metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [h["step"] for h in logged] and "eval_timing" in rows[0]
    assert trainer.state.best_metric == max(h["muse/knowmem_retain"] for h in logged[1:])

    for metric, greater, message in [("muse/privleak", False, "select by 'muse/abs_privleak'"),
                                     ("muse/mia_min_k_auc", False, "its best value is the retrain model's"),
                                     ("muse/knowmem_retain", False, "better when higher"),
                                     ("muse/verbmem_forget", True, "better when lower: set greater_is_better=False"),
                                     ("muse/abs_privleak", False, "needs the retrain model's AUCs")]:
        bad = dataclasses.replace(args, metric_for_best_model=metric, greater_is_better=greater,
                                  output_dir=str(tmp_path / "bad"))
        bad_trainer = NPOTrainer(target_dir, args=bad, train_dataset=forget, eval_dataset=forget,
                                 processing_class=tokenizer,
                                 callbacks=[MUSECallback(tokenizer, sets, settings=SETTINGS)])
        with pytest.raises(ValueError, match=message):
            bad_trainer.train()


@pytest.mark.slow
@pytest.mark.processes
def test_two_zero3_processes_give_the_one_process_metrics(muse, tmp_path):
    """MUSECallback on 2 CPU processes under DeepSpeed ZeRO-3 (each generates for and scores half the rows, with
    synced_gpus) logs what 1 process logs, and the retrain statistics computed on 2 processes are 1 process's."""
    data, _, tokenizer, target_dir, _, retrain = muse
    retrain_dir = tmp_path / "retrain"  # never saw the forget articles: PrivLeak is finite at every step
    retrain.save_pretrained(retrain_dir)
    tokenizer.save_pretrained(retrain_dir)
    data_dir = tmp_path / "data"
    for subset, splits in data.items():
        (data_dir / subset).mkdir(parents=True)
        for split, rows in splits.items():
            rows.to_json(data_dir / subset / f"{split}.jsonl", lines=True)
    results = {}
    zero3 = ["--config_file", str(ROOT / "examples" / "accelerate_configs" / "zero3.yaml")]
    for num_processes, launcher in ((1, ["--cpu"]), (2, zero3)):
        out = tmp_path / f"np{num_processes}"
        cmd = [sys.executable, "-m", "accelerate.commands.launch", *launcher, "--num_processes", str(num_processes),
               "--mixed_precision", "no", "--main_process_port", "0", str(ROOT / "tests" / "scripts" /
                                                                          "muse_callback.py"),
               target_dir, str(retrain_dir), str(data_dir), str(out), str(4 // num_processes)]
        proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        results[num_processes] = json.loads((out / "result.json").read_text())
    one, two = results[1], results[2]
    assert two["deepspeed"] and not one["deepspeed"] and two["num_processes"] == 2
    assert two["stats"]["fingerprint"] == one["stats"]["fingerprint"]
    assert two["stats"]["auc"] == pytest.approx(one["stats"]["auc"], abs=1e-6)
    assert [r["step"] for r in one["muse"]] == [r["step"] for r in two["muse"]] == [0, 1, 2]
    for row_one, row_two in zip(one["muse"], two["muse"], strict=False):
        for key in METRICS:
            assert row_two[key] == pytest.approx(row_one[key], rel=1e-4, abs=1e-6), (row_one["step"], key)
    assert one["muse"][-1]["muse/verbmem_forget"] < one["muse"][0]["muse/verbmem_forget"]
    assert one["muse"][0]["muse/privleak"] < -50  # the target against the retrain model: under-unlearned
