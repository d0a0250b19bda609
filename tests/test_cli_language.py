"""The language commands: dmgd check, fmt, explain, plot, terms."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dmgd.cli import app

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "recipes" / "dmgd.dmgd"
BAD = "stpes = 50\nt>=40: explore\n25..45: softlabel\n30..45: ot(K=0)\n"


@pytest.fixture
def runner():
    return CliRunner()


def write(tmp_path: Path, text: str, name: str = "r.dmgd") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# --- check ------------------------------------------------------------------------------


def test_check_clean_recipe_prints_its_identity(runner):
    result = runner.invoke(app, ["check", str(REFERENCE)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{REFERENCE}: ok sha256:")
    assert len(result.output.split("sha256:")[1].split()[0]) == 64


def test_check_reports_every_error_and_exits_1(runner, tmp_path):
    path = write(tmp_path, BAD)
    result = runner.invoke(app, ["check", path])
    assert result.exit_code == 1
    out = result.output
    assert f"{path}:1:1: error: unknown setting `stpes`" in out
    assert "did you mean `steps`?" in out
    assert f"{path}:3:9: error: two conditioning terms on one step" in out
    assert f"{path}:4:14: error: `K` = 0 is out of range: 1 <= K" in out
    assert "  4 | 30..45: ot(K=0)" in out
    assert f"{path}: 3 errors" in out
    assert "Traceback" not in out


def test_check_several_files(runner, tmp_path):
    bad = write(tmp_path, BAD)
    result = runner.invoke(app, ["check", str(REFERENCE), bad, str(ROOT / "recipes" / "mgd3.dmgd")])
    assert result.exit_code == 1
    assert result.output.count(": ok sha256:") == 2


def test_check_warnings_do_not_fail(runner, tmp_path):
    # A sigma window that holds at no step of the recipe's own run: a warning.
    path = write(tmp_path, "sigma 5000..6000: explore\n")
    result = runner.invoke(app, ["check", path])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "(1 warning)" in result.output


def test_check_json(runner, tmp_path):
    bad = write(tmp_path, BAD)
    result = runner.invoke(app, ["check", "--format", "json", str(REFERENCE), bad])
    assert result.exit_code == 1
    reports = json.loads(result.stdout)
    assert [r["ok"] for r in reports] == [True, False]
    assert reports[0]["identity"].startswith("sha256:") and reports[0]["diagnostics"] == []
    first = reports[1]["diagnostics"][0]
    assert (first["line"], first["column"], first["code"]) == (1, 1, "unknown-setting")


def test_check_missing_file(runner, tmp_path):
    result = runner.invoke(app, ["check", str(tmp_path / "nope.dmgd")])
    assert result.exit_code == 1
    assert "no such file" in result.output and "Traceback" not in result.output


def test_check_syntax_error(runner, tmp_path):
    path = write(tmp_path, "t>=45 explore\n")
    result = runner.invoke(app, ["check", path])
    assert result.exit_code == 1
    assert f"{path}:1:" in result.output and "error" in result.output


def test_check_not_utf8(runner, tmp_path):
    path = tmp_path / "latin1.dmgd"
    path.write_bytes(b"cfg = 4\n# caf\xe9\n")
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 1
    assert f"{path}:2:6: error: the file is not valid UTF-8" in result.output


def test_check_a_directory(runner, tmp_path):
    result = runner.invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 1 and "directory" in result.output


def test_check_stdin(runner):
    result = runner.invoke(app, ["check", "-"], input="*: refine\n")
    assert result.exit_code == 0 and result.output.startswith("<stdin>: ok sha256:")


def test_check_bad_format_is_a_usage_error(runner):
    result = runner.invoke(app, ["check", "--format", "xml", str(REFERENCE)])
    assert result.exit_code == 2


# --- fmt --------------------------------------------------------------------------------

UGLY = "steps=50;cfg=4.0 # the scale\nt>=45:explore\n25..45 : softlabel( bs=0.01,bn=0.06 )\n"


def test_fmt_rewrites_in_place_and_is_idempotent(runner, tmp_path):
    path = write(tmp_path, UGLY)
    result = runner.invoke(app, ["fmt", path])
    assert result.exit_code == 0, result.output
    assert f"reformatted {path}" in result.output
    formatted = Path(path).read_text(encoding="utf-8")
    assert formatted != UGLY and "# the scale" in formatted and "softlabel(bs=0.01, bn=0.06)" in formatted
    result = runner.invoke(app, ["fmt", "--check", path])
    assert result.exit_code == 0
    assert Path(path).read_text(encoding="utf-8") == formatted
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no temp file left


def test_fmt_keeps_the_file_mode(runner, tmp_path):
    path = write(tmp_path, UGLY)
    os.chmod(path, 0o640)
    assert runner.invoke(app, ["fmt", path]).exit_code == 0
    assert Path(path).read_text(encoding="utf-8") != UGLY
    assert os.stat(path).st_mode & 0o777 == 0o640


def test_fmt_check_says_which_files_would_change(runner, tmp_path):
    ugly = write(tmp_path, UGLY, "ugly.dmgd")
    clean = write(tmp_path, "t>=45: explore\n", "clean.dmgd")
    result = runner.invoke(app, ["fmt", "--check", ugly, clean])
    assert result.exit_code == 1
    assert f"would reformat {ugly}" in result.stdout and clean not in result.stdout
    assert Path(ugly).read_text(encoding="utf-8") == UGLY


def test_shipped_recipes_are_formatted(runner):
    result = runner.invoke(app, ["fmt", "--check", *map(str, sorted((ROOT / "recipes").glob("*.dmgd")))])
    assert result.exit_code == 0, result.output


def test_fmt_stdin_to_stdout(runner):
    result = runner.invoke(app, ["fmt", "-"], input="t>=45:explore\n")
    assert result.exit_code == 0
    assert result.stdout == "t>=45: explore\n"


def test_fmt_syntax_error_keeps_the_file(runner, tmp_path):
    path = write(tmp_path, "t>=45 explore\n")
    result = runner.invoke(app, ["fmt", path])
    assert result.exit_code == 1 and "error" in result.output
    assert Path(path).read_text(encoding="utf-8") == "t>=45 explore\n"


# --- explain, plot ----------------------------------------------------------------------


@pytest.fixture
def no_scheduler(monkeypatch):
    """explain without diffusers: the timestep and sigma columns show '-'."""
    import dmgd.cli as cli

    monkeypatch.setattr(cli, "_noise_for_explain", lambda: "auto")


def test_explain_table(runner, no_scheduler):
    result = runner.invoke(app, ["explain", str(REFERENCE), "--steps", "25"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "25 steps of ddpm on a 50-step recipe clock" in out
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert len(rows) == 25
    first = [c.strip() for c in rows[0].strip("│").split("│")]
    assert first[:3] == ["0", "24", "48"] and first[5].startswith("explore bn=0.06")
    third = [c.strip() for c in rows[2].strip("│").split("│")]
    assert third[5] == "softlabel bs=0.01 bn=0.06 lam=0"
    assert third[6] == "ot rho=0.05 K=10 eps=0.1 iters=5 grad=tweedie"
    last = [c.strip() for c in rows[-1].strip("│").split("│")]
    assert last[:3] == ["24", "0", "0"] and last[5] == "refine cfg=4 (default)" or last[5] == "refine cfg=4"


def test_explain_set_and_sampler(runner, no_scheduler):
    result = runner.invoke(app, ["explain", str(REFERENCE), "--set", "cfg=2.5", "--set", "steps=100",
                                 "--sampler", "ddim"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "100 steps of ddim on a 100-step recipe clock, cfg 2.5" in result.output


def test_explain_json(runner, no_scheduler):
    result = runner.invoke(app, ["explain", str(REFERENCE), "--format", "json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["num_steps"] == 50 and data["steps"][5]["energies"][0]["rho"] == 0.05


def test_explain_bad_set_is_a_usage_error(runner):
    result = runner.invoke(app, ["explain", str(REFERENCE), "--set", "ipc=zero", "--set", "stpes=3"])
    assert result.exit_code == 2
    assert "<command line>:1:5: error: setting `ipc` expects a whole number" in result.output
    assert "<command line>:2:1: error: unknown setting `stpes`" in result.output
    assert "Traceback" not in result.output


def test_explain_recipe_with_errors(runner, tmp_path):
    result = runner.invoke(app, ["explain", write(tmp_path, BAD)])
    assert result.exit_code == 1 and "unknown setting" in result.output


def test_explain_warns_about_a_window_empty_at_this_n(runner, tmp_path, no_scheduler):
    result = runner.invoke(app, ["explain", write(tmp_path, "26..29: explore\n"), "--steps", "10"])
    assert result.exit_code == 0
    assert "warning: window `26..29` holds at no step of this 10-step run" in result.output


def test_plot_writes_a_png(runner, tmp_path):
    out = tmp_path / "schedule.png"
    result = runner.invoke(app, ["plot", str(REFERENCE), "-o", str(out), "--steps", "25"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_missing_file(runner, tmp_path):
    result = runner.invoke(app, ["plot", str(tmp_path / "x.dmgd"), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "no such file" in result.output


# --- terms ------------------------------------------------------------------------------


def test_terms_lists_every_term_and_parameter(runner):
    result = runner.invoke(app, ["terms"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    out = result.output
    for name in ("explore", "softlabel", "refine", "uncond", "ot", "mean", "mode"):
        assert f"{name} (" in out
    assert "0..1 ramp" in out and "0 < eps" in out and "tweedie | full" in out and "the `cfg` setting" in out
    assert "Settings" in out and "ddpm | ddim | dpm | euler" in out


# --- processes: exit codes, and what the fast commands import -------------------------


def run_dmgd(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dmgd", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=1800, **kwargs)


def test_exit_codes_in_a_process(tmp_path):
    assert run_dmgd("check", "recipes/dmgd.dmgd").returncode == 0
    bad = run_dmgd("check", write(tmp_path, BAD))
    assert bad.returncode == 1 and "Traceback" not in bad.stderr + bad.stdout
    missing = run_dmgd("check", str(tmp_path / "missing.dmgd"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    usage = run_dmgd("explain", "recipes/dmgd.dmgd", "--set", "ipc")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


def test_check_fmt_and_terms_import_no_torch_or_diffusers(tmp_path):
    recipe = write(tmp_path, "steps = 50\n25..45: softlabel\n30..45: ot(rho=0.05..0.5)\n")
    script = textwrap.dedent(f"""
        import sys
        from typer.testing import CliRunner
        from dmgd.cli import app
        runner = CliRunner()
        for args in (["check", {recipe!r}], ["fmt", "--check", {recipe!r}], ["terms"],
                     ["check", "--format", "json", {recipe!r}]):
            result = runner.invoke(app, args)
            assert result.exit_code in (0, 1), (args, result.output)
        # (typer itself converts parameters through pydantic: a cost of the public API, measured
        # in benchmarks/language.py, not avoided through typer's internals)
        heavy = sorted(m for m in ("torch", "diffusers", "ot", "sklearn", "numpy", "matplotlib")
                       if m in sys.modules)
        print("HEAVY", heavy)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=1800,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
