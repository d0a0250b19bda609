"""The compiler: compiled tables pinned by hand-computed values.

Every expected number below was worked out by hand from the spec (tau = i*steps/N, the
window rules, p = k/(n-1), the ramp formulas), not recomputed with the compiler's code.
"""

from __future__ import annotations

import math

import pytest

from dmgd.language.compiler import compile_schedule
from dmgd.language.diagnostics import RecipeError
from dmgd.language.parser import parse_recipe
from dmgd.language.schedule import NoiseLevels
from language_helpers import ONE_LINE, REFERENCE

ONE_LINE_FILE = ONE_LINE + "\n"  # the one-line form as a file ends: with a newline


def compile_text(text: str, **kwargs):
    return compile_schedule(parse_recipe(text, "<test>"), **kwargs)


def by_i(schedule):
    return {s.i: s for s in schedule.steps}


def terms_by_i(schedule):
    return {s.i: s.conditioning.term for s in schedule.steps}


def holds(window: str, *, steps: int = 50, n: int | None = None) -> list[int]:
    """The run steps i (N-1 first) at which `window` conditions with explore."""
    sched = compile_text(f"steps = {steps}\n{window}: explore\n", steps=n)
    return [s.i for s in sched.steps if s.conditioning.term == "explore"]


# --- the reference recipe at N = 50, 25, 100 -------------------------------------------


def test_reference_at_50_steps():
    sched = compile_text(REFERENCE)
    assert sched.num_steps == 50 and len(sched) == 50
    steps = list(sched.steps)
    # Sampling order: index 0 is i = 49, the noisiest.
    assert [(s.index, s.i, s.tau) for s in steps[:3]] == [(0, 49, 49.0), (1, 48, 48.0), (2, 47, 47.0)]
    assert (steps[-1].index, steps[-1].i, steps[-1].tau) == (49, 0, 0.0)
    expected = ["explore"] * 5 + ["softlabel"] * 20 + ["refine"] * 25  # i = 49..45, 44..25, 24..0
    assert [s.conditioning.term for s in steps] == expected
    assert [s.conditioning.rule for s in steps] == [0] * 5 + [1] * 20 + [2] * 25
    s = by_i(sched)
    # lam: 0 -> 1 over the 20 softlabel steps, k = 44 - i, lam = k/19.
    assert s[44].conditioning["lam"] == 0.0
    assert s[40].conditioning["lam"] == pytest.approx(4 / 19)  # 0.210526...
    assert s[35].conditioning["lam"] == pytest.approx(0.47368421052631576)  # 9/19
    assert s[25].conditioning["lam"] == 1.0
    assert s[44].conditioning.as_dict() == {"bs": 0.01, "bn": 0.06, "lam": 0.0, "null": "keep"}
    assert s[47].conditioning.as_dict() == {"bn": 0.06, "null": "keep"}
    assert s[10].conditioning.as_dict() == {"cfg": 4.0}
    # ot on i = 44..30 (15 steps), rho = 0.05 + 0.45 * k/14.
    with_ot = [i for i in range(50) if s[i].energies]
    assert with_ot == list(range(30, 45))
    assert s[44].energies[0]["rho"] == 0.05
    assert s[37].energies[0]["rho"] == pytest.approx(0.275)  # the middle, k = 7
    assert s[30].energies[0]["rho"] == 0.5
    assert s[44].energies[0].progress == 0.0 and s[30].energies[0].progress == 1.0
    assert s[37].energies[0].progress == 0.5
    ot = s[40].energies[0]
    assert ot.term == "ot" and ot.rule == 3
    assert ot.as_dict() == {"K": 10, "rho": pytest.approx(0.05 + 0.45 * 4 / 14), "eps": 0.1, "iters": 5,
                            "grad": "tweedie", "units": "grad"}
    assert isinstance(ot["K"], int) and isinstance(ot["iters"], int) and isinstance(ot["grad"], str)
    assert s[45].energies == () and s[29].energies == ()


