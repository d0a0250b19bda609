"""The compiler: a checked recipe, a number of real steps and a sampler -> a `Schedule`.

`compile_schedule` runs the checker first and raises `RecipeError` with every error
diagnostic; warnings travel on the result (`Schedule.warnings`). At each real step it
picks the one conditioning term whose rule holds (else the registry's default conditioning
term) and every energy term whose rule holds, in rule order, each with every parameter's
value at that step: written, ramped over its window, or its default. The clock and ramps are
described in docs/language.md.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

from attrs import evolve

from dmgd.language import ast
from dmgd.language.checker import check_recipe, check_value, convert_value, rule_place
from dmgd.language.timeline import progress, ramp_value, window_steps
from dmgd.language.diagnostics import Diagnostic, Note, RecipeError, source_order
from dmgd.language.formatter import canonical_hash
from dmgd.language.overrides import validate_overrides
from dmgd.language.schedule import NoiseLevels, Placement, Schedule, Step, TermUse, Transfer
from dmgd.language.settings import Settings, parse_shape, setting_spec
from dmgd.language.sweep import has_sweep, sweep_points, variant_count
from dmgd.language import transfer as tr
from dmgd.guidance import FromSetting, Kind, ParamSpec, RampDefault, TermSpec, default_conditioning, get_term

__all__ = ["compile_schedule", "resolve_settings", "has_sigma_window", "needs_noise_levels"]


def has_sigma_window(recipe: ast.Recipe) -> bool:
    """Whether placing the recipe's windows needs the run's noise levels."""
    return any(isinstance(st, ast.Rule) and isinstance(st.window, ast.SigmaRange) for st in recipe.statements)


def uses_transfer(settings: Settings) -> bool:
    """Whether the schedule is carried by noise level (`reference`) or total push."""
    return settings.reference is not None or settings.push == "total"


def needs_noise_levels(recipe: ast.Recipe, overrides: Mapping[str, Any] | None = None) -> bool:
    """Whether compiling the recipe needs the run's noise levels: a sigma window, a
    `reference` or `push = "total"` (False when the settings are wrong: compiling reports it)."""
    if has_sigma_window(recipe):
        return True
    try:
        return uses_transfer(resolve_settings(recipe, validate_overrides(dict(overrides)) if overrides else None))
    except (RecipeError, ValueError, TypeError):
        return False


def resolve_settings(
    recipe: ast.Recipe, overrides: Mapping[str, Any] | None = None, *, sampler: str | None = None
) -> Settings:
    """Recipe values, then overrides (already validated), then `sampler`, then defaults.

    Assumes the recipe's settings are checked (wrong ones are skipped, not guessed).
    """
    values: dict[str, Any] = {}
    for st in recipe.statements:
        if isinstance(st, ast.Setting):
            spec = setting_spec(st.name)
            if spec is not None and st.name not in values and not check_value(st.value, spec, what="", setting=True):
                values[st.name] = convert_value(st.value, spec)
    if overrides:
        values.update(overrides)
    if sampler is not None:
        values["sampler"] = sampler
    return Settings(**values)


def _validate_overrides(overrides: Mapping[str, Any] | None, sampler: str | None) -> dict[str, Any]:
    if not overrides and sampler is None:
        return dict(overrides or {})
    given = dict(overrides or {})
    if sampler is not None:
        given["sampler"] = sampler
    return validate_overrides(given)


_Plan = tuple[str, tuple[tuple[str, Any, Any], ...]]  # term, ((param, constant, ramp or None), ...)


def _plan(term: ast.Term | None, spec: TermSpec, settings: Settings) -> tuple[bool, _Plan]:
    """How to value a term's parameters at any step: constants resolved once, ramps kept as
    (shape, a, b, is_int). Written values win; else defaults: FromSetting reads the
    resolved setting, RampDefault ramps over the window."""
    written = {param.name: param.value for param in term.params} if term is not None else {}
    entries = []
    for ps in spec.params:
        value = written.get(ps.name)
        if value is None:
            default = ps.default
            if isinstance(default, FromSetting):
                entries.append((ps.name, getattr(settings, default.setting), None))
            elif isinstance(default, RampDefault):
                entries.append((ps.name, None, (default.shape, float(default.start), float(default.end),
                                                ps.type == "int")))
            else:
                entries.append((ps.name, default, None))
        elif isinstance(value, ast.Ramp):
            entries.append((ps.name, None, (value.shape, float(value.start.value), float(value.end.value),
                                            ps.type == "int")))
        else:
            entries.append((ps.name, convert_value(value, ps), None))
    return spec.kind is Kind.CONDITIONING, (spec.name, tuple(entries))


def _use(plan: _Plan, rule: int | None, p: float) -> TermUse:
    name, entries = plan
    values = []
    for param, constant, ramp in entries:
        if ramp is None:
            values.append((param, constant))
        else:
            shape, a, b, is_int = ramp
            v = ramp_value(shape, a, b, p)
            values.append((param, round(v) if is_int else v))
    return TermUse(term=name, values=tuple(values), rule=rule, progress=p)


def _run_steps_text(indices: list[int], num_steps: int) -> str:
    i_first, i_last = num_steps - 1 - indices[0], num_steps - 1 - indices[-1]
    n = len(indices)
    if n == 1:
        return f"run step i = {i_first} (1 step)"
    return f"run steps i = {i_first} down to {i_last} ({n} steps)"


def empty_window_warning(recipe: ast.Recipe, rule: ast.Rule, num_steps: int, clock: int,
                         sigmas: Sequence[float] | None) -> Diagnostic:
    """The warning for a rule whose window holds at no step of the run; a sigma window's
    hint names the range of sigma the run spans."""
    if isinstance(rule.window, ast.SigmaRange) and sigmas:
        hint = (f"this run's sigma spans {min(sigmas):.4g}..{max(sigmas):.4g} "
                f"({num_steps} steps); move the window into that range")
    else:
        hint = "widen the window or run with more steps"
    return Diagnostic(
        "warning",
        f"window `{ast.span_text(recipe, rule.window.span)}` holds at no step of this "
        f"{num_steps}-step run (recipe clock: {clock} steps); its terms never act",
        rule.window.span, "empty-window-at-run", help=hint,
    )


def compile_schedule(
    recipe: ast.Recipe,
    *,
    steps: int | None = None,
    sampler: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    noise: NoiseLevels | Callable[[str, int], NoiseLevels] | None = None,
    reference_noise: NoiseLevels | Callable[[str, int], NoiseLevels] | None = None,
    latent_shape: Sequence[int] | str | None = None,
) -> Schedule:
    """Compile a parsed recipe into the per-step schedule the sampler executes.

    steps: N, the real sampling steps (default: the recipe clock). sampler: overrides the
    recipe's `sampler`. overrides: setting name -> Python value (validated here; bad ones
    raise RecipeError with path `<command line>`). noise: the run's timesteps and sigmas in
    sampling order, or a function (sampler, N) -> NoiseLevels called once the recipe is
    checked; required when the recipe has a sigma window (ValueError otherwise), and
    recorded on each Step when given; also required with `reference` or `push = "total"`
    (with posterior stds for "total"). reference_noise: the reference's noise levels (the
    sampler the recipe's text names, at `steps` steps, default scheduler config), or a function
    (sampler, steps) -> NoiseLevels; required with `reference` or `push = "total"`.
    latent_shape: the model's latent shape (C, H, W) or "CxHxW"; with a `reference`, the
    windows' sigma ranges are scaled by sqrt(D_model / D_reference); None: the model is taken
    to have the reference's shape (no shift). See dmgd/language/transfer.py.

    Raises RecipeError with every error diagnostic of the recipe; its warnings are in the
    result's `warnings`.
    """
    settings, num_steps, warnings = _resolved(recipe, overrides, sampler, steps)
    clock = settings.steps
    rules = [st for st in recipe.statements if isinstance(st, ast.Rule)]
    noise = _noise_levels(noise, settings.sampler, num_steps, recipe, rules, settings)
    sigmas = noise.sigmas if noise is not None else None

    # Where each rule holds, in sampling order (index 0 = the noisiest step).
    carried = _Carried.make(recipe, rules, settings, noise, reference_noise, latent_shape) \
        if uses_transfer(settings) else None
    if carried is not None and carried.reference is not None:
        held = [tr.held_in_range(sigmas, lo, hi, carried.scale) for lo, hi in carried.edges]
    else:
        held = [window_steps(rule.window, clock, num_steps, sigmas) for rule in rules]
    cond_rules = _conditioning_rules(rules)
    _refuse_conditioning_overlap(recipe, rules, cond_rules, held, num_steps)
    warnings += [empty_window_warning(recipe, rule, num_steps, clock, sigmas)
                 if carried is None or carried.reference is None else carried.empty_warning(recipe, r, num_steps, sigmas)
                 for r, (rule, where) in enumerate(zip(rules, held)) if not where]
    out_steps = _steps(rules, held, cond_rules, settings, num_steps, noise)
    transfer = None
    if carried is not None:
        out_steps, transfer = carried.apply(recipe, rules, held, out_steps, noise, warnings)
    warnings.sort(key=source_order)
    return Schedule(
        steps=tuple(out_steps),
        settings=settings,
        num_steps=num_steps,
        recipe_hash=canonical_hash(recipe),
        warnings=tuple(warnings),
        transfer=transfer,
    )


def _checked_settings(recipe: ast.Recipe, overrides: Mapping[str, Any] | None,
                      sampler: str | None) -> tuple[Settings, list[Diagnostic]]:
    """The resolved settings and the recipe's warnings; RecipeError for its errors."""
    resolved_overrides = _validate_overrides(overrides, sampler)
    diagnostics = check_recipe(recipe, overrides=resolved_overrides)
    if has_sweep(recipe) and not any(d.severity == "error" for d in diagnostics):
        diagnostics.append(_sweep_not_compiled(recipe))
    errors = [d for d in diagnostics if d.severity == "error"]
    if errors:
        raise RecipeError(errors, recipe.source, recipe.path)
    warnings = [d for d in diagnostics if d.severity == "warning"]
    return resolve_settings(recipe, resolved_overrides), warnings


