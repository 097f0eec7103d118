"""`AttackArguments`: which attacks a robustness evaluation runs and their budgets, as the examples and `npo-trl eval`
parse them (`TrlParser`), and `make_attacks`, which builds them for `RobustnessEvaluator`."""

from dataclasses import dataclass, field

from .relearn import RELEARN_FRACTION, RELEARN_LEARNING_RATE, RELEARN_STEPS

ATTACKS = ("relearn", "relearn_benign", "quantize8", "quantize4")


@dataclass
class AttackArguments:
    r"""
    The attacks run on an unlearned model (`npo_trl.attacks`) and their budgets.

    Parameters:
        attacks (`list[str]`, *optional*, defaults to `[]`):
            Among `relearn` (fine-tune a copy on part of the forget set, score it on the other part), `relearn_benign`
            (the same budget on retain rows: what fine-tuning alone brings back), `quantize8` and `quantize4`
            (bitsandbytes' 8-bit and NF4 4-bit loads); `none` (or nothing) runs none.
        relearn_steps (`list[int]`, *optional*, defaults to `[RELEARN_STEPS]`):
            The relearning budgets in optimizer steps: one attack per budget, named `relearn<steps>` (and
            `relearn_benign<steps>`).
        relearn_learning_rate (`float`, *optional*, defaults to `RELEARN_LEARNING_RATE`):
            Relearning's constant learning rate (of the order of the model's fine-tuning learning rate).
        relearn_fraction (`float`, *optional*, defaults to `RELEARN_FRACTION`):
            The share of each author's (TOFU) or of the documents' (MUSE) forget rows that relearning trains on; the
            attacked models are scored on the others.
        relearn_batch_size (`int`, *optional*, defaults to `4`):
            Rows per relearning step.
        relearn_seed (`int`, *optional*, defaults to `0`):
            The seed of the relearn/evaluation split and of relearning's order of rows.
    """

    attacks: list[str] = field(default_factory=list, metadata={
        "help": f"Attacks on each unlearned model, among {', '.join(ATTACKS)}; 'none' runs none. relearn: fine-tune "
                "a copy on part of the forget set, score the other part; relearn_benign: the same on retain rows; "
                "quantize8/quantize4: bitsandbytes' 8-bit and NF4 4-bit loads (pip install 'npo-trl[attacks]')."})
    relearn_steps: list[int] = field(default_factory=lambda: [RELEARN_STEPS], metadata={
        "help": "Relearning budgets in optimizer steps: one attack per budget, named relearn<steps>."})
    relearn_learning_rate: float = field(default=RELEARN_LEARNING_RATE, metadata={
        "help": "Relearning's constant learning rate (of the order of the model's fine-tuning learning rate; the "
                "default, 1e-5, is TOFU's for Llama-2-7B)."})
    relearn_fraction: float = field(default=RELEARN_FRACTION, metadata={
        "help": "Share of each author's (TOFU) or of the documents' (MUSE) forget rows relearned; the attacked "
                "models are scored on the others."})
    relearn_batch_size: int = field(default=4, metadata={"help": "Rows per relearning step."})
    relearn_seed: int = field(default=0, metadata={
        "help": "Seed of the relearn/evaluation split and of relearning's order of rows."})

    def __post_init__(self):
        self.attacks = [name for name in self.attacks if name != "none"]
        unknown = [name for name in self.attacks if name not in ATTACKS]
        if unknown:
            raise ValueError(f"attacks: unknown {unknown}; choose among {list(ATTACKS)} (or 'none').")
        if len(set(self.attacks)) != len(self.attacks):
            raise ValueError(f"attacks={self.attacks}: name each attack once.")
        if not self.relearn_steps or any(not isinstance(s, int) or isinstance(s, bool) or s < 1
                                         for s in self.relearn_steps) or \
                len(set(self.relearn_steps)) != len(self.relearn_steps):
            raise ValueError(f"relearn_steps={self.relearn_steps}: give distinct whole numbers of steps >= 1, "
                             "e.g. --relearn_steps 10 40.")
        if not 0 < self.relearn_fraction < 1:
            raise ValueError(f"relearn_fraction={self.relearn_fraction}: the relearned share of the forget rows must "
                             "lie strictly between 0 and 1 (default 0.5).")
        if not self.relearn_learning_rate > 0 or self.relearn_batch_size < 1:
            raise ValueError(f"relearn_learning_rate={self.relearn_learning_rate}, relearn_batch_size="
                             f"{self.relearn_batch_size}: use a positive learning rate and a batch of >= 1 rows.")

    @property
    def relearns(self) -> bool:
        """Whether an attack relearns (and so needs a split of the forget rows)."""
        return any(name.startswith("relearn") for name in self.attacks)

    def attack_names(self) -> list[str]:
        """The attacks' names in the metric keys (`attack/<name>/...`), in the order they run."""
        names = []
        for name in self.attacks:
            names += [f"{name}{steps}" for steps in self.relearn_steps] if name.startswith("relearn") else [name]
        return names


def make_attacks(attack_args: AttackArguments, processing_class=None, relearn_rows=None, benign_rows=None,
                 **relearn_kwargs) -> dict:
    """The attacks of `attack_args` by name (`AttackArguments.attack_names`), for `RobustnessEvaluator`:
    `QuantizeAttack`s, and a `RelearnAttack` per budget on `relearn_rows` (`relearn`) and on `benign_rows`
    (`relearn_benign`; as many rows as `relearn_rows`, the first of `benign_rows`), each rows prompt/completion or text
    rows in the model's format. `relearn_kwargs` go to `relearn_copy` (e.g. `peft_config`, SFTConfig fields)."""
    from .quantize import QuantizeAttack
    from .relearn import RelearnAttack

    attacks = {}
    for name in attack_args.attacks:
        if name.startswith("quantize"):
            attacks[name] = QuantizeAttack(int(name.removeprefix("quantize")))
            continue
        rows = relearn_rows if name == "relearn" else benign_rows
        if rows is None or relearn_rows is None:
            raise ValueError(f"The {name} attack needs its rows: pass relearn_rows (a split of the forget rows)"
                             f"{' and benign_rows (retain rows)' if name == 'relearn_benign' else ''}.")
        if name == "relearn_benign":
            if len(rows) < len(relearn_rows):
                raise ValueError(f"benign_rows has {len(rows)} rows, fewer than the {len(relearn_rows)} relearn rows "
                                 "whose budget the benign attack matches: give more retain rows.")
            rows = rows.select(range(len(relearn_rows))) if hasattr(rows, "select") else rows[:len(relearn_rows)]
        for steps in attack_args.relearn_steps:
            attacks[f"{name}{steps}"] = RelearnAttack(
                processing_class, rows, steps=steps, learning_rate=attack_args.relearn_learning_rate,
                name=f"{name}{steps}", batch_size=attack_args.relearn_batch_size, seed=attack_args.relearn_seed,
                **relearn_kwargs)
    return attacks
