"""Bad inputs: every awkward file, folder or model gets one clear line, and the rest of the batch goes on.

The corpus (tests/corpus.py) is generated per run; nothing binary is committed.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

import corpus
from corpus import cli  # noqa: F401 - fixture
from conftest import make_image
from engine.errors import ArtveilError
from engine.images import load_image, output_path_for, save_image, validate_user_path
from engine.journal import JOURNAL_NAME

# Mist runs the whole model (encoder and UNet) at a third of AntiPure's cost on a CPU; the method is
# not under test here, the files are.
CLI_SETTINGS = ("--model", "tiny", "--method", "mist", "--steps", "2", "--working-size", "64")
BUDGET = 8  # the CLI's default strength, in pixel levels


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:") or line.startswith("artveil: ")]


def _fingerprint(folder: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in folder.iterdir()}


# --- decoding: each file reads as what the artist sees, or is refused with its reason ---------------------

def test_every_corpus_file_is_decoded_or_refused_with_its_reason(tmp_path):
    cases = corpus.write_image_corpus(tmp_path)
    for case in cases:
        if case.ok:
            image = load_image(tmp_path / case.file)
            h, w = image.pixels.shape[:2]
            assert (w, h) == case.size, case.file
            assert image.pixels.dtype == np.uint8 and image.pixels.shape[2] in (3, 4), case.file
            if case.reason:
                assert any(case.reason in note for note in image.notes), (case.file, image.notes)
        else:
            with pytest.raises(ArtveilError) as info:
                load_image(tmp_path / case.file)
            assert info.value.kind == "input"
            assert info.value.message.startswith(case.file + ":"), info.value.message
            assert case.reason in info.value.message and "\n" not in info.value.message


def test_16bit_png_uses_the_full_16bit_range_even_when_dark(tmp_path):
    ramp = corpus.gray16_rows(32, 40)
    (tmp_path / "g.png").write_bytes(corpus.png_bytes(40, 32, 16, 0, ramp.tobytes()))
    pixels = load_image(tmp_path / "g.png").pixels
    expected = np.round(ramp.astype(np.float64) / 65535 * 255)
    assert np.abs(pixels[..., 0].astype(int) - expected).max() <= 1
    assert pixels[0, 0, 0] == 0 and pixels[-1, -1, 0] == 255
    # A 16-bit file that happens to be dark stays dark (value 200 of 65535 is level 1, not 200).
    dark = np.full((32, 32), 200, ">u2")
    (tmp_path / "dark.png").write_bytes(corpus.png_bytes(32, 32, 16, 0, dark.tobytes()))
    assert load_image(tmp_path / "dark.png").pixels.max() <= 1


def test_16bit_rgb_png_keeps_its_colours(tmp_path):
    rgb = make_image(32, 32, seed=2)
    (tmp_path / "c.png").write_bytes(corpus.png_bytes(32, 32, 16, 2, (rgb.astype(">u2") * 257).tobytes()))
    assert np.abs(load_image(tmp_path / "c.png").pixels.astype(int) - rgb).max() <= 1


def test_cmyk_jpeg_becomes_rgb_with_the_right_colours_and_no_cmyk_profile(tmp_path):
    Image.new("CMYK", (32, 32), (255, 0, 0, 0)).save(tmp_path / "cyan.jpg", quality=95, icc_profile=b"fake-cmyk-profile")
    image = load_image(tmp_path / "cyan.jpg")
    assert np.abs(image.pixels.astype(int) - [0, 255, 255]).max() <= 3
    assert image.icc_profile is None and any("CMYK" in n for n in image.notes)


def test_transparency_and_grey_alpha_are_kept_as_alpha(tmp_path):
    corpus.write_image_corpus(tmp_path)
    pal = load_image(tmp_path / "palette_alpha.png").pixels
    index = np.asarray(Image.open(tmp_path / "palette_alpha.png"))
    assert pal.shape[2] == 4 and set(np.unique(pal[..., 3])) == {0, 255}
    assert np.array_equal(pal[..., 3] == 0, index == 0)
    la = load_image(tmp_path / "gray_alpha.png").pixels
    assert la.shape[2] == 4 and (la[:, :16, 3] == 255).all() and (la[:, 16:, 3] == 60).all()
    assert np.array_equal(la[..., 0], la[..., 1]) and np.array_equal(la[..., 1], la[..., 2])


def test_exif_rotation_is_applied_before_protection(tmp_path):
    corpus.write_image_corpus(tmp_path)
    pixels = load_image(tmp_path / "exif_rotated.jpg").pixels.astype(int)
    stored = np.asarray(Image.open(tmp_path / "exif_rotated.jpg")).astype(int)
    clockwise = np.rot90(stored, k=-1)  # orientation 6: shown turned 90° clockwise
    assert pixels.shape == clockwise.shape == (40, 32, 3)
    assert np.abs(pixels - clockwise).mean() < 1 < np.abs(pixels - np.rot90(stored, k=1)).mean()


@pytest.mark.parametrize("name", ["animated.gif", "loop.webp"])
def test_animated_files_protect_their_first_frame_and_say_so(tmp_path, name):
    corpus.write_image_corpus(tmp_path)
    image = load_image(tmp_path / name)
    assert np.abs(image.pixels.astype(int) - corpus.ANIMATION_COLORS[0]).max() <= 8
    assert image.notes == ["animated file: only the first of 3 frames is protected"]


def test_decompression_bomb_is_refused_from_its_header_without_decoding(tmp_path, monkeypatch):
    (tmp_path / "bomb.png").write_bytes(corpus.bomb_png())
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self) or None)
    with pytest.raises(ArtveilError, match=r"bomb\.png: refused: larger than 80 megapixels"):
        load_image(tmp_path / "bomb.png")
    assert decoded == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_pipe_or_device_is_refused_instead_of_read_forever(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(ArtveilError, match="pipe.png: not a regular file"):
        load_image(tmp_path / "pipe.png")
    if os.path.exists(os.devnull) and os.name == "posix":
        with pytest.raises(ArtveilError, match="not a regular file"):
            load_image(os.devnull)


# --- the whole corpus through the real command line ---------------------------------------------------

def test_cli_batch_over_the_corpus_reports_one_line_per_bad_file_and_exports_the_rest(tmp_path):
    source = tmp_path / "read-only in"
    cases = corpus.write_image_corpus(source)
    # A read-only folder of read-only files (an archive disk, a synced folder): reading must work.
    for p in source.iterdir():
        p.chmod(0o444)
    source.chmod(0o555)
    before = _fingerprint(source)
    out = tmp_path / "out"
    try:
        run = corpus.run_cli("protect", str(source), "--out", str(out), *CLI_SETTINGS)
    finally:
        source.chmod(0o755)
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == 1, run.stderr
    bad = [c for c in cases if not c.ok]
    good = [c for c in cases if c.ok]
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(bad), run.stderr
    for case in bad:
        mine = [line for line in errors if line.startswith(f"error: {case.file}: ")]
        assert len(mine) == 1 and case.reason in mine[0], (case.file, run.stderr)
    assert f"artveil: {len(bad)} of {len(cases)} file(s) failed." in run.stderr
    for case in good:
        if case.reason:
            assert f"note: {case.file}: " in run.stderr and case.reason in run.stderr, (case.file, run.stderr)

    expected = {output_path_for(source / c.file, out).name for c in good} | {JOURNAL_NAME}
    assert corpus.folder_listing(out) == expected  # nothing for the bad files, no .part leftovers
    assert "café naïve – étude 1.protected.png" in expected
    for case in good:
        saved = out / output_path_for(source / case.file, out).name
        with Image.open(saved) as img:
            assert img.format == "PNG" and img.size == case.size, case.file
            assert img.getexif().get(0x0112, 1) == 1  # no orientation tag left to rotate it twice
        original = load_image(source / case.file).pixels.astype(int)
        protected = np.asarray(Image.open(saved)).astype(int)
        assert protected.shape == original.shape, case.file
        assert np.abs(protected[..., :3] - original[..., :3]).max() <= BUDGET, case.file
        if original.shape[2] == 4:
            assert np.array_equal(protected[..., 3], original[..., 3]), case.file
    assert _fingerprint(source) == before  # originals untouched: same bytes, same times


# --- output folders that cannot take files ------------------------------------------------------------

def test_output_folder_under_a_regular_file_is_refused_before_any_work(cli, tmp_path):
    # Tests run as root, where chmod cannot make a folder unwritable; a file in the path can.
    image = tmp_path / "a.png"
    Image.fromarray(make_image(32, 32)).save(image)
    (tmp_path / "notes.txt").write_text("not a folder")
    status, _, err = cli("protect", str(image), "--out", str(tmp_path / "notes.txt" / "out"), *CLI_SETTINGS)
    assert status == 2
    assert error_lines(err) == [line for line in err.splitlines() if "notes.txt" in line]
    assert len(error_lines(err)) == 1 and "is a file, not a folder" in err
    status, _, err = cli("protect", str(image), "--out", str(tmp_path / "notes.txt"), *CLI_SETTINGS)
    assert status == 2 and "notes.txt: is a file, not a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "notes.txt"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes through chmod; see the test above")
def test_read_only_output_folder_is_refused(cli, tmp_path):
    image = tmp_path / "a.png"
    Image.fromarray(make_image(32, 32)).save(image)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        status, _, err = cli("protect", str(image), "--out", str(out), *CLI_SETTINGS)
    finally:
        out.chmod(0o755)
    assert status == 2 and "not writable" in err and list(out.iterdir()) == []


# --- originals and folders are never written outside the plan ------------------------------------------

def test_an_original_is_never_overwritten_even_with_overwrite(cli, tmp_path):
    folder = tmp_path / "art"
    folder.mkdir()
    Image.fromarray(make_image(32, 32, seed=1)).save(folder / "b.png")
    # The artist's own file that happens to carry the name Artveil would give b.png's export.
    Image.fromarray(make_image(32, 32, seed=2)).save(folder / "b.protected.png")
    before = _fingerprint(folder)
    status, _, err = cli("protect", str(folder), "--out", str(folder), *CLI_SETTINGS)
    assert status == 1 and "error: b.png: b.protected.png: already exists" in err
    # Given as an input, b.protected.png is an original: b.png's export takes the next name instead.
    status, _, err = cli("protect", str(folder / "b.protected.png"), str(folder / "b.png"), "--out", str(folder),
                         "--overwrite", *CLI_SETTINGS)
    assert status == 0, err
    after = _fingerprint(folder)
    assert after["b.png"] == before["b.png"] and after["b.protected.png"] == before["b.protected.png"]
    assert set(after) == {"b.png", "b.protected.png", "b.protected.protected.png", "b.protected-2.png", JOURNAL_NAME}


def test_two_inputs_with_one_output_name_do_not_overwrite_each_other(cli, tmp_path):
    """fox.jpg and fox.png: the first of the batch keeps fox.protected.png, the second gets -2; a re-run
    plans the same names (whatever is on disk now) and skips both."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(make_image(32, 32, seed=1)).save(folder / "fox.jpg", quality=95)
    Image.fromarray(make_image(32, 32, seed=2)).save(folder / "fox.png")
    out = tmp_path / "out"
    status, stdout, err = cli("protect", str(folder), "--out", str(out), *CLI_SETTINGS)
    assert status == 0, err
    first = np.asarray(Image.open(out / "fox.protected.png")).astype(int)
    second = np.asarray(Image.open(out / "fox.protected-2.png")).astype(int)
    assert np.abs(first - load_image(folder / "fox.jpg").pixels).max() <= BUDGET  # the JPEG's, not the PNG's
    assert np.abs(second - load_image(folder / "fox.png").pixels).max() <= BUDGET
    status, stdout, err = cli("protect", str(folder), "--out", str(out), *CLI_SETTINGS)
    assert status == 0 and err.count("by an earlier run; skipped") == 2, err
    assert sorted(p.name for p in out.iterdir()) == [JOURNAL_NAME, "fox.protected-2.png", "fox.protected.png"]


