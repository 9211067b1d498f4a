"""The Help menu's documents: where the README, the efficacy measurements and the model's card are.

Paths are found from the installed packages (importlib.resources), never from a fixed folder: the
repository (or the bundle) holds README.md and docs/ beside the ``app`` package, and the model cards
live in ``resources`` or in the model's own folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..backend import ModelSummary

# What the efficacy figures are, said wherever they are offered.
EFFICACY_NOTE = (
    "measured on the project's own small proxy model (not on Stable Diffusion): "
    "it says what works there, not what protects against a real mimic"
)
DEMO_CARDS = {"proxy": ("proxy", "model"), "tiny": ("tiny",)}  # the built-in models' folders in resources/


@dataclass(frozen=True)
class HelpDocument:
    """A document to open: ``path`` (may be missing on disk), or None with ``missing`` saying why."""

    title: str
    path: Path | None
    note: str = ""  # said beside it (the efficacy caveat)
    missing: str = ""  # why there is nothing to open

    def where(self) -> str:
        """One line for when the file cannot be opened: where it is (or should be)."""
        if self.path is None:
            return self.missing
        if not self.path.is_file():
            return f"{self.title}: the file is not here; it belongs at {self.path}."
        return f"No program could open {self.title}. It is at {self.path}."


def project_root() -> Path:
    """The folder that holds the ``app`` package, README.md and docs/ (the repository or the bundle)."""
    return Path(str(resources.files("app"))).parent


def readme() -> HelpDocument:
    return HelpDocument("the README", project_root() / "README.md")


def efficacy() -> HelpDocument:
    return HelpDocument("What the measurements show (docs/efficacy.md)", project_root() / "docs" / "efficacy.md",
                        note=f"These measurements are {EFFICACY_NOTE}.")


def model_card(model: ModelSummary | None) -> HelpDocument:
    """The loaded model's card: the built-in model's README in resources, else the README in the model's
    folder (the folder itself, or the folder a single checkpoint file is in)."""
    title = "the model's card"
    if model is None:
        return HelpDocument(title, None, missing="No model is loaded, so there is no model card to show.")
    if model.source in DEMO_CARDS:
        folder = Path(str(resources.files("resources").joinpath(*DEMO_CARDS[model.source])))
    else:
        source = Path(model.source)
        if not source.exists():
            return HelpDocument(f"the card of {model.name}", None,
                                missing=f"{model.name} has no model card here: {model.source} is not a folder on this computer.")
        folder = source if source.is_dir() else source.parent
    title = f"the card of {model.name}"
    for name in ("README.md", "README.txt", "README"):
        if (folder / name).is_file():
            return HelpDocument(title, folder / name)
    return HelpDocument(title, None, missing=f"{model.name} has no model card: there is no README in {folder}.")
