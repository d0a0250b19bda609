"""`dmgd import-dit`: original DiT and Minimax checkpoints become diffusers folders that
compute what the original forward computes (checked against `dit_reference`, written from
the DiT paper), and a checkpoint holding anything but tensors is refused unexecuted."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from dit_reference import dit_forward, random_dit

from dmgd.checkpoints import CheckpointError, import_dit
from dmgd.sampling.backbones import load_backbone

HEADS = 4
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def weights():
    """Two tiny DiTs (depth 2, width 64, 4 heads, patch 2, 8x8x4, 1000 + 1 classes, learned
    sigma): `plain`, and `ema` with DiffFit scales in block 0 (as Minimax's first 14 of 28)."""
    generator = torch.Generator().manual_seed(0)
    return {"plain": random_dit(generator), "ema": random_dit(generator, difffit_blocks=(0,)),
            "model": random_dit(generator, difffit_blocks=(0,))}


def _inputs(labels):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(len(labels), 4, 8, 8, generator=generator)
    t = torch.tensor([999, 500, 37, 0, 250, 750][:len(labels)])
    return x, t, torch.tensor(labels)


def _imported_output(folder: Path, x, t, y):
    backbone = load_backbone(folder)
    with torch.no_grad():
        return backbone.transformer(x, timestep=t, class_labels=y).sample


def _reference_output(sd, x, t, y):
    with torch.no_grad():
        return dit_forward(sd, x, t, y, HEADS)


def _training_checkpoint(weights) -> dict:
    return {"model": weights["model"], "ema": weights["ema"],
            "opt": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]},
            "args": argparse.Namespace(model="DiT-XL/2", image_size=256, ckpt_every=500)}


BATCHES = {"conditional": [193, 0, 999, 207], "null": [1000, 1000, 1000, 1000], "cfg": [193, 207, 1000, 1000]}


@pytest.mark.parametrize("batch", sorted(BATCHES))
def test_a_bare_state_dict_imports_to_the_original_forward(tmp_path, weights, batch):
    torch.save(weights["plain"], tmp_path / "DiT-tiny.pt")
    import_dit(tmp_path / "DiT-tiny.pt", tmp_path / "model", vae="none", heads=HEADS)
    x, t, y = _inputs(BATCHES[batch])
    got = _imported_output(tmp_path / "model", x, t, y)
    want = _reference_output(weights["plain"], x, t, y)
    assert got.shape == want.shape == (4, 8, 8, 8)
    assert float((got - want).abs().max()) <= TOLERANCE
    if batch == "cfg":  # guidance on the pairs (193, null), (207, null) as DiT's forward_with_cfg does
        guided = lambda out: out[2:] + 4.0 * (out[:2] - out[2:])  # noqa: E731
        assert float((guided(got) - guided(want)).abs().max()) <= 4 * TOLERANCE


@pytest.mark.parametrize("which", ["ema", "model"])
def test_a_minimax_training_checkpoint_imports_with_its_difffit_scales_folded(tmp_path, weights, which):
    torch.save(_training_checkpoint(weights), tmp_path / "0001000.pt")
    result = import_dit(tmp_path / "0001000.pt", tmp_path / "model", weights=which, vae="none", heads=HEADS)
    assert result.difffit_blocks == (0,) and which in result.source
    x, t, y = _inputs([193, 1000, 5, 1000])
    got = _imported_output(tmp_path / "model", x, t, y)
    assert float((got - _reference_output(weights[which], x, t, y)).abs().max()) <= TOLERANCE
    unscaled = {k: v for k, v in weights[which].items() if "gamma" not in k}
    assert float((got - _reference_output(unscaled, x, t, y)).abs().max()) > 100 * TOLERANCE  # the scales matter