def test_reference_at_25_steps():
    sched = compile_text(REFERENCE, steps=25)
    assert sched.num_steps == 25 and sched.settings.steps == 50
    s = by_i(sched)
    # tau = 2i: 48, 46, ..., 0.
    assert [st.tau for st in sched.steps][:4] == [48.0, 46.0, 44.0, 42.0]
    assert {i: st.conditioning.term for i, st in s.items()} == {
        **{i: "explore" for i in (24, 23)},  # tau 48, 46
        **{i: "softlabel" for i in range(13, 23)},  # tau 44..26: 10 steps
        **{i: "refine" for i in range(0, 13)},  # tau 24..0: 13 steps
    }
    assert s[22].conditioning["lam"] == 0.0
    assert s[18].conditioning["lam"] == pytest.approx(0.4444444444444444)  # 4/9
    assert s[13].conditioning["lam"] == 1.0
    # ot: tau 44..30 -> i = 22..15, 8 steps, rho = 0.05 + 0.45 k/7.
    assert [i for i in range(25) if s[i].energies] == list(range(15, 23))
    assert s[22].energies[0]["rho"] == 0.05
    assert s[19].energies[0]["rho"] == pytest.approx(0.24285714285714285)  # k = 3
    assert s[18].energies[0]["rho"] == pytest.approx(0.3071428571428571)  # k = 4
    assert s[15].energies[0]["rho"] == 0.5


def test_reference_at_100_steps():
    sched = compile_text(REFERENCE, steps=100)
    s = by_i(sched)
    assert s[99].tau == 49.5 and s[90].tau == 45.0 and s[89].tau == 44.5
    terms = terms_by_i(sched)
    assert [i for i in range(100) if terms[i] == "explore"] == list(range(90, 100))
    assert [i for i in range(100) if terms[i] == "softlabel"] == list(range(50, 90))
    assert [i for i in range(100) if terms[i] == "refine"] == list(range(0, 50))
    assert s[76].conditioning["lam"] == pytest.approx(1 / 3)  # k = 13 of 40: 13/39
    assert [i for i in range(100) if s[i].energies] == list(range(60, 90))  # 30 steps
    assert s[89].energies[0]["rho"] == 0.05
    assert s[75].energies[0]["rho"] == pytest.approx(0.2672413793103448)  # k = 14: 0.05 + 0.45*14/29
    assert s[60].energies[0]["rho"] == 0.5


def test_multi_line_and_one_line_forms_compile_to_the_same_schedule():
    a = compile_text(REFERENCE)
    b = compile_text(ONE_LINE_FILE)
    assert a.steps == b.steps
    assert a.settings == b.settings
    for n in (10, 25, 37, 100):
        a, b = compile_text(REFERENCE, steps=n), compile_text(ONE_LINE_FILE, steps=n)
        assert [(s.conditioning.term, s.conditioning.values, [e.values for e in s.energies]) for s in a.steps] == \
               [(s.conditioning.term, s.conditioning.values, [e.values for e in s.energies]) for s in b.steps]
    # The implicit refine of the one-line form carries rule None, the explicit one rule 2.
    assert b.steps[-1].conditioning.rule is None and a.steps[-1].conditioning.rule == 2


# --- windows at their boundaries ------------------------------------------------------


def test_half_open_range():
    assert holds("25..45") == list(range(44, 24, -1))  # 25 and 44 in, 24 and 45 out


def test_inclusive_range():
    assert holds("25..=45") == list(range(45, 24, -1))


def test_one_sided_windows():
    assert holds("t>=45") == [49, 48, 47, 46, 45]
    assert holds("t>45") == [49, 48, 47, 46]
    assert holds("t<=3") == [3, 2, 1, 0]
    assert holds("t<3") == [2, 1, 0]
    assert holds("*") == list(range(49, -1, -1))


def test_percent_windows():
    assert holds("90%..100%") == [49, 48, 47, 46, 45]  # 90% of 50 = 45
    assert holds("t>=90%") == [49, 48, 47, 46, 45]
    assert holds("t<10%") == [4, 3, 2, 1, 0]
    assert holds("t>=95%", steps=30) == [29]  # 95% of 30 = 28.5
    assert holds("0%..=50%", steps=10) == [5, 4, 3, 2, 1, 0]


def test_windows_at_another_number_of_steps_are_exact():
    # N = 30 on a 50-step clock: tau = 5i/3; i = 27 is exactly 45.
    assert holds("t>=45", n=30) == [29, 28, 27]
    assert holds("25..45", n=30) == [26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15]  # tau 43.3..25
    # 90% of 50 = 45 exactly, whatever float 0.9*50 rounds to.
    assert holds("t>=90%", n=30) == [29, 28, 27]


NOISE = NoiseLevels(timesteps=(999.0, 874.0, 749.0, 624.0, 499.0, 374.0, 249.0, 124.0),
                    sigmas=(10.0, 8.0, 6.0, 4.0, 2.0, 1.0, 0.5, 0.25))


