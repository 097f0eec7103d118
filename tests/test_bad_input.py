"""A property-based bad-input matrix: any forget set either trains or is refused with a ValueError naming the field;
never a crash inside torch, never rows dropped without a warning that counts them."""

import copy
import math
import re
import warnings

from datasets import Dataset
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from npo_trl import NPOConfig, NPOTrainer

text = st.one_of(
    st.sampled_from(["", "   ", "Where does agent 3 live?", " Agent 3 lives in Kestow.", "Zoë — 東京 ✓",
                     "a\x00b\x1b[0m"]),
    st.text(max_size=12),
    st.just("Where does agent 1 live? " * 40),  # longer than max_length on its own
)
value = st.one_of(
    text, text, text, st.none(), st.integers(), st.just(["not", "messages"]),
    st.builds(lambda c: [{"role": "user", "content": c}], text),
)
row = st.fixed_dictionaries({}, optional={"prompt": value, "completion": value})
KNOWN_FIELDS = re.compile(r"'(prompt|completion)'|columns|train_dataset, the forget set|rows .* are left")


@settings(max_examples=25, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(row, min_size=1, max_size=4), pad_token=st.booleans())
def test_any_forget_set_trains_or_is_refused_by_name(tmp_path_factory, finetuned_dir, tokenizer, rows, pad_token):
    from transformers import AutoModelForCausalLM

    try:
        data = Dataset.from_list(rows)
    except Exception:  # pyarrow cannot hold the column (e.g. str and int mixed): no dataset reaches the trainer
        assume(False)
    tok = copy.deepcopy(tokenizer)
    if not pad_token:
        tok.pad_token = None
    args = NPOConfig(output_dir=str(tmp_path_factory.mktemp("run")), per_device_train_batch_size=2, max_steps=1,
                     max_length=48, report_to="none", save_strategy="no", activation_checkpointing=False,
                     logging_steps=1, forget_loss="ga", disable_tqdm=True)
    model = AutoModelForCausalLM.from_pretrained(finetuned_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            trainer = NPOTrainer(model, args=args, train_dataset=data, processing_class=tok)
        except ValueError as error:
            assert KNOWN_FIELDS.search(str(error)), error
            return
    kept = len(trainer.train_dataset)
    if kept < len(rows):
        counts = [w for w in caught if re.search(rf"{len(rows) - kept} of {len(rows)} forget rows", str(w.message))]
        assert len(counts) == 1, [str(w.message) for w in caught]
    trainer.train()
    assert trainer.state.global_step == 1
    assert math.isfinite(trainer.state.log_history[0]["loss"])
