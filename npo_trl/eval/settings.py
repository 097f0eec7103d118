"""`EvalSettings`: the base of a benchmark's evaluation settings, one frozen value that its evaluator, its callback,
its `compute_reference_stats` and its CLI take, and whose fingerprint is stored with the reference statistics."""

import dataclasses
import hashlib
import json
from typing import Any, ClassVar


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    r"""
    How a benchmark is evaluated. A subclass declares its fields, each with `metadata={"help": ...}` (as TRL's
    configs do, so that `TrlParser` makes them flags), names in `scoring_fields` those that change the values stored
    in reference statistics (which rows are scored, how they are tokenized, the attacks' parameters), as opposed to
    those that change only how fast the evaluation runs or metrics computed from the evaluated model alone, and
    validates its fields in `__post_init__`. (`scoring_fields` is a class attribute, not a `"scores"` key of each
    field's metadata: `HfArgumentParser` passes every metadata key on to `argparse`, which refuses unknown ones.)
    """

    scoring_fields: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (a dataclass value, such as a `PromptFormat`, as its dict)."""
        return dataclasses.asdict(self)

    def scored_values(self) -> dict[str, Any]:
        """The `scoring_fields`, JSON-ready: what `fingerprint` hashes."""
        values = self.to_dict()
        return {name: values[name] for name in self.scoring_fields}

    def fingerprint(self) -> str:
        """sha256 (hex) of the JSON of `scored_values`: equal for two settings that store the same reference
        statistics."""
        return hashlib.sha256(json.dumps(self.scored_values(), sort_keys=True).encode()).hexdigest()

    def check_stats(self, stats: dict[str, Any], path=None) -> None:
        """Refuse npo-trl reference statistics (read from `path`, if from a file) stored under other settings: a
        ValueError naming the fields that differ and the fix."""
        if stats.get("settings_fingerprint") == self.fingerprint():
            return
        where = path or "reference_stats"
        fix = "recompute them with compute_reference_stats(..., settings=...) under the evaluation's settings" + (
            f", or delete the cache file at {path}" if path else "")
        stored = stats.get("settings")
        if not isinstance(stored, dict) or "settings_fingerprint" not in stats:
            raise ValueError(f"{where} holds no settings fingerprint (statistics of an older npo-trl): {fix}.")
        mine = self.to_dict()
        differing = [f"{name}={stored.get(name)!r} there, {mine[name]!r} here" for name in self.scored_values()
                     if stored.get(name) != mine[name]] or [f"{stored} there, {mine} here"]
        raise ValueError(f"{where} was computed with other evaluation settings ({'; '.join(differing)}): {fix}.")
