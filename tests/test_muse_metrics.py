"""npo_trl.muse.metrics: each formula on hand-made inputs."""

import pytest

from npo_trl.muse.criteria import scalability, sustainability
from npo_trl.muse.metrics import criterion, cut_answer, knowmem_prompt, rouge_l_f1


def test_rouge_l_f1_by_hand():
    # reference "the cat sat on the mat" (6 words), generation "the cat on a mat" (5): LCS "the cat on mat" = 4
    # precision 4/5, recall 4/6, F1 = 2·(4/5)(4/6)/(4/5 + 4/6) = 8/11
    scores = rouge_l_f1(["the cat on a mat", "the cat sat on the mat", "dog"], ["the cat sat on the mat"] * 3)
    assert scores[0] == pytest.approx(8 / 11) and scores[1] == 1.0 and scores[2] == 0.0
    # no stemming (MUSE's rule): "sitting" and "sits" do not match
    assert rouge_l_f1(["cats sitting"], ["cats sits"])[0] == pytest.approx(0.5)


def test_knowmem_prompt_is_muses_text():
    prompt = knowmem_prompt("Who won?", [("Where was it?", "In Ashcombe"), ("When?", "In May")])
    assert prompt == ("Question: Where was it?\nAnswer: In Ashcombe\n\nQuestion: When?\nAnswer: In May\n\n"
                      "Question: Who won?\nAnswer: ")
    assert knowmem_prompt("Who won?", []) == "Question: Who won?\nAnswer: "


@pytest.mark.parametrize("generation, answer", [
    ("Alma Brandt\n\nQuestion: Who lost?\nAnswer: Hugo", "Alma Brandt"),  # the next example starts
    ("Alma Brandt\nQuestion: next", "Alma Brandt"),
    ("Alma Brandt Question: next", "Alma Brandt"),
    ("  Alma Brandt  ", "Alma Brandt"),
    ("Question: at once", ""),
])
def test_cut_answer_stops_at_the_next_question(generation, answer):
    assert cut_answer(generation) == answer


def test_criterion_is_the_mean_times_100():
    assert criterion([0.0, 0.5, 1.0]) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="at least one row"):
        criterion([])

# PrivLeak's formula and sign (npo_trl.eval.privacy.privleak, shared with TOFU) are tested in test_eval_privacy.py.


def test_scalability_starts_each_run_from_the_target_and_sustainability_chains_them():
    calls = []

    def unlearn(model, forget, output_dir):
        calls.append((model, len(forget), output_dir))
        return f"{output_dir}/final"

    def evaluate(path):
        return {"muse/knowmem_retain": float(len(path))}

    folds = [[0] * 2, [0] * 4]
    rows = scalability(unlearn, evaluate, "target", folds, "c5")
    assert calls == [("target", 2, "c5/forget_1"), ("target", 4, "c5/forget_2")]
    assert [(r["forget_set"], r["forget_rows"], r["model"]) for r in rows] == [(1, 2, "c5/forget_1/final"),
                                                                                (2, 4, "c5/forget_2/final")]
    assert rows[0]["muse/knowmem_retain"] == len("c5/forget_1/final")
    calls.clear()
    sustainability(unlearn, evaluate, "target", folds, "c6")
    assert calls == [("target", 2, "c6/forget_1"), ("c6/forget_1/final", 4, "c6/forget_2")]