@pytest.mark.parametrize("hostile", [
    "../../escape.png", "..\\..\\escape.png", "a/../../b.png", "con.png", "name\x00with\x01nul.png",
    "...png", " .png", "tab\there.png", "CON.tar.png", "x" * 300 + ".png", "é" * 200 + ".png",
])
def test_output_names_stay_inside_the_chosen_folder(tmp_path, hostile):
    out = tmp_path / "out"
    out.mkdir()
    target = output_path_for(hostile, out)
    assert target.parent == out
    assert target.resolve().parent == out.resolve()
    name = target.name
    assert name.endswith(".protected.png") and len(name.encode()) < 255
    assert not any(ch in name for ch in '/\\\x00\x01\t<>:"|?*') and not name.startswith(".")
    assert name.split(".")[0].upper() not in {"CON", "NUL", "PRN", "AUX"}
    save_image(make_image(8, 8), target)
    assert [p.name for p in out.iterdir()] == [name]


# --- paths the app reads from its settings --------------------------------------------------------------

def test_validate_user_path_accepts_what_fits_and_says_why_it_refuses(tmp_path, monkeypatch):
    (tmp_path / "f.png").write_bytes(b"x")
    (tmp_path / "d").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))
    assert validate_user_path("~/f.png", True, "file") == tmp_path / "f.png"
    assert validate_user_path(tmp_path / "d", True, "folder") == tmp_path / "d"
    assert validate_user_path(tmp_path / "d", True, "any") == tmp_path / "d"
    assert validate_user_path(tmp_path / "new" / "deeper", False, "folder") == tmp_path / "new" / "deeper"
    refusals = [
        ("", True, "file", "no path given"),
        ("   ", True, "file", "no path given"),
        ("a\x00b", True, "file", "NUL character"),
        (tmp_path / "missing.png", True, "file", "file not found"),
        (tmp_path / "missing", True, "folder", "folder not found"),
        (tmp_path / "d", True, "file", "is a folder, not a file"),
        (tmp_path / "f.png", True, "folder", "is a file, not a folder"),
        (tmp_path / "f.png" / "sub", False, "folder", "f.png is a file, not a folder"),
    ]
    for path, must_exist, kind, reason in refusals:
        with pytest.raises(ArtveilError) as info:
            validate_user_path(path, must_exist, kind)
        assert info.value.kind == "config"
        assert reason in info.value.message, (path, info.value.message)
    with pytest.raises(ArtveilError, match="no path given"):
        validate_user_path(None, True, "file")
    if os.name == "posix" and os.path.exists(os.devnull):
        assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
        with pytest.raises(ArtveilError, match="device, pipe or socket"):
            validate_user_path(os.devnull, True, "any")


