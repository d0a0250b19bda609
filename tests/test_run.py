"""`dmgd run` end to end on tiny real diffusers models: files, manifest, resume, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_image_folder
from dmgd.data.store import StoreError
from dmgd.pipeline import RunError, run

RECIPE = "t>=8: explore; 4..8: softlabel(bs=0.01, bn=0.06); 5..8: ot(K=3, rho=0.05..0.5)\nsteps = 10\n"


def _pngs(out):
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))


def test_run_writes_an_image_folder_latents_and_manifest(tiny_pixel_model, tmp_path):
    out = tmp_path / "out"
    result = run(RECIPE, out, model=str(tiny_pixel_model), ipc=2)
    assert _pngs(out) == [f"{c}/{i:04d}.png" for c in range(10) for i in range(2)]
    assert all((out / str(c) / f"{i:04d}.safetensors").is_file() for c in range(10) for i in range(2))
    image = Image.open(out / "3" / "0001.png")
    assert image.size == (8, 8) and image.mode == "L"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["progress"] == {"finished": 20, "total": 20}
    assert manifest["settings"]["ipc"] == 2 and manifest["settings"]["model"] == str(tiny_pixel_model)
    assert manifest["recipe"]["text"] == RECIPE and len(manifest["recipe"]["hash"]) == 64
    assert len(manifest["schedule"]["steps"]) == 10
    assert manifest["schedule"]["steps"][0]["conditioning"]["term"] == "explore"
    assert manifest["schedule"]["steps"][0]["timestep"] == 999
    assert sorted(manifest["ot_distance"]["per_class"]) == [str(c) for c in range(10)]
    assert len(manifest["data"]["train_indices"]) + len(manifest["data"]["test_indices"]) == 1797
    assert set(manifest["versions"]) >= {"torch", "diffusers", "pot", "dmgd"}
    assert result.images["3"][1] == out / "3" / "0001.png"
    assert all(d > 0 for d in result.ot_distance.values())


def test_same_seed_gives_byte_identical_images(tiny_pixel_model, tmp_path):
    a = run(RECIPE, tmp_path / "a", model=str(tiny_pixel_model), ipc=2)
    b = run(RECIPE, tmp_path / "b", model=str(tiny_pixel_model), ipc=2)
    c = run(RECIPE, tmp_path / "c", model=str(tiny_pixel_model), ipc=2, seed=1)
    files = _pngs(tmp_path / "a")
    assert all((a.out / f).read_bytes() == (b.out / f).read_bytes() for f in files)
    assert any((a.out / f).read_bytes() != (c.out / f).read_bytes() for f in files)


def test_an_existing_run_is_refused_unless_resume_or_overwrite(tiny_pixel_model, tmp_path):
    out = tmp_path / "out"
    run(RECIPE, out, model=str(tiny_pixel_model), ipc=1)
    with pytest.raises(StoreError, match=r"already holds a run.*resume=True.*overwrite=True"):
        run(RECIPE, out, model=str(tiny_pixel_model), ipc=1)
    with pytest.raises(StoreError, match=r"other settings \(seed = 0, now 5\)"):
        run(RECIPE, out, model=str(tiny_pixel_model), ipc=1, seed=5, resume=True)
    run(RECIPE, out, model=str(tiny_pixel_model), ipc=1, seed=5, overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["settings"]["seed"] == 5


def test_a_non_empty_directory_without_a_run_is_refused(tiny_pixel_model, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not empty"):
        run(RECIPE, tmp_path, model=str(tiny_pixel_model), ipc=1)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_resume_after_losing_images_gives_the_uninterrupted_result(tiny_pixel_model, tmp_path):
    full = run(RECIPE, tmp_path / "full", model=str(tiny_pixel_model), ipc=3)
    part = tmp_path / "part"
    run(RECIPE, part, model=str(tiny_pixel_model), ipc=3)
    # As if the run had died after index 0: later images and latents are gone.
    for path in list(part.rglob("0001.*")) + list(part.rglob("0002.*")):
        path.unlink()
    run(RECIPE, part, model=str(tiny_pixel_model), ipc=3, resume=True)
    files = _pngs(full.out)
    assert files == _pngs(part)
    assert all((full.out / f).read_bytes() == (part / f).read_bytes() for f in files)


def test_joint_matching_runs_and_records_it(tiny_pixel_model, tmp_path):
    result = run(RECIPE, tmp_path / "out", model=str(tiny_pixel_model), ipc=3, matching="joint")
    assert result.manifest["settings"]["matching"] == "joint"
    assert len(_pngs(tmp_path / "out")) == 30


def test_latent_model_with_vae_and_an_image_folder_end_to_end(tiny_latent_model, tmp_path):
    """The real users' path (a diffusers DiT + VAE folder and an ImageFolder), minus real weights."""
    data = write_image_folder(tmp_path / "data", classes=3, per_class=6, size=16)
    out = tmp_path / "out"
    result = run(RECIPE, out, model=str(tiny_latent_model), data=str(data), ipc=2)
    assert result.class_names == ("class_0", "class_1", "class_2")
    assert _pngs(out) == [f"class_{c}/{i:04d}.png" for c in range(3) for i in range(2)]
    image = np.asarray(Image.open(out / "class_1" / "0000.png"))
    assert image.shape == (16, 16, 3)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["vae"] is True and manifest["model"]["latent_shape"] == [4, 8, 8]
    assert manifest["data"]["source"] == str(data)


def test_class_count_mismatch_is_a_clear_error(tiny_latent_model, tmp_path):
    data = write_image_folder(tmp_path / "data", classes=4, per_class=4, size=16)
    with pytest.raises(RunError, match="the data has 4 classes and the model 3"):
        run(RECIPE, tmp_path / "out", model=str(tiny_latent_model), data=str(data), ipc=1)


def test_mode_guidance_runs_from_the_noisiest_step_on_the_embedded_model(tmp_path):
    """MGD3's pull -rho*sigma_t*(x0 - m_i) is applied on x0; through Tweedie's 1/sqrt(abar)
    it overflowed at high noise (a GuidanceError at step 7 of recipes/mgd3.dmgd)."""
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "mgd3.dmgd"
    result = run(recipe, tmp_path / "out", ipc=2)
    assert result.manifest["status"] == "complete"
    assert len(_pngs(tmp_path / "out")) == 20
