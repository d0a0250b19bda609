"""Guidance terms from other packages (`dmgd.terms` entry points, docs/extending.md).

Every plugin here is a real distribution written to tmp_path at test time, a package
directory and a `*.dist-info` with METADATA and entry_points.txt, and put on sys.path (on
PYTHONPATH for the command line): nothing is installed. The `dmgd-pull` plugin is built
from docs/extending.md's own example, so the page's example is what is tested.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

import dmgd
from dmgd import RecipeError
from dmgd.guidance import (
    Kind, PluginError, PluginWarning, all_terms, get_term, plugin_problems, reload_plugins, term_package, unregister,
)

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "extending.md"
RECIPE_WITHOUT = "steps = 10\ncfg = 2.0\n\n*: refine\n"
RECIPE_WITH = RECIPE_WITHOUT + "1..6: pull(rho=1.0)\n"


def _doc_block(language: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 1, f"docs/extending.md should have one ```{language} block"
    return blocks[0]


def write_distribution(root: Path, name: str, entry_points: dict[str, str], modules: dict[str, str],
                       version: str = "0.1.0") -> Path:
    """A distribution as pip would leave it in site-packages, under `root`."""
    for relative, text in modules.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    lines = "".join(f"{term} = {value}\n" for term, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[dmgd.terms]\n{lines}", encoding="utf-8")
    return root


def write_pull_plugin(root: Path) -> Path:
    """docs/extending.md's dmgd-pull, from its pyproject.toml and module blocks."""
    project = tomllib.loads(_doc_block("toml"))["project"]
    return write_distribution(root, project["name"], project["entry-points"]["dmgd.terms"],
                              {"dmgd_pull/__init__.py": _doc_block("python")}, version=project["version"])


@contextlib.contextmanager
def on_sys_path(*roots: Path, reload: bool = True):
    """The plugins under `roots` loaded for the block (reload=False: only on the path);
    afterwards gone, modules included."""
    before = set(sys.modules)
    sys.path[:0] = [str(r) for r in roots]
    importlib.invalidate_caches()
    try:
        if reload:
            reload_plugins()
        yield
    finally:
        for r in roots:
            sys.path.remove(str(r))
        for name in set(sys.modules) - before:
            if name.startswith(("dmgd_pull", "plugin_")):
                del sys.modules[name]
        unregister("pull")  # (registered by a module itself, outside the entry points)
        reload_plugins()


def load(*roots: Path) -> contextlib.ExitStack:
    """The plugins loaded now (so that a test can catch the warnings of loading them), and
    unloaded when the returned stack closes."""
    stack = contextlib.ExitStack()
    stack.enter_context(on_sys_path(*roots))
    return stack


