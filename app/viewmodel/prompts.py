"""The questions the view-model asks the user, answered by the window's dialogs (or a test's canned answers)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Prompts(Protocol):
    """Questions the view-model asks the user. Called synchronously, never inside a coroutine."""

    def choose_output_dir(self, current: str) -> str | None: ...

    def resolve_conflicts(self, paths: list[Path]) -> str | None:
        """'overwrite', 'keep_both' or 'skip' for files that exist already; None cancels."""

    def confirm_quit(self, doing: str) -> bool:
        """True to stop ``doing`` (e.g. "protecting 2 images") and quit; False to keep working."""


class FixedAnswers:
    """Prompts answered without asking, for the scripts that drive the window (app.screenshots,
    app.window_bench): this output folder, this answer about existing files, and yes to quitting."""

    def __init__(self, out_dir: Path, conflicts: str = "keep_both"):
        self.out_dir = out_dir
        self.conflicts = conflicts

    def choose_output_dir(self, current: str) -> str | None:
        return str(self.out_dir)

    def resolve_conflicts(self, paths: list[Path]) -> str | None:
        return self.conflicts

    def confirm_quit(self, doing: str) -> bool:
        return True
