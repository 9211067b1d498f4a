"""Nothing slips through (issue 31): the links, names, disks, numbers and devices that once got a traceback,
a wrong file or a protected-looking copy that protected nothing.

The rule each test holds: a bad argument is exit status 2 and one line, before any model is loaded; a bad file
is one line, and the others are still done; no traceback, and no file that breaks the budget or is not protected.
"""

from __future__ import annotations

import json
import math
import os
import sys

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import corpus
from corpus import cli  # noqa: F401 - fixture
from conftest import make_image
from engine.errors import ArtveilError
from engine.journal import JOURNAL_NAME

# Mist runs the encoder and the UNet at a third of AntiPure's CPU cost; the method is not under test here.
CLI_SETTINGS = ("--model", "tiny", "--method", "mist", "--steps", "2", "--working-size", "64")
DEMO_NOTE = "built-in 'tiny' demo model"  # printed once the model is loaded


def write_inputs(folder, names, size=(32, 32)):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(make_image(*size, seed=i)).save(folder / name, **({"quality": 95} if name.endswith(".jpg") else {}))
    return [folder / name for name in names]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# --- 1. a file link loop in an input folder -----------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "symlink") or os.name != "posix", reason="file links")
def test_a_link_loop_in_an_input_folder_is_one_line_and_the_good_images_are_protected(cli, tmp_path):
    folder = tmp_path / "in"
    write_inputs(folder, ["good.png"])
    os.symlink("b.png", folder / "a.png")
    os.symlink("a.png", folder / "b.png")
    out = tmp_path / "out"
    status, stdout, err = cli("protect", str(folder), "--out", str(out), *CLI_SETTINGS)
    assert status == 1, err
    assert error_lines(err) == ["error: a.png: a link that loops back on itself (b.png leads back here).",
                                "error: b.png: a link that loops back on itself (a.png leads back here)."]
    assert "artveil: 2 of 3 file(s) failed." in err
    assert "good.png -> " in stdout
    assert corpus.folder_listing(out) == {"good.protected.png", JOURNAL_NAME}


# --- 2. the output folder inside the input folder ---------------------------------------------------------

def test_an_output_folder_inside_the_input_folder_settles_after_one_run(cli, tmp_path):
    folder = tmp_path / "art"
    write_inputs(folder, ["fox.png", "fox.jpg"])
    out = folder / "protected"
    status, stdout, err = cli("protect", str(folder), "--out", str(out), *CLI_SETTINGS)
    assert status == 0 and stdout.count(" -> ") == 2, err
    first = corpus.folder_listing(out)
    assert first == {"fox.protected.png", "fox.protected-2.png", JOURNAL_NAME}
    for _ in range(2):  # every re-run finds the same two originals, both already done
        status, stdout, err = cli("protect", str(folder), "--out", str(out), *CLI_SETTINGS)
        assert status == 0 and stdout == "", err
        assert err.count("by an earlier run; skipped") == 2, err
        assert corpus.folder_listing(out) == first


def test_purify_output_inside_the_input_folder_is_not_purified_again(tmp_path):
    from engine.cli import main

    folder = tmp_path / "art"
    write_inputs(folder, ["fox.png", "fox.jpg"])
    out = folder / "washed"
    assert main(["purify", str(folder), "--purifier", "jpeg:50", "--out", str(out)]) == 0
    assert corpus.folder_listing(out) == {"fox.purified-jpeg.png", "fox.purified-jpeg-2.png"}
    main(["purify", str(folder), "--purifier", "jpeg:50", "--out", str(out)])
    assert corpus.folder_listing(out) == {"fox.purified-jpeg.png", "fox.purified-jpeg-2.png"}


# --- 3. a full disk when the journal line is written --------------------------------------------------------

