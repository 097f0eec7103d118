"""npo_trl.muse.robustness: relearning on half the forget articles and scoring the other half's VerbMem and KnowMem
rows where articles and rows align (the synthetic corpus), on VerbMem excerpts otherwise."""

import pytest

from muse_helpers import muse_tokenizer, small_muse
from npo_trl.attacks.arguments import AttackArguments
from npo_trl.muse import muse_eval_sets
from npo_trl.muse.robustness import ATTACKED_SETS, muse_robustness_evaluator


def test_aligned_articles_split_by_document_and_excerpts_otherwise():
    data = small_muse()
    tokenizer, sets = muse_tokenizer(data), muse_eval_sets(data)
    articles = list(data["raw"]["forget"]["text"])
    attack_args = AttackArguments(attacks=["relearn", "relearn_benign"], relearn_steps=[2])
    aligned = muse_robustness_evaluator(tokenizer, sets, attack_args, forget_texts=articles,
                                        retain_texts=list(data["raw"]["retain1"]["text"]))
    relearned = list(aligned.attacks["relearn2"].rows["text"])
    prompts, _, _, _ = aligned.evaluator.generation_sets["verbmem_forget"]
    assert len(relearned) == 3 and len(prompts) == 3 and set(relearned) <= set(articles)
    held_out = [i for i, text in enumerate(articles) if text not in relearned]
    scored_questions = [data["knowmem"]["forget_qa"][i]["question"] for i in held_out]
    # article i's own excerpt and question are scored exactly when article i is not relearned
    decoded = sorted(tokenizer.decode(p, skip_special_tokens=True) for p in prompts)
    assert decoded == sorted(data["verbmem"]["forget"][i]["prompt"] for i in held_out)
    knowmem_prompts = aligned.evaluator.generation_sets["knowmem_forget"][0]
    assert len(knowmem_prompts) == len(scored_questions)
    assert all(any(q in tokenizer.decode(p) for p in knowmem_prompts) for q in scored_questions)
    assert list(aligned.attacks["relearn_benign2"].rows["text"]) == list(data["raw"]["retain1"]["text"])[:3]
    assert set(aligned.evaluator.generation_sets) == {"verbmem_forget", "knowmem_forget"}
    # not aligned (no articles given): relearn the VerbMem excerpts, score the others, KnowMem on every question
    excerpts = muse_robustness_evaluator(tokenizer, sets, AttackArguments(attacks=["relearn"], relearn_steps=[2]))
    rows = excerpts.attacks["relearn2"].rows
    assert set(rows.column_names) == {"prompt", "completion"} and len(rows) == 3
    assert set(rows["completion"]) <= set(data["verbmem"]["forget"]["gt"])
    assert len(excerpts.evaluator.generation_sets["knowmem_forget"][0]) == len(data["knowmem"]["forget_qa"])


def test_refusals():
    data = small_muse()
    tokenizer, sets = muse_tokenizer(data), muse_eval_sets(data)
    with pytest.raises(ValueError, match=r"eval_sets lacks \['verbmem_forget'\]"):
        muse_robustness_evaluator(tokenizer, {k: v for k, v in sets.items() if k != "verbmem_forget"},
                                  AttackArguments(attacks=["quantize8"]))
    assert set(ATTACKED_SETS) <= set(sets)
