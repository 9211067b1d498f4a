"""engine.evaluation.seed_spread: the seed spread split into the judge's sampling and the fine-tune."""

import json
import math

from engine.evaluation import seed_spread as S


def _results(path, cells):
    """A results.json with customization.scores_by_seed: {condition: [(accuracy, samples), ...]}."""
    path.mkdir(parents=True, exist_ok=True)
    by_seed = {cond: [{"seed": i, "samples": n, "style_accuracy": a} for i, (a, n) in enumerate(mimics)]
               for cond, mimics in cells.items()}
    (path / "results.json").write_text(json.dumps({"customization": {"scores_by_seed": by_seed}}))


def test_the_spread_is_split_by_hand_computed_numbers(tmp_path):
    # cell 1: 0.5 and 0.7 with 36 samples each; cell 2: four mimics at 0.25; cell 3: one seed (left out)
    _results(tmp_path / "run" / "runs" / "a", {"protected": [(0.5, 36), (0.7, 36)], "purified-jpeg-75": [(0.25, 36)] * 4})
    _results(tmp_path / "run" / "runs" / "b", {"protected": [(0.9, 36)]})
    spread = S.read_spread([tmp_path / "run"])
    seed_ss = (0.5 - 0.6) ** 2 + (0.7 - 0.6) ** 2  # cell 2 adds 0: every mimic alike
    sampling_ss = 1 * (0.5 * 0.5 / 35 + 0.7 * 0.3 / 35) / 2 + 3 * (0.25 * 0.75 / 35)
    assert spread.df == 4 and spread.cells == 2
    assert math.isclose(spread.seed_var, seed_ss / 4) and math.isclose(spread.sampling_var, sampling_ss / 4)
    # here sampling alone explains more than the seeds spread: the fine-tune part is 0, never negative
    assert spread.finetune_var == 0.0
    assert math.isclose(spread.half_width(4, 36), 1.96 * math.sqrt(0.25 / 36 / 4))


def test_a_spread_beyond_sampling_is_the_fine_tunes_and_more_samples_narrow_only_that_part(tmp_path):
    _results(tmp_path / "run", {"protected": [(0.2, 400), (0.8, 400)]})
    spread = S.read_spread([tmp_path / "run"])
    assert spread.finetune_var > 0.9 * spread.seed_var
    assert spread.half_width(4, 144) < spread.half_width(4, 36) and spread.half_width(16, 36) < spread.half_width(4, 36)
    # with samples without end, what is left is the fine-tune's own spread
    assert math.isclose(spread.half_width(4, 10**9), 1.96 * math.sqrt(spread.finetune_var / 4), rel_tol=1e-6)


def test_bad_input_is_one_line(tmp_path, capsys):
    assert S.main([str(tmp_path / "nope")]) == 2
    (tmp_path / "empty").mkdir()
    assert S.main([str(tmp_path / "empty")]) == 2
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{}")
    assert S.main([str(tmp_path / "bad")]) == 2
    _results(tmp_path / "one", {"protected": [(0.5, 36)]})
    assert S.main([str(tmp_path / "one")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and "no such run folder" in err[0] and "no results.json" in err[1]
    assert "not an efficacy results.json" in err[2] and "two or more mimic seeds" in err[3]
