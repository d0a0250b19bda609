"""Backbone loading: the embedded digits DiT, local diffusers folders, and the errors."""

from __future__ import annotations

import json

import pytest
import torch

from dmgd.sampling.backbones import (
    EMBEDDED_MODEL_ID,
    Backbone,
    BackboneError,
    default_model_dir,
    load_backbone,
    weights_sha256,
)

# sha256 of the shipped weights (dmgd/assets/digits_dit, see its MODEL_CARD.md);
# changes only when the embedded model is retrained
EMBEDDED_SHA256 = "449ce519a18755dff51bb365a7213335351832d54aca3cf7b03ab82df5c93e70"


def _tiny_dit(**over):
    from diffusers import DiTTransformer2DModel

    cfg = dict(sample_size=4, in_channels=4, out_channels=8, patch_size=2, num_layers=1,
               num_attention_heads=2, attention_head_dim=8, num_embeds_ada_norm=5,
               norm_type="ada_norm_zero")
    cfg.update(over)
    torch.manual_seed(0)
    return DiTTransformer2DModel(**cfg)


def _tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",),
                         up_block_types=("UpDecoderBlock2D",), block_out_channels=(8,),
                         latent_channels=4, norm_num_groups=8, sample_size=16,
                         scaling_factor=0.5)


