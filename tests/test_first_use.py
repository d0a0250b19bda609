"""What a new user meets first: messages in the interface they use, checks before the slow
part, one message per failure, plain progress labels, named files, recorded conversions."""

from __future__ import annotations

import json
import logging
import pydoc

import pytest
from typer.testing import CliRunner

import dmgd
from conftest import write_image_folder
from dmgd.cli import app, batch_label
from dmgd.data.store import StoreError
from dmgd.pipeline import Reporter, run

RECIPE = "t>=8: explore; 4..8: softlabel(bs=0.01, bn=0.06); 5..8: ot(K=3, rho=0.05..0.5)\nsteps = 10\n"


class Stages(Reporter):
    def __init__(self) -> None:
        self.stages: list[str] = []

    def stage(self, text: str) -> None:
        self.stages.append(text)


def _cli(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "300", "NO_COLOR": "1"})


def test_python_callers_are_told_the_python_spelling(tiny_pixel_model, tmp_path):
    out = run(RECIPE, tmp_path / "out", model=str(tiny_pixel_model), ipc=1).out
    with pytest.raises(StoreError) as refused:
        run(RECIPE, out, model=str(tiny_pixel_model), ipc=1)
    assert "resume=True" in str(refused.value) and "overwrite=True" in str(refused.value)
    assert "--" not in str(refused.value)


def test_resume_with_other_settings_is_refused_before_the_model_is_loaded(tiny_pixel_model, tmp_path):
    out = run(RECIPE, tmp_path / "out", model=str(tiny_pixel_model), ipc=1).out
    reporter = Stages()
    with pytest.raises(StoreError, match=r"other settings \(seed = 0, now 3\)"):
        run(RECIPE, out, model=str(tiny_pixel_model), ipc=1, seed=3, resume=True, reporter=reporter)
    assert reporter.stages == []  # nothing loaded, nothing read
    reporter = Stages()
    with pytest.raises(StoreError, match="another recipe"):
        run(RECIPE.replace("rho=0.05..0.5", "rho=0.1"), out, model=str(tiny_pixel_model), ipc=1, resume=True,
            reporter=reporter)
    assert reporter.stages == []


def test_a_refused_resume_prints_one_message_in_cli_spelling(tiny_pixel_model, tmp_path):
    recipe = tmp_path / "r.dmgd"
    recipe.write_text(RECIPE)
    out = tmp_path / "out"
    assert _cli("run", str(recipe), "--out", str(out), "--set", f"model={tiny_pixel_model}",
                "--set", "ipc=1").exit_code == 0
    refused = _cli("run", str(recipe), "--out", str(out), "--set", f"model={tiny_pixel_model}",
                   "--set", "ipc=2", "--resume")
    assert refused.exit_code == 1
    assert "cannot resume" in refused.output and "--overwrite" in refused.output
    assert "rerun with --resume" not in refused.output and "loading the model" not in refused.output
    assert refused.output.count("error:") == 1
    with pytest.raises(StoreError, match="overwrite=True"):  # the command's spelling ended with it
        run(RECIPE, out, model=str(tiny_pixel_model), ipc=2, resume=True)


def test_progress_label_reads_plainly():
    assert batch_label(["5", "6", "7", "8", "9"], range(9, 10), 10) == "sample 10/10 · classes 5-9 · step"
    assert batch_label(["3"], range(10), 10) == "samples 1-10/10 · class 3 · step"


def test_a_corrupt_image_is_named_without_object_reprs(tmp_path):
    from dmgd.data.images import DataError, load_image_folder

    data = write_image_folder(tmp_path / "data", classes=2, per_class=2, size=8)
    (data / "class_1" / "001.png").write_bytes(b"definitely not a png")
    with pytest.raises(DataError) as error:
        load_image_folder(data)
    message = str(error.value)
    assert "class_1/001.png is not a readable image" in message
    assert "0x" not in message and "BytesIO" not in message


def test_images_of_another_size_and_mode_are_converted_said_once_and_recorded(tiny_pixel_model, tmp_path, caplog):
    data = write_image_folder(tmp_path / "data", classes=10, per_class=3, size=28, mode="RGB")
    with caplog.at_level(logging.WARNING, logger="dmgd.data"):
        result = run(RECIPE, tmp_path / "out", model=str(tiny_pixel_model), data=str(data), ipc=1)
    said = [r.getMessage() for r in caplog.records if "converted" in r.getMessage()]
    assert len(said) == 1 and "30 of 30 images RGB -> L" in said[0] and "28x28 -> 8x8" in said[0]
    record = json.loads(result.manifest_path.read_text())["data"]["conversions"]
    assert record == {"RGB -> L": 30, "28x28 -> 8x8": 30}


def test_check_shows_every_diagnostic_and_names_the_sigma_range(tmp_path):
    text = "steps = 50\nt>=45: explore\nsigma 1000..2000: ot(K=10)\n25..45: softlabel(bogus=1)\n"
    found = dmgd.check(text)
    assert [d.severity for d in found] == ["warning", "error"]
    assert "sigma spans 0.01..157.4" in found[0].help


def test_help_of_the_package_is_a_short_guide():
    text = pydoc.render_doc(dmgd, renderer=pydoc.plaintext)
    assert len(text.splitlines()) < 150
    assert "dmgd.run(" in text and "resume=True" in text
