"""`artveil eval` end to end on the tiny model: stages, resumability, report numbers traceable to files."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from engine import diffusion as D
from engine.evaluation import EvalConfig, run_evaluation
from engine.evaluation import judges as J
from engine.evaluation.customize import CustomizeSettings, customize
from engine.images import load_image
from engine.metrics import image_metrics
from engine.surrogate import Surrogate
from tests.conftest import make_image
from tests.test_antidiffusion import _unet_snapshot, assert_unet_restored


# One worker runs this module: its tests share an expensive module-scoped fixture.
pytestmark = pytest.mark.xdist_group("eval_run")

@pytest.fixture(scope="module")
def art_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    art, edit = root / "art", root / "edit"
    art.mkdir()
    edit.mkdir()
    for i in range(5):
        Image.fromarray(make_image(40, 48, seed=i)).save(art / f"piece{i}.png")
    Image.fromarray(make_image(32, 32, seed=9)).save(edit / "face.png")
    (edit / "face.txt").write_text("a smiling face\n", encoding="utf-8")
    return root


def _config(root) -> EvalConfig:
    return EvalConfig(
        images=[str(root / "art")], method="antidiffusion", strength_levels=8, steps=3,
        method_params={"pt_steps": 1, "rounds": 1, "surrogate_steps": 1},
        purifiers=["jpeg:75", "sdedit:0.5"], purify_steps=2, size=32, heldout=1, k=1,
        lora_steps=3, lora_lr=1e-3, gen_steps=2, guidance=1.0,
        edit_dir=str(root / "edit"), edit_strength=0.5, edit_steps=2,
    )


@pytest.fixture(scope="module")
def finished_run(tiny_model, art_folders):
    run_dir = art_folders / "run"
    snap = _unet_snapshot(tiny_model)
    results = run_evaluation(tiny_model, _config(art_folders), run_dir, log=lambda m: None)
    assert_unet_restored(tiny_model, snap)
    return run_dir, results


def test_evaluation_runs_end_to_end_and_writes_report(finished_run):
    run_dir, results = finished_run
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    conditions = ["clean", "protected", "purified-jpeg-75", "purified-sdedit-0.5"]
    assert list(results["customization"]["scores"]) == conditions
    for cond in conditions:
        assert f"| {cond} |" in report
    assert set(results["customization"]["retained"]) == {"purified-jpeg-75", "purified-sdedit-0.5"}
    assert results["judges"] == ["image_stats", "denoise_loss"]  # no style named: the classifier judge abstains
    for grid in results["grids"].values():
        assert (run_dir / grid["file"]).exists() and f"]({grid['file']})" in report
    assert len(results["imperceptibility"]) == 4 and results["imperceptibility_mean"]["linf_levels"] <= 8
    assert set(results["editing"]["scores"]) == set(conditions)
    assert results["editing"]["scores"]["clean"]["edit_mse"] == 0.0
    assert results["editing"]["scores"]["protected"]["edit_mse"] < 0, "the protection must change the edit"
    # The mimic trains on the same number of images in every condition, at the evaluation size.
    for files in results["files"].values():
        assert len(files["train"]) == 4 and load_image(run_dir / files["train"][0]).pixels.shape == (32, 32, 3)


def test_report_numbers_are_recomputed_from_the_files_it_lists(finished_run, tiny_model):
    run_dir, results = finished_run
    read = lambda f: load_image(run_dir / f).pixels  # noqa: E731
    for row in results["imperceptibility"]:
        m = image_metrics(read(row["clean"]), read(row["protected"]))
        assert row["psnr"] == pytest.approx(m["psnr"]) and row["linf_levels"] == m["linf_levels"]
    scores = results["customization"]["scores"]
    reference = [read(f) for f in results["reference"]]
    heldout = [read(f) for f in results["heldout"]]
    for cond, files in results["files"].items():
        inputs = J.JudgeInputs(model=tiny_model, generated=[read(f) for f in files["generated"]], reference=reference,
                               heldout=heldout, surrogate=Surrogate.load(tiny_model, run_dir / files["lora"]),
                               prompt=results["config"]["instance_prompt"])
        assert scores[cond]["image_stats"] == pytest.approx(J.image_stats_score(inputs), abs=1e-12)
        assert scores[cond]["denoise_loss"] == pytest.approx(J.denoise_loss_score(inputs), rel=1e-6)
    for cond, row in results["customization"]["retained"].items():
        for judge, value in row.items():
            expected = (scores["clean"][judge] - scores[cond][judge]) / (scores["clean"][judge] - scores["protected"][judge])
            assert value == pytest.approx(expected)
    worst = results["customization"]["worst_retained"]["image_stats"]
    assert worst["retained"] == min(r["image_stats"] for r in results["customization"]["retained"].values())
    clean_edit = read(results["editing"]["files"]["clean"]["edited"][0]).astype(np.float64)
    prot_edit = read(results["editing"]["files"]["protected"]["edited"][0]).astype(np.float64)
    assert results["editing"]["scores"]["protected"]["edit_mse"] == pytest.approx(-(((prot_edit - clean_edit) / 255) ** 2).mean())


def test_second_run_skips_done_stages_and_a_changed_setting_reruns_only_what_depends_on_it(finished_run, tiny_model, art_folders):
    run_dir, first = finished_run
    before = (run_dir / "results.json").read_text()
    again = run_evaluation(tiny_model, _config(art_folders), run_dir, log=lambda m: None)
    assert again["stages_run"] == []
    assert "protect" in again["stages_skipped"] and "score" in again["stages_skipped"]
    assert (run_dir / "results.json").read_text() == before
    # Another judge set changes only the scoring stage's key: nothing upstream runs again.
    changed = run_evaluation(tiny_model, replace(_config(art_folders), judges=["image_stats"]), run_dir, log=lambda m: None)
    assert changed["stages_run"] == ["score"]
    assert changed["judges"] == ["image_stats"]


def _one_step_config(tmp_path, seed: int):
    """Three 32 px pictures in tmp_path/art and an evaluation of them at one step of everything."""
    art = tmp_path / "art"
    art.mkdir()
    for i in range(3):
        Image.fromarray(make_image(32, 32, seed=seed + i)).save(art / f"piece{i}.png")
    return art, EvalConfig(images=[str(art)], method="advdm", strength_levels=8, steps=1, purifiers=[], size=32,
                           heldout=1, k=1, lora_steps=1, gen_steps=1, guidance=1.0, judges=["image_stats"])


def test_an_image_changed_in_place_is_prepared_and_protected_again(tiny_model, tmp_path):
    """Stages are keyed by the images' bytes, not their names: new pixels under an old name are not
    answered with results made from the old ones."""
    art, config = _one_step_config(tmp_path, seed=20)
    run_dir = tmp_path / "run"
    run_evaluation(tiny_model, config, run_dir, log=lambda m: None)
    assert run_evaluation(tiny_model, config, run_dir, log=lambda m: None)["stages_run"] == []
    Image.fromarray(make_image(32, 32, seed=99)).save(art / "piece0.png")
    again = run_evaluation(tiny_model, config, run_dir, log=lambda m: None)
    assert "prepare" in again["stages_run"] and "protect" in again["stages_run"]
    assert np.array_equal(np.asarray(Image.open(run_dir / "clean" / "000_piece0.png").convert("RGB")),
                          make_image(32, 32, seed=99)[..., :3])


def test_a_run_folder_moved_with_its_images_keeps_every_finished_stage(tiny_model, tmp_path):
    """Stages are keyed by the images' names and bytes, not by where they lie: a run folder copied to another
    place (another checkout, another machine) with its images runs nothing again, and a renamed image does."""
    import shutil

    here = tmp_path / "here"
    here.mkdir()
    art, config = _one_step_config(here, seed=60)
    first = run_evaluation(tiny_model, config, here / "run", log=lambda m: None)
    assert "prepare" in first["stages_run"] and "score" in first["stages_run"]
    there = tmp_path / "elsewhere" / "there"
    shutil.copytree(here, there)
    moved = replace(config, images=[str(there / "art")])
    again = run_evaluation(tiny_model, moved, there / "run", log=lambda m: None)
    assert again["stages_run"] == [] and "protect" in again["stages_skipped"]
    (there / "art" / "piece1.png").rename(there / "art" / "piece1b.png")
    renamed = run_evaluation(tiny_model, moved, there / "run", log=lambda m: None)
    assert "prepare" in renamed["stages_run"]


def test_a_protection_made_under_other_method_defaults_is_made_again(tiny_model, tmp_path, monkeypatch):
    """A run folder outlives a change of a method's defaults (AntiPure's, issue 28): the same row with the same
    given parameters then runs other settings, and its old protection must not be reused."""
    from dataclasses import dataclass

    from engine import methods as registry
    from engine.methods.advdm import AdvDM, AdvDMParams
    from engine.methods.base import setting

    @dataclass
    class Shifted(AdvDMParams):
        t_min: int = setting(1, "first training timestep drawn", int, 0, 999)

    art, config = _one_step_config(tmp_path, seed=30)
    run_dir = tmp_path / "run"
    run_evaluation(tiny_model, config, run_dir, log=lambda m: None)
    assert run_evaluation(tiny_model, config, run_dir, log=lambda m: None)["stages_run"] == []
    monkeypatch.setitem(registry.METHODS, "advdm", type("AdvDM", (AdvDM,), {"Params": Shifted}))
    assert registry.get_method("advdm").params.t_min == 1  # the default changed, the row did not
    again = run_evaluation(tiny_model, config, run_dir, log=lambda m: None)
    assert "protect" in again["stages_run"]


def test_lora_customization_changes_the_unet_output_and_leaves_it_restored(tiny_model):
    snap = _unet_snapshot(tiny_model)
    images = [make_image(32, 32, seed=s) for s in range(2)]
    z = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([250])
    cond = tiny_model.encode_prompt("a painting in sks style")
    base = D.unet(tiny_model, z, t, cond)
    surrogate, losses = customize(tiny_model, images, "a painting in sks style", CustomizeSettings(rank=4, lr=1e-3, steps=4))
    assert len(losses) == 4
    with surrogate.applied():
        tuned = D.unet(tiny_model, z, t, cond)
    assert float((tuned - base).abs().max()) > 1e-4
    assert_unet_restored(tiny_model, snap)
    assert torch.equal(D.unet(tiny_model, z, t, cond), base)


def test_damage_retained_formula():
    assert J.damage_retained(1.0, 0.5, 0.0) == pytest.approx(0.5)
    assert J.damage_retained(1.0, 1.0, 0.0) == 0.0
    assert J.damage_retained(1.0, 0.5, 1.0) is None  # no damage to retain: undefined, not a division by zero


def test_lora_batches_take_every_image_with_its_own_caption(tiny_model, monkeypatch):
    images = [make_image(32, 32, seed=s) for s in range(3)]
    prompts = ["a painting in sks style", "a photo of a cat", "a drawing of a dog"]
    seen = []
    real = D.denoising_loss

    def spy(model, z, cond, t, noise, reduce=True):
        seen.append((z.shape[0], cond.shape[0], cond.detach().clone()))
        return real(model, z, cond, t, noise, reduce)

    monkeypatch.setattr(D, "denoising_loss", spy)
    customize(tiny_model, images, prompts, CustomizeSettings(rank=2, lr=1e-3, steps=2, batch_size=3))
    assert [(b, c) for b, c, _ in seen] == [(3, 3), (3, 3)]
    expected = torch.cat([tiny_model.encode_prompt(p) for p in prompts])
    assert torch.equal(seen[0][2], expected)  # image i trained with caption i
    with pytest.raises(ValueError, match="2 captions for 3 images"):
        customize(tiny_model, images, prompts[:2], CustomizeSettings(steps=1))
    with pytest.raises(ValueError, match="one size"):
        customize(tiny_model, images + [make_image(40, 32)], prompts + ["x"], CustomizeSettings(steps=1, batch_size=2))


def test_per_image_captions_train_a_different_lora_than_one_instance_prompt(tiny_model):
    images = [make_image(32, 32, seed=s) for s in range(2)]
    settings = CustomizeSettings(rank=2, lr=1e-3, steps=3)
    one, _ = customize(tiny_model, images, "a painting in sks style", settings)
    same, _ = customize(tiny_model, images, ["a painting in sks style"] * 2, settings)
    each, _ = customize(tiny_model, images, ["a painting in sks style", "a photo of a cat"], settings)
    a, b, c = (s.state_dict() for s in (one, same, each))
    assert all(torch.equal(a[k], b[k]) for k in a)  # a list of equal captions is the instance prompt
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_batched_generation_matches_one_image_at_a_time(tiny_model):
    from engine.evaluation import generate as G

    single = G.generate(tiny_model, ["a cat", "a dog"], 3, 32, steps=2, batch_size=1)
    batched = G.generate(tiny_model, ["a cat", "a dog"], 3, 32, steps=2, batch_size=16)
    diffs = [np.abs(a.astype(int) - b.astype(int)).max() for ra, rb in zip(single, batched) for a, b in zip(ra, rb)]
    assert max(diffs) <= 1  # the same noises; batched arithmetic may round one level differently
    assert np.abs(single[0][0].astype(int) - single[0][1].astype(int)).max() > 10  # samples do differ


def test_an_evaluation_reports_each_stage_as_an_event_and_stop_keeps_the_finished_ones(tiny_model, tmp_path):
    """The evaluation speaks engine.events: each stage's end is a Progress with its StageDone; Stop pressed
    after the first stage ends the run before the next one, and a second run resumes after it."""
    from engine.errors import Cancelled
    from engine.evaluation.run import StageDone
    from engine.events import Progress
    from engine.jobs import Job

    _, config = _one_step_config(tmp_path, seed=40)
    events = []

    def stop_after_the_first(event):
        events.append(event)
        job.cancel()

    job = Job(stop_after_the_first)
    with pytest.raises(Cancelled):
        run_evaluation(tiny_model, config, tmp_path / "run", job=job)
    assert [(e.phase, e.step, e.detail.name, e.detail.skipped) for e in events] == [("prepare", 1, "prepare", False)]
    assert isinstance(events[0], Progress) and isinstance(events[0].detail, StageDone)
    lines = []
    resumed = run_evaluation(tiny_model, config, tmp_path / "run", log=lines.append)
    assert resumed["stages_skipped"] == ["prepare"] and lines[0] == "prepare: done before, skipped"
    assert lines[-1].startswith("score: done in ")
