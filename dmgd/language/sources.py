"""Composition: `use "other.dmgd"` and `drop NAME`, resolved into one recipe.

A recipe's `use` lines come first; each reads another recipe (its path relative to the
using file) and brings in its settings and rules, in order. Then the recipe's own
statements apply: `drop NAME` removes term NAME from every rule the uses brought in (a
rule left with no term goes), a setting given again replaces the used one where it stood
(an override, not a conflict), and its own rules add at the end. A later `use` overrides
an earlier one's settings the same way. So `use "dmgd.dmgd"` + `drop ot` resolves to the
statements of dmgd.dmgd less its OT rule, in dmgd.dmgd's order: the canonical text, and
so the identity, of the flat recipe it stands for.

Statements brought in keep spans into their own file (`Span.origin`), so a diagnostic
there points into that file, "used by FILE:LINE". A used file must be a `.dmgd` file under
the using tree: the top recipe's folder or the current directory (symbolic links
followed), since its text is copied into every run's manifest. Cycles, missing files and
files elsewhere are errors at the `use` line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import attrs
from attrs import evolve, frozen

from dmgd.language import ast
from dmgd.language.diagnostics import Diagnostic, RecipeError, did_you_mean
from dmgd.language.parser import parse_recipe

__all__ = ["resolve_uses", "with_origin", "source_lines", "SourceLine", "allowed_roots"]

_NO_FILE = ("<recipe>", "<stdin>", "<command line>")


def with_origin(node: Any, origin: ast.Origin) -> Any:
    """`node` (an AST node, a diagnostic, a tuple of them) with every span that has no
    origin yet given `origin`."""
    if isinstance(node, ast.Span):
        return node if node.origin is not None else evolve(node, origin=origin)
    if isinstance(node, tuple):
        return tuple(with_origin(item, origin) for item in node)
    if attrs.has(type(node)) and not isinstance(node, ast.Origin):
        changes = {f.name: with_origin(getattr(node, f.name), origin) for f in attrs.fields(type(node))
                   if isinstance(getattr(node, f.name), (ast.Span, tuple)) or attrs.has(type(getattr(node, f.name)))}
        return evolve(node, **changes) if changes else node
    return node


def _real_folder(path: str) -> Path:
    """The folder a recipe's `use` paths are relative to: its own, or the current directory."""
    if path in _NO_FILE:
        return Path.cwd().resolve()
    return Path(path).resolve().parent


def allowed_roots(top_path: str) -> tuple[Path, ...]:
    """Where used files may lie: under the top recipe's folder or the current directory."""
    roots = [_real_folder(top_path), Path.cwd().resolve()]
    return tuple(dict.fromkeys(roots))


def _shown_path(using: str, written: str) -> str:
    """How a used file is named in messages: relative to where the using file is named from."""
    folder = "" if using in _NO_FILE else os.path.dirname(using)
    return os.path.normpath(os.path.join(folder, written))


@frozen
class _Event:
    """What resolving did to one statement, for `dmgd explain --sources`."""

    kind: str  # "override", "drop"
    statement: Any  # the setting that replaced, or the rule a term was dropped from
    other: Any  # the setting it replaced, or the `drop` that dropped it


class _Resolver:
    def __init__(self, top: ast.Recipe) -> None:
        self.top = top
        self.roots = allowed_roots(top.path)
        self.sources: dict[str, ast.Origin] = {}
        self.events: list[_Event] = []
        self.errors: list[Diagnostic] = []

    def resolve(self, recipe: ast.Recipe, origin: ast.Origin | None, chain: tuple[Path, ...]) -> list[Any]:
        """The resolved statements of `recipe` (its spans already carry `origin`)."""
        written = recipe.own_statements
        self._check_order(written)
        brought: list[Any] = []
        complete = True
        for use in (st for st in written if isinstance(st, ast.Use)):
            used = self._read(recipe, origin, use, chain)
            if used is not None:
                self._merge_used(brought, used)
            complete = complete and used is not None
        for drop in (st for st in written if isinstance(st, ast.Drop)):
            brought = self._drop(brought, drop, report=complete)  # a failed use already said why
        return self._merge_own(brought, [st for st in written if isinstance(st, (ast.Setting, ast.Rule))])

    def _check_order(self, written: tuple[Any, ...]) -> None:
        seen_other = None
        for st in written:
            if not isinstance(st, ast.Use):
                seen_other = seen_other or st
            elif seen_other is not None:
                self.errors.append(Diagnostic(
                    "error", "`use` must come before the recipe's own statements", st.span, "use-order",
                    help="move every `use` line to the top: what a recipe uses comes first, its own statements "
                         "then override and add"))

    def _read(self, recipe: ast.Recipe, origin: ast.Origin | None, use: ast.Use,
              chain: tuple[Path, ...]) -> list[Any] | None:
        """The resolved statements of the file `use` names, or None (its error recorded)."""
        shown = _shown_path(recipe.path, use.path)
        try:
            target = (_real_folder(recipe.path) / use.path).resolve()
            problem = self._refused(use, shown, target, chain)
        except (OSError, ValueError) as err:  # a NUL byte, a name too long for the file system, ...
            problem = Diagnostic("error", f"cannot use `{shown}`: {getattr(err, 'strerror', None) or err}",
                                 use.path_span, "use-unreadable")
        if problem is not None:
            self.errors.append(problem)
            return None
        line = use.span.line
        used_by = ((recipe.path, line),) + (origin.used_by if origin is not None else ())
        try:
            text = target.read_bytes().decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as err:
            reason = getattr(err, "strerror", None) or "it is not UTF-8 text"
            self.errors.append(Diagnostic("error", f"cannot read `{shown}`: {reason}", use.path_span, "use-unreadable"))
            return None
        here = ast.Origin(shown, text, used_by)
        try:
            used = with_origin(parse_recipe(text, shown, resolve=False), here)
        except RecipeError as err:
            self.errors.extend(with_origin(tuple(err.diagnostics), here))
            return None
        self.sources.setdefault(shown, here)
        return self.resolve(used, here, chain + (target,))

    def _refused(self, use: ast.Use, shown: str, target: Path, chain: tuple[Path, ...]) -> Diagnostic | None:
        span = use.path_span
        if not use.path.endswith(".dmgd"):
            return Diagnostic("error", f"`use` reads recipes: `{use.path}` is not a .dmgd file", span, "use-not-recipe")
        if not any(target == root or root in target.parents for root in self.roots):
            where = " or ".join(str(root) for root in self.roots)
            return Diagnostic("error", f"`{use.path}` lies outside the recipe's tree ({target})", span,
                              "use-outside-tree",
                              help=f"a recipe may use .dmgd files under {where} (its text goes into every "
                                   "run's manifest); copy the file there, or run from a folder above both")
        if target in chain:
            loop = " -> ".join(p.name for p in chain[chain.index(target):]) + f" -> {target.name}"
            return Diagnostic("error", f"`{use.path}` is used in a cycle: {loop}", span, "use-cycle",
                              help="a recipe cannot use itself, directly or through the files it uses")
        if not target.is_file():
            what = "it is a folder" if target.is_dir() else "no such file"
            return Diagnostic("error", f"cannot use `{shown}`: {what}", span, "use-missing",
                              help=f"the path is relative to the using file's folder ({target.parent})")
        return None

    def _merge_used(self, brought: list[Any], used: list[Any]) -> None:
        """A used file's statements after the earlier ones'; its settings replace theirs in place."""
        earlier = {st.name: i for i, st in enumerate(brought) if isinstance(st, ast.Setting)}
        for st in used:
            if isinstance(st, ast.Setting) and st.name in earlier:
                i = earlier.pop(st.name)
                self.events.append(_Event("override", st, brought[i]))
                brought[i] = st
            else:
                brought.append(st)

    def _drop(self, brought: list[Any], drop: ast.Drop, report: bool = True) -> list[Any]:
        kept: list[Any] = []
        found = False
        for st in brought:
            if isinstance(st, ast.Rule) and any(t.name == drop.name for t in st.terms):
                found = True
                self.events.append(_Event("drop", st, drop))
                terms = tuple(t for t in st.terms if t.name != drop.name)
                if terms:
                    kept.append(evolve(st, terms=terms))
                continue
            kept.append(st)
        if not found and report:
            self.errors.append(_unknown_drop(drop, brought))
        return kept

    def _merge_own(self, brought: list[Any], own: list[Any]) -> list[Any]:
        """The recipe's own statements: a setting the uses brought is replaced in place (once:
        a second one is the recipe's own duplicate, which the checker reports); rules add."""
        used = {st.name: i for i, st in enumerate(brought) if isinstance(st, ast.Setting)}
        out, rest = list(brought), []
        for st in own:
            if isinstance(st, ast.Setting) and st.name in used:
                i = used.pop(st.name)
                self.events.append(_Event("override", st, out[i]))
                out[i] = st
            else:
                rest.append(st)
        return out + rest


