"""The view-model: the window's observable state and actions, between the engine bridge and the widgets.

``Workspace`` (workspace.py) is the one object the window holds; it coordinates the parts, each a module
small enough to read at once:

- queue.py: the images added, their state (``QueueItem``, ``ItemState``) and the list model the queue shows;
- batch_run.py: a protect batch while engine.batch runs it, its events moving the items;
- export.py: the output folder, the plan of file names, and saving protected images again;
- preview.py: which purifier the controls ask for, and a purification preview while it runs;
- estimates.py: how long a job takes here, learned per model, method and device;
- words.py: how the window says things (one-line messages, durations, a robustness report);
- tasks.py: the actions running on the qasync loop;
- prompts.py: the questions asked of the user;
- view.py: the compare view's zoom and difference toggle, and the difference image;
- help.py: where the README, the measurements and the model's card are.
"""

from .preview import LEVEL_NAMES, PREVIEW_NOTE, PreviewStatus
from .prompts import Prompts
from .view import DIFFERENCE_GAIN, MAX_ZOOM, ZOOM_STEPS, CompareViewState, difference_image
from .queue import IMAGE_SUFFIXES, ItemState, QueueItem, QueueModel
from .words import describe_robustness, format_duration, one_line
from .workspace import Workspace

__all__ = [
    "IMAGE_SUFFIXES", "LEVEL_NAMES", "PREVIEW_NOTE", "ItemState", "PreviewStatus", "Prompts", "QueueItem",
    "QueueModel", "Workspace", "CompareViewState", "DIFFERENCE_GAIN", "MAX_ZOOM", "ZOOM_STEPS", "difference_image", "describe_robustness", "format_duration", "one_line",
]
