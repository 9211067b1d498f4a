"""How the window says things: one-line messages, durations, and a robustness report in an artist's words."""

from __future__ import annotations

import math


def one_line(message: str, limit: int = 160) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return "under a second"
    if seconds < 60:
        return f"{int(round(seconds))} s"
    if seconds < 3600:
        minutes, secs = divmod(int(round(seconds)), 60)
        return f"{minutes} min" if minutes >= 10 or secs == 0 else f"{minutes} min {secs} s"
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours} h {rest // 60} min"


def _percent(value: float) -> str:
    return f"{int(round(100 * max(0.0, min(1.0, value))))} %"


def survival_words(survival: float) -> str:
    if survival >= 0.7:
        return "holds up well"
    if survival >= 0.4:
        return "is weakened but still there"
    if survival >= 0.15:
        return "is mostly washed out"
    return "is removed"


def _field(obj, name, default=None):
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def describe_robustness(report, chosen: str) -> str:
    """The robustness report in words an artist reads at a glance.

    survival is the fraction (0..1) of the protection's effect left after a purifier.
    """
    rows = list(_field(report, "rows", []) or [])
    row = next((r for r in rows if _field(r, "name") == chosen), rows[0] if rows else None)
    parts = []
    if row is not None:
        survival = float(_field(row, "survival", 0.0))
        parts.append(
            f"After {_field(row, 'label', chosen)}, about {_percent(survival)} of the protection survives: "
            f"it {survival_words(survival)}."
        )
    worst = _field(report, "worst")
    if isinstance(worst, (int, float)):
        worst_row = min(rows, key=lambda r: float(_field(r, "survival", 1.0)), default=None)
        worst_value = float(worst)
    else:
        worst_row = worst
        worst_value = float(_field(worst, "survival", 0.0)) if worst is not None else None
    verdict = _field(report, "verdict")
    worst_is_chosen = worst_row is not None and _field(worst_row, "name") == _field(row, "name")
    # The engine's verdict already quotes the worst number; name the purifier only when it differs.
    if worst_value is not None and len(rows) > 1 and not (verdict and worst_is_chosen):
        label = _field(worst_row, "label", "the strongest purifier") if worst_row is not None else "the strongest purifier"
        parts.append(f"Worst case of the {len(rows)} purifiers tried ({label}): {_percent(worst_value)} survives.")
    if verdict:
        parts.append(str(verdict))
    return " ".join(parts) if parts else "No purifier was run."