def _save_latent_model(root, safe=True, with_vae=True):
    _tiny_dit().save_pretrained(root / "transformer", safe_serialization=safe)
    if with_vae:
        _tiny_vae().save_pretrained(root / "vae", safe_serialization=safe)
    from diffusers import DDIMScheduler

    DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                  beta_end=0.02, clip_sample=False).save_config(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps(
        {"_class_name": "DiTPipeline", "id2label": {str(i): f"c{i}" for i in range(5)}}))
    return root


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """On a shared 2-core machine two torch threads can be 30x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- local folders


def test_local_latent_model_with_vae(tmp_path):
    root = _save_latent_model(tmp_path / "m")
    bb = load_backbone(str(root))
    assert isinstance(bb, Backbone)
    assert bb.vae is not None and not bb.is_pixel
    assert bb.vae_scale == 0.5
    assert bb.latent_shape == (4, 4, 4)
    assert bb.num_classes == 5 and bb.null_class == 5
    assert bb.learned_sigma is True
    assert bb.class_names == ("c0", "c1", "c2", "c3", "c4")
    assert bb.scheduler_config["_class_name"] == "DDIMScheduler"
    assert bb.scheduler_config["num_train_timesteps"] == 1000
    assert bb.model_id == str(root)
    assert bb.weights_sha256 == weights_sha256(root) and len(bb.weights_sha256) == 64
    for module in (bb.transformer, bb.vae):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
    for block in bb.transformer.transformer_blocks:
        emb = block.norm1.emb.class_embedder
        assert emb.embedding_table.num_embeddings == 6 and emb.dropout_prob == 0.0
    x = torch.zeros(2, 4, 4, 4)
    out = bb.transformer(x, timestep=torch.tensor([10, 10]),
                         class_labels=torch.tensor([bb.null_class, 0])).sample
    assert out.shape == (2, 8, 4, 4)
    # the one-block VAE encodes a 16x16 image to a 4-channel 16x16 latent
    z = bb.vae.encode(torch.zeros(1, 3, 16, 16)).latent_dist.mean
    assert z.shape == (1, 4, 16, 16)


def test_hash_depends_on_weights_not_folder_name(tmp_path):
    a = _save_latent_model(tmp_path / "a")
    b = _save_latent_model(tmp_path / "b")
    assert weights_sha256(a) == weights_sha256(b)
    _tiny_dit(num_layers=2).save_pretrained(b / "transformer")
    assert weights_sha256(a) != weights_sha256(b)


def test_pixel_model_defaults(tmp_path):
    _tiny_dit(in_channels=1, out_channels=1).save_pretrained(tmp_path / "m" / "transformer")
    bb = load_backbone(tmp_path / "m")
    assert bb.vae is None and bb.vae_scale == 1.0 and bb.is_pixel
    assert bb.latent_shape == (1, 4, 4) and bb.learned_sigma is False
    assert bb.class_names is None
    assert bb.scheduler_config["beta_schedule"] == "linear"
    assert bb.scheduler_config["beta_start"] == 1e-4 and bb.scheduler_config["beta_end"] == 0.02


def test_transformer_folder_itself(tmp_path):
    _tiny_dit().save_pretrained(tmp_path / "t")
    bb = load_backbone(str(tmp_path / "t"))
    assert bb.vae is None and bb.num_classes == 5


def test_dtype(tmp_path):
    _tiny_dit().save_pretrained(tmp_path / "t")
    bb = load_backbone(str(tmp_path / "t"), dtype=torch.float64)
    assert next(bb.transformer.parameters()).dtype == torch.float64


# --------------------------------------------------------------------------- errors


def test_missing_directory(tmp_path):
    with pytest.raises(BackboneError) as e:
        load_backbone(str(tmp_path / "nope"))
    msg = str(e.value)
    assert "does not exist" in msg
    assert "hf download facebook/DiT-XL-2-256" in msg  # the CLI huggingface_hub installs
    assert "--set model=" in msg


def test_file_instead_of_directory(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(BackboneError, match="not a directory"):
        load_backbone(str(f))


def test_hub_id_not_in_cache_is_never_downloaded(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BackboneError) as e:
        load_backbone("dmgd-test-nobody/not-a-real-model-7f3a")
    assert "never downloads" in str(e.value)
    assert "hf download" in str(e.value)


def test_folder_without_transformer(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackboneError, match="no transformer/config.json"):
        load_backbone(str(tmp_path / "empty"))


def test_pickle_only_weights_refused(tmp_path):
    root = tmp_path / "m"
    _tiny_dit().save_pretrained(root / "transformer", safe_serialization=False)
    assert list((root / "transformer").glob("*.bin"))
    with pytest.raises(BackboneError) as e:
        load_backbone(str(root))
    msg = str(e.value)
    assert "pickle" in msg and "safetensors" in msg and "diffusion_pytorch_model.bin" in msg


def test_pickle_only_vae_refused(tmp_path):
    root = tmp_path / "m"
    _tiny_dit().save_pretrained(root / "transformer")
    _tiny_vae().save_pretrained(root / "vae", safe_serialization=False)
    with pytest.raises(BackboneError, match="vae .*pickle"):
        load_backbone(str(root))


def test_no_weights(tmp_path):
    root = tmp_path / "m"
    _tiny_dit().save_pretrained(root / "transformer")
    for f in (root / "transformer").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(BackboneError, match="has no weights"):
        load_backbone(str(root))


def test_not_class_conditional(tmp_path):
    root = tmp_path / "m"
    _tiny_dit().save_pretrained(root / "transformer")
    cfg_path = root / "transformer" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("num_embeds_ada_norm")
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(BackboneError) as e:
        load_backbone(str(root))
    assert "not a class-conditional DiT" in str(e.value)
    assert "num_embeds_ada_norm" in str(e.value)


def test_other_model_class(tmp_path):
    from diffusers import UNet2DModel

    root = tmp_path / "m"
    torch.manual_seed(0)
    UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8),
                down_block_types=("DownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "UpBlock2D"), layers_per_block=1,
                norm_num_groups=4).save_pretrained(root / "transformer")
    with pytest.raises(BackboneError, match="'UNet2DModel', not DiTTransformer2DModel"):
        load_backbone(str(root))


# --------------------------------------------------------------------------- embedded model


def test_default_model_dir_layout():
    d = default_model_dir()
    assert d.name == "digits_dit" and d.parent.name == "assets"
    assert (d / "transformer" / "config.json").is_file()
    assert (d / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    assert (d / "scheduler" / "scheduler_config.json").is_file()
    assert (d / "model_index.json").is_file() and (d / "MODEL_CARD.md").is_file()
    size = (d / "transformer" / "diffusion_pytorch_model.safetensors").stat().st_size
    assert size < 12 * 2**20
    assert not list(d.rglob("*.bin"))


@pytest.fixture(scope="module")
def embedded():
    return load_backbone(None)


def test_embedded_model(embedded):
    bb = embedded
    assert bb.model_id == EMBEDDED_MODEL_ID
    assert bb.vae is None and bb.vae_scale == 1.0
    assert bb.num_classes == 10 and bb.null_class == 10
    assert bb.latent_shape == (1, 8, 8)
    assert bb.learned_sigma is False
    assert bb.class_names == tuple("0123456789")
    assert bb.scheduler_config["num_train_timesteps"] == 1000
    assert bb.scheduler_config["prediction_type"] == "epsilon"
    tables = [b.norm1.emb.class_embedder.embedding_table for b in bb.transformer.transformer_blocks]
    assert len(tables) == 6 and all(t.weight.shape == (11, 128) for t in tables)
    assert not bb.transformer.training
    assert bb.weights_sha256 == EMBEDDED_SHA256
    assert bb.weights_sha256 == load_backbone(None).weights_sha256
    out = bb.transformer(torch.zeros(2, 1, 8, 8), timestep=torch.tensor([500, 500]),
                         class_labels=torch.tensor([10, 3])).sample
    assert out.shape == (2, 1, 8, 8)
    assert not torch.allclose(out[0], out[1])  # the label (incl. null) changes the output


def test_embedded_model_makes_recognisable_digits(embedded):
    from dmgd.pretrain import ddim_cfg_sample, digits_classifier

    labels = torch.arange(10).repeat_interleave(2)
    x = ddim_cfg_sample(embedded.transformer, labels, steps=25, cfg=4.0, seed=0,
                        scheduler_config=embedded.scheduler_config,
                        null_class=embedded.null_class)
    assert x.shape == (20, 1, 8, 8) and float(x.min()) >= -1 and float(x.max()) <= 1
    pred = digits_classifier().predict(x.reshape(20, -1).numpy())
    assert (pred == labels.numpy()).sum() >= 18
    # deterministic for a seed
    x2 = ddim_cfg_sample(embedded.transformer, labels[:4], steps=5, seed=1)
    x3 = ddim_cfg_sample(embedded.transformer, labels[:4], steps=5, seed=1)
    assert torch.equal(x2, x3)


# --------------------------------------------------------------------------- pretrain


def test_build_dit_init_and_label_handling():
    from dmgd.pretrain import build_dit, label_tables

    m = build_dit(0)
    assert sum(p.numel() for p in m.parameters()) == 2_120_068
    assert m.config.out_channels == 1
    assert all(t.num_embeddings == 11 for t in label_tables(m))
    assert all(b.norm1.emb.class_embedder.dropout_prob == 0 for b in m.transformer_blocks)
    for b in m.transformer_blocks:
        assert torch.count_nonzero(b.norm1.linear.weight) == 0
    assert torch.count_nonzero(m.proj_out_2.weight) == 0
    # adaLN-zero: the freshly initialised model outputs exactly zero
    m.train()  # dropout off: training mode must not drop labels either
    out = m(torch.randn(3, 1, 8, 8), timestep=torch.tensor([1, 2, 3]),
            class_labels=torch.tensor([0, 9, 10])).sample
    assert torch.count_nonzero(out) == 0


def test_pretrain_round_trip(tmp_path):
    from dmgd.pretrain import pretrain

    facts = pretrain(tmp_path / "m", steps=3, batch_size=16, progress=False, evaluate=False)
    assert facts["steps"] == 3 and facts["split"]["train"] == 1437
    bb = load_backbone(tmp_path / "m")
    assert bb.num_classes == 10 and bb.null_class == 10 and not bb.learned_sigma
    assert bb.class_names == tuple("0123456789")
    assert bb.weights_sha256 == facts["weights_sha256"]
    assert "3 steps" in (tmp_path / "m" / "MODEL_CARD.md").read_text()
    again = pretrain(tmp_path / "m2", steps=3, batch_size=16, progress=False, evaluate=False)
    assert again["weights_sha256"] == facts["weights_sha256"]  # seeded