def test_without_the_original_timestep_frequencies_diffusers_differs(tmp_path, weights):
    """Why the imported config asks for them: diffusers' DiT divides by 127, DiT by 128."""
    from diffusers import DiTTransformer2DModel

    torch.save(weights["plain"], tmp_path / "DiT-tiny.pt")
    import_dit(tmp_path / "DiT-tiny.pt", tmp_path / "model", vae="none", heads=HEADS)
    plain = DiTTransformer2DModel.from_pretrained(tmp_path / "model" / "transformer").eval()
    x, t, y = _inputs([193, 0, 999, 207])
    with torch.no_grad():
        got = plain(x, timestep=t, class_labels=y).sample
    assert float((got - _reference_output(weights["plain"], x, t, y)).abs().max()) > 1e-3


def test_the_folder_is_a_complete_diffusers_dit(tmp_path, weights, tiny_latent_vae):
    torch.save(weights["plain"], tmp_path / "DiT-tiny.pth")
    result = import_dit(tmp_path / "DiT-tiny.pth", tmp_path / "model", vae=str(tiny_latent_vae), heads=HEADS)
    out = tmp_path / "model"
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "DiTPipeline" and index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["id2label"]["193"] == "Australian terrier" and len(index["id2label"]) == 1000
    config = json.loads((out / "transformer" / "config.json").read_text())
    assert (config["num_layers"], config["num_attention_heads"], config["attention_head_dim"]) == (2, 4, 16)
    assert (config["out_channels"], config["sample_size"], config["num_embeds_ada_norm"]) == (8, 8, 1000)
    scheduler = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["variance_type"] == "learned_range" and scheduler["beta_end"] == 0.02
    backbone = load_backbone(out)
    assert backbone.vae is not None and backbone.learned_sigma and backbone.num_classes == 1000
    assert backbone.class_names[193] == "Australian terrier"
    facts = json.loads((out / "import.json").read_text())
    assert facts["architecture"]["heads_from"] == "--heads" and result.shape.depth == 2
    assert not list(tmp_path.glob(".model.tmp-*"))


@pytest.fixture(scope="module")
def tiny_latent_vae(tmp_path_factory) -> Path:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("vae")
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                  down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                  up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 16),
                  layers_per_block=1, norm_num_groups=8, sample_size=16).save_pretrained(folder, safe_serialization=True)
    return folder