def test_sigma_window_is_inclusive_at_both_ends():
    sched = compile_text("steps = 8\nsigma 1..6: explore\n", noise=NOISE)
    assert [s.conditioning.term for s in sched.steps] == ["refine", "refine", "explore", "explore", "explore",
                                                          "explore", "refine", "refine"]
    assert [s.sigma for s in sched.steps] == list(NOISE.sigmas)
    assert [s.timestep for s in sched.steps] == list(NOISE.timesteps)


def test_sigma_window_ramp_and_mixing_with_clock_windows():
    sched = compile_text("steps = 8\nsigma 0.5..4: softlabel\nt>=6: explore\nsigma 2..8: mode(rho=0.1..0.4)\n",
                         noise=NOISE)
    assert [s.conditioning.term for s in sched.steps] == ["explore", "explore", "refine", "softlabel",
                                                          "softlabel", "softlabel", "softlabel", "refine"]
    assert [s.conditioning["lam"] for s in sched.steps[3:7]] == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    rhos = [s.energies[0]["rho"] if s.energies else None for s in sched.steps]
    assert rhos == pytest.approx([None, 0.1, 0.2, 0.3, 0.4, None, None, None])  # sigma 8, 6, 4, 2


def test_sigma_window_needs_noise_levels():
    with pytest.raises(ValueError, match="sigma window"):
        compile_text("sigma 1..6: explore\n")


def test_noise_levels_must_cover_the_run():
    with pytest.raises(ValueError, match="8 steps"):
        compile_text("steps = 8\n*: refine\n", steps=4, noise=NOISE)


def test_sigma_windows_that_share_a_run_step_are_an_error():
    with pytest.raises(RecipeError) as info:
        compile_text("steps = 8\nsigma 1..6: explore\nt<3: softlabel\n", noise=NOISE)
    (d,) = info.value.diagnostics
    assert d.code == "conditioning-overlap"
    # i = 2 is sigma 1 (index 5): the one step both hold.
    assert "run step i = 2 (1 step)" in d.message and (d.span.line, d.span.column) == (3, 6)


# --- ramps ------------------------------------------------------------------------------


def ramp_values(value: str, *, n: int | None = None, window: str = "0..5") -> list[float]:
    sched = compile_text(f"steps = 10\n{window}: mode(rho={value})\n", steps=n)
    return [s.energies[0]["rho"] for s in sched.steps if s.energies]


def test_linear_ramp():
    assert ramp_values("0.1..0.5") == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert ramp_values("0.5..0.1") == pytest.approx([0.5, 0.4, 0.3, 0.2, 0.1])


def test_cos_ramp():
    v = ramp_values("cos(0.1..0.5)")
    assert v[0] == 0.1 and v[4] == 0.5
    assert v[2] == pytest.approx(0.3)  # half way: (1 - cos(pi/2))/2 = 1/2
    assert v[1] == pytest.approx(0.15857864376269049)  # 0.1 + 0.4 * (1 - cos(pi/4)) / 2
    assert v[3] == pytest.approx(0.44142135623730953)


def test_exp_ramp():
    v = ramp_values("exp(0.1..0.4)")
    assert v[0] == 0.1 and v[4] == 0.4
    assert v[2] == pytest.approx(0.2)  # geometric mean
    assert v[1] == pytest.approx(0.1414213562373095)  # 0.1 * 4**0.25


def test_ramp_progress_is_over_the_window_at_the_runs_n():
    # 0..5 on a 10-step clock at N = 20: tau = i/2 < 5 for i = 9..0, ten steps.
    v = ramp_values("0.1..1.0", n=20)
    assert len(v) == 10
    assert v == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    # A window of one step has progress 0: the ramp's first value.
    assert ramp_values("0.2..0.9", window="3..4") == [0.2]


def test_term_use_progress():
    sched = compile_text("steps = 10\n0..5: mode(rho=0.1..0.5)\n")
    assert [s.energies[0].progress for s in sched.steps if s.energies] == [0.0, 0.25, 0.5, 0.75, 1.0]
    # The implicit refine: its window is the steps no conditioning rule holds at (all ten).
    assert [s.conditioning.progress for s in sched.steps] == pytest.approx([k / 9 for k in range(10)])