# --- models that cannot be used -------------------------------------------------------------------------

# One worker runs this module: its tests share an expensive module-scoped fixture.
pytestmark = pytest.mark.xdist_group("corpus")

@pytest.fixture(scope="module")
def model_corpus(tmp_path_factory):
    from engine.models import save_tiny_model

    root = tmp_path_factory.mktemp("models")
    tiny = save_tiny_model(root / "tiny-folder")
    return root, corpus.write_model_corpus(root / "broken", tiny)


def test_unusable_models_are_refused_in_one_line_naming_the_file(cli, tmp_path, model_corpus):
    root, cases = model_corpus
    image = tmp_path / "a.png"
    Image.fromarray(make_image(32, 32)).save(image)
    for label, (path, reason) in cases.items():
        out = tmp_path / label.replace(" ", "-")
        status, _, err = cli("protect", str(image), "--out", str(out), "--model", str(path), "--method", "mist",
                             "--steps", "2", "--working-size", "64")
        assert status == 2, (label, err)
        lines = [line for line in err.splitlines() if line.startswith("artveil: model:")]
        assert len(lines) == 1 and path.name in lines[0] and reason in lines[0], (label, err)
        assert "Traceback" not in err
        assert not out.exists() or list(out.iterdir()) == []  # nothing written when nothing can start
    assert not (root / "broken" / "pwned").exists()  # the hostile pickle never ran


