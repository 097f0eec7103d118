"""LMEvalCallback in NPOTrainer: the stand-in's lm-eval accuracies logged before training and at its steps, and
appended to lm_eval_metrics.jsonl."""

import json

from datasets import Dataset
from transformers import AutoModelForCausalLM

from lm_eval_helpers import answer_rows, memorising_model, small_standin, standin_tokenizer
from npo_trl import NPOConfig, NPOTrainer
from npo_trl.lm_eval import LMEvalCallback


def test_the_callback_logs_lm_eval_metrics_during_npo(tmp_path):
    standin = small_standin(tmp_path / "wmdp", num_forget=4, num_retain=4)
    tokenizer = standin_tokenizer(standin)
    memorising_model(standin, tokenizer, steps=100).save_pretrained(tmp_path / "model")  # NPO loads π_ref from it
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    forget = Dataset.from_list(answer_rows(standin).to_list()[:16])  # the forget questions with their answers
    callback = LMEvalCallback(standin.tasks, tokenizer, batch_size=16, metrics=("acc",), eval_steps=3)
    args = NPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, learning_rate=1e-2,
                     max_steps=6, logging_steps=1, report_to="none", activation_checkpointing=False,
                     save_strategy="no", seed=0, disable_tqdm=True)
    trainer = NPOTrainer(model, args=args, train_dataset=forget, processing_class=tokenizer, callbacks=[callback])
    trainer.train()

    logged = [h for h in trainer.state.log_history if "lm_eval/wmdp_synthetic/acc" in h]
    assert [h["step"] for h in logged] == [0, 3, 6]
    assert logged[0]["lm_eval/wmdp_synthetic/acc"] == 1.0 and logged[0]["lm_eval/mmlu_synthetic/acc"] == 1.0
    assert logged[-1]["lm_eval/wmdp_synthetic/acc"] < 1.0  # NPO on the forget questions lowers their accuracy
    with open(tmp_path / "out" / "lm_eval_metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [r["step"] for r in rows] == [0, 3, 6]
    for row, log in zip(rows, logged, strict=True):
        assert all(row[key] == log[key] for key in callback.evaluator.metric_names)
        assert row["eval_timing"]["counts"]["rows"] == 32
    # The trainer's own logging is untouched: every step logged its loss.
    assert [h["step"] for h in trainer.state.log_history if "loss/forget" in h] == [1, 2, 3, 4, 5, 6]
