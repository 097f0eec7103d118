"""How much of what unlearning removed an attack brings back: the recovery of a forget metric, as the relearning and
quantization papers compare an attacked model with the unlearned and the fine-tuned one (Hu et al. 2024, arXiv
2406.13356; Zhang et al. ICLR 2025, arXiv 2410.16454), normalised so that models and metrics compare."""

FORGET_MARKERS = ("forget", "mia_", "privleak")  # a metric key with one of these measures the forget set


def recovery(m_attacked: float, m_unlearned: float, m_finetuned: float) -> float:
    """(m_attacked − m_unlearned) / (m_finetuned − m_unlearned): 0 when the attack brings nothing back, 1 when it
    brings the fine-tuned model's value back (negative: the attack forgets more; above 1: beyond the fine-tuned
    model). The formula of issue 24, after the papers' comparison of attacked, unlearned and original models."""
    if m_finetuned == m_unlearned:
        raise ValueError(f"recovery needs m_finetuned != m_unlearned (both {m_finetuned}): unlearning did not move "
                         "this metric, so no share of it can come back; compare on a metric that unlearning "
                         "changed, or check that m_finetuned is the fine-tuned model's (before unlearning) value.")
    return (m_attacked - m_unlearned) / (m_finetuned - m_unlearned)


def is_forget_metric(key: str) -> bool:
    """Whether the metric `key` measures the forget set (TOFU's `tofu/forget_*`, MUSE's `muse/*_forget`, the
    membership-inference AUCs and PrivLeak, the forget set's memorization), which is what recovery is about."""
    name = key.rsplit("/", 1)[-1]
    return any(marker in name for marker in FORGET_MARKERS) and "holdout" not in name


def recoveries(attacked: dict, unlearned: dict, finetuned: dict) -> dict[str, float | None]:
    """`recovery` of every forget metric (`is_forget_metric`) of `attacked`, against the unlearned model's and the
    fine-tuned model's metrics of the same evaluation: None where one of the three values is None or missing, or
    where unlearning did not move the metric (`m_finetuned == m_unlearned`, which `recovery` refuses)."""
    out = {}
    for key, value in attacked.items():
        if not is_forget_metric(key):
            continue
        before, after = finetuned.get(key), unlearned.get(key)
        out[key] = None if None in (value, before, after) or before == after else recovery(value, after, before)
    return out
