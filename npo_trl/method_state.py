"""The state of a stateful unlearning method (`npo_trl.methods.Method.state`, e.g. PDU's dual variable), kept where
the Trainer keeps its own: in each checkpoint's trainer_state.json, and updated once per optimizer step."""

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState


class MethodStateCallback(TrainerCallback, ExportableState):
    """Holds the `values` (a dict of floats) of the method `method` for `NPOTrainer`, which reads them. Transformers
    writes `state()` into every checkpoint (`TrainerState.stateful_callbacks`); when training resumes,
    `on_train_begin` reads them back (and with `restore_callback_states_from_checkpoint` the Trainer builds this
    callback anew from them).

    The trainer `record`s each training micro-batch's logged values (means over processes); after each optimizer
    step, before any checkpoint of that step is written, `on_step_end` calls the row's `update` once with their mean
    over the step's micro-batches (the same sum and division as the logged metrics)."""

    def __init__(self, method: str, values: dict[str, float] | None = None):
        self.method, self.values = method, dict(values or {})
        self.pending: list[dict[str, float]] = []  # this optimizer step's micro-batches' logged values

    def state(self) -> dict:
        return {"args": {"method": self.method, "values": dict(self.values)}, "attributes": {}}

    def record(self, logged: dict[str, float]) -> None:
        self.pending.append(logged)

    def on_train_begin(self, args, state, control, **kwargs):
        self.pending.clear()
        saved = state.stateful_callbacks.get(type(self).__name__)
        if isinstance(saved, dict) and saved["args"]["method"] == self.method:  # the checkpoint's, when resuming
            self.values.clear()
            self.values.update(saved["args"]["values"])

    def on_step_end(self, args, state, control, **kwargs):
        row, pending = args.method, self.pending
        if row.update is not None and pending:
            step = {key: sum(logged[key] for logged in pending) / len(pending) for key in pending[0]
                    if all(key in logged for logged in pending)}
            row.update(self.values, step, **row.settings(args))
        pending.clear()