def _sweep_not_compiled(recipe: ast.Recipe) -> Diagnostic:
    point = sweep_points(recipe)[0]
    return Diagnostic(
        "error", f"this recipe is a sweep of {variant_count(recipe)} variants, not one schedule", point.node.span,
        "sweep-not-compiled",
        help="run every variant with `dmgd sweep`, or one with `dmgd explain --variant N` "
             "(`dmgd explain` lists them)")


def _noise_levels(noise: NoiseLevels | Callable[[str, int], NoiseLevels] | None, sampler: str, num_steps: int,
                  recipe: ast.Recipe, rules: list[ast.Rule], settings: Settings) -> NoiseLevels | None:
    """The run's noise levels (resolved if given as a function), checked against the run."""
    if callable(noise):
        noise = noise(sampler, num_steps)
    if noise is not None and (len(noise.sigmas) != num_steps or len(noise.timesteps) != num_steps):
        raise ValueError(f"noise levels cover {len(noise.sigmas)} steps, the run has {num_steps}")
    if noise is None and uses_transfer(settings):
        what = "`reference`" if settings.reference is not None else "`push = \"total\"`"
        raise ValueError(
            f"{recipe.path}: the recipe sets {what}, and placing its windows needs the run's noise levels: "
            f"pass noise=NoiseLevels(...) (dmgd.compile(..., noise='auto') resolves them from the sampler)"
        )
    if noise is not None and settings.push == "total" and (
            noise.posterior_stds is None or len(noise.posterior_stds) != num_steps):
        raise ValueError(f"{recipe.path}: `push = \"total\"` needs the run's posterior stds "
                         "(NoiseLevels.posterior_stds, as dmgd.sampling.schedulers.noise_levels gives them)")
    if noise is None and any(isinstance(r.window, ast.SigmaRange) for r in rules):
        line = next(r.span.line for r in rules if isinstance(r.window, ast.SigmaRange))
        raise ValueError(
            f"{recipe.path}:{line}: the recipe has a sigma window, and placing it needs the run's noise levels: "
            f"pass noise=NoiseLevels(...) (dmgd.compile(..., noise='auto') resolves them from the sampler)"
        )
    return noise


