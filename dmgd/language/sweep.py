"""Sweeps: a value or a window written as alternatives in braces, `cfg = {2.0, 4.0}`,
`ot(rho={0.05..0.5, 5.0..50.0})`, `{25..45, 10..30}: ot`.

A recipe with sweeps stands for the cartesian product of its alternatives: one plain
recipe (a *variant*) per combination, in order (the first sweep in the text varies
slowest; variant 1 takes every first alternative). Each variant has its own canonical
text and hash, and a short label naming its choices, e.g. `cfg=2_rho=0.05..0.5`, that
`dmgd sweep` uses as its folder name. Nothing here imports torch.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any, Iterator

from attrs import evolve, frozen

from dmgd.language import ast
from dmgd.language.diagnostics import Diagnostic, Note, RecipeError
from dmgd.language.formatter import canonical_hash, format_value, format_window

__all__ = ["MAX_VARIANTS", "SweepPoint", "Variant", "has_sweep", "sweep_points", "variant_count", "variants",
           "find_variant", "sweep_problems"]

MAX_VARIANTS = 10000
MAX_LABEL = 80


@frozen
class SweepPoint:
    """One swept place: its name in labels, the alternatives' texts, and the sweep node."""

    key: str
    texts: tuple[str, ...]
    node: Any  # ast.Sweep or ast.WindowSweep


@frozen
class Variant:
    """One combination of a sweep's alternatives: a plain recipe."""

    index: int  # 1-based, in the product's order
    label: str
    choices: tuple[tuple[str, str], ...]  # (key, alternative as written), one per sweep point
    recipe: ast.Recipe

    @property
    def hash(self) -> str:
        return canonical_hash(self.recipe)

    def choice_values(self) -> dict[str, str]:
        return dict(self.choices)


_WINDOWS = (ast.Range, ast.OneSided, ast.Always, ast.SigmaRange)


def _text(node: Any) -> str:
    return format_window(node) if isinstance(node, _WINDOWS) else format_value(node)


def _places(recipe: ast.Recipe) -> Iterator[tuple[list[str], Any]]:
    """(candidate keys, most specific last; the sweep node) for each sweep, in text order."""
    for st in recipe.statements:
        if isinstance(st, ast.Setting):
            if isinstance(st.value, ast.Sweep):
                yield [st.name, f"{st.name}@L{st.span.line}"], st.value
            continue
        terms = "+".join(t.name for t in st.terms)
        if isinstance(st.window, ast.WindowSweep):
            yield ["window", f"{terms}.window", f"{terms}.window@L{st.span.line}"], st.window
        for term in st.terms:
            for param in term.params:
                if isinstance(param.value, ast.Sweep):
                    yield ([param.name, f"{term.name}.{param.name}", f"{term.name}.{param.name}@L{param.span.line}"],
                           param.value)


def has_sweep(recipe: ast.Recipe) -> bool:
    return next(_places(recipe), None) is not None


def sweep_points(recipe: ast.Recipe) -> list[SweepPoint]:
    """Every sweep of the recipe, each with the shortest key that tells it from the others."""
    places = list(_places(recipe))
    level = [0] * len(places)
    while True:
        keys = [cands[min(lv, len(cands) - 1)] for (cands, _), lv in zip(places, level)]
        clash = [i for i, k in enumerate(keys) if keys.count(k) > 1 and level[i] < len(places[i][0]) - 1]
        if not clash:
            break
        for i in clash:
            level[i] += 1
    keys = [k if keys.count(k) == 1 else f"{k}#{i + 1}" for i, k in enumerate(keys)]
    return [SweepPoint(key, tuple(_text(a) for a in node.alternatives), node)
            for key, (_, node) in zip(keys, places)]


def variant_count(recipe: ast.Recipe) -> int:
    return math.prod(len(node.alternatives) for _, node in _places(recipe))


def sweep_problems(recipe: ast.Recipe) -> list[Diagnostic]:
    """An alternative listed twice in one sweep, and a product beyond MAX_VARIANTS."""
    out = []
    for _, node in _places(recipe):
        first: dict[str, Any] = {}
        for alt in node.alternatives:
            text = _text(alt)
            if text in first:
                out.append(Diagnostic("error", f"the sweep lists `{text}` twice", alt.span, "sweep-duplicate",
                                      (Note("first listed here", first[text].span),),
                                      "each alternative makes one variant; list it once"))
            else:
                first[text] = alt
    count = variant_count(recipe)
    if count > MAX_VARIANTS:
        node = next(_places(recipe))[1]
        out.append(Diagnostic("error", f"the sweeps make {count} variants, more than {MAX_VARIANTS}", node.span,
                              "sweep-too-large", help="sweep fewer values at once, one stage after another"))
    return out


_LABEL_TEXT = (("..=", "..="), (">=", "ge"), ("<=", "le"), (">", "gt"), ("<", "lt"), ("*", "all"), (" ", ""),
               ("/", "_"), ("\\", "_"), ('"', ""), ("(", ""), (")", ""), (":", "_"))


def _label_part(text: str) -> str:
    for old, new in _LABEL_TEXT:
        text = text.replace(old, new)
    return re.sub(r"[^A-Za-z0-9._=%+-]", "_", text)


def _substitute(node: Any, chosen: dict[int, Any]) -> Any:
    """`node` with each sweep (by identity) replaced by its chosen alternative."""
    if id(node) in chosen:
        return chosen[id(node)]
    if isinstance(node, ast.Setting):
        return evolve(node, value=_substitute(node.value, chosen))
    if isinstance(node, ast.Rule):
        return evolve(node, window=_substitute(node.window, chosen),
                      terms=tuple(_substitute(t, chosen) for t in node.terms))
    if isinstance(node, ast.Term):
        return evolve(node, params=tuple(evolve(p, value=_substitute(p.value, chosen)) for p in node.params))
    return node


def variants(recipe: ast.Recipe) -> list[Variant]:
    """Every variant of the recipe, in order (one, the recipe itself, when it sweeps nothing);
    RecipeError when the sweeps are wrong (see `sweep_problems`)."""
    problems = sweep_problems(recipe)
    if problems:
        raise RecipeError(problems, recipe.source, recipe.path)
    points = sweep_points(recipe)
    if not points:
        return [Variant(1, "recipe", (), recipe)]
    out = []
    for index, combo in enumerate(itertools.product(*(range(len(p.texts)) for p in points)), start=1):
        chosen = {id(p.node): p.node.alternatives[k] for p, k in zip(points, combo)}
        statements = tuple(_substitute(st, chosen) for st in recipe.statements)
        choices = tuple((p.key, p.texts[k]) for p, k in zip(points, combo))
        label = "_".join(f"{key}={_label_part(text)}" for key, text in choices)
        plain = evolve(recipe, statements=statements, written=None, comments=())
        out.append(Variant(index, label, choices, plain))
    labels = [v.label for v in out]
    if len(set(labels)) != len(labels) or max(map(len, labels)) > MAX_LABEL:
        width = len(str(len(out)))
        out = [evolve(v, label=f"v{v.index:0{width}d}") for v in out]
    return out


def find_variant(found: list[Variant], which: str) -> Variant | None:
    """A variant by its 1-based number or its label."""
    for v in found:
        if which == v.label or (which.isdigit() and int(which) == v.index):
            return v
    return None