def dmgd_cli(*args: str, plugins: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(plugins)] * (plugins is not None) + [str(ROOT)])
    return subprocess.run([sys.executable, "-m", "dmgd", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=1800, env={**os.environ, "PYTHONPATH": path, "COLUMNS": "160"}, **kwargs)


def errors(recipe: str) -> list[str]:
    return [d.message for d in dmgd.check(recipe) if d.severity == "error"]


# --- a working plugin: docs/extending.md's example ------------------------------------------


def test_the_docs_example_registers_its_term_with_its_package(tmp_path):
    with load(write_pull_plugin(tmp_path / "site")):
        spec = get_term("pull")
        assert spec.kind is Kind.ENERGY and spec.param("rho").default == 0.01
        assert term_package("pull") == "dmgd-pull"
        assert {term_package(t.name) for t in all_terms() if t.name != "pull"} == {"dmgd"}
        assert plugin_problems() == ()
        assert errors(RECIPE_WITH) == []
        schedule = dmgd.compile(RECIPE_WITH)
        assert [[e.term for e in step.energies] for step in schedule.steps] == [[]] * 4 + [["pull"]] * 5 + [[]]
    assert get_term("pull") is None  # gone with its distribution


def _self_registering_source() -> str:
    """The docs example, calling `register` itself as it is imported."""
    source = _doc_block("python").replace("import GradientAt, Kind, ParamSpec, TermSpec",
                                           "import GradientAt, Kind, ParamSpec, TermSpec, register")
    return source.replace("PULL = TermSpec(", "PULL = register(TermSpec(") + ")\n"


def test_a_plugin_module_may_register_its_term_itself(tmp_path):
    source = _self_registering_source()
    site = write_distribution(tmp_path / "site", "dmgd-pull", {"pull": "plugin_pull:PULL"}, {"plugin_pull.py": source})
    with load(site):
        assert term_package("pull") == "dmgd-pull" and plugin_problems() == ()
        assert errors(RECIPE_WITH) == []


def test_a_self_registering_plugin_imported_before_the_entry_points_are_read(tmp_path):
    source = _self_registering_source()
    site = write_distribution(tmp_path / "site", "dmgd-pull", {"pull": "plugin_early:PULL"},
                              {"plugin_early.py": source})
    with on_sys_path(site, reload=False):
        importlib.import_module("plugin_early")  # registers `pull` under its module's name
        assert term_package("pull") == "plugin_early"
        assert reload_plugins() == () and term_package("pull") == "dmgd-pull"  # no clash with itself


def test_a_recipe_names_the_plugin_term_before_it_is_installed():
    assert "unknown term `pull`" in errors(RECIPE_WITH)


def test_check_explain_and_terms_use_the_plugin_without_importing_torch(tmp_path):
    site = write_pull_plugin(tmp_path / "site")
    recipe = tmp_path / "pull.dmgd"
    recipe.write_text(RECIPE_WITH, encoding="utf-8")
    terms = dmgd_cli("terms", plugins=site)
    assert terms.returncode == 0, terms.stderr
    assert "pull (energy, from dmgd-pull): L2 pull of x0 toward the class's mean latent" in terms.stdout
    assert "ot (energy, from dmgd)" in terms.stdout and "Plugin problems" not in terms.stdout
    explain = dmgd_cli("explain", str(recipe), plugins=site)
    assert explain.returncode == 0, explain.stderr
    assert explain.stdout.count("pull rho=1") == 5
    script = textwrap.dedent(f"""
        import sys
        from typer.testing import CliRunner
        from dmgd.cli import app
        result = CliRunner().invoke(app, ["check", {str(recipe)!r}])
        print(result.exit_code, result.output)
        print("HEAVY", sorted(m for m in ("torch", "diffusers", "ot", "numpy") if m in sys.modules))
    """)
    check = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=1800,
                           env={**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"})
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith(f"0 {recipe}: ok sha256:"), check.stdout
    assert "HEAVY []" in check.stdout


def _latents(out: Path) -> dict[str, list]:
    from safetensors.torch import load_file

    return {f"{p.parent.name}/{p.stem}": next(iter(load_file(p).values())) for p in sorted(out.glob("*/*.safetensors"))}


@pytest.mark.slow
def test_run_uses_the_plugin_energy_and_pulls_toward_the_class_mean(tmp_path):
    import torch
    from safetensors.torch import load_file

    site = write_pull_plugin(tmp_path / "site")
    recipe = tmp_path / "pull.dmgd"
    recipe.write_text(RECIPE_WITH, encoding="utf-8")
    run = dmgd_cli("run", str(recipe), "--out", str(tmp_path / "with"), "--set", "ipc=1", plugins=site)
    assert run.returncode == 0, run.stdout + run.stderr
    dmgd.run(RECIPE_WITHOUT, tmp_path / "without", ipc=1)
    pulled, plain = _latents(tmp_path / "with"), _latents(tmp_path / "without")
    assert pulled.keys() == plain.keys() and len(pulled) == 10
    manifest = json.loads((tmp_path / "with" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    means = load_file(manifest["targets"]["1"]["cache_path"])["points"][:, 0]  # [C, F]: each class's mean latent

    def distance(latents: dict) -> float:
        return sum(float(torch.linalg.vector_norm(x.flatten() - means[int(name.split("/")[0])]))
                   for name, x in latents.items()) / len(latents)

    assert all(not torch.equal(pulled[k], plain[k]) for k in pulled)
    assert distance(pulled) < 0.9 * distance(plain)


# --- broken plugins, clashes -----------------------------------------------------------------

BROKEN = {
    "import": ("import plugin_no_such_module\n", "ModuleNotFoundError: No module named 'plugin_no_such_module'"),
    "not-a-spec": ("WOBBLE = {'name': 'wobble'}\n", "TypeError: plugin_wobble:WOBBLE is a dict, not a"),
    "misnamed": (
        "from dmgd.guidance import Kind, TermSpec\n"
        "from dmgd.guidance.transport import TransportEnergy\n"
        "WOBBLE = TermSpec('wobbly', Kind.ENERGY, (), 'misnamed', impl=TransportEnergy(fixed_k=1))\n",
        "declares term 'wobbly', but its entry point is named 'wobble'",
    ),
    "contract": (
        "from dmgd.guidance import Kind, TermSpec\n"
        "class Half:\n    def strength(self, values):\n        return 1.0\n"
        "WOBBLE = TermSpec('wobble', Kind.ENERGY, (), 'half an energy', impl=Half())\n",
        "ContractError: term 'wobble' does not meet the EnergyTerm contract: no method gradient_at(values)",
    ),
}


def write_broken_plugin(root: Path, source: str) -> Path:
    return write_distribution(root, "dmgd-wobble", {"wobble": "plugin_wobble:WOBBLE"},
                              {"plugin_wobble.py": source})


@pytest.mark.parametrize("how", sorted(BROKEN))
def test_a_broken_plugin_is_reported_and_only_recipes_using_it_fail(tmp_path, how):
    source, error = BROKEN[how]
    site = write_broken_plugin(tmp_path / "site", source)
    with pytest.warns(PluginWarning, match=r"plugin `wobble` of package `dmgd-wobble` failed to load") as caught:
        stack = load(site)
    with stack:
        assert error in str(caught[0].message)
        assert [p.term for p in plugin_problems()] == ["wobble"] and error in plugin_problems()[0].error
        assert errors(RECIPE_WITHOUT + "2..9: mean(rho=0.1)\n") == []
        dmgd.compile(RECIPE_WITHOUT + "2..9: mean(rho=0.1)\n")
        [problem] = dmgd.check(RECIPE_WITHOUT + "2..9: wobble\n")
        assert problem.severity == "error" and problem.code == "plugin-error"
        assert re.fullmatch(r"term `wobble` comes from package `dmgd-wobble`, whose plugin failed to load: .*"
                            r"Fix or uninstall `dmgd-wobble` \(`dmgd terms` lists plugin problems\)", problem.message)
        assert (problem.span.line, problem.span.column) == (5, 7)  # the term's name, where the user looks
        with pytest.raises(RecipeError, match="whose plugin failed to load"):
            dmgd.compile(RECIPE_WITHOUT + "2..9: wobble\n")
        with pytest.raises(PluginError, match="whose plugin failed to load"):
            get_term("wobble")  # the Python API's contract for callers outside the language


def test_the_command_line_reports_a_broken_plugin_and_runs_the_rest(tmp_path):
    site = write_broken_plugin(tmp_path / "site", BROKEN["import"][0])
    good, bad = tmp_path / "good.dmgd", tmp_path / "bad.dmgd"
    good.write_text(RECIPE_WITHOUT, encoding="utf-8")
    bad.write_text(RECIPE_WITHOUT + "2..9: wobble(rho=1.0)\n", encoding="utf-8")
    check = dmgd_cli("check", str(good), str(bad), plugins=site)
    assert check.returncode == 1
    assert check.stderr.startswith("warning: plugin `wobble` of package `dmgd-wobble` failed to load "
                                   "(ModuleNotFoundError: No module named 'plugin_no_such_module')"), check.stderr
    assert check.stderr.count("warning:") == 1 and "Traceback" not in check.stdout + check.stderr
    assert f"{good}: ok sha256:" in check.stdout
    assert f"{bad}:5:7: error: term `wobble` comes from package `dmgd-wobble`, whose plugin failed to load" \
        in check.stdout
    explain = dmgd_cli("explain", str(bad), plugins=site)
    assert explain.returncode == 1 and "whose plugin failed to load" in explain.stderr
    assert "Traceback" not in explain.stderr
    terms = dmgd_cli("terms", plugins=site)
    assert terms.returncode == 0
    assert "Plugin problems" in terms.stdout and "plugin `wobble` of package `dmgd-wobble` failed" in terms.stdout


def test_two_packages_declaring_one_term_is_an_error_naming_both(tmp_path):
    first = write_pull_plugin(tmp_path / "first")
    second = write_distribution(tmp_path / "second", "other-pull", {"pull": "plugin_other:PULL"},
                                {"plugin_other.py": _doc_block("python")})
    with pytest.warns(PluginWarning, match="term `pull` is declared by packages `dmgd-pull` and `other-pull`"):
        stack = load(first, second)
    with stack:
        assert [p.packages for p in plugin_problems()] == [("dmgd-pull", "other-pull")]
        assert errors(RECIPE_WITHOUT) == []
        with pytest.raises(RecipeError, match="declared by packages `dmgd-pull` and `other-pull`: uninstall"):
            dmgd.compile(RECIPE_WITH)
        assert "plugin_other" not in sys.modules  # a clash is found from the metadata alone


def test_a_plugin_cannot_take_a_built_in_name(tmp_path):
    site = write_distribution(tmp_path / "site", "dmgd-ot", {"ot": "plugin_ot:OT"},
                              {"plugin_ot.py": _doc_block("python").replace('name="pull"', 'name="ot"')
                               .replace("PULL =", "OT =")})
    with pytest.warns(PluginWarning, match="term `ot` is declared by packages `dmgd` and `dmgd-ot`"):
        stack = load(site)
    with stack:
        assert errors(RECIPE_WITHOUT + "2..9: mean\n") == []
        assert errors(RECIPE_WITHOUT + "2..9: ot\n") == [
            "term `ot` is declared by packages `dmgd` and `dmgd-ot`: uninstall all but one of them "
            "(or ask its authors to rename the term)"]
    assert get_term("ot").impl.__module__ == "dmgd.guidance.transport" and plugin_problems() == ()