def _conditioning_rules(rules: list[ast.Rule]) -> list[tuple[int, ast.Term]]:
    """(rule index, its conditioning term) for each rule that has one."""
    cond_rules = []
    for r, rule in enumerate(rules):
        term = next((t for t in rule.terms if get_term(t.name).kind is Kind.CONDITIONING), None)
        if term is not None:
            cond_rules.append((r, term))
    return cond_rules


def _refuse_conditioning_overlap(recipe: ast.Recipe, rules: list[ast.Rule], cond_rules: list[tuple[int, ast.Term]],
                                 held: list[list[int]], num_steps: int) -> None:
    """RecipeError for two conditioning rules on one run step: only sigma windows and
    windows placed through a `reference` can get here (the checker rejects clock windows
    that overlap anywhere in recipe time)."""
    conflicts = []
    for b, (rb, tb) in enumerate(cond_rules):
        for ra, ta in cond_rules[:b]:
            shared = sorted(set(held[ra]) & set(held[rb]))
            if shared:
                conflicts.append(Diagnostic(
                    "error",
                    f"two conditioning terms on one step: `{ta.name}` (rule at {rule_place(rules[ra])}) and "
                    f"`{tb.name}` (rule at {rule_place(rules[rb])}) both hold at "
                    f"{_run_steps_text(shared, num_steps)} of this {num_steps}-step run",
                    tb.span, "conditioning-overlap",
                    (Note(f"`{ta.name}` conditions those steps too, by this rule", ta.span),),
                    "at most one conditioning term holds at a step; make the windows disjoint",
                ))
    if conflicts:
        raise RecipeError(conflicts, recipe.source, recipe.path)


