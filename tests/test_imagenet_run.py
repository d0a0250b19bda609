"""The paper's setting end to end, small: an ImageNet train folder (wnid class folders), an
imported 1000-class DiT with a VAE, `dmgd run` with `classes = woof`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from dit_reference import random_dit
from PIL import Image
from typer.testing import CliRunner

from dmgd.checkpoints import import_dit
from dmgd.cli import app
from dmgd.data.imagenet import WOOF
from dmgd.pipeline import run

RECIPE = "t>=4: explore; 2..4: softlabel(bs=0.01, bn=0.06); 2..4: ot(K=2, rho=0.05)\nsteps = 6\n"
# wnid folders the run must never open: each holds a file the loader would refuse
UNCHOSEN = ("n01440764", "n02102040", "n15075141")


def _imagenet_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c, wnid in enumerate(WOOF):
        (root / wnid).mkdir(parents=True)
        for i in range(2):
            pixels = np.clip(60 + 12 * c + rng.normal(0, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / wnid / f"{wnid}_{i}.JPEG", format="JPEG")
    for wnid in UNCHOSEN:
        (root / wnid).mkdir()
        (root / wnid / "not-an-image.txt").write_text("opening this class folder is an error")
    return root


@pytest.fixture(scope="module")
def imagenet_model(tmp_path_factory) -> Path:
    """A tiny 1000-class DiT (8x8x4 latents, learned sigma) imported with a tiny 16 px VAE."""
    from diffusers import AutoencoderKL

    root = tmp_path_factory.mktemp("imagenet_model")
    torch.manual_seed(0)
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                  down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                  up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 16),
                  layers_per_block=1, norm_num_groups=8, sample_size=16).save_pretrained(root / "vae",
                                                                                      safe_serialization=True)
    torch.save(random_dit(torch.Generator().manual_seed(0)), root / "DiT-tiny.pt")
    import_dit(root / "DiT-tiny.pt", root / "dit", vae=str(root / "vae"), heads=4)
    return root / "dit"


def test_dmgd_run_distils_woof_from_an_imagenet_folder_into_wnid_folders(tmp_path, imagenet_model):
    data = _imagenet_folder(tmp_path / "train")
    (tmp_path / "woof.dmgd").write_text(RECIPE)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(tmp_path / "woof.dmgd"), "--out", str(out), "--device", "cpu",
                                      "--set", f"model={imagenet_model}", "--set", f"data={data}",
                                      "--set", "classes=woof", "--set", "ipc=1"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != "latents") == sorted(WOOF)
    assert (out / "n02096294" / "0000.png").is_file()
    assert Image.open(out / "n02096294" / "0000.png").size == (16, 16)
    manifest = json.loads((out / "manifest.json").read_text())
    mapping = {row["data"]: row for row in manifest["classes"]}
    assert mapping["n02096294"]["model_class"] == 193 and mapping["n02096294"]["folder"] == "n02096294"
    assert mapping["n02096294"]["label"] == "Australian terrier"
    assert {w: mapping[w]["model_class"] for w in WOOF} == dict(zip(WOOF, (193, 182, 258, 162, 155, 167, 159,
                                                                          273, 207, 229)))
    assert manifest["settings"]["classes"] == "woof"
    assert sorted(manifest["data"]["class_counts"]) == sorted(WOOF)


def test_out_names_index_writes_rdeds_layout(tmp_path, imagenet_model):
    data = _imagenet_folder(tmp_path / "train")
    out = tmp_path / "out"
    run(RECIPE, out, model=str(imagenet_model), data=str(data), ipc=1, device="cpu",
        overrides={"classes": "n02096294, 207", "out_names": "index"})
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != "latents") == ["00193", "00207"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["class_names"] == ["00193", "00207"]
    assert [(r["data"], r["model_class"], r["folder"]) for r in manifest["classes"]] == [
        ("n02096294", 193, "00193"), ("n02099601", 207, "00207")]


def test_an_index_named_set_is_tested_on_the_wnid_folders_of_a_whole_val_split(tmp_path, imagenet_model):
    """`dmgd eval` takes the ImageNet val folder as it is: the set's two classes are found by
    the manifest's wnids among all the folders, and no other folder is opened."""
    from dmgd.evaluation.protocol import EvalConfig, evaluate

    out = tmp_path / "out"
    run(RECIPE, out, model=str(imagenet_model), data=str(_imagenet_folder(tmp_path / "train")), ipc=1,
        device="cpu", overrides={"classes": "n02096294, 207", "out_names": "index"})
    val = _imagenet_folder(tmp_path / "val")
    result = evaluate(out, val, EvalConfig(seeds=1, epochs=1), write=True)
    assert result.class_names == ("n02096294", "n02099601") and result.test_images == 4
    assert result.real_source == f"{val} (2 of its 13 classes)"
    report = json.loads((out / "eval.json").read_text())
    assert report["real_set"]["source"] == result.real_source


def test_a_folder_of_only_woofs_wnids_maps_to_dits_classes(imagenet_model):
    from dmgd.pipeline import map_classes
    from dmgd.sampling.backbones import load_backbone

    backbone = load_backbone(imagenet_model)
    names = sorted(WOOF)
    assert dict(zip(names, map_classes(names, backbone)))["n02096294"] == 193
    assert map_classes(names, backbone) != tuple(range(10))


def test_without_classes_every_folder_is_read(tmp_path, imagenet_model):
    """The control for the tests above: the unchosen folders would fail the run if opened."""
    from dmgd.data.images import DataError

    data = _imagenet_folder(tmp_path / "train")
    with pytest.raises(DataError, match="not-an-image.txt is not an image"):
        run(RECIPE, tmp_path / "out", model=str(imagenet_model), data=str(data), ipc=1, device="cpu")