def test_hostile_checkpoint_refusal_says_why(model_corpus):
    from engine.models import load_model

    _, cases = model_corpus
    evil, _ = cases["pickle that runs code"]
    with pytest.raises(ArtveilError) as info:
        load_model(str(evil), device="cpu")
    assert info.value.kind == "model"
    assert "evil.ckpt: refused" in info.value.message and "may contain code" in info.value.message
    assert ".safetensors" in info.value.message
    benign, _ = cases["weights-only pickle"]
    with pytest.raises(ArtveilError) as info:
        load_model(str(benign), device="cpu")
    assert "may contain code" not in info.value.message and "use .safetensors" in info.value.message


def test_exports_get_the_permissions_of_a_normal_save(tmp_path, monkeypatch):
    """mkstemp makes 0600 files; an export in a shared or served folder must be readable like any saved file."""
    import engine.images as images

    for umask, mode in ((0o022, 0o644), (0o002, 0o664), (0o077, 0o600)):
        monkeypatch.setattr(images, "_UMASK", umask)
        path = images.save_image(np.zeros((40, 40, 3), np.uint8), tmp_path / f"a{umask}.protected.png")
        assert stat.S_IMODE(path.stat().st_mode) == mode
    assert images._read_umask() == os.umask(images._read_umask())  # reading it leaves it as it was


def test_a_dangling_link_in_an_input_folder_is_named_with_its_reason(tmp_path, capsys):
    from engine.cli import main as cli_main

    folder = tmp_path / "in"
    folder.mkdir()
    os.symlink(tmp_path / "gone.png", folder / "sketch.png")
    status = cli_main(["protect", str(folder), "--out", str(tmp_path / "out"), "--model", "tiny", "--steps", "1",
                       "--working-size", "64"])
    err = capsys.readouterr().err
    assert "sketch.png: a link to a file that does not exist" in err
    assert status in (1, 2)