def _steps(rules: list[ast.Rule], held: list[list[int]], cond_rules: list[tuple[int, ast.Term]],
           settings: Settings, num_steps: int, noise: NoiseLevels | None) -> list[Step]:
    """Every step of the run, in sampling order, with its conditioning and energies."""
    clock = settings.steps
    # The default conditioning's window is every step no conditioning rule holds at, so that
    # `t<25: refine` written out and left implicit compile alike (progress included).
    conditioned = {index for r, _ in cond_rules for index in held[r]}
    implicit = [index for index in range(num_steps) if index not in conditioned]
    implicit_position = {index: k for k, index in enumerate(implicit)}
    # Each term's values: constants once, ramps evaluated per step (a plan per term).
    plans = [[_plan(term, get_term(term.name), settings) for term in rule.terms] for rule in rules]
    by_step: list[list[tuple[int, float]]] = [[] for _ in range(num_steps)]
    for r, indices in enumerate(held):
        n = len(indices)
        for k, index in enumerate(indices):
            by_step[index].append((r, progress(k, n)))
    default = _plan(None, default_conditioning(), settings)
    out_steps = []
    for index in range(num_steps):
        i = num_steps - 1 - index
        conditioning = None
        energies = []
        for r, p in by_step[index]:
            for is_conditioning, plan in plans[r]:
                use = _use(plan, r, p)
                if is_conditioning:
                    conditioning = use
                else:
                    energies.append(use)
        if conditioning is None:
            p = progress(implicit_position[index], len(implicit))
            conditioning = _use(default[1], None, p)
        out_steps.append(Step(
            index=index,
            i=i,
            tau=i * clock / num_steps,  # int / int: correctly rounded, as float(Fraction) is
            timestep=float(noise.timesteps[index]) if noise is not None else None,
            sigma=float(noise.sigmas[index]) if noise is not None else None,
            conditioning=conditioning,
            energies=tuple(energies),
        ))
    return out_steps


