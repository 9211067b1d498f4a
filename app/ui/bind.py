"""Small wiring helpers between the settings (app.settings.Settings) and the widgets that edit them.

    bind(settings, "steps", slider.valueChanged, show=self._show_steps, to_setting=lambda v: v * STEP)

connects the widget to the setting (view → settings), the setting's `<name>_changed` signal to `show`
(settings → view) and shows the current value once; refresh_on(signals, slot) calls one refresh slot on
any of several signals, whatever they carry.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable


def bind(settings: Any, name: str, widget_signal: Any, show: Callable[[Any], None],
         to_setting: Callable[[Any], Any] = lambda value: value) -> None:
    widget_signal.connect(lambda value: setattr(settings, name, to_setting(value)))
    getattr(settings, f"{name}_changed").connect(show)
    show(getattr(settings, name))


def refresh_on(signals: Iterable[Any], slot: Callable[[], None]) -> None:
    for signal in signals:
        signal.connect(lambda *_: slot())
