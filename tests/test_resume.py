"""Resumable batches: re-running the same command after a crash exports every image exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

import corpus
from corpus import cli  # noqa: F401 - fixture
from conftest import make_image
from engine.errors import ArtveilError
from engine.jobs import ProtectSettings
from engine.journal import JOURNAL_NAME, BatchJournal, file_sha256, input_identity, settings_fingerprint

# PhotoGuard (encoder only) is the cheapest method on a CPU; only files and the journal are under test.
CLI_SETTINGS = ("--model", "tiny", "--method", "photoguard", "--steps", "2", "--working-size", "64")


def write_inputs(folder, count, size=(32, 32)):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.fromarray(make_image(*size, seed=10 + i)).save(path)
        paths.append(path)
    return paths


def journal_lines(out):
    return [json.loads(line) for line in (out / JOURNAL_NAME).read_text().splitlines() if line.strip()]


def file_state(path):
    st = path.stat()
    return path.read_bytes(), st.st_ino, st.st_mtime_ns


# --- the journal itself --------------------------------------------------------------------------------

@pytest.fixture
def exported(tmp_path):
    """One input, its 'export' and a journal line for it: (journal folder, input, target, fingerprint)."""
    (source,) = write_inputs(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    target = out / "img0.protected.png"
    target.write_bytes(b"protected pixels")
    fingerprint = settings_fingerprint(ProtectSettings(steps=2), "tiny", "png")
    with BatchJournal.open(out) as journal:
        assert journal.record("done", input_identity(source), fingerprint, target, target) is None
    return out, source, target, fingerprint


def test_an_export_made_before_a_method_default_changed_is_not_done(exported, monkeypatch):
    """The journal's fingerprint holds the method's parameters as they run, defaults filled in: when a release
    changes a default (AntiPure's grid share did, twice), the file on disk was made by other settings, so the
    batch must make it again, not report it as already exported. The same parameters given explicitly or by
    default are one fingerprint."""
    import dataclasses

    from engine.methods.antipure import AntiPure
    from engine.methods.base import setting

    out, source, target, _ = exported
    settings = ProtectSettings(steps=2, method="antipure")
    current = AntiPure.Params().grid_share
    before = settings_fingerprint(settings, "tiny", "png")
    explicit = dataclasses.replace(settings, method_params={"grid_share": current})
    assert settings_fingerprint(explicit, "tiny", "png") == before
    with BatchJournal.open(out) as journal:
        assert journal.record("done", input_identity(source), before, target, target) is None

    @dataclasses.dataclass
    class NewDefaults(AntiPure.Params):
        grid_share: float = setting(current / 2, "the share, halved by a later release", float, 0.0, 1.0)

    monkeypatch.setattr(AntiPure, "Params", NewDefaults)
    after = settings_fingerprint(settings, "tiny", "png")
    assert after != before
    with BatchJournal.open(out) as journal:
        assert not journal.finished(input_identity(source), after, target)
        assert journal.finished(input_identity(source), before, target)


def test_an_export_counts_as_done_only_while_input_settings_and_output_all_match(exported):
    out, source, target, fingerprint = exported
    with BatchJournal.open(out) as journal:
        assert journal.finished(input_identity(source), fingerprint, target)
        other = settings_fingerprint(ProtectSettings(steps=3), "tiny", "png")
        assert not journal.finished(input_identity(source), other, target)
        assert not journal.finished(input_identity(source), settings_fingerprint(ProtectSettings(steps=2), "tiny", "webp"), target)
    target.write_bytes(b"protected pixelz")  # damaged, or edited by hand
    with BatchJournal.open(out) as journal:
        assert not journal.finished(input_identity(source), fingerprint, target)
    target.write_bytes(b"protected pixels")
    st = source.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # the original was edited
    with BatchJournal.open(out) as journal:
        assert not journal.finished(input_identity(source), fingerprint, target)
        assert journal.claims(target)


def test_a_line_torn_by_a_kill_is_ignored(exported):
    out, source, target, fingerprint = exported
    with open(out / JOURNAL_NAME, "a", encoding="utf-8") as fh:
        fh.write('{"v": 1, "state": "done", "input": "/somewh')
    with BatchJournal.open(out) as journal:
        assert len(journal.entries) == 1
        assert journal.finished(input_identity(source), fingerprint, target)


def test_only_temporaries_of_this_batch_are_cleaned_up(exported):
    out, _, target, _ = exported
    stale = out / ".img0.protected.k2j4h1xq.part"
    stale.write_bytes(b"half a png")
    keep = [out / ".other.protected.aaaa.part", out / "img0.part", out / "notes.txt"]
    for path in keep:
        path.write_bytes(b"not ours")
    with BatchJournal.open(out) as journal:
        assert journal.remove_stale_temps([target]) == [stale]
    assert not stale.exists() and all(p.exists() for p in keep)


@pytest.mark.skipif(os.name != "posix", reason="folder lock is POSIX-only")
def test_a_second_batch_cannot_write_into_a_folder_in_use(exported):
    out = exported[0]
    with BatchJournal.open(out):
        with pytest.raises(ArtveilError, match="another Artveil batch is writing to this folder"):
            BatchJournal.open(out)
    BatchJournal.open(out).close()  # released when the first batch ends


# --- resuming through the command line ---------------------------------------------------------------

def test_rerunning_a_finished_batch_skips_every_image_and_rewrites_nothing(cli, tmp_path):
    write_inputs(tmp_path / "in", 2)
    out = tmp_path / "out"
    status, _, _ = cli("protect", str(tmp_path / "in"), "--out", str(out), *CLI_SETTINGS)
    assert status == 0
    before = {p.name: file_state(p) for p in out.glob("*.png")}
    status, stdout, err = cli("protect", str(tmp_path / "in"), "--out", str(out), *CLI_SETTINGS)
    assert status == 0 and " -> " not in stdout
    for name in ("img0", "img1"):
        assert f"note: {name}.png: already exported to {name}.protected.png by an earlier run; skipped." in err
    assert {p.name: file_state(p) for p in out.glob("*.png")} == before
    assert sorted(e["output"] for e in journal_lines(out) if e["state"] == "done") == ["img0.protected.png", "img1.protected.png"]


def test_a_kill_between_the_rename_and_the_journal_line_still_resumes(cli, tmp_path):
    write_inputs(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert cli("protect", str(tmp_path / "in"), "--out", str(out), *CLI_SETTINGS)[0] == 0
    journal = out / JOURNAL_NAME
    kept = [line for line in journal.read_text().splitlines() if '"state": "committing"' in line]
    journal.write_text("\n".join(kept) + "\n")  # as if killed right after os.replace
    status, stdout, err = cli("protect", str(tmp_path / "in"), "--out", str(out), *CLI_SETTINGS)
    assert status == 0 and "skipped" in err and " -> " not in stdout


def test_other_settings_or_an_edited_output_are_never_silently_skipped_or_replaced(cli, tmp_path):
    (source,) = write_inputs(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert cli("protect", str(source), "--out", str(out), *CLI_SETTINGS)[0] == 0
    target = out / "img0.protected.png"
    first = target.read_bytes()
    status, _, err = cli("protect", str(source), "--out", str(out), *CLI_SETTINGS, "--strength", "4")
    assert status == 1 and target.read_bytes() == first
    assert ("error: img0.png: img0.protected.png: already exists in " in err
            and "by a run with other settings or from an edited original (use --overwrite to replace it)." in err)
    status, _, err = cli("protect", str(source), "--out", str(out), *CLI_SETTINGS, "--strength", "4", "--overwrite")
    assert status == 0 and "skipped" not in err
    change = np.abs(np.asarray(Image.open(target)).astype(int) - np.asarray(Image.open(source)).astype(int))
    assert 0 < change.max() <= 4
    # The artist signs the export by hand: a later run must not take it for its own and skip or replace it.
    target.write_bytes(target.read_bytes() + b"signed")
    status, _, err = cli("protect", str(source), "--out", str(out), *CLI_SETTINGS, "--strength", "4")
    assert status == 1 and "already exists" in err and target.read_bytes().endswith(b"signed")


def test_a_batch_killed_mid_image_resumes_and_exports_every_image_exactly_once(tmp_path):
    inputs = write_inputs(tmp_path / "in", 4)
    out = tmp_path / "out"
    args = ("protect", str(tmp_path / "in"), "--out", str(out), *CLI_SETTINGS, "--steps", "5")
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(corpus.cli_command(*args), cwd=corpus.REPO_ROOT, env=corpus.cli_environment(),
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 240
            while not list(out.glob("*.protected.png")) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)  # no cleanup, no finally: as a power cut or the OOM killer
        finally:
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()
    before_kill = {p.name: file_state(p) for p in out.glob("*.protected.png")}
    assert 1 <= len(before_kill) < len(inputs)  # the kill landed mid-batch
    # What a kill during the write leaves: a temporary next to the output it was to become.
    stray = out / ".img3.protected.x7q2m9za.part"
    stray.write_bytes(b"\x89PNG\r\n\x1a\n half of an image")

    rerun = corpus.run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert "Traceback" not in rerun.stderr
    assert "note: removed 1 unfinished temporary file(s) left by an interrupted run." in rerun.stderr
    for name in before_kill:
        stem = name.split(".")[0]
        assert f"note: {stem}.png: already exported to {name} by an earlier run; skipped." in rerun.stderr
    assert corpus.folder_listing(out) == {f"{p.stem}.protected.png" for p in inputs} | {JOURNAL_NAME}
    for name, state in before_kill.items():
        assert file_state(out / name) == state  # not exported a second time
    entries = journal_lines(out)
    for path in inputs:
        target = out / f"{path.stem}.protected.png"
        mine = [e for e in entries if e["output"] == target.name]
        # Exactly one export: one commit, at most one "done", all naming the file now on disk.
        assert [e["state"] for e in mine].count("committing") == 1, mine
        assert [e["state"] for e in mine].count("done") <= 1, mine
        assert {e["input"] for e in mine} == {str(path.absolute())}
        assert {e["output_sha256"] for e in mine} == {file_sha256(target)}
        protected = np.asarray(Image.open(target)).astype(int)
        change = np.abs(protected - np.asarray(Image.open(path)).astype(int))
        assert protected.shape == (32, 32, 3) and 0 < change.max() <= 8