class _Carried:
    """The reference run and what the transfer rule reads on it (module doc of transfer.py)."""

    def __init__(self, settings: Settings, reference_sampler: str, reference: tuple[int, ...] | None,
                 model: tuple[int, ...] | None,
                 ref: NoiseLevels, ref_held: list[list[int]], edges: list[tuple[float | None, float | None]]):
        self.settings = settings
        self.reference_sampler = reference_sampler
        self.reference = reference
        self.model = model
        self.scale = tr.sigma_scale(reference, model) if reference is not None else 1.0
        self.ref = ref
        self.ref_held = ref_held
        self.edges = edges

    @classmethod
    def make(cls, recipe: ast.Recipe, rules: list[ast.Rule], settings: Settings, noise: NoiseLevels,
             reference_noise: Any, latent_shape: Any) -> _Carried:
        clock = settings.steps
        if reference_noise is None:
            raise ValueError(f"{recipe.path}: the recipe sets `reference` or `push = \"total\"`, which reads its "
                             "windows on the reference run: pass reference_noise= (dmgd.compile does)")
        # The reference is the sampler the recipe's text names (a run's `sampler` override
        # changes the run, not what the windows were written for), at the clock `steps`.
        reference_sampler = resolve_settings(recipe, None).sampler
        ref = reference_noise(reference_sampler, clock) if callable(reference_noise) else reference_noise
        if len(ref.sigmas) != clock:
            raise ValueError(f"reference noise levels cover {len(ref.sigmas)} steps, the recipe clock has {clock}")
        if settings.push == "total" and (ref.posterior_stds is None or len(ref.posterior_stds) != clock):
            raise ValueError("`push = \"total\"` needs the reference's posterior stds (NoiseLevels.posterior_stds)")
        reference = parse_shape(settings.reference) if settings.reference is not None else None
        model = tr.normalise_shape(latent_shape) if latent_shape is not None else None
        ref_held = [window_steps(rule.window, clock, clock, ref.sigmas) for rule in rules]
        edges = [tr.reference_edges(ref.sigmas, h) if h else (math.inf, None) for h in ref_held]
        return cls(settings, reference_sampler, reference, model, ref, ref_held, edges)

    def empty_warning(self, recipe: ast.Recipe, r: int, num_steps: int, sigmas: Sequence[float]) -> Diagnostic:
        rule = [st for st in recipe.statements if isinstance(st, ast.Rule)][r]
        lo, hi = self.edges[r]
        if not self.ref_held[r]:
            hint = "it holds at no step of the reference run either"
        else:
            shown = (f"{'0' if lo is None else f'{lo * self.scale:.4g}'} < sigma <= "
                     f"{'inf' if hi is None else f'{hi * self.scale:.4g}'}")
            hint = (f"on this model it spans {shown}, between two of this run's steps (its sigmas: "
                    f"{min(sigmas):.4g}..{max(sigmas):.4g}); widen the window or run with more steps")
        return Diagnostic(
            "warning",
            f"window `{ast.span_text(recipe, rule.window.span)}` holds at no step of this "
            f"{num_steps}-step run (placed by noise level from reference {self.settings.reference}); "
            f"its terms never act",
            rule.window.span, "empty-window-at-run", help=hint,
        )

    def apply(self, recipe: ast.Recipe, rules: list[ast.Rule], held: list[list[int]], steps: list[Step],
              noise: NoiseLevels, warnings: list[Diagnostic]) -> tuple[list[Step], Transfer]:
        """The steps with push factors and reference sigmas, and the Transfer record."""
        factors: dict[tuple[int, int], float] = {}  # (rule, energy position in the rule) -> factor
        placements = []
        for r, rule in enumerate(rules):
            rule_factors = []
            energies = [t for t in rule.terms if get_term(t.name).kind is Kind.ENERGY]
            for e, term in enumerate(energies):
                f = 1.0
                if self.settings.push == "total":
                    f = self._push_factor(recipe, rule, term, r, held[r], noise, warnings)
                factors[(r, e)] = f
                rule_factors.append(f)
            lo, hi = self.edges[r] if self.ref_held[r] else (None, None)
            placements.append(Placement(rule=r, reference_steps=tuple(self.settings.steps - 1 - k
                                                                       for k in self.ref_held[r]),
                                        sigma_lo=lo, sigma_hi=hi, push=tuple(rule_factors)))
        out = []
        for step in steps:
            seen: dict[int, int] = {}
            energies = []
            for use in step.energies:
                e = seen.get(use.rule, 0)
                seen[use.rule] = e + 1
                f = factors.get((use.rule, e), 1.0)
                energies.append(use if f == 1.0 else evolve(use, push=f))
            reference_sigma = step.sigma / self.scale if self.reference is not None and step.sigma is not None else None
            out.append(evolve(step, energies=tuple(energies), reference_sigma=reference_sigma))
        transfer = Transfer(reference=self.reference, latent_shape=self.model, sigma_scale=self.scale,
                            push=self.settings.push, reference_sampler=self.reference_sampler,
                            placements=tuple(placements))
        return out, transfer

    def _push_factor(self, recipe: ast.Recipe, rule: ast.Rule, term: ast.Term, r: int, run_held: list[int],
                     noise: NoiseLevels, warnings: list[Diagnostic]) -> float:
        """sum over the reference's held steps of rho * sigma_t / the same over the run's."""
        spec = get_term(term.name)
        plan = _plan(term, spec, self.settings)[1]

        def total(held: list[int], post: Sequence[float]) -> float:
            n = len(held)
            return sum(float(spec.impl.strength(_use(plan, r, progress(k, n)).as_dict())) * float(post[index])
                       for k, index in enumerate(held))

        want = total(self.ref_held[r], self.ref.posterior_stds)
        have = total(run_held, noise.posterior_stds)
        if have > 0.0:
            return want / have
        if want > 0.0 and run_held:
            warnings.append(Diagnostic(
                "warning", f"`push = \"total\"` cannot give `{term.name}` its reference push "
                f"({want:.4g}) at this run: sigma_t is 0 at every step its window holds at",
                term.span, "push-unreachable", help="widen the window or run with more steps"))
        return 1.0


def checked_settings(recipe: ast.Recipe, *, steps: int | None = None, sampler: str | None = None,
                     overrides: Mapping[str, Any] | None = None) -> tuple[Settings, int]:
    """What a run knows before its model is loaded: the recipe checked (RecipeError for its
    errors), its resolved settings and the number of real steps N."""
    settings, num_steps, _ = _resolved(recipe, overrides, sampler, steps)
    return settings, num_steps


def _resolved(recipe: ast.Recipe, overrides: Mapping[str, Any] | None, sampler: str | None,
              steps: int | None) -> tuple[Settings, int, list[Diagnostic]]:
    """The checked recipe's settings, the number of real steps N, and its warnings."""
    settings, warnings = _checked_settings(recipe, overrides, sampler)
    num_steps = settings.steps if steps is None else steps
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"steps must be a whole number >= 1, got {steps!r}")
    return settings, num_steps, warnings
