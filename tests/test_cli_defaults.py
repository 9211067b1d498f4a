"""The command line's defaults follow the model: a job is computed at the model's own size unless the user
names one (the window does the same, app.viewmodel.detail)."""

from __future__ import annotations

import pytest

from conftest import make_image
from engine.cli import main as cli_main
from engine.images import save_image


@pytest.mark.parametrize("model, side", [("tiny", 256), ("proxy", 64)])
def test_protect_works_at_the_models_own_size_by_default(model, side, tmp_path, capsys):
    src = tmp_path / "in.png"
    save_image(make_image(300, 200, seed=2), src)
    assert cli_main(["protect", str(src), "--out", str(tmp_path / "out"), "--model", model, "--steps", "1"]) == 0
    err = capsys.readouterr().err
    assert f"working size {side} px" in err
    out = tmp_path / "out" / "in.protected.png"
    assert out.is_file()


def test_a_named_working_size_wins(tmp_path, capsys):
    src = tmp_path / "in.png"
    save_image(make_image(300, 200, seed=2), src)
    args = ["protect", str(src), "--out", str(tmp_path / "out"), "--model", "proxy", "--steps", "1", "--working-size", "128"]
    assert cli_main(args) == 0
    assert "working size 128 px" in capsys.readouterr().err
