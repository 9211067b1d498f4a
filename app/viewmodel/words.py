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


# What the project's own efficacy measurements say per model (docs/efficacy.md). A model not named here
# has no measured curve: the preview's figure then says how much of the change survives, nothing more.
EFFICACY_FINDINGS = {
    "proxy": ("The project's measurements on this demo model (docs/efficacy.md) find that below 32 levels no "
              "protection keeps a mimic from learning the style; at 32 levels, plainly visible, AntiPure stops it "
              "after a light SDEdit clean-up, not without one."),
}


def describe_robustness(report, chosen: str, model_name: str | None = None) -> str:
    """The preview's result in words an artist reads at a glance, and no more than it shows.

    survival is the fraction (0..1) of the protection's change, in the model's latent space, left after
    a purifier. That is how much of the *change* survives, not how well the image is protected: only an
    efficacy measurement on the model (a mimic trained on protected images) says that. The engine's
    own verdict line is not repeated: it speaks of "the strongest clean-up tried" even when one ran.
    """
    rows = list(_field(report, "rows", []) or [])
    row = next((r for r in rows if _field(r, "name") == chosen), rows[0] if rows else None)
    if row is None:
        return "No purifier was run."
    label = _field(row, "label", chosen)
    survival = float(_field(row, "survival", 0.0))
    parts = [f"After {label} (the only clean-up this preview ran), about {_percent(survival)} of the change "
             f"Artveil made to the image is still there: it {survival_words(survival)}."]
    if len(rows) > 1:
        worst = min(rows, key=lambda r: float(_field(r, "survival", 1.0)))
        parts[0] = (f"After {label}, about {_percent(survival)} of the change Artveil made is still there. "
                    f"Of the {len(rows)} clean-ups tried, {_field(worst, 'label', 'one')} left the least: "
                    f"{_percent(float(_field(worst, 'survival', 0.0)))}.")
    parts.append("This measures how much of the change survives, not how well the image is protected.")
    finding = EFFICACY_FINDINGS.get(model_name or "")
    parts.append(finding or "How well protection works on this model has not been measured.")
    return " ".join(parts)
