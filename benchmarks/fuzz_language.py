#!/usr/bin/env python
"""Fuzz the recipe language: nothing but `RecipeError` may ever come out of it.

    .venv/bin/python benchmarks/fuzz_language.py [--n 100000] [--seed 0] [--jobs 2]

Inputs, each made from (seed, index) alone, so a run is reproducible and any input can
be made again with `--only INDEX`:
- 40% generated recipes: half of them sane (disjoint conditioning windows, values in
  range: they check clean and compile), half wild (real term, parameter and setting
  names, every window form, values of every type, ramps, comments, `;`, newlines);
- 40% those recipes mutated (characters inserted, deleted, replaced, slices repeated);
- 20% random bytes decoded as UTF-8 with errors="replace", and now and then a huge line
  (1 MB), 10,000 nested parentheses or NULs.

Each input is parsed; a parsed recipe is formatted (fmt must be idempotent and keep the
meaning) and, when the checker and the compiler are there, checked and compiled (at its
own clock and at another N, with synthetic noise levels for sigma windows); every
RecipeError's diagnostics are rendered. It prints the counts and the time, and exits 1 if
any exception other than RecipeError was raised or fmt misbehaved.

`--settings` fuzzes the command line's `--set NAME=VALUE` instead: each input is a list of
1 to 4 such strings (real setting names with values of every type, ranges, quotes, shell
and Python injection-looking text, paths that climb out of a directory, NULs, newlines,
`;`, huge numbers and lines; mutated; random bytes). `parse_overrides` must return a
dict or raise RecipeError, nothing else; a returned dict must hold only known settings,
pass `validate_overrides` unchanged, keep a string setting's text exactly as given
(nothing is evaluated or expanded), and compile with a recipe; diagnostics are rendered.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import re
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dmgd.language import RecipeError, format_recipe, parse_recipe, render_json, render_text  # noqa: E402

try:  # a colleague's modules: fuzz them too when they exist
    from dmgd.language.checker import check_recipe
except ImportError:  # pragma: no cover
    check_recipe = None
try:
    from dmgd.language.compiler import compile_schedule
    from dmgd.language.schedule import NoiseLevels
except ImportError:  # pragma: no cover
    compile_schedule = None
    NoiseLevels = None


def _vocabulary() -> tuple[list[str], dict[str, list[str]], list[str]]:
    try:
        from dmgd.language.settings import SETTING_NAMES
        from dmgd.guidance import all_terms

        terms = {t.name: [p.name for p in t.params] for t in all_terms()}
        return sorted(terms), terms, list(SETTING_NAMES)
    except Exception:  # pragma: no cover
        terms = {"explore": ["bn"], "softlabel": ["bs", "bn", "lam"], "refine": ["cfg"], "uncond": [],
                 "ot": ["K", "rho", "eps", "iters", "grad"], "mean": ["rho"], "mode": ["rho"]}
        return sorted(terms), terms, ["steps", "sampler", "cfg", "ipc", "seed", "model", "data", "matching"]


TERM_NAMES, TERM_PARAMS, SETTINGS = _vocabulary()
NAME_VALUES = ["ddpm", "ddim", "dpm", "euler", "greedy", "joint", "tweedie", "full", "true", "false", "x"]


# --- generation -------------------------------------------------------------------------


def _number(rng: random.Random, lo: float = 0, hi: float = 60) -> str:
    r = rng.random()
    if r < 0.5:
        return str(rng.randint(int(lo), int(hi)))
    if r < 0.8:
        return repr(round(rng.uniform(lo, hi), rng.randint(0, 4)))
    if r < 0.9:
        return f"{rng.randint(1, 9)}e{rng.choice(['-', '', '+'])}{rng.randint(0, 3)}"
    return rng.choice(["0", "-1", "1e999", "0.0", "-0.5", "10000", "99999999999999999999", "1e-400", "007"])


def _value(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.45:
        return _number(rng, 0, 2)
    if r < 0.55:
        return f"{_number(rng, 0, 100)}%"
    if r < 0.65:
        s = "".join(rng.choice('ab\\"# ;é\x00') for _ in range(rng.randint(0, 6)))
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if r < 0.75:
        return rng.choice(NAME_VALUES)
    shape = rng.choice(["", "", "cos", "exp"])
    ramp = f"{_number(rng, 0, 1)}..{_number(rng, 0, 1)}"
    return f"{shape}({ramp})" if shape else ramp


def _window(rng: random.Random, clock: int) -> str:
    r = rng.random()
    a, b = sorted((rng.randint(-2, clock + 2), rng.randint(-2, clock + 2)))
    if r < 0.3:
        return f"{a}..{b}"
    if r < 0.4:
        return f"{a}..={b}"
    if r < 0.65:
        return f"t{rng.choice(['>=', '>', '<=', '<'])}{rng.randint(-1, clock + 1)}"
    if r < 0.75:
        p, q = sorted((rng.randint(0, 100), rng.randint(0, 100)))
        return rng.choice([f"{p}%..{q}%", f"t>={p}%", f"t<{q}%"])
    if r < 0.85:
        return "*"
    lo, hi = sorted((rng.uniform(0.01, 10), rng.uniform(0.01, 100)))
    return f"sigma {lo:.3g}..{hi:.3g}"


def _term(rng: random.Random) -> str:
    name = rng.choice(TERM_NAMES) if rng.random() < 0.95 else rng.choice(["softlable", "xx", "OT"])
    params = TERM_PARAMS.get(name, [])
    chosen = rng.sample(params, rng.randint(0, len(params))) if params else []
    if rng.random() < 0.05:
        chosen.append(rng.choice(["rh", "bogus", "k"]))
    if not chosen and rng.random() < 0.7:
        return name
    return f"{name}(" + ", ".join(f"{p}={_value(rng)}" for p in chosen) + ")"


def _positive(rng: random.Random, hi: float) -> str:
    return repr(round(rng.uniform(0.001, hi), rng.randint(1, 4)) or 0.001)


def generate_sane(rng: random.Random) -> str:
    """A recipe that mostly checks clean: disjoint conditioning windows, values in range."""
    clock = rng.choice([50, 50, 20, 100, 7])
    a, b = sorted(rng.sample(range(1, clock), 2)) if clock > 2 else (1, 1)
    lines = [f"steps = {clock}", f"cfg = {_positive(rng, 10)}"]
    if rng.random() < 0.5:
        lines.append(f"sampler = {rng.choice(['ddpm', 'ddim', 'dpm', 'euler'])}")
    lines.append(f"t>={b}: explore(bn={_positive(rng, 0.2)})")
    lam = rng.choice(["", ", lam=cos(0..1)", ", lam=0.5", ", lam=exp(0.1..1)"])
    lines.append(f"{a}..{b}: softlabel(bs={_positive(rng, 0.1)}, bn={_positive(rng, 0.2)}{lam})")
    if rng.random() < 0.5:
        lines.append(f"t<{a}: refine(cfg={_positive(rng, 8)})")
    for _ in range(rng.randint(0, 3)):
        lo, hi = sorted(rng.sample(range(0, clock + 1), 2)) if clock > 1 else (0, 1)
        energy = rng.choice([
            f"ot(K={rng.randint(1, 20)}, rho={_positive(rng, 0.1)}..{_positive(rng, 1)}, eps={_positive(rng, 1)}, "
            f"iters={rng.randint(1, 10)}, grad={rng.choice(['tweedie', 'full'])})",
            f"mean(rho={rng.choice(['cos', 'exp'])}({_positive(rng, 0.1)}..{_positive(rng, 1)}))",
            f"mode(rho={_positive(rng, 0.5)})",
        ])
        window = rng.choice([f"{lo}..{hi}", f"{lo}..={min(hi, clock - 1)}", f"{lo * 100 // clock}%..{hi * 100 // clock}%",
                             f"sigma {rng.uniform(0.01, 1):.3g}..{rng.uniform(1, 100):.3g}"])
        lines.append(f"{window}: {energy}")
    return "\n".join(lines) + "\n"


def generate(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return generate_sane(rng)
    clock = rng.choice([50, 50, 10, 25, 100, 1])
    lines: list[str] = []
    if rng.random() < 0.5:
        lines.append(f"steps = {clock}")
    for _ in range(rng.randint(0, 3)):
        name = rng.choice(SETTINGS)
        lines.append(f"{name} = {_value(rng) if name not in ('steps',) else clock}")
    for _ in range(rng.randint(0, 6)):
        terms = ", ".join(_term(rng) for _ in range(rng.choice([1, 1, 1, 2, 3])))
        lines.append(f"{_window(rng, clock)}: {terms}")
    rng.shuffle(lines)
    out = []
    for line in lines:
        r = rng.random()
        if r < 0.1:
            out.append("# " + "".join(rng.choice("abc ;#") for _ in range(rng.randint(0, 8))))
        elif r < 0.15:
            out.append("")
        if rng.random() < 0.15:
            line += "  # trailing"
        out.append(line)
    if rng.random() < 0.3:
        return "; ".join(line for line in out if line and not line.lstrip().startswith("#"))
    return "\n".join(out) + ("\n" if rng.random() < 0.8 else "")


PIECES = list('()=:;,.%*#"\\\n\r\t -+eE0123456789<>') + ["..", "..=", "t>=", "sigma ", "cos(", "\x00", "\ufffd", "é"]


def mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 5)):
        pos = rng.randint(0, len(text))
        op = rng.randint(0, 3)
        if op == 0:
            text = text[:pos] + rng.choice(PIECES) + text[pos:]
        elif op == 1:
            text = text[:pos] + text[pos + rng.randint(1, 4):]
        elif op == 2:
            text = text[:pos] + rng.choice(PIECES) + text[pos + 1:]
        else:
            end = min(len(text), pos + rng.randint(1, 12))
            text = text[:end] + text[pos:end] * rng.randint(1, 3) + text[end:]
    return text


def random_input(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.002:
        return "steps = " + "9" * 1_000_000
    if r < 0.004:
        return "*: ot" + "(" * 10_000 + ")" * rng.randint(0, 10_000)
    if r < 0.006:
        return "\x00" * rng.randint(1, 1000)
    return rng.randbytes(rng.randint(0, 120)).decode("utf-8", errors="replace")


# --- command-line settings (--set) --------------------------------------------------------

NASTY_STRINGS = [
    "$(rm -rf /)", "`rm -rf /`", "; rm -rf /", "| cat /etc/passwd", "&& reboot", "${HOME}", "~", "~root",
    "../../../../etc", "/etc/passwd", "..", "/", "", " ", "__import__('os').system('x')", "eval('1')",
    "{{7*7}}", "%(x)s", "%s%s%s", "\\x00", "a\x00b", "C:\\Windows", "\\\\server\\share", "file:///etc",
    "http://example.com/m", "org/name", "org/name/../../x", "-rf", "--resume", "é", "💥", "a" * 300,
]


def _set_value(rng: random.Random, name: str) -> str:
    r = rng.random()
    if r < 0.3:
        return _value(rng)
    if r < 0.45:
        return rng.choice(NASTY_STRINGS)
    if r < 0.55:
        return '"' + rng.choice(NASTY_STRINGS).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if r < 0.7:
        return _number(rng, -10, 100000)
    if r < 0.8:
        return rng.choice(NAME_VALUES + ["ddpm ddim", "greedy;joint", "1e999", "nan", "inf", "-inf", "0x10", "1_000"])
    if r < 0.9:
        return f"{_number(rng)}..{_number(rng)}"
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 8)))


def _sane_setting(rng: random.Random) -> str:
    """A `--set` string that should be accepted: a real setting, a value of its type in range."""
    from dmgd.language.settings import SETTING_SPECS

    spec = rng.choice(SETTING_SPECS)
    if spec.type == "int":
        hi = min(int(spec.high) if spec.high is not None else 10**6, rng.choice([10, 1000, 2**63 - 1]))
        value = str(rng.randint(int(spec.low or 0), max(int(spec.low or 0), hi)))
    elif spec.type == "float":
        value = repr(round(rng.uniform(float(spec.low or 0), float(spec.high or 10)), rng.randint(0, 6)))
    elif spec.type == "choice":
        value = rng.choice(spec.choices)
    else:  # str: any text, bare (as a shell passes it) or in the language's quotes
        text = rng.choice(NASTY_STRINGS[:-1] + [f"/data/{rng.randint(0, 99)}", "facebook/DiT-XL-2-256"]).strip()
        text = text.replace("\x00", "").replace("\n", "") or "x"
        value = text if rng.random() < 0.7 or text.startswith('"') else \
            '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{spec.name}={value}"


def generate_settings(rng: random.Random) -> list[str]:
    if rng.random() < 0.5:
        return [_sane_setting(rng) for _ in range(rng.randint(1, 4))]
    args = []
    for _ in range(rng.randint(1, 4)):
        name = rng.choice(SETTINGS) if rng.random() < 0.9 else rng.choice(["ipcc", "Steps", "", " ipc", "model ",
                                                                             "t>=5", "ot(K=2)", "x.y"])
        sep = rng.choice(["=", "=", "=", " = ", "==", ":", ""])
        args.append(f"{name}{sep}{_set_value(rng, name)}")
    return args


def make_settings_input(seed: int, index: int) -> list[str]:
    rng = random.Random(seed * 1_000_003 + index + 7)
    kind = index % 5
    if kind in (0, 1):
        return generate_settings(rng)
    if kind in (2, 3):
        return [mutate(rng, a) for a in generate_settings(rng)]
    return [random_input(rng) for _ in range(rng.randint(1, 3))]


SETTINGS_RECIPE = "t>=40: explore; 25..40: softlabel; 30..45: ot(K=2)\n"


def run_settings_one(args: list[str], backend: bool, counts: Counter) -> None:
    """One `--set` list through parse_overrides (and, parsed, validate and compile)."""
    from dmgd.language.overrides import parse_overrides, validate_overrides
    from dmgd.language.settings import setting_spec

    try:
        parsed = parse_overrides(args)
    except RecipeError as e:
        counts["--set: RecipeError"] += 1
        render_text(e.diagnostics, e.source, e.path)
        render_json(e.diagnostics, e.path)
        return
    counts["--set: ok"] += 1
    if not isinstance(parsed, dict) or any(setting_spec(k) is None for k in parsed):
        raise AssertionError(f"parse_overrides returned {parsed!r}")
    last = {arg.partition("=")[0].strip(): arg.partition("=")[2].strip() for arg in args}  # the last one wins
    for name, raw in last.items():  # a string setting is the text as given: nothing evaluated or expanded
        spec = setting_spec(name)
        if spec is None or spec.type != "str" or name not in parsed:
            continue
        expected = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
        if parsed[name] != expected:
            raise AssertionError(f"{name} became {parsed[name]!r}, not the text given ({raw!r})")
    if validate_overrides(parsed) != parsed:
        raise AssertionError(f"validate_overrides changed {parsed!r}")
    if backend and compile_schedule is not None:
        try:
            compile_schedule(parse_recipe(SETTINGS_RECIPE, "fuzz.dmgd"), overrides=parsed, noise=_noise)
            counts["--set: compiled"] += 1
        except RecipeError as e:
            counts["--set: compile RecipeError"] += 1
            render_text(e.diagnostics, SETTINGS_RECIPE, "fuzz.dmgd")


def make_input(seed: int, index: int) -> str:
    rng = random.Random(seed * 1_000_003 + index)
    kind = index % 5
    if kind in (0, 1):
        return generate(rng)
    if kind in (2, 3):
        return mutate(rng, generate(rng))
    return random_input(rng)


# --- running ----------------------------------------------------------------------------


def _noise(sampler: str, n: int):
    sigmas = tuple(80.0 * (0.002 / 80.0) ** (k / max(n - 1, 1)) for k in range(n))
    return NoiseLevels(timesteps=tuple(float(999 - k * 999 // max(n, 1)) for k in range(n)), sigmas=sigmas)


def _meaning(recipe) -> str:
    from dmgd.language import canonical_text

    return canonical_text(recipe)


def run_one(text: str, backend: bool, counts: Counter) -> None:
    """Everything one input goes through; raises whatever escapes (the caller counts it)."""
    try:
        recipe = parse_recipe(text, "fuzz.dmgd")
    except RecipeError as e:
        counts["parse: RecipeError"] += 1
        render_text(e.diagnostics, text, "fuzz.dmgd")
        render_json(e.diagnostics, "fuzz.dmgd")
        return
    counts["parse: ok"] += 1
    once = format_recipe(recipe)
    again = parse_recipe(once, "fuzz.dmgd")
    if format_recipe(again) != once or _meaning(again) != _meaning(recipe):
        raise AssertionError("fmt is not idempotent or changed the meaning")
    if not backend:
        return
    if check_recipe is not None:
        diagnostics = check_recipe(recipe)
        render_text(diagnostics, text, "fuzz.dmgd")
        counts["check: errors" if any(d.severity == "error" for d in diagnostics) else "check: clean"] += 1
    if compile_schedule is not None:
        for n in (None, 7):
            try:
                compile_schedule(recipe, steps=n, noise=_noise)
            except RecipeError as e:
                counts["compile: RecipeError"] += 1
                render_text(e.diagnostics, text, "fuzz.dmgd")
                break
            counts["compile: ok"] += 1


def worker(args: tuple[int, int, int, int, bool, int, bool]) -> tuple[Counter, list[str]]:
    seed, start, stop, step, backend, show, settings = args
    counts: Counter = Counter()
    failures: list[str] = []
    for index in range(start, stop, step):
        text = make_settings_input(seed, index) if settings else make_input(seed, index)
        counts["inputs"] += 1
        try:
            if settings:
                run_settings_one(text, backend, counts)
            else:
                run_one(text, backend, counts)
        except RecipeError:  # a RecipeError out of a later stage is fine too
            counts["other stage: RecipeError"] += 1
        except Exception as e:  # noqa: BLE001 - this is what we are looking for
            counts["OTHER EXCEPTION"] += 1
            counts[f"  {type(e).__name__}"] += 1
            if len(failures) < show:
                failures.append(f"input #{index} {text[:300]!r}\n{traceback.format_exc()}")
    return counts, failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="how many inputs (default 100000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    ap.add_argument("--parse-only", action="store_true", help="skip the checker and the compiler")
    ap.add_argument("--show", type=int, default=5, help="failing inputs to print per worker")
    ap.add_argument("--only", type=int, default=None, help="run the single input with this index, verbosely")
    ap.add_argument("--settings", action="store_true", help="fuzz command-line `--set` strings instead of recipes")
    args = ap.parse_args(argv)
    backend = not args.parse_only

    if args.only is not None:
        counts: Counter = Counter()
        if args.settings:
            given = make_settings_input(args.seed, args.only)
            print(repr(given)[:2000])
            run_settings_one(given, backend, counts)
        else:
            text = make_input(args.seed, args.only)
            print(repr(text[:2000]))
            run_one(text, backend, counts)
        print(dict(counts))
        return 0

    parse_recipe("*: x")  # build (or load) the parser before timing
    jobs = max(1, args.jobs)
    tasks = [(args.seed, j, args.n, jobs, backend, args.show, args.settings) for j in range(jobs)]
    t0 = time.perf_counter()
    if jobs == 1:
        results = [worker(tasks[0])]
    else:
        with multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn").Pool(jobs) as pool:
            results = pool.map(worker, tasks)
    elapsed = time.perf_counter() - t0
    total: Counter = Counter()
    failures: list[str] = []
    for counts, fails in results:
        total.update(counts)
        failures.extend(fails)
    for failure in failures:
        print(failure, file=sys.stderr)
    other = total["OTHER EXCEPTION"]
    print(f"inputs:               {total['inputs']}{' (--set lists)' if args.settings else ''}")
    if args.settings:
        print(f"parsed:               {total['--set: ok']}   RecipeError: {total['--set: RecipeError']}")
        if backend:
            print(f"compiled:             {total['--set: compiled']}   "
                  f"RecipeError (compile): {total['--set: compile RecipeError']}")
    else:
        print(f"parsed:               {total['parse: ok']}")
        print(f"RecipeError (parse):  {total['parse: RecipeError']}")
    if backend and not args.settings:
        print(f"checked clean:        {total['check: clean']}   with errors: {total['check: errors']}")
        print(f"compiled:             {total['compile: ok']}   RecipeError (compile): {total['compile: RecipeError']}")
    for key in sorted(k for k in total if k.startswith("  ")):
        print(f"  of which {key.strip()}: {total[key]}")
    print(f"other exceptions:     {other}")
    print(f"time:                 {elapsed:.1f} s ({jobs} processes, seed {args.seed}, "
          f"{elapsed / max(total['inputs'], 1) * 1e3:.2f} ms an input)")
    return 1 if other else 0


if __name__ == "__main__":
    sys.exit(main())
