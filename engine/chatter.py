"""Keep the terminal for Artveil's own lines: the libraries' notes about optional backends (torchvision) and
renamed arguments say nothing an artist can act on. Real errors still show.

Called by the command line at start and by every process it spawns (the efficacy rows' workers), since a
spawned process starts with none of its parent's warning filters."""

from __future__ import annotations

import os


def quiet_library_chatter() -> None:
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    # transformers' "Loading weights" bars (diffusers' are turned off where models load, engine.models)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", message=r".*`torch_dtype` is deprecated", category=FutureWarning)