def test_ramp_default_over_the_window():
    sched = compile_text("steps = 10\n0..5: softlabel\n")
    assert [s.conditioning["lam"] for s in sched.steps if s.conditioning.term == "softlabel"] == \
           pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    # A default ramp works on an open window too (the user wrote no ramp).
    sched = compile_text("steps = 10\nt>=6: softlabel\n")
    assert [s.conditioning["lam"] for s in sched.steps if s.conditioning.term == "softlabel"] == \
           pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])


# --- values and settings ----------------------------------------------------------------


def test_value_types():
    sched = compile_text("*: explore(null=same); *: ot(K=3, iters=7, grad=full, eps=1e-3, rho=50%)\n")
    s = sched.steps[0]
    assert s.conditioning.as_dict() == {"bn": 0.06, "null": "same"}
    ot = s.energies[0].as_dict()
    assert ot == {"K": 3, "rho": 0.5, "eps": 0.001, "iters": 7, "grad": "full", "units": "grad"}
    assert type(ot["K"]) is int and type(ot["iters"]) is int and type(ot["rho"]) is float


def test_refine_cfg_comes_from_the_setting():
    sched = compile_text("cfg = 3.5\nt>=25: refine(cfg=2)\n")
    s = by_i(sched)
    assert s[30].conditioning["cfg"] == 2.0
    assert s[10].conditioning["cfg"] == 3.5 and s[10].conditioning.rule is None
    sched = compile_text("cfg = 3.5\n", overrides={"cfg": 7})
    assert sched.steps[0].conditioning["cfg"] == 7.0


def test_energies_in_rule_order():
    sched = compile_text("0..10: mode\n5..20: ot; 0..30: mean(rho=0.2)\n")
    s = by_i(sched)
    assert [e.term for e in s[7].energies] == ["mode", "ot", "mean"]
    assert [e.rule for e in s[7].energies] == [0, 1, 2]
    assert [e.term for e in s[12].energies] == ["ot", "mean"]


def test_settings_resolution_recipe_then_overrides_then_defaults():
    sched = compile_text("ipc = 20\nsampler = ddim\nseed = 3\n", overrides={"ipc": 50}, sampler="euler")
    st = sched.settings
    assert (st.ipc, st.sampler, st.seed, st.cfg, st.matching, st.steps) == (50, "euler", 3, 4.0, "greedy", 50)
    assert compile_text("model = \"a/b\"\n").settings.model == "a/b"


def test_overriding_the_clock_moves_the_windows():
    sched = compile_text("steps = 50\nt>=45: explore\n", overrides={"steps": 100})
    assert sched.num_steps == 100 and sched.settings.steps == 100
    assert [s.i for s in sched.steps if s.conditioning.term == "explore"] == list(range(99, 44, -1))


def test_bad_overrides_raise_recipe_error_at_the_command_line():
    with pytest.raises(RecipeError) as info:
        compile_text("*: refine\n", overrides={"ipc": 0, "samplr": "ddim"})
    assert info.value.path == "<command line>"
    assert {d.code for d in info.value.diagnostics} == {"out-of-range", "unknown-setting"}


def test_empty_window_at_the_runs_n_is_a_warning():
    # N = 10 on a 50 clock: tau = 5i; nothing lands in [26, 29).
    sched = compile_text("26..29: explore\n", steps=10)
    assert all(s.conditioning.term == "refine" for s in sched.steps)
    (w,) = sched.warnings
    assert w.severity == "warning" and w.code == "empty-window-at-run"
    assert (w.span.line, w.span.column) == (1, 1) and "10-step run" in w.message
    assert compile_text("26..29: explore\n").warnings == ()


def test_errors_raise_with_every_diagnostic():
    with pytest.raises(RecipeError) as info:
        compile_text("stpes = 5\n45..45: explor\n*: ot(K=0)\n")
    codes = [d.code for d in info.value.diagnostics]
    assert codes == ["unknown-setting", "empty-window", "unknown-term", "out-of-range"]
    assert info.value.path == "<test>"


def test_schedule_hash_and_dict():
    sched = compile_text(REFERENCE)
    assert len(sched.recipe_hash) == 64
    assert compile_text(REFERENCE.replace("# DMGD", "# another comment")).recipe_hash == sched.recipe_hash
    d = sched.to_dict()
    assert d["num_steps"] == 50 and d["steps"][0]["conditioning"]["term"] == "explore"
    assert math.isclose(d["steps"][10]["energies"][0]["rho"], 0.05 + 0.45 * 5 / 14)