def _limit_file_size(limit: int):
    def apply():
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_journal_that_cannot_grow_fails_the_image_cleanly_and_a_rerun_protects_it(tmp_path):
    """A real write fault: no file may grow past 4 KiB, so the images (32×32 PNGs, about 3 KiB) fit and the
    journal (two lines of about 300 bytes per image) fills up after a few. An image whose journal line cannot
    be written is not exported (a re-run would refuse a file the journal does not know), and says so."""
    import subprocess

    names = [f"p{i}.png" for i in range(10)]
    write_inputs(tmp_path / "in", names)
    out = tmp_path / "out"
    command = corpus.cli_command("protect", str(tmp_path / "in"), "--out", str(out), *CLI_SETTINGS[:-2],
                                 "--steps", "1", "--working-size", "64")
    run = subprocess.run(command, cwd=corpus.REPO_ROOT, env=corpus.cli_environment(), capture_output=True, text=True,
                         encoding="utf-8", timeout=300, preexec_fn=_limit_file_size(4096))
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == 1, run.stderr
    failed = [line.split(":")[1].strip() for line in error_lines(run.stderr)]
    assert failed and failed == names[-len(failed):], run.stderr  # the journal filled up, then stayed full
    for name in failed:
        stem = name[:-4]
        assert (f"error: {name}: {stem}.protected.png: not written: could not record it in the batch journal "
                f"({os.strerror(27)}); a re-run protects it.") in run.stderr.splitlines()
    done = set(names) - set(failed)
    assert corpus.folder_listing(out) == {f"{n[:-4]}.protected.png" for n in done} | {JOURNAL_NAME}
    entries = [json.loads(line) for line in (out / JOURNAL_NAME).read_text(encoding="utf-8").splitlines()]  # none torn
    # Every export has its "committing" line; the last one may lack its "done" line, which a re-run does not need.
    assert {e["output"] for e in entries if e["state"] == "committing"} == {f"{n[:-4]}.protected.png" for n in done}

    # Room again: the same command protects exactly the images that failed.
    again = corpus.run_cli("protect", str(tmp_path / "in"), "--out", str(out), *CLI_SETTINGS[:-2], "--steps", "1",
                           "--working-size", "64")
    assert again.returncode == 0, again.stderr
    assert sorted(line.split(" -> ")[0] for line in again.stdout.splitlines()) == sorted(failed)
    assert again.stderr.count("by an earlier run; skipped") == len(done)


def test_a_journal_line_torn_by_a_kill_is_cut_off_before_the_next_run_appends(cli, tmp_path):
    folder = tmp_path / "in"
    write_inputs(folder, ["a.png"])
    out = tmp_path / "out"
    assert cli("protect", str(folder), "--out", str(out), *CLI_SETTINGS)[0] == 0
    with open(out / JOURNAL_NAME, "a", encoding="utf-8") as journal:
        journal.write('{"v": 1, "state": "comm')  # killed mid-append
    Image.fromarray(make_image(32, 32, seed=5)).save(folder / "b.png")
    status, stdout, err = cli("protect", str(folder), "--out", str(out), *CLI_SETTINGS)
    assert status == 0 and stdout.startswith("b.png -> ") and stdout.count(" -> ") == 1, err
    lines = (out / JOURNAL_NAME).read_text(encoding="utf-8").splitlines()
    # a's two lines and b's two: the torn fragment is gone, and b's first line was not glued onto it
    assert [json.loads(line)["state"] for line in lines] == ["committing", "done", "committing", "done"]
    status, stdout, err = cli("protect", str(folder), "--out", str(out), *CLI_SETTINGS)
    assert status == 0 and stdout == "" and err.count("by an earlier run; skipped") == 2, err


# --- 5. method parameters: declared with a kind and a range, checked before any work ------------------------

@pytest.mark.parametrize("value, shown", [("NaN", "nan"), ("Infinity", "inf"), ("nan", "'nan'"), ("-1", "-1"),
                                          ("true", "True"), ("1e9", "1000000000.0")])
def test_a_method_parameter_outside_its_kind_or_range_is_a_bad_argument(cli, tmp_path, value, shown):
    image = write_inputs(tmp_path, ["a.png"])[0]
    out = tmp_path / "out"
    status, stdout, err = cli("protect", str(image), "--out", str(out), "--model", "tiny", "--method", "antipure",
                              "--steps", "1", "--working-size", "64", "--param", f"lambda_pfg={value}")
    assert status == 2 and stdout == ""
    assert err.splitlines() == [
        f"artveil: antipure: lambda_pfg={shown} is not a number in 0–1000; lambda_pfg 0–1000 "
        "(weight λ_f of PFG, relative to the semantic term; default 4)"
    ]  # one line, and no model loaded (its note would follow)
    assert not out.exists()


