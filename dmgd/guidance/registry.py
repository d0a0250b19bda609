"""The term registry: every guidance term, declared once, checked when it registers.

A term family is one module in `TERM_MODULES` that calls `register(TermSpec(...))`; the
parser knows no term names, the checker and compiler read the specs, the guided step calls
the implementation through its contract. Other packages add terms through the `dmgd.terms`
entry-point group (`dmgd.guidance.plugins`), loaded after the built-in families the first
time a term is looked up. Importing the registry never imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from dmgd.guidance import plugins
from dmgd.guidance.contracts import contract_problems, ConditioningTerm, EnergyTerm
from dmgd.guidance.plugins import PluginProblem
from dmgd.guidance.specs import Kind, TermSpec

if TYPE_CHECKING:  # pragma: no cover
    from dmgd.language.schedule import Schedule

TERM_MODULES = (
    "dmgd.guidance.conditioning",
    "dmgd.guidance.transport",
    "dmgd.guidance.modes",
)

CONTRACTS = {Kind.CONDITIONING: ConditioningTerm, Kind.ENERGY: EnergyTerm}

_REGISTRY: dict[str, TermSpec] = {}
_PACKAGES: dict[str, str] = {}  # term name -> the package that declares it
_PROBLEMS: dict[str, PluginProblem] = {}  # term name -> why it cannot be used
_FROM_PLUGINS: set[str] = set()  # the terms registered from entry points
_loaded = False


class ContractError(TypeError):
    """A term whose declaration or implementation does not meet its contract."""


def check_spec(spec: TermSpec) -> None:
    """Raise ContractError naming the term and everything it lacks."""
    contract = CONTRACTS.get(spec.kind)
    if contract is None:
        raise ContractError(f"term {spec.name!r}: kind {spec.kind!r} is not a dmgd.guidance.Kind")
    if spec.impl is None:
        raise ContractError(f"term {spec.name!r} ({spec.kind.value}) has no implementation (TermSpec.impl)")
    problems = contract_problems(spec.impl, contract)
    if spec.default and spec.kind is not Kind.CONDITIONING:
        problems.append("`default` marks the default conditioning term, and this is an energy")
    if spec.default and any(d.default and d.name != spec.name for d in _REGISTRY.values()):
        other = next(d.name for d in _REGISTRY.values() if d.default)
        problems.append(f"term {other!r} is already the default conditioning term")
    if len({p.name for p in spec.params}) != len(spec.params):
        problems.append("two parameters share a name")
    if problems:
        raise ContractError(
            f"term {spec.name!r} does not meet the {contract.__name__} contract: " + "; ".join(problems)
        )


def register(spec: TermSpec, *, package: str | None = None) -> TermSpec:
    """Add a term; raises ContractError when it breaks its contract, ValueError when its
    name is taken by another term. `package`: the distribution that declares it (default:
    the top-level package of its implementation's module, `dmgd` for the built-in terms)."""
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"term {spec.name!r} is declared twice")
    check_spec(spec)
    _REGISTRY[spec.name] = spec
    _PACKAGES[spec.name] = package or _PACKAGES.get(spec.name) or type(spec.impl).__module__.split(".")[0]
    return spec


def unregister(name: str) -> None:
    """Remove a term (for tests and examples that register their own)."""
    _REGISTRY.pop(name, None)
    _PACKAGES.pop(name, None)


def _load() -> dict[str, TermSpec]:
    global _loaded
    if not _loaded:
        for module in TERM_MODULES:
            importlib.import_module(module)
        _loaded = True
        _load_plugins()
    return _REGISTRY


def _load_plugins() -> None:
    """Register the terms of the `dmgd.terms` entry points; a plugin that fails to import,
    or breaks its contract, and a name two packages declare, become problems (warned once)
    rather than errors, so that recipes that do not use them run."""
    declared = plugins.discover()
    registered_by_plugin = {d.term for d in declared if _registered_from(d)}
    for problem in plugins.clashes(declared, {n: p for n, p in _PACKAGES.items() if n not in registered_by_plugin}):
        _PROBLEMS[problem.term] = problem  # a registered term of that name stays listed, unusable
    for declaration in declared:
        if declaration.term in _PROBLEMS or declaration.term in _FROM_PLUGINS:
            continue  # a clash, or a second entry point of one package for one name
        try:
            register(declaration.load(), package=declaration.package)
            _FROM_PLUGINS.add(declaration.term)
        except Exception as error:  # noqa: BLE001 - whatever a plugin raises, the others still load
            _PROBLEMS[declaration.term] = plugins.failure(declaration, error)
    for problem in _PROBLEMS.values():
        plugins.warn(problem)


def _registered_from(declaration: plugins.Declaration) -> bool:
    """Whether the term is registered already by the plugin's own package (its module was
    imported, and called `register`, before the entry points were read)."""
    spec = _REGISTRY.get(declaration.term)
    return spec is not None and type(spec.impl).__module__.split(".")[0] == declaration.module.split(".")[0]


def reload_plugins() -> tuple[PluginProblem, ...]:
    """Forget the plugins' terms and problems and load the entry points again (after
    sys.path changed); returns the problems found."""
    for name in _FROM_PLUGINS:
        unregister(name)
    _FROM_PLUGINS.clear()
    _PROBLEMS.clear()
    if _loaded:
        _load_plugins()
    return plugin_problems()


def get_term(name: str) -> TermSpec | None:
    """The term called `name`, or None. Raises `dmgd.guidance.plugins.PluginError` for a
    name two packages declare, or that a plugin which failed to load declares."""
    terms = _load()
    if name in _PROBLEMS:
        raise _PROBLEMS[name].error_for_use()
    return terms.get(name)


def term_package(name: str) -> str:
    """The package that declares the term `name` (`dmgd` for the built-in terms)."""
    _load()
    return _PACKAGES[name]


def plugin_problems() -> tuple[PluginProblem, ...]:
    """Every plugin that failed to load and every name two packages declare, by name."""
    _load()
    return tuple(_PROBLEMS[name] for name in sorted(_PROBLEMS))


def _rank(spec: TermSpec) -> int:
    module = type(spec.impl).__module__
    return TERM_MODULES.index(module) if module in TERM_MODULES else len(TERM_MODULES)


def all_terms() -> tuple[TermSpec, ...]:
    """Every registered term: the built-in families in `TERM_MODULES` order, then the rest,
    each in registration order (whatever order the modules were imported in)."""
    return tuple(sorted(_load().values(), key=_rank))


def default_conditioning() -> TermSpec:
    """The conditioning term that holds where no rule's conditioning term does."""
    found = [spec for spec in _load().values() if spec.default]
    if len(found) != 1:
        raise LookupError(f"expected one default conditioning term, have {[s.name for s in found]}")
    return found[0]


def energy_of(name: str) -> EnergyTerm:
    """The implementation of the energy term `name` (KeyError when there is none)."""
    spec = get_term(name)
    if spec is None or spec.kind is not Kind.ENERGY:
        raise KeyError(f"{name!r} is not an energy term")
    return spec.impl


def target_ks(schedule: Schedule) -> set[int]:
    """Every K the schedule's energies need a target table for."""
    ipc = int(schedule.settings.ipc)
    return {int(energy_of(use.term).target_k(use.as_dict(), ipc)) for step in schedule for use in step.energies}
