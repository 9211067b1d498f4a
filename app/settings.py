"""User choices that outlive the session, as observable properties (``strength_changed`` etc.).

Stored in an INI file in the platform's app-data folder (QStandardPaths). ``ARTVEIL_CONFIG_DIR``
moves it, which is how tests keep their hands off the real one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QObject, QSettings, QStandardPaths, Signal

from engine.jobs import BUDGET_PRESETS, BUDGET_RANGE, STRENGTH_PRESETS, STRENGTH_RANGE

from .signals import emit

CONFIG_DIR_ENV = "ARTVEIL_CONFIG_DIR"


def config_dir() -> Path:
    override = os.environ.get(CONFIG_DIR_ENV)
    if override:
        return Path(override)
    location = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    if not location:
        location = str(Path.home() / ".artveil")
    return Path(location)


class _Persisted:
    """A property stored under its own name that emits ``<name>_changed`` when it changes."""

    def __init__(self, default: Any, kind: type):
        self.default = default
        self.kind = kind
        self.name = ""

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        return obj._values[self.name]

    def __set__(self, obj, value) -> None:
        value = self.kind(value) if value is not None else None
        if obj._values.get(self.name) == value:
            return
        obj._values[self.name] = value
        obj._store.setValue(self.name, "" if value is None else value)
        emit(getattr(obj, f"{self.name}_changed"), value)

    def load(self, store: QSettings):
        raw = store.value(self.name, None)
        if raw is None or raw == "":
            return self.default
        try:
            if self.kind is bool:
                return raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes")
            return self.kind(raw)
        except (TypeError, ValueError):
            return self.default


class Settings(QObject):
    method_changed = Signal(object)
    strength_levels_changed = Signal(object)
    steps_changed = Signal(object)
    purifier_changed = Signal(object)
    purifier_level_changed = Signal(object)
    output_dir_changed = Signal(object)
    export_format_changed = Signal(object)
    model_source_changed = Signal(object)
    last_image_dir_changed = Signal(object)
    detail_changed = Signal(object)
    queue_files_changed = Signal(object)

    method = _Persisted("antipure", str)
    strength_levels = _Persisted(STRENGTH_PRESETS["default"], float)
    steps = _Persisted(BUDGET_PRESETS["default"], int)
    purifier = _Persisted("sdedit", str)
    purifier_level = _Persisted(1, int)  # 0 light, 1 medium, 2 heavy
    output_dir = _Persisted("", str)
    export_format = _Persisted("png", str)
    model_source = _Persisted("", str)
    last_image_dir = _Persisted("", str)  # where Add images / Add folder opened last
    detail = _Persisted("standard", str)  # speed/detail: a key of app.viewmodel.detail (the model's own size)
    queue_files = _Persisted("", str)  # the queue's files, a JSON list of {"path": …}, restored on the next start

    def __init__(self, path: Path | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.path = Path(path) if path is not None else config_dir() / "settings.ini"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._store = QSettings(str(self.path), QSettings.Format.IniFormat)
        self._values: dict[str, Any] = {}
        for name, prop in type(self).__dict__.items():
            if isinstance(prop, _Persisted):
                self._values[name] = prop.load(self._store)
        lo, hi = STRENGTH_RANGE
        self._values["strength_levels"] = min(max(self._values["strength_levels"], lo), hi)
        lo, hi = BUDGET_RANGE
        self._values["steps"] = min(max(self._values["steps"], lo), hi)

    # Opaque blobs that no view binds to: geometry, measured step times.
    def window_state(self, key: str) -> QByteArray | None:
        value = self._store.value(f"window/{key}")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def set_window_state(self, key: str, value: QByteArray) -> None:
        self._store.setValue(f"window/{key}", value)

    def step_seconds(self, key: str) -> float | None:
        value = self._store.value(f"step_seconds/{key}")
        try:
            return float(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            return None

    def set_step_seconds(self, key: str, seconds: float) -> None:
        self._store.setValue(f"step_seconds/{key}", float(seconds))

    def job_times(self, key: str):
        """Learned whole-job times (app.progress.JobTimes) for a model/method/device key, or None."""
        from .progress import JobTimes

        value = self._store.value(f"job_times/{key}")
        return JobTimes.from_text(value) if value not in (None, "") else None

    def set_job_times(self, key: str, times) -> None:
        self._store.setValue(f"job_times/{key}", times.as_text())

    def preview_times(self, key: str) -> tuple[float, float] | None:
        """(seconds to purify one image, seconds to compare) per reference area, or None."""
        value = self._store.value(f"preview_times/{key}")
        try:
            a, b = (float(v) for v in str(value).split(","))
        except (TypeError, ValueError):
            return None
        return (a, b) if a >= 0 and b >= 0 else None

    def set_preview_times(self, key: str, times: tuple[float, float]) -> None:
        self._store.setValue(f"preview_times/{key}", f"{times[0]:.6g},{times[1]:.6g}")

    def sync(self) -> None:
        self._store.sync()
