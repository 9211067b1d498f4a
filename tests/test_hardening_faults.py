"""Faults while working: a full or refusing disk, and running out of (GPU) memory.

Faults are injected at the points where they really happen (engine.faults): "write" inside the
atomic export, "unet" and "vae" inside the model calls, where CUDA runs out of memory.
"""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
from PIL import Image

import corpus
from corpus import cli  # noqa: F401 - fixture
from conftest import make_image
from engine.errors import ArtveilError
from engine.faults import inject
from engine.images import save_image
from engine.jobs import ProtectProgress, ProtectResult, ProtectSettings
from engine.journal import JOURNAL_NAME
from engine.protect import protect_iter

# Mist runs the encoder and the UNet (both fault points) at a third of AntiPure's CPU cost.
CLI_SETTINGS = ("--model", "tiny", "--method", "mist", "--steps", "2", "--working-size", "64")


def disk_full() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def permission_denied() -> OSError:
    return PermissionError(errno.EACCES, os.strerror(errno.EACCES))


def write_inputs(folder, names, size=(32, 32)):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        Image.fromarray(make_image(*size, seed=i)).save(folder / name)
        paths.append(folder / name)
    return paths


# --- the atomic export -------------------------------------------------------------------------------

def test_failed_write_leaves_neither_the_file_nor_its_temporary(tmp_path):
    with inject("write", times=1, error=disk_full):
        with pytest.raises(ArtveilError) as info:
            save_image(make_image(32, 32), tmp_path / "a.protected.png")
    assert info.value.kind == "output"
    assert info.value.message == f"a.protected.png: could not be written ({os.strerror(errno.ENOSPC)})."
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_previous_export_byte_for_byte(tmp_path):
    target = save_image(make_image(32, 32, seed=1), tmp_path / "a.protected.png")
    before = target.read_bytes()
    with inject("write", times=1, error=disk_full), pytest.raises(ArtveilError):
        save_image(make_image(32, 32, seed=2), target, overwrite=True)
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["a.protected.png"]
    with pytest.raises(ArtveilError, match="already exists"):
        save_image(make_image(32, 32, seed=2), target)
    assert target.read_bytes() == before


@pytest.mark.parametrize("fault, reason", [(disk_full, errno.ENOSPC), (permission_denied, errno.EACCES)])
def test_a_write_fault_fails_that_image_only_and_the_batch_goes_on(cli, tmp_path, fault, reason):
    # As root, chmod cannot refuse a write: the fault stands in for a full or read-only disk.
    inputs = write_inputs(tmp_path / "in", ["a.png", "b.png"])
    out = tmp_path / "out"
    with inject("write", times=1, error=fault):
        status, stdout, err = cli("protect", str(tmp_path / "in"), "--out", str(out), *CLI_SETTINGS)
    assert status == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: a.png: a.protected.png: could not be written ({os.strerror(reason)})."]
    assert "b.png -> " in stdout
    assert corpus.folder_listing(out) == {"b.protected.png", JOURNAL_NAME}
    # Once there is room again the same command finishes the batch without redoing b.
    status, stdout, err = cli("protect", str(tmp_path / "in"), "--out", str(out), *CLI_SETTINGS)
    assert status == 0 and "a.png -> " in stdout and stdout.count(" -> ") == 1
    assert corpus.folder_listing(out) == {"a.protected.png", "b.protected.png", JOURNAL_NAME}
    for path in inputs:
        exported = np.asarray(Image.open(out / f"{path.stem}.protected.png")).astype(int)
        assert np.abs(exported - np.asarray(Image.open(path)).astype(int)).max() <= 8


# --- out of memory -----------------------------------------------------------------------------------

# A job that runs out of memory is retried once with the engine's next smaller plan (engine.plan): on the tiny
# model's one-pass plan for Mist that is two-pass.
OOM_SETTINGS = ProtectSettings(method="mist", steps=1, working_size=256, strength_levels=8, measure_objective=False,
                               preview_every=0)
RETRY_NOTE = "out of memory: retrying with a smaller plan (two-pass, whole image, working size 256 px)"


@pytest.mark.parametrize("point", ["unet", "vae"])
def test_out_of_memory_once_retries_with_a_smaller_plan_and_keeps_the_budget(tiny_model, point):
    pixels = make_image(128, 144, seed=4)
    with inject(point, times=1):
        items = list(protect_iter(tiny_model, pixels, OOM_SETTINGS))
    messages = [i.message for i in items if isinstance(i, ProtectProgress) and i.message]
    assert messages == [RETRY_NOTE]
    result = items[-1]
    assert isinstance(result, ProtectResult) and result.notes == messages
    assert result.plan.startswith("plan: two-pass, whole image")
    change = np.abs(result.protected.astype(int) - pixels)
    assert result.protected.shape == pixels.shape and 0 < change.max() <= OOM_SETTINGS.strength_levels


def test_out_of_memory_that_persists_ends_in_a_clear_memory_error(tiny_model):
    seen = []
    with inject("unet", times=1000), pytest.raises(ArtveilError) as info:
        for item in protect_iter(tiny_model, make_image(128, 144, seed=4), OOM_SETTINGS):
            seen.append(item)
    assert info.value.kind == "memory"
    assert info.value.message.startswith("out of memory even with the plan two-pass, whole image, working size 256 px; "
                                         "try a smaller working size")
    assert [i.message for i in seen if i.message] == [RETRY_NOTE]
    assert not any(isinstance(i, ProtectResult) for i in seen)


def test_cli_names_the_image_that_ran_out_of_memory_and_finishes_the_others(cli, tmp_path):
    write_inputs(tmp_path / "in", ["big.png"], size=(128, 144))
    write_inputs(tmp_path / "in", ["small.png"], size=(32, 32))
    out = tmp_path / "out"
    with inject("unet", times=2):  # big.png: out of memory, and again with the smaller plan
        status, stdout, err = cli("protect", str(tmp_path / "in"), "--out", str(out), "--model", "tiny",
                                  "--method", "mist", "--steps", "1", "--working-size", "256")
    assert status == 1
    assert f"note: big.png: {RETRY_NOTE}" in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: big.png: out of memory even with the plan two-pass")
    assert "small.png -> " in stdout
    assert corpus.folder_listing(out) == {"small.protected.png", JOURNAL_NAME}


def test_cli_subprocess_with_a_simulated_out_of_memory_retries_and_exports(tmp_path):
    (source,) = write_inputs(tmp_path / "in", ["big.png"], size=(128, 144))
    out = tmp_path / "out"
    run = corpus.run_cli("protect", str(source), "--out", str(out), "--model", "tiny", "--method", "mist",
                         "--steps", "1", "--working-size", "256", fault="unet:1")
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert f"note: big.png: {RETRY_NOTE}" in run.stderr.splitlines()
    assert corpus.folder_listing(out) == {"big.protected.png", JOURNAL_NAME}
    exported = np.asarray(Image.open(out / "big.protected.png")).astype(int)
    change = np.abs(exported - np.asarray(Image.open(source)).astype(int))
    assert exported.shape == (128, 144, 3) and 0 < change.max() <= 8