def test_get_method_checks_every_parameter_against_its_declaration():
    from engine.methods import CONTROLS, METHODS, get_method

    for cls in [*METHODS.values(), *CONTROLS.values()]:
        declared = cls.declared()  # every field of its Params has a kind, a range or choices, and a unit
        assert [p.name for p in declared] == [f for f in cls.Params.__dataclass_fields__]
        assert get_method(cls.name).params == cls.Params()  # the declared defaults pass their own checks
    assert get_method("antipure", {"lambda_pfg": 2}).params.lambda_pfg == 2.0  # an int where a float goes
    refused = [
        ("antipure", {"lambda_pfg": math.nan}, "antipure: lambda_pfg=nan is not a number in 0–1000"),
        ("antipure", {"use_pfg": "yes"}, "antipure: use_pfg='yes' is not true or false"),
        ("antipure", {"pfg_variant": "other"}, "antipure: pfg_variant='other' is not one of match, contrast"),
        ("antipure", {"patch_size": 2.5}, "antipure: patch_size=2.5 is not a whole number in 2–64"),
        ("antipure", {"purify_strength_min": 0.5, "purify_strength_max": 0.2},
         "antipure: purify_strength_min (0.5) must not be above purify_strength_max (0.2)"),
        ("advdm", {"t_min": 600, "t_max": 400}, "advdm: t_min (600) must be below t_max (400)"),
        ("aspl", {"surrogate": "half"}, "aspl: surrogate='half' is not one of lora, full"),
        ("mist", {"pattern_period": 0}, "mist: pattern_period=0 is not a whole number in 2–1024"),
        ("random", {"lambda_pfg": 1.0}, "random takes no parameters; got ['lambda_pfg']"),
    ]
    for name, params, message in refused:
        with pytest.raises(ArtveilError) as info:
            get_method(name, params)
        assert info.value.kind == "config" and info.value.message.startswith(message), info.value.message
    assert get_method("aspl", {"surrogate_lr": None}).params.surrogate_lr is None  # null: the automatic value


# --- 6, 7. step size and timesteps per step ---------------------------------------------------------------------

@pytest.mark.parametrize("argv, line", [
    (("--step-size", "-1"), "artveil: step size must be more than 0 and at most 255 pixel levels (or automatic), got -1.0."),
    (("--step-size", "0"), "artveil: step size must be more than 0 and at most 255 pixel levels (or automatic), got 0.0."),
    (("--step-size", "nan"), "artveil: step size must be more than 0 and at most 255 pixel levels (or automatic), got nan."),
    (("--step-size", "inf"), "artveil: step size must be more than 0 and at most 255 pixel levels (or automatic), got inf."),
    (("--timesteps-per-step", "0"), "artveil: timesteps per step must be a whole number from 1 to 1000, got 0."),
    (("--timesteps-per-step", "-3"), "artveil: timesteps per step must be a whole number from 1 to 1000, got -3."),
    (("--seed", "-1"), "artveil: seed must be a whole number from 0 to 4294967295, got -1."),
    (("--seed", str(2**64)), f"artveil: seed must be a whole number from 0 to 4294967295, got {2**64}."),
])
def test_numbers_at_their_edges_are_bad_arguments_said_before_any_work(cli, tmp_path, argv, line):
    image = write_inputs(tmp_path, ["a.png"])[0]
    out = tmp_path / "out"
    status, stdout, err = cli("protect", str(image), "--out", str(out), *CLI_SETTINGS, *argv)
    assert (status, stdout, err.splitlines()) == (2, "", [line])
    assert not out.exists()


# --- 8. a device that does not exist -------------------------------------------------------------------------------

def test_an_unknown_device_is_one_line_without_a_traceback(tmp_path):
    image = write_inputs(tmp_path, ["a.png"])[0]
    run = corpus.run_cli("protect", str(image), "--out", str(tmp_path / "out"), *CLI_SETTINGS, "--device", "bogus")
    assert run.returncode == 2
    assert run.stderr.splitlines() == ["artveil: unknown device 'bogus'; use auto, cpu, cuda or cuda:N."]
    assert not (tmp_path / "out").exists()


def test_pick_device_refuses_what_torch_cannot_run_in_one_line():
    from engine.device import pick_device

    for name, message in [("bogus", "unknown device 'bogus'"), ("meta", "device 'meta' is not one Artveil runs on"),
                          ("cuda:x", "unknown device 'cuda:x'")]:
        with pytest.raises(ArtveilError) as info:
            pick_device(name)
        assert info.value.kind == "config" and info.value.message.startswith(message), info.value.message