class WritesAFile:
    """Unpickling this runs code that writes a file (what a hostile checkpoint could do)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return exec, (f"open({str(self.target)!r}, 'w').write('ran')",)


def test_a_pickle_that_would_write_a_file_is_refused_and_not_run(tmp_path):
    target = tmp_path / "written-by-the-pickle"
    torch.save({"model": {"w": torch.zeros(2)}, "payload": WritesAFile(target)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil\.pt holds a reference to `exec`.*never runs"):
        import_dit(tmp_path / "evil.pt", tmp_path / "model", vae="none")
    assert not target.exists() and not (tmp_path / "model").exists()
    torch.load(tmp_path / "evil.pt", weights_only=False)  # the control: an unsafe load does run it
    assert target.read_text() == "ran"


def test_argparse_namespace_is_allowed_only_during_the_load(tmp_path, weights):
    torch.save(_training_checkpoint(weights), tmp_path / "ckpt.pt")
    import_dit(tmp_path / "ckpt.pt", tmp_path / "model", vae="none", heads=HEADS)
    with pytest.raises(Exception, match="argparse.Namespace"):
        torch.load(tmp_path / "ckpt.pt", weights_only=True)


def test_non_tensor_content_is_named(tmp_path, weights):
    torch.save({**weights["plain"], "note": "hello"}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match=r"entry 'note' is a str, not a tensor"):
        import_dit(tmp_path / "odd.pt", tmp_path / "model", vae="none", heads=HEADS)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        import_dit(tmp_path / "list.pt", tmp_path / "model", vae="none", heads=HEADS)


def test_a_state_dict_saved_from_ddp_or_torch_compile_imports(tmp_path, weights):
    wrapped = {f"module._orig_mod.{k}": v for k, v in weights["plain"].items()}
    torch.save(wrapped, tmp_path / "ddp.pt")
    torch.save(weights["plain"], tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    x, t, y = _inputs([193, 1000])
    for name in ("ddp", "legacy"):
        import_dit(tmp_path / f"{name}.pt", tmp_path / name, vae="none", heads=HEADS)
        got = _imported_output(tmp_path / name, x, t, y)
        assert float((got - _reference_output(weights["plain"], x, t, y)).abs().max()) <= TOLERANCE


def test_a_training_checkpoint_without_the_asked_weights_says_which_to_pass(tmp_path, weights):
    torch.save({"model": weights["plain"], "opt": {}}, tmp_path / "no-ema.pt")
    with pytest.raises(CheckpointError, match="without 'ema' weights.*--weights model"):
        import_dit(tmp_path / "no-ema.pt", tmp_path / "model", vae="none", heads=HEADS)


def test_shapes_that_do_not_fit_are_named(tmp_path):
    generator = torch.Generator().manual_seed(2)
    torch.save(random_dit(generator, mlp_ratio=2), tmp_path / "narrow-mlp.pt")
    with pytest.raises(CheckpointError, match=r"ff\.net\.0\.proj\.weight would be \[128, 64\].*has \[256, 64\]"):
        import_dit(tmp_path / "narrow-mlp.pt", tmp_path / "model", vae="none", heads=HEADS)
    sd = random_dit(generator)
    sd["blocks.1.attn.gamma1"] = torch.ones(5)
    torch.save(sd, tmp_path / "bad-gamma.pt")
    with pytest.raises(CheckpointError, match=r"'blocks\.1\.attn\.gamma1' is \[5\], expected \[192\]"):
        import_dit(tmp_path / "bad-gamma.pt", tmp_path / "model", vae="none", heads=HEADS)


def test_an_unnamed_width_needs_heads(tmp_path, weights):
    torch.save(weights["plain"], tmp_path / "DiT-tiny.pt")
    with pytest.raises(CheckpointError, match="width 64 is none of DiT's named sizes.*--heads N"):
        import_dit(tmp_path / "DiT-tiny.pt", tmp_path / "model", vae="none")


def test_a_vae_whose_channels_do_not_fit_is_refused(tmp_path, weights, tiny_latent_vae):
    generator = torch.Generator().manual_seed(3)
    torch.save(random_dit(generator, in_channels=3), tmp_path / "three.pt")
    with pytest.raises(CheckpointError, match="4 latent channels but the DiT denoises 3"):
        import_dit(tmp_path / "three.pt", tmp_path / "model", vae=str(tiny_latent_vae), heads=HEADS)
    assert not (tmp_path / "model").exists()


def test_the_command_line(tmp_path, weights):
    from typer.testing import CliRunner

    from dmgd.cli import app

    torch.save(_training_checkpoint(weights), tmp_path / "ckpt.pt")
    runner = CliRunner()
    ok = runner.invoke(app, ["import-dit", str(tmp_path / "ckpt.pt"), "--out", str(tmp_path / "model"),
                             "--vae", "none", "--heads", "4"])
    assert ok.exit_code == 0, ok.output
    assert "DiffFit" in ok.output and "'ema' weights" in ok.output
    again = runner.invoke(app, ["import-dit", str(tmp_path / "ckpt.pt"), "--out", str(tmp_path / "model"),
                                "--vae", "none", "--heads", "4"])
    assert again.exit_code == 1 and "already exists" in again.output and "Traceback" not in again.output


def test_dit_xl_2s_architecture_is_read_from_its_shapes():
    """DiT-XL/2 256 as `DiT-XL-2-256x256.pt` holds it (shapes only, on the meta device)."""
    from dmgd.checkpoints.convert import DiTShape, infer_shape

    def empty(*shape):
        return torch.empty(*shape, device="meta")

    sd = {"x_embedder.proj.weight": empty(1152, 4, 2, 2), "pos_embed": empty(1, 256, 1152),
          "y_embedder.embedding_table.weight": empty(1001, 1152), "final_layer.linear.weight": empty(32, 1152)}
    sd.update({f"blocks.{d}.attn.qkv.weight": empty(3456, 1152) for d in range(28)})
    assert infer_shape(sd, "DiT-XL-2-256x256.pt") == DiTShape(depth=28, width=1152, heads=16, patch=2, in_channels=4,
                                                              out_channels=8, input_size=32, num_classes=1000)