# --- the public API: dmgd.parse, check, compile, format ------------------------------------

from pathlib import Path  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import dmgd  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def test_api_from_a_path_or_text():
    path = ROOT / "recipes" / "dmgd.dmgd"
    from_path = dmgd.compile(path, steps=25)
    from_str_path = dmgd.compile(str(path), steps=25)
    from_text = dmgd.compile(REFERENCE, steps=25)
    assert from_path == from_str_path
    assert from_path.steps == from_text.steps
    assert dmgd.parse(str(path)).path == str(path)
    assert dmgd.parse(REFERENCE).path == "<recipe>"
    assert dmgd.check(path) == [] and dmgd.check(REFERENCE) == []
    assert dmgd.format("t>=45:explore\n") == "t>=45: explore\n"


def test_api_check_returns_diagnostics_and_never_raises(tmp_path):
    assert [d.code for d in dmgd.check("stpes = 5\n")] == ["unknown-setting"]
    assert dmgd.check("t>=45 explore\n")[0].code == "syntax"
    (d,) = dmgd.check(tmp_path / "missing.dmgd")
    assert d.code == "io" and "no such file" in d.message


def test_api_compile_raises_recipe_error():
    with pytest.raises(dmgd.RecipeError) as info:
        dmgd.compile("*: ot(K=0)\n")
    assert info.value.diagnostics[0].code == "out-of-range"


def test_api_overrides_as_set_strings_or_a_dict():
    a = dmgd.compile(REFERENCE, overrides=["ipc=50", "sampler=ddim"])
    b = dmgd.compile(REFERENCE, overrides={"ipc": 50, "sampler": "ddim"})
    assert a == b and a.settings.ipc == 50 and a.settings.sampler == "ddim"
    with pytest.raises(dmgd.RecipeError) as info:
        dmgd.compile(REFERENCE, overrides=["ipc=0"])
    assert info.value.path == "<command line>"


def test_api_noise_levels():
    sched = dmgd.compile("steps = 8\nsigma 1..6: explore\n", noise=NOISE)
    assert [s.conditioning.term for s in sched.steps][2:6] == ["explore"] * 4
    assert dmgd.compile(REFERENCE, noise=None).steps[0].timestep is None
    with pytest.raises(ValueError):
        dmgd.compile(REFERENCE, noise="sometimes")


def test_reading_files_gives_diagnostics(tmp_path):
    with pytest.raises(dmgd.RecipeError) as info:
        dmgd.parse(tmp_path / "nope.dmgd")
    assert info.value.diagnostics[0].code == "io"
    bad = tmp_path / "bad.dmgd"
    bad.write_bytes(b"steps = 50\ncfg = 4 # \xff\n")
    with pytest.raises(dmgd.RecipeError) as info:
        dmgd.parse(bad)
    (d,) = info.value.diagnostics
    assert d.code == "encoding" and (d.span.line, d.span.column) == (2, 11)
    bom = tmp_path / "bom.dmgd"
    bom.write_bytes(b"\xef\xbb\xbfcfg = 4\n")
    assert dmgd.compile(bom).settings.cfg == 4.0
    with pytest.raises(dmgd.RecipeError) as info:
        dmgd.parse(tmp_path)
    assert "directory" in info.value.diagnostics[0].message


def test_import_dmgd_is_cheap_and_compile_without_sigma_windows_stays_light():
    script = (
        "import sys, dmgd\n"
        "assert 'torch' not in sys.modules and 'lark' not in sys.modules\n"
        f"s = dmgd.compile({str(ROOT / 'recipes' / 'dmgd.dmgd')!r}, steps=25)\n"
        "assert s.steps[0].timestep is None\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'numpy') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=1800)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_api_resolves_noise_levels_from_the_sampler():
    pytest.importorskip("diffusers")
    sched = dmgd.compile(REFERENCE, steps=25, noise="always")
    assert all(s.timestep is not None and s.sigma is not None for s in sched.steps)
    sigmas = [s.sigma for s in sched.steps]
    assert sigmas == sorted(sigmas, reverse=True)  # noisiest first
    # "auto" resolves them for a sigma window: the windows then follow the noise.
    sched = dmgd.compile("sigma 1..10: explore\n", steps=25)
    assert {s.conditioning.term for s in sched.steps if 1 <= s.sigma <= 10} == {"explore"}
    assert {s.conditioning.term for s in sched.steps if not 1 <= s.sigma <= 10} == {"refine"}