# --- 9. JPEG: the numbers are the file's, and a file that breaks the budget is not written ------------------------

def _file_linf_and_psnr(original: np.ndarray, path) -> tuple[float, float]:
    written = np.asarray(Image.open(path).convert("RGB")).astype(np.float64)
    diff = written - original[..., :3].astype(np.float64)
    return float(np.abs(diff).max()), 10 * math.log10(255.0**2 / float((diff**2).mean()))


def test_jpeg_that_breaks_the_budget_is_refused_with_its_numbers(cli, tmp_path):
    image = write_inputs(tmp_path, ["a.png"])[0]
    out = tmp_path / "out"
    status, stdout, err = cli("protect", str(image), "--out", str(out), *CLI_SETTINGS, "--format", "jpg",
                              "--strength", "4")
    assert status == 1 and stdout == "", err
    (line,) = error_lines(err)
    prefix = "error: a.png: a.protected.jpg: as JPG it would differ from the original by up to "
    assert line.startswith(prefix) and line.endswith(
        "beyond the 4-level strength; not written (PNG and WebP keep the protection exactly).")
    levels = int(line[len(prefix):].split(" ")[0])
    assert levels > 4
    assert corpus.folder_listing(out) == {JOURNAL_NAME}


def test_jpeg_reports_the_numbers_of_the_file_on_disk(cli, tmp_path):
    image = write_inputs(tmp_path, ["a.png"])[0]
    out = tmp_path / "out"
    status, stdout, err = cli("protect", str(image), "--out", str(out), *CLI_SETTINGS, "--format", "jpg",
                              "--strength", "32", "--json")
    assert status == 0, err
    report = json.loads(stdout)
    linf, psnr = _file_linf_and_psnr(np.asarray(Image.open(image)), out / "a.protected.jpg")
    assert report["linf"] == linf <= 32
    assert report["psnr"] == pytest.approx(psnr, abs=0.01)


# --- 10. purify's output checks --------------------------------------------------------------------------------