def _unknown_drop(drop: ast.Drop, brought: list[Any]) -> Diagnostic:
    names = list(dict.fromkeys(t.name for st in brought if isinstance(st, ast.Rule) for t in st.terms))
    listing = f"the used rules' terms: {', '.join(names)}" if names else "the `use` lines bring in no rule"
    return Diagnostic("error", f"no rule brought in by `use` has the term `{drop.name}`", drop.name_span,
                      "drop-unknown", help=did_you_mean(drop.name, names) or listing)


def resolve_uses(recipe: ast.Recipe) -> ast.Recipe:
    """The recipe with its `use` and `drop` lines resolved (see the module's doc); raises
    RecipeError with every problem found, each pointing into the file it lies in."""
    resolver = _Resolver(recipe)
    top = Path(recipe.path).resolve() if recipe.path not in _NO_FILE else None
    statements = resolver.resolve(recipe, None, (top,) if top is not None else ())
    if resolver.errors:
        raise RecipeError(resolver.errors, recipe.source, recipe.path)
    return evolve(recipe, statements=tuple(statements), sources=tuple(resolver.sources.values()))


# --- where each statement came from (`dmgd explain --sources`) ------------------------


@frozen
class SourceLine:
    """One resolved statement and where it came from."""

    text: str  # the statement, canonically formatted
    where: str  # FILE:LINE
    note: str  # e.g. "overrides recipes/dmgd.dmgd:14", "`ot` dropped by line 2"; "" when none


def _where(recipe: ast.Recipe, span: ast.Span) -> str:
    path = span.origin.path if span.origin is not None else recipe.path
    return f"{path}:{span.line}"


def source_lines(recipe: ast.Recipe) -> list[SourceLine]:
    """Each resolved statement with the file and line it came from, and what resolving did:
    a setting that overrides a used one, and (after them) every rule a `drop` changed."""
    from dmgd.language.formatter import format_statement

    events: list[_Event] = []
    if recipe.written is not None:
        resolver = _Resolver(recipe)
        resolver.resolve(recipe, None, ())
        events = resolver.events
    replaced = {e.statement: e.other for e in events if e.kind == "override"}
    out = []
    for st in recipe.statements:
        other = replaced.get(st)
        note = f"overrides {_where(recipe, other.span)} ({format_statement(other)})" if other is not None else ""
        out.append(SourceLine(format_statement(st), _where(recipe, st.span), note))
    out.extend(SourceLine(format_statement(e.statement), _where(recipe, e.statement.span),
                          f"`{e.other.name}` dropped by {_where(recipe, e.other.span)}")
               for e in events if e.kind == "drop")
    return out


def iter_used_paths(recipe: ast.Recipe) -> Iterator[str]:
    """The paths of the files a resolved recipe used, each once."""
    for origin in recipe.sources:
        yield origin.path


def manifest_sources(recipe: ast.Recipe) -> dict[str, Any]:
    """What a run's manifest adds to its recipe's own text: the resolved recipe its hash is
    of (which differs from the text for a recipe that uses others, or one variant of a
    sweep), and the text of every file it used."""
    from dmgd.language.formatter import canonical_text

    out: dict[str, Any] = {"resolved": canonical_text(recipe)}
    if recipe.sources:
        out["used"] = [{"path": o.path, "text": o.source, "used_by": [f"{p}:{line}" for p, line in o.used_by]}
                       for o in recipe.sources]
    return out
