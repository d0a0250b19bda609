"""Hostile input to `dmgd run`: each a clear error (one line, non-zero exit, no traceback) or
a documented, logged recovery; never a silently wrong result, never code run, never a write
outside OUT (and the targets cache)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import save_tiny_dit, write_image_folder
from dmgd.cli import app
from dmgd.data.store import RunStore, StoreError, check_class_names

RECIPE = "t>=8: explore; 4..8: softlabel(bs=0.01, bn=0.06); 5..8: ot(K=2, rho=0.05..0.5)\nsteps = 10\n"


def _recipe(tmp_path: Path, text: str = RECIPE) -> str:
    path = tmp_path / "r.dmgd"
    path.write_text(text)
    return str(path)


def dmgd_run(tmp_path: Path, *args: str, recipe: str | None = None, out: Path | None = None):
    """`dmgd run` in-process; asserts the one thing every case shares: no traceback."""
    result = CliRunner().invoke(app, ["run", recipe or _recipe(tmp_path), "--out", str(out or tmp_path / "out"),
                                      *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def _error(tmp_path: Path, *args: str, **kw) -> str:
    code, output = dmgd_run(tmp_path, *args, **kw)
    assert code != 0, output
    assert "error" in output.lower(), output
    return " ".join(output.split())  # rich wraps long lines


def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under root: (mtime_ns, sha256)."""
    return {p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- recipes and --set


def test_a_recipe_cannot_run_code_it_names_only_paths_that_are_read(tiny_pixel_model, tmp_path):
    marker = tmp_path / "pwned"
    for setting in (f'model = "$(touch {marker})"', f'data = "`touch {marker}`"',
                    f'model = "__import__(\'os\').system(\'touch {marker}\')"'):
        out = _error(tmp_path, recipe=_recipe(tmp_path, RECIPE + setting + "\nipc = 1\n"))
        assert "does not exist" in out
        assert not marker.exists()
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_model_and_data_are_only_read_and_nothing_is_written_outside_out(tiny_latent_model, tmp_path):
    data = write_image_folder(tmp_path / "data", classes=3, per_class=3, size=16)
    watched = tmp_path / "watched"
    watched.mkdir()
    (watched / "model").symlink_to(tiny_latent_model)
    (watched / "data").symlink_to(data)
    recipe = _recipe(tmp_path)
    before_model, before_data = _snapshot(tiny_latent_model), _snapshot(data)
    before_dir = sorted(p.name for p in tmp_path.iterdir())
    code, output = dmgd_run(tmp_path, "--set", f"model={watched / 'model'}", "--set", f"data={watched / 'data'}",
                            "--set", "ipc=1", recipe=recipe)
    assert code == 0, output
    assert _snapshot(tiny_latent_model) == before_model and _snapshot(data) == before_data
    # new entries in tmp_path: OUT, and the isolated targets cache (conftest), nothing else
    assert sorted(set(p.name for p in tmp_path.iterdir()) - set(before_dir)) == ["dmgd-cache", "out"]
    assert sorted(p.name for p in watched.iterdir()) == ["data", "model"]


@pytest.mark.parametrize("setting, expected", [
    ("ipcc=3", "unknown setting `ipcc`"),
    ("ipc=-1", "ipc"),
    ("ipc=abc", "ipc"),
    ("seed=1e999", "seed"),
    ("=3", "expected `name=value`"),
    ("model=", "needs a value"),
    ("steps=0", "steps"),
    ("sampler=rm -rf /", "sampler"),
    ("ipc=3; model=x", "one `name=value`"),
])
def test_bad_settings_are_diagnostics_with_exit_status_2(tmp_path, setting, expected):
    code, output = dmgd_run(tmp_path, "--set", setting)
    assert code == 2, output
    assert expected in output and "<command line>" in output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["$(rm -rf {tmp})", "`rm -rf {tmp}`", "{tmp}; rm -rf {tmp}", "../../../../{tmp}x"])
def test_injection_looking_settings_are_just_strings(tmp_path, value):
    keep = tmp_path / "keep.txt"
    keep.write_text("still here")
    out = _error(tmp_path, "--set", "model=" + value.format(tmp=tmp_path))
    assert "does not exist" in out
    out = _error(tmp_path, "--set", "data=" + value.format(tmp=tmp_path), "--set", "ipc=1")
    assert keep.read_text() == "still here"


# --------------------------------------------------------------------------- data directories


def _data(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "data", classes=3, per_class=3, size=16)


def _run_on_data(tmp_path: Path, model: Path, data: Path, *args: str):
    return dmgd_run(tmp_path, "--set", f"model={model}", "--set", f"data={data}", "--set", "ipc=1", *args)


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header says width x height (a decompression bomb, without its data)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("case, expected", [
    ("truncated", "is not a readable image"),
    ("text_as_png", "is not a readable image"),
    ("not_an_image", "is not an image"),
    ("broken_symlink", "not a regular file"),
    ("fifo", "not a regular file"),
    ("huge", "DecompressionBomb"),
    ("empty_class", "has no images"),
    ("missing", "does not exist"),
    ("no_classes", "no class sub-directories"),
    ("link_loop", "is a link back to a folder that holds it"),
])
def test_bad_data_is_a_clear_error_naming_the_problem(tiny_latent_model, tmp_path, case, expected):
    data = _data(tmp_path)
    victim = data / "class_1" / "001.png"
    if case == "truncated":
        victim.write_bytes(victim.read_bytes()[:60])
    elif case == "text_as_png":
        victim.write_text("just some notes, renamed")
    elif case == "not_an_image":
        (data / "class_1" / "notes.txt").write_text("x")
    elif case == "broken_symlink":
        victim.unlink()
        victim.symlink_to(tmp_path / "gone.png")
    elif case == "fifo":  # (reading one would block forever)
        victim.unlink()
        os.mkfifo(victim)
    elif case == "huge":
        _png_header_only(victim, 20000, 20000)
    elif case == "empty_class":
        (data / "class_3").mkdir()
    elif case == "missing":
        data = tmp_path / "nowhere"
    elif case == "link_loop":  # os.walk(followlinks=True) alone would go round until the path is too long
        (data / "class_1" / "again").symlink_to("..")
    elif case == "no_classes":
        data = tmp_path / "flat"
        data.mkdir()
        (data / "a.png").write_bytes(victim.read_bytes())
    code, output = _run_on_data(tmp_path, tiny_latent_model, data)
    assert code == 1, output
    assert expected in " ".join(output.split())
    assert not (tmp_path / "out").exists()


def test_hidden_folders_in_a_class_are_not_read(tmp_path):
    from dmgd.data.images import load_image_folder

    data = _data(tmp_path)
    (data / "class_1" / ".thumbnails").mkdir()
    (data / "class_1" / ".thumbnails" / "001.png").write_bytes((data / "class_1" / "001.png").read_bytes())
    (data / "class_1" / ".thumbnails" / "notes.txt").write_text("not an image, not read")
    real = load_image_folder(data, image_size=16)
    assert real.class_counts() == (3, 3, 3)


def test_an_unreadable_file(tiny_latent_model, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root, which reads a chmod 000 file anyway; broken_symlink and fifo cover "
                    "entries that cannot be opened")
    data = _data(tmp_path)
    (data / "class_0" / "000.png").chmod(0)
    code, output = _run_on_data(tmp_path, tiny_latent_model, data)
    assert code == 1 and "Cannot read" in output


def test_grayscale_beside_rgb_is_converted(tiny_latent_model, tmp_path):
    """Documented: every image is converted to the model's channels (RGB here)."""
    data = _data(tmp_path)
    rgb = np.asarray(Image.open(data / "class_2" / "000.png"))
    Image.fromarray(rgb.mean(2).astype(np.uint8), "L").save(data / "class_2" / "000.png")
    code, output = _run_on_data(tmp_path, tiny_latent_model, data)
    assert code == 0, output