def test_purify_into_an_existing_file_is_a_bad_argument(tmp_path, capsys):
    from engine.cli import main

    image = write_inputs(tmp_path, ["a.png"])[0]
    (tmp_path / "taken").write_text("not a folder")
    assert main(["purify", str(image), "--purifier", "jpeg:50", "--out", str(tmp_path / "taken")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"artveil: output folder: {tmp_path / 'taken'}: is a file, not a folder."]


def test_purify_never_writes_over_an_input(tmp_path, capsys):
    from engine.cli import main

    folder = tmp_path / "art"
    a, own = write_inputs(folder, ["a.png", "a.purified-jpeg.png"])
    before = own.read_bytes()
    status = main(["purify", str(a), str(own), "--purifier", "jpeg:50", "--out", str(folder), "--overwrite"])
    assert status == 0, capsys.readouterr().err
    assert own.read_bytes() == before
    assert corpus.folder_listing(folder) == {"a.png", "a.purified-jpeg.png", "a.purified-jpeg-2.png",
                                             "a.purified-jpeg.purified-jpeg.png"}


# --- 11. the weights a model folder will really load are the ones checked -------------------------------------

@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from engine.models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def test_a_pickle_beside_an_unrelated_safetensors_file_is_checked_and_refused(tiny_folder, tmp_path):
    import shutil

    import torch

    from engine.models import load_model

    folder = tmp_path / "mixed"
    shutil.copytree(tiny_folder, folder)
    unet = folder / "unet"
    # A LoRA dropped in beside pickled weights: diffusers loads the pickle, not the .safetensors file.
    (unet / "diffusion_pytorch_model.safetensors").rename(unet / "style-lora.safetensors")
    marker = tmp_path / "pwned"
    torch.save({"w": corpus._RunsCode(str(marker))}, unet / "diffusion_pytorch_model.bin")
    with pytest.raises(ArtveilError) as info:
        load_model(str(folder), device="cpu")
    assert info.value.kind == "model"
    assert info.value.message.startswith("unet/diffusion_pytorch_model.bin: refused: a pickled checkpoint that does "
                                         "not load with weights_only=True (it may contain code).")
    assert not marker.exists()


def test_a_folder_with_safetensors_weights_never_opens_a_pickle_beside_them(tiny_folder, tmp_path):
    import shutil

    import torch

    from engine.models import load_model

    folder = tmp_path / "both"
    shutil.copytree(tiny_folder, folder)
    marker = tmp_path / "pwned"
    torch.save({"w": corpus._RunsCode(str(marker))}, folder / "unet" / "diffusion_pytorch_model.bin")
    model = load_model(str(folder), device="cpu")
    assert model.unet is not None and not marker.exists()


# --- found in the second round of probing -------------------------------------------------------------------

@pytest.mark.parametrize("argv, line", [
    (("--seed", "-1"), "artveil: seed must be a whole number from 0 to 4294967295, got -1."),
    (("--device", "bogus"), "artveil: unknown device 'bogus'; use auto, cpu, cuda or cuda:N."),
])
def test_purify_refuses_a_bad_seed_or_device_before_any_work(tmp_path, capsys, argv, line):
    """The noise purifier once failed per image on a negative seed ("unexpected ValueError, please report"),
    and a purifier without a model ignored --device bogus."""
    from engine.cli import main

    image = write_inputs(tmp_path, ["a.png"])[0]
    assert main(["purify", str(image), "--purifier", "noise", "--out", str(tmp_path / "out"), *argv]) == 2
    assert capsys.readouterr().err.splitlines() == [line]
    assert not (tmp_path / "out").exists()


def test_jpeg_of_a_transparent_image_says_the_alpha_is_dropped(cli, tmp_path):
    (tmp_path / "in").mkdir()
    Image.fromarray(make_image(32, 32, channels=4)).save(tmp_path / "in" / "cut.png")
    status, stdout, err = cli("protect", str(tmp_path / "in" / "cut.png"), "--out", str(tmp_path / "out"), *CLI_SETTINGS,
                              "--format", "jpg", "--strength", "32")
    assert status == 0, err
    assert "note: cut.png: JPG has no transparency: the alpha channel was dropped." in err.splitlines()


def test_the_windows_export_never_writes_a_jpeg_past_the_budget(tmp_path):
    """Export (again) from the window goes through app.backend.save_image: as JPEG it is measured as written
    and refused past the budget, as the batch's own export is; PNG keeps the pixels and is written."""
    from app.backend import RealBackend
    from engine.errors import ArtveilError

    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    signs = rng.choice(np.array([-4, 4]), size=original.shape)
    protected = np.clip(original.astype(int) + signs, 0, 255).astype(np.uint8)
    backend = RealBackend()
    with pytest.raises(ArtveilError, match="beyond the 4-level strength; not written") as err:
        backend.save_image(protected, str(tmp_path / "x.jpg"), None, False, original, 4.0)
    assert err.value.kind == "output" and "\n" not in err.value.message
    assert not (tmp_path / "x.jpg").exists()
    path = backend.save_image(protected, str(tmp_path / "x.png"), None, False, original, 4.0)
    assert np.array_equal(np.asarray(Image.open(path)), protected)


def test_export_passes_each_images_original_and_budget_to_the_engine(tmp_path):
    import asyncio
    from types import SimpleNamespace

    from app.viewmodel.export import export_items

    calls = []

    class Engine:  # app.client.EngineClient's save_image, recorded
        async def save_image(self, *args):
            calls.append(("save_image", args))
            return args[1]

    original = np.zeros((8, 8, 3), np.uint8)
    item = SimpleNamespace(protected=original + 1, original=original, icc_profile=None,
                           metrics={"strength_levels": 6.0}, note="", error="", output_path=None)
    item.mark_written = lambda p: setattr(item, "output_path", Path(p))
    planned = SimpleNamespace(target=tmp_path / "a.jpg", conflict=False, problem=None)
    asyncio.run(export_items(Engine(), [item], [planned], "overwrite", lambda i: None))
    assert calls and calls[0][0] == "save_image"
    assert calls[0][1][4] is original and calls[0][1][5] == 6.0


@pytest.mark.parametrize("argv", [["protect", "x.png", "--out", "o", "--param", "x"],
                                  ["protect", "x.png", "--out", "o", "--steps", "1e3"],
                                  ["protect", "x.png"], ["bogus"],
                                  ["efficacy", "--model", "proxy", "--out", "o", "--jobs", "x"]])
def test_an_argument_argparse_refuses_is_one_line_and_exit_2(argv, capsys):
    from engine.cli import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert len(err.strip().splitlines()) == 1 and "usage:" not in err and "--help" in err
