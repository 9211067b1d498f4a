"""The variants map (engine.evaluation.variants): what it reads from curve.csv files and what it refuses."""

from corpus import write_curve_csv
from engine.evaluation import variants as V


def _cells(method, strength, acc_none, acc_sdedit, psnr="20.5"):
    return [[method, strength, "none", "accuracy", "lower", acc_none, acc_none - 0.1, acc_none + 0.1, 2, psnr, 0.7],
            [method, strength, "SDEdit 0.2", "accuracy", "lower", acc_sdedit, acc_sdedit - 0.1, acc_sdedit + 0.1, 2, psnr, 0.7],
            [method, strength, "none", "frechet", "higher", 30.0, 25.0, 35.0, 2, psnr, 0.7]]


def test_the_map_takes_each_rows_cells_at_the_strength_and_keeps_same_named_rows_of_two_folders_apart(tmp_path):
    a = write_curve_csv(tmp_path / "tune-a" / "curve.csv", _cells("none", 0, 0.9, 0.92, "inf") + _cells("Random ±ε", 32, 0.8, 0.85)
               + _cells("AntiPure", 32, 0.5, 0.1) + _cells("AntiPure", 16, 0.85, 0.7))
    b = write_curve_csv(tmp_path / "tune-b" / "curve.csv", _cells("none", 0, 0.9, 0.92, "inf") + _cells("Random ±ε", 32, 0.8, 0.85)
               + _cells("AntiPure", 32, 0.6, 0.3) + [_cells("Mist", 32, 0.55, 0.2)[0]])  # Mist: no SDEdit cell
    # a third folder that reused tune-a's AntiPure runs (the same numbers): that row is not drawn twice
    c = write_curve_csv(tmp_path / "final-c" / "curve.csv", _cells("AntiPure", 32, 0.5, 0.1))
    points = V.read_points([a, b, c], 32.0, "accuracy", "none", "SDEdit 0.2")
    by = {(p.label, p.source): p for p in points}
    # the controls once; AntiPure from each folder at 32 levels (not 16); Mist left out, it lacks the y cell
    assert sorted(by) == [("AntiPure", "tune-a"), ("AntiPure", "tune-b"), ("Random ±ε", "tune-a"), ("none", "tune-a")]
    assert by[("AntiPure", "tune-a")].x == (0.5, 0.4, 0.6) and by[("AntiPure", "tune-a")].y[0] == 0.1
    assert by[("AntiPure", "tune-b")].x[0] == 0.6 and by[("none", "tune-a")].psnr is None
    out = tmp_path / "map.png"
    assert V.main([str(a), str(b), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_map_refuses_a_missing_file_a_foreign_csv_and_an_empty_selection_in_one_line(tmp_path, capsys):
    out = tmp_path / "map.png"
    assert V.main([str(tmp_path / "nope.csv"), "--out", str(out)]) == 2
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    assert V.main([str(other), "--out", str(out)]) == 2
    good = write_curve_csv(tmp_path / "t" / "curve.csv", _cells("AntiPure", 32, 0.5, 0.1))
    assert V.main([str(good), "--strength", "8", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "no such curve.csv" in err[0] and "not a curve.csv" in err[1] and "at 8 levels" in err[2]
    assert not out.exists()
