"""The state of a stateful unlearning method (`npo_trl.methods.Method.state`, e.g. PDU's dual variable), kept where
the Trainer keeps its own: in each checkpoint's trainer_state.json."""

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState


class MethodStateCallback(TrainerCallback, ExportableState):
    """Holds the `values` (a dict of floats) of the method `method` for `NPOTrainer`, which reads and updates them
    in place. Transformers writes `state()` into every checkpoint (`TrainerState.stateful_callbacks`); when training
    resumes, `on_train_begin` reads them back (and with `restore_callback_states_from_checkpoint` the Trainer builds
    this callback anew from them)."""

    def __init__(self, method: str, values: dict[str, float] | None = None):
        self.method, self.values = method, dict(values or {})

    def state(self) -> dict:
        return {"args": {"method": self.method, "values": dict(self.values)}, "attributes": {}}

    def on_train_begin(self, args, state, control, **kwargs):
        saved = state.stateful_callbacks.get(type(self).__name__)
        if isinstance(saved, dict) and saved["args"]["method"] == self.method:  # the checkpoint's, when resuming
            self.values.clear()
            self.values.update(saved["args"]["values"])
