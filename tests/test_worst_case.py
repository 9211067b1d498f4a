"""The worst case over the purifiers (engine.evaluation.worst_case): the rule issue 28 chooses AntiPure's
settings on, so what it picks is checked cell by cell."""

from corpus import write_curve_csv
from engine.evaluation import worst_case as W

PURIFIERS = ["none", "JPEG 75", "SDEdit 0.2"]


def _row(method, strength, accuracies, frechets, purifiers=PURIFIERS):
    out = []
    for p, a, fr in zip(purifiers, accuracies, frechets):
        out.append([method, strength, p, "accuracy", "lower", a, a - 0.1, a + 0.1, 2, 20.0, 0.7])
        out.append([method, strength, p, "frechet", "higher", fr, fr - 5, fr + 5, 2, 20.0, 0.7])
    return out


def test_worst_is_the_highest_accuracy_and_the_lowest_frechet_and_a_missing_purifier_gives_no_worst(tmp_path):
    a = write_curve_csv(tmp_path / "set-a" / "curve.csv",
               _row("none", 0, (0.9, 0.95, 0.92), (18, 17, 21))
               + _row("AntiPure", 32, (0.40, 0.55, 0.20), (60, 45, 80))
               + _row("AntiPure", 16, (0.99, 0.99, 0.99), (1, 1, 1))  # another strength: not read
               + _row("Mist", 32, (0.5, 0.6), (30, 25), purifiers=PURIFIERS[:2]))  # no SDEdit cell
    b = write_curve_csv(tmp_path / "set-b" / "curve.csv",
               _row("none", 0, (0.9, 0.9, 0.9), (20, 20, 20))
               + _row("AntiPure default", 32, (0.30, 0.35, 0.70), (50, 55, 40))
               + _row("Mist", 32, (0.5, 0.6, 0.3), (30, 25, 60)))
    worsts = W.read_worst([a, b], 32.0, PURIFIERS, same={"AntiPure default": "AntiPure"})
    by = {(w.label, w.measure): w for w in worsts}
    anti_acc, anti_fr = by[("AntiPure", "accuracy")], by[("AntiPure", "frechet")]
    assert anti_acc.per_file == {"set-a": (0.55, "JPEG 75"), "set-b": (0.70, "SDEdit 0.2")}
    assert abs(anti_acc.mean - 0.625) < 1e-9
    assert anti_fr.per_file == {"set-a": (45.0, "JPEG 75"), "set-b": (40.0, "SDEdit 0.2")}
    assert abs(anti_fr.mean - 42.5) < 1e-9
    # Mist lacks SDEdit in set-a: no worst case there (not one over the two it has), so no mean
    assert by[("Mist", "accuracy")].per_file["set-a"] is None and by[("Mist", "accuracy")].mean is None
    assert by[("none", "accuracy")].per_file["set-a"] == (0.95, "JPEG 75")
    assert "| AntiPure | 0.550 (JPEG 75) | 0.700 (SDEdit 0.2) | 0.625 |" in W.table(worsts, "accuracy")


def test_the_cli_prints_the_tables_draws_the_figure_and_refuses_bad_input(tmp_path, capsys):
    a = write_curve_csv(tmp_path / "set-a" / "curve.csv", _row("none", 0, (0.9, 0.95, 0.92), (18, 17, 21))
               + _row("AntiPure", 32, (0.40, 0.55, 0.20), (60, 45, 80)))
    out = tmp_path / "worst.png"
    assert W.main([str(a), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| AntiPure | 0.550 (JPEG 75) | 0.550 |" in capsys.readouterr().out
    assert W.main([str(a), "--same", "AntiPure"]) == 2
    assert "LABEL=OTHER LABEL" in capsys.readouterr().err
    assert W.main([str(tmp_path / "nowhere" / "curve.csv")]) == 2
    assert "no such curve.csv" in capsys.readouterr().err
    assert W.main([str(a), "--strength", "8"]) == 2
    assert "no row at 8 levels" in capsys.readouterr().err


def test_one_render_set_read_from_two_curve_folders_and_a_cell_that_disagrees_is_refused(tmp_path, capsys):
    """A.csv+B.csv: new rows measured in another curve folder of the same set join its earlier rows (the clean
    images, in both, read the same); a cell the two files give different numbers for is not one set."""
    old = write_curve_csv(tmp_path / "tune-old" / "curve.csv", _row("none", 0, (0.9, 0.95, 0.92), (18, 17, 21))
                          + _row("AntiPure", 32, (0.40, 0.55, 0.20), (60, 45, 80)))
    new = write_curve_csv(tmp_path / "tune-new" / "curve.csv", _row("none", 0, (0.9, 0.95, 0.92), (18, 17, 21))
                          + _row("AntiPure tile", 32, (0.45, 0.43, 0.08), (55, 57, 90)))
    assert W.main([f"{old}+{new}"]) == 0
    text = capsys.readouterr().out
    assert "| row | tune-old+tune-new | mean |" in text
    assert "| AntiPure | 0.550 (JPEG 75) | 0.550 |" in text and "| AntiPure tile | 0.450 (none) | 0.450 |" in text
    assert "| clean images | 0.950 (JPEG 75) | 0.950 |" in text
    other = write_curve_csv(tmp_path / "tune-other" / "curve.csv", _row("none", 0, (0.8, 0.95, 0.92), (18, 17, 21)))
    assert W.main([f"{old}+{other}"]) == 2
    assert "reads 0.9 in" in capsys.readouterr().err
