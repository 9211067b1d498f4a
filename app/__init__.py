"""Artveil desktop window.

Three layers that never blur (krita-ai-diffusion style):

- ``app.backend`` / ``app.bridge``: the engine behind one long-lived QObject on its own QThread.
  The backend is Qt-free; the bridge moves requests in as queued slots and results out as signals.
- ``app.settings`` / ``app.viewmodel``: observable state and actions (``*_changed`` signals), no widgets.
- ``app.ui``: widgets that bind to the view-model and call its actions.
"""
