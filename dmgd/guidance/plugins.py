"""Guidance terms from other packages: the `dmgd.terms` entry-point group.

A package declares one entry point per term; its name is the term's name and its value
the `TermSpec` (`pull = dmgd_pull:PULL`), so that the term a plugin declares is known
from the package's metadata alone: a name two packages declare is a clash found without
importing either, and a recipe that names a term of a plugin that failed to import is
told so. The registry (`dmgd.guidance.registry`) calls `discover` and `load_entry` the
first time a term is looked up; nothing here imports torch (a plugin's module must not
either at import time: `dmgd check` never imports torch). See docs/extending.md.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from importlib import metadata
from typing import Iterable, Iterator

from attrs import frozen

from dmgd.errors import DmgdError
from dmgd.guidance.specs import TermSpec

GROUP = "dmgd.terms"
BUILTIN_PACKAGE = "dmgd"


class PluginError(DmgdError):
    """A recipe names a term that two packages declare, or whose plugin failed to load."""


class PluginWarning(UserWarning):
    """A plugin failed to load, or two packages declare one term (reported once, when the
    terms are first looked up; `dmgd terms` lists it too)."""


@frozen
class Declaration:
    """One entry point of the `dmgd.terms` group: a term a package declares."""

    term: str  # the entry point's name: the name recipes write
    package: str  # the distribution that declares it
    value: str  # `module:attribute`, the TermSpec

    @property
    def module(self) -> str:
        return self.value.partition(":")[0].strip()

    def load(self) -> TermSpec:
        """Import the plugin's module and return its TermSpec (any exception propagates)."""
        spec = metadata.EntryPoint(self.term, self.value, GROUP).load()
        if not isinstance(spec, TermSpec):
            raise TypeError(f"{self.value} is a {type(spec).__name__}, not a dmgd.guidance.TermSpec")
        if spec.name != self.term:
            raise ValueError(f"{self.value} declares term {spec.name!r}, but its entry point is named "
                             f"{self.term!r} (the entry point's name must be the term's name)")
        return spec


@frozen
class PluginProblem:
    """Why a term name cannot be used: its plugin failed to load, or packages clash on it."""

    term: str
    packages: tuple[str, ...]  # the plugin's package; for a clash, every package declaring the name
    error: str  # the plugin's error in words ("" for a clash)

    @property
    def clash(self) -> bool:
        return len(self.packages) > 1

    def message(self) -> str:
        """The problem in one line, with what to do."""
        if self.clash:
            names = ", ".join(f"`{p}`" for p in self.packages[:-1]) + f" and `{self.packages[-1]}`"
            return (f"term `{self.term}` is declared by packages {names}: uninstall all but one of them "
                    f"(or ask its authors to rename the term)")
        return (f"plugin `{self.term}` of package `{self.packages[0]}` failed to load ({self.error}): fix or "
                f"uninstall `{self.packages[0]}`; recipes that do not use `{self.term}` are not affected")

    def error_for_use(self) -> PluginError:
        """The error a recipe that names this term gets."""
        if self.clash:
            return PluginError(self.message())
        return PluginError(f"term `{self.term}` comes from package `{self.packages[0]}`, whose plugin failed "
                           f"to load: {self.error}. Fix or uninstall `{self.packages[0]}` (`dmgd terms` lists "
                           f"plugin problems)")


def discover() -> list[Declaration]:
    """Every term declared in the `dmgd.terms` group of the distributions on sys.path."""
    found = []
    for entry in metadata.entry_points(group=GROUP):
        dist = getattr(entry, "dist", None)
        package = dist.name if dist is not None else entry.value.partition(":")[0].split(".")[0]
        found.append(Declaration(entry.name, package, entry.value))
    return found


def clashes(declarations: Iterable[Declaration], taken: dict[str, str]) -> list[PluginProblem]:
    """The names that two packages declare: two plugins, or a plugin and a term already
    registered (`taken`: term name -> its package)."""
    packages: dict[str, dict[str, None]] = {}
    for d in declarations:
        packages.setdefault(d.term, dict.fromkeys([taken[d.term]] if d.term in taken else []))[d.package] = None
    return [PluginProblem(term, tuple(names), "") for term, names in packages.items() if len(names) > 1]


def failure(declaration: Declaration, error: BaseException) -> PluginProblem:
    """The problem of a plugin whose import or check raised `error`."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return PluginProblem(declaration.term, (declaration.package,), f"{type(error).__name__}: {text}".rstrip(": "))


def warn(problem: PluginProblem) -> None:
    """Report a problem as a PluginWarning (the CLI prints it as one `warning:` line)."""
    warnings.warn(problem.message(), PluginWarning, stacklevel=3)


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Inside: a PluginWarning prints as one `warning: ...` line on stderr (the command line's
    way), not with Python's file and line; other warnings as before."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, PluginWarning):
            print(f"warning: {message}", file=file or sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown
