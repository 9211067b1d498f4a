"""The batch journal: which images of a batch are already exported, so re-running a batch resumes it.

It lives in the output folder as `.artveil-journal.jsonl`, one JSON object per line, appended and
fsynced as each image is exported. A line names the input (path, size, mtime), a fingerprint of the
settings and model, the output file's name and its SHA-256. An image counts as done only when such a
line matches the input as it is now, the same settings, and an output file whose bytes still hash the
same, so an edited original, other settings or a damaged output are protected again, never skipped.

Each image gets two lines: "committing" (its finished temporary file, just before the rename) and
"done" (after it). A run killed between the rename and the "done" line still resumes correctly: the
output on disk hashes to what "committing" recorded. A torn last line (killed mid-append) is ignored.

Lines are written unbuffered: a line that cannot be written (a full disk) is cut back off at once, so
nothing is left in a buffer to fail again when the journal closes, and no torn line glues onto the next.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

from engine.errors import ArtveilError
from engine.faults import maybe_fail

JOURNAL_NAME = ".artveil-journal.jsonl"
FORMAT_VERSION = 1


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def settings_fingerprint(settings, model: str, fmt: str) -> str:
    """A short hash of everything that changes the output: ProtectSettings, model source, format."""
    fields = dataclasses.asdict(settings)
    # Previews and the objective report change nothing in the exported file.
    fields.pop("preview_every", None)
    fields.pop("measure_objective", None)
    # The method's every parameter, defaults filled in: a file made before a default changed (AntiPure's grid
    # share, issue 28) is not what these settings make now, so it must not count as already exported.
    fields["method_params"] = _resolved_method_params(fields.get("method"), fields.get("method_params") or {})
    blob = json.dumps({"settings": fields, "model": model, "format": fmt}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _resolved_method_params(method, params: dict) -> dict:
    """The method's full parameter set as it will run; the given params where the method cannot resolve them
    (an unknown method or a refused value fails the job anyway, with its own message)."""
    from engine.methods import get_method

    try:
        return dataclasses.asdict(get_method(method, dict(params)).params)
    except (ArtveilError, TypeError, ValueError):
        return dict(params)


def input_identity(path: str | os.PathLike) -> dict:
    """The input as it is now: absolute path, size in bytes and modification time in ns."""
    p = Path(path)
    st = p.stat()
    return {"input": str(p.absolute()), "input_size": st.st_size, "input_mtime_ns": st.st_mtime_ns}


class BatchJournal:
    """Open with BatchJournal.open(out_dir); close() (or `with`) releases the folder lock."""

    def __init__(self, folder: Path, handle, entries: list[dict]):
        self.folder = folder
        self.path = folder / JOURNAL_NAME
        self._fh = handle
        self._entries = entries

    @classmethod
    def open(cls, folder: str | os.PathLike) -> "BatchJournal":
        """Read the folder's journal (creating it) and lock it against a second batch writing there.

        Raises ArtveilError("output") when the folder is not writable or another batch holds it.
        """
        folder = Path(folder)
        path = folder / JOURNAL_NAME
        try:
            handle = open(path, "a+b", buffering=0)
        except OSError as exc:
            raise ArtveilError("output", f"{folder}: output folder is not writable ({exc.strerror or exc}).") from None
        try:
            _lock(handle, folder)
            handle.seek(0)
            data = handle.readall()
            if data and not data.endswith(b"\n"):
                # A line torn by a kill mid-append: cut it off, or the next line would be glued onto it and lost.
                os.ftruncate(handle.fileno(), data.rfind(b"\n") + 1)
            text = data.decode("utf-8", "replace")
        except OSError as exc:
            handle.close()
            raise ArtveilError("output", f"{path}: the batch journal cannot be read ({exc.strerror or exc}).") from None
        except BaseException:
            handle.close()
            raise
        return cls(folder, handle, _parse(text))

    @staticmethod
    def read_entries(folder: str | os.PathLike) -> list[dict]:
        """The folder's journal lines without opening it for writing or locking it (planning a batch)."""
        try:
            text = (Path(folder) / JOURNAL_NAME).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return []
        return _parse(text)

    @staticmethod
    def entries_say_finished(entries: list[dict], identity: dict, fingerprint: str, target: Path) -> bool:
        """True when `target` is this input's export with these settings, intact on disk."""
        candidates = [
            e for e in entries
            if e.get("output") == target.name and e.get("settings") == fingerprint
            and all(e.get(k) == v for k, v in identity.items())
        ]
        if not candidates or not target.is_file():
            return False
        try:
            actual = file_sha256(target)
        except OSError:
            return False
        return any(e.get("output_sha256") == actual for e in candidates)

    def __enter__(self) -> "BatchJournal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing releases the lock
            self._fh = None

    @property
    def entries(self) -> list[dict]:
        return list(self._entries)

    def finished(self, identity: dict, fingerprint: str, target: Path) -> bool:
        """True when `target` is this input's export with these settings, intact on disk."""
        return self.entries_say_finished(self._entries, identity, fingerprint, target)

    def claims(self, target: Path) -> bool:
        """True when some earlier run of this folder wrote `target` (whatever its input or settings)."""
        return any(e.get("output") == target.name for e in self._entries)

    def record(self, state: str, identity: dict, fingerprint: str, target: Path, written: Path) -> str | None:
        """Append and fsync one line for `written` (the temp file or the final output).

        Returns None, or a one-line reason when the line could not be written; the journal is then as it
        was before the call (a partly written line is cut off again).
        """
        fd = self._fh.fileno()
        start = None
        try:
            entry = {
                "v": FORMAT_VERSION,
                "state": state,
                **identity,
                "settings": fingerprint,
                "output": target.name,
                "output_sha256": file_sha256(written),
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
            start = os.lseek(fd, 0, os.SEEK_END)
            maybe_fail("journal")
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            if start is not None:
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    pass  # a torn last line is ignored when read (_parse)
            return f"could not record it in the batch journal ({exc.strerror or exc})"
        self._entries.append(entry)
        return None

    def remove_stale_temps(self, targets: list[Path]) -> list[Path]:
        """Delete temporary files a killed run left for these targets (save_image's `.{stem}.*.part`)."""
        prefixes = {f".{t.stem[:40]}." for t in targets}
        removed = []
        for entry in self.folder.iterdir():
            name = entry.name
            if name.endswith(".part") and any(name.startswith(p) for p in prefixes) and entry.is_file():
                try:
                    entry.unlink()
                    removed.append(entry)
                except OSError:
                    pass
        return removed


def _parse(text: str) -> list[dict]:
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill mid-append: that image is simply redone
        if isinstance(entry, dict) and entry.get("v") == FORMAT_VERSION:
            entries.append(entry)
    return entries


def _lock(handle, folder: Path) -> None:
    # The lock makes deleting stale temp files safe: no other batch can be writing them right now.
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; two batches into one folder are not guarded
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ArtveilError("output", f"{folder}: another Artveil batch is writing to this folder; wait for it to finish.") from None
    except OSError:
        pass  # file systems without locks (some network drives): carry on unguarded