def test_class_names_that_would_leave_out_are_refused(tiny_latent_model, tmp_path):
    for bad in ("..", "../x", "a/b", "/etc", ".hidden", "latents", "", "a\nb", "x" * 200):
        with pytest.raises(StoreError, match="cannot be used as a directory name"):
            check_class_names(("ok", bad))
    with pytest.raises(StoreError, match="share one name"):
        check_class_names(("a", "a"))
    data = _data(tmp_path)
    (data / "class_2").rename(data / "-rf")
    out = " ".join(_run_on_data(tmp_path, tiny_latent_model, data)[1].split())
    assert "'-rf' cannot be used as a directory name" in out
    (data / "-rf").rename(data / "latents")
    out = " ".join(_run_on_data(tmp_path, tiny_latent_model, data)[1].split())
    assert "'latents' cannot be used" in out
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- model directories


def _model(tmp_path: Path) -> Path:
    return save_tiny_dit(tmp_path / "model")


class _Boom:
    """Unpickling this creates the marker file: a stand-in for a malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("case, expected", [
    ("no_config", "has no transformer/config.json"),
    ("no_weights", "has no weights"),
    ("pickle_only", "pickle"),
    ("wrong_shapes", "its weights do not fit its config.json: pos_embed.proj.weight"),
    ("bad_json", "cannot read"),
    ("not_a_dit", "not a class-conditional DiT"),
    ("a_file", "is a file"),
])
def test_bad_model_dirs_are_refused(tmp_path, case, expected):
    model = _model(tmp_path)
    t = model / "transformer"
    marker = tmp_path / "unpickled"
    if case == "no_config":
        (t / "config.json").unlink()
    elif case == "no_weights":
        (t / "diffusion_pytorch_model.safetensors").unlink()
    elif case == "pickle_only":
        (t / "diffusion_pytorch_model.safetensors").unlink()
        (t / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(_Boom(marker)))
    elif case == "wrong_shapes":
        config = json.loads((t / "config.json").read_text())
        config["attention_head_dim"] = 16
        (t / "config.json").write_text(json.dumps(config))
    elif case == "bad_json":
        (t / "config.json").write_text("{not json")
    elif case == "not_a_dit":
        config = json.loads((t / "config.json").read_text())
        config["num_embeds_ada_norm"] = None
        (t / "config.json").write_text(json.dumps(config))
    elif case == "a_file":
        model = tmp_path / "model.safetensors"
        model.write_bytes(b"x")
    code, output = dmgd_run(tmp_path, "--set", f"model={model}", "--set", "ipc=1")
    assert code == 1 and expected in " ".join(output.split())
    assert sum(line.startswith("error:") for line in output.splitlines()) == 1
    assert len(output) < 2000  # a message, not a dump (torch lists every mismatched tensor)
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_model_errors_are_dmgd_errors():
    from dmgd.errors import DmgdError
    from dmgd.sampling.backbones import BackboneError

    assert issubclass(BackboneError, DmgdError)


def test_a_pickle_beside_safetensors_is_never_opened(tmp_path):
    model = _model(tmp_path)
    marker = tmp_path / "unpickled"
    (model / "transformer" / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(_Boom(marker)))
    code, output = dmgd_run(tmp_path, "--set", f"model={model}", "--set", "ipc=1")
    assert code == 0, output
    assert not marker.exists()


# --------------------------------------------------------------------------- caches


def _cache_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "dmgd-cache").glob("targets-*.safetensors"))


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "stale_key", "other_model"])
def test_bad_target_caches_are_rebuilt_and_logged(tiny_pixel_model, tmp_path, caplog, damage):
    from dmgd.pipeline import run

    first = run(RECIPE, tmp_path / "first", model=str(tiny_pixel_model), ipc=1)
    files = _cache_files(tmp_path)
    assert files
    if damage == "corrupt":
        files[0].write_bytes(b"\0garbage" * 10)
    elif damage == "truncated":
        files[0].write_bytes(files[0].read_bytes()[:200])
    else:  # a valid cache file made for another key, put under this key's name
        other = save_tiny_dit(tmp_path / "other", seed=1) if damage == "other_model" else tiny_pixel_model
        run(RECIPE, tmp_path / "other-run", model=str(other), ipc=1, seed=7)
        newest = max(set(_cache_files(tmp_path)) - set(files), key=lambda p: p.stat().st_mtime_ns)
        files[0].write_bytes(newest.read_bytes())
    with caplog.at_level("WARNING", logger="dmgd.targets"):
        again = run(RECIPE, tmp_path / "again", model=str(tiny_pixel_model), ipc=1)
    assert "rebuilding" in caplog.text
    for name in first.class_names:  # the rebuilt targets give the same images
        assert first.images[name][0].read_bytes() == again.images[name][0].read_bytes()


def test_an_unwritable_cache_is_logged_and_the_run_goes_on(tiny_pixel_model, tmp_path, caplog):
    from dmgd.pipeline import run

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    with caplog.at_level("WARNING", logger="dmgd.targets"):
        result = run(RECIPE, tmp_path / "out", model=str(tiny_pixel_model), ipc=1, cache_dir=blocker)
    assert result.manifest["status"] == "complete" and "could not write the targets cache" in caplog.text


# --------------------------------------------------------------------------- OUT, the run's own files, the environment


def test_a_corrupt_manifest_or_latent_on_resume_is_a_clear_error(tiny_pixel_model, tmp_path):
    model = ("--set", f"model={tiny_pixel_model}", "--set", "ipc=2")
    assert dmgd_run(tmp_path, *model)[0] == 0
    latent = tmp_path / "out" / "3" / "0000.safetensors"
    latent.unlink()
    (tmp_path / "out" / "3" / "0000.png").unlink()
    (tmp_path / "out" / "3" / "0001.safetensors").write_bytes(b"garbage")
    out = _error(tmp_path, *model, "--resume")
    assert "0001.safetensors is unreadable" in out and "delete it" in out
    manifest = tmp_path / "out" / "manifest.json"
    manifest.write_text("{ half a manifest")
    out = _error(tmp_path, *model, "--resume")
    assert "manifest.json is not valid JSON" in out
    assert dmgd_run(tmp_path, *model, "--overwrite")[0] == 0  # --overwrite replaces even a corrupt run
    assert json.loads(manifest.read_text())["status"] == "complete"


def test_out_that_is_a_file_or_cannot_be_created(tiny_pixel_model, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = _error(tmp_path, "--set", f"model={tiny_pixel_model}", "--set", "ipc=1", out=blocker)
    assert "is a file, not a directory" in out
    out = _error(tmp_path, "--set", f"model={tiny_pixel_model}", "--set", "ipc=1", out=blocker / "sub")
    assert "Not a directory" in out and blocker.read_text() == "x"
    assert "loading the model" not in out  # OUT is checked first: nothing slow is done in vain
    assert "--resume" not in out  # nothing was started, so nothing to resume


@pytest.mark.parametrize("name, value, expected", [
    ("DMGD_THREADS", "many", "DMGD_THREADS"),
    ("DMGD_THREADS", "0", "DMGD_THREADS"),
    ("WORLD_SIZE", "two", "torchrun's environment"),
    ("RANK", "5", "do not make sense"),
])
def test_a_bad_environment_is_a_clear_error(tiny_pixel_model, tmp_path, monkeypatch, name, value, expected):
    monkeypatch.setenv(name, value)
    if name == "RANK":
        monkeypatch.setenv("WORLD_SIZE", "2")
    out = _error(tmp_path, "--set", f"model={tiny_pixel_model}", "--set", "ipc=1")
    assert expected in out


def test_stale_temporary_files_are_removed_on_resume(tiny_pixel_model, tmp_path, caplog):
    from dmgd.pipeline import run

    out = tmp_path / "out"
    run(RECIPE, out, model=str(tiny_pixel_model), ipc=1)
    stale = [out / "3" / ".0000.png.tmp-99999", out / "3" / ".0000.safetensors.tmp-99999",
             out / ".manifest.json.tmp-99999"]
    for path in stale:
        path.write_bytes(b"half")
    keep = out / "3" / "notes.tmp-1"  # not one of dmgd's temporary names: kept
    keep.write_text("mine")
    with caplog.at_level("WARNING", logger="dmgd.store"):
        run(RECIPE, out, model=str(tiny_pixel_model), ipc=1, resume=True)
    assert not any(p.exists() for p in stale) and keep.exists()
    assert "removed 3 temporary file(s)" in caplog.text
    assert RunStore(out, ()).read_manifest()["status"] == "complete"
