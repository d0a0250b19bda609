"""Properties of the front end over generated recipes (hypothesis, derandomized).

- every generated recipe parses; `fmt` is idempotent and keeps meaning and comments;
- the committed generated parser and lark's parser built from the grammar agree exactly
  (trees, spans, comments, errors);
- generated, mutated and random inputs only ever give a Recipe or a RecipeError, whose
  diagnostics point inside the text and render.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dmgd.language import RecipeError, format_recipe, parse_recipe, render_json, render_text
from dmgd.language.parser import parse_raw
from language_helpers import meaning, parse_with_grammar

PROFILE = settings(max_examples=200, derandomize=True, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- a grammar of valid recipes ---------------------------------------------------------

blank = st.sampled_from(["", "", " ", "  ", "\t", " \t "])
some_blank = st.sampled_from([" ", "  ", "\t"])
names = st.sampled_from(["t", "sigma", "cos", "exp", "true", "false", "x", "_", "K", "rho", "steps", "ot",
                         "softlabel", "a1", "B_2", "True", "mode", "lam", "grad", "tweedie", "sampler", "ddim"])
digits = st.sampled_from(["0", "1", "5", "9", "10", "45", "007", "123456", "99999999999999999999"])
numbers = st.tuples(st.sampled_from(["", "", "-"]), digits,
                    st.sampled_from(["", "", ".0", ".5", ".05", ".125", ".333333333333333333"]),
                    st.sampled_from(["", "", "", "e3", "E-2", "e+1", "e200", "e-400"])).map("".join)
percents = numbers.map(lambda n: n + "%")
CHARS = list('ab #;"\\=:,()%*.\r\t') + ["\x00", "\ufffd", "\u00e9", "\u2028", "\U0001f600", "\udcff"]
strings = st.text(st.sampled_from(CHARS), max_size=8).map(
    lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"')
ramps = st.one_of(
    st.tuples(numbers, blank, blank, numbers).map(lambda t: f"{t[0]}{t[1]}..{t[2]}{t[3]}"),
    st.tuples(st.sampled_from(["cos", "exp"]), blank, numbers, numbers, blank).map(
        lambda t: f"{t[0]}{t[1]}({t[2]}..{t[3]}{t[4]})"),
)
values = st.one_of(numbers, percents, strings, st.sampled_from(["true", "false"]), names, ramps)
bounds = st.one_of(numbers, percents)


@st.composite
def params(draw):
    return f"{draw(names)}{draw(blank)}={draw(blank)}{draw(values)}"


@st.composite
def terms(draw):
    name = draw(names)
    form = draw(st.integers(0, 2))
    if form == 0:
        return name
    ps = draw(st.lists(params(), max_size=3 if form == 2 else 0))
    trailing = "," if ps and draw(st.booleans()) else ""
    return f"{name}{draw(blank)}({draw(blank)}{(',' + draw(blank)).join(ps)}{trailing}{draw(blank)})"


@st.composite
def windows(draw):
    kind = draw(st.integers(0, 4))
    b = draw(blank)
    if kind == 0:
        return f"{draw(bounds)}{b}{draw(st.sampled_from(['..', '..=']))}{b}{draw(bounds)}"
    if kind == 1:
        return f"t{b}{draw(st.sampled_from(['>=', '>', '<=', '<']))}{draw(blank)}{draw(bounds)}"
    if kind == 2:
        return "*"
    return f"sigma{draw(some_blank)}{draw(numbers)}{b}..{b}{draw(numbers)}"


@st.composite
def statements(draw):
    if draw(st.booleans()):
        return f"{draw(names)}{draw(blank)}={draw(blank)}{draw(values)}"
    ts = draw(st.lists(terms(), min_size=1, max_size=3))
    return f"{draw(windows())}{draw(blank)}:{draw(blank)}{(draw(blank) + ',' + draw(blank)).join(ts)}"


comments = st.text(st.sampled_from(CHARS), max_size=10).map(lambda s: "#" + s)


@st.composite
def lines(draw):
    stmts = draw(st.lists(statements(), max_size=3))
    sep = draw(st.sampled_from([";", " ; ", ";  ", ";;"]))
    line = draw(blank) + sep.join(stmts)
    if draw(st.booleans()):
        line += draw(st.sampled_from([";", ""])) + draw(blank)
    if draw(st.integers(0, 3)) == 0:
        line += draw(blank) + draw(comments)
    return line


@st.composite
def recipes(draw):
    newline = draw(st.sampled_from(["\n", "\n", "\r\n"]))
    text = newline.join(draw(st.lists(lines(), max_size=8)))
    if draw(st.booleans()):
        text += newline
    return text


# --- mutations of text --------------------------------------------------------------

INTERESTING = list('()=:;,.%*#"\\\n\r\t -+eE0123456789tsigmacoxp<>') + ["..", "..=", "\x00", "\ufffd", "é", "\u2028"]


@st.composite
def mutated(draw):
    text = draw(recipes())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 4))
        pos = draw(st.integers(0, len(text)))
        if op == 0:  # insert
            text = text[:pos] + draw(st.sampled_from(INTERESTING)) + text[pos:]
        elif op == 1 and text:  # delete a few characters
            text = text[:pos] + text[pos + draw(st.integers(1, 3)):]
        elif op == 2 and pos < len(text):  # replace
            text = text[:pos] + draw(st.sampled_from(INTERESTING)) + text[pos + 1:]
        elif op == 3:  # duplicate a slice
            end = min(len(text), pos + draw(st.integers(0, 10)))
            text = text[:end] + text[pos:end] + text[end:]
        else:  # random characters
            text = text[:pos] + draw(st.text(max_size=3)) + text[pos:]
    return text


# --- helpers --------------------------------------------------------------------------


def raw(items):
    """A parser's raw result, comparable: nodes (with spans), comment tokens."""
    out = []
    for item in items:
        if hasattr(item, "diagnostics"):
            out.append(("bad", item.diagnostics))
        elif hasattr(item, "type"):
            out.append((item.type, str(item.value), item.start_pos, item.end_pos, item.line, item.column,
                        item.end_line, item.end_column))
        else:
            out.append(item)
    return out


def lark_result(text):
    from lark.exceptions import UnexpectedInput

    try:
        return raw(parse_with_grammar(text))
    except UnexpectedInput:
        return None


def generated_result(text):
    from dmgd.language._standalone_parser import UnexpectedInput

    try:
        return raw(parse_raw(text))
    except UnexpectedInput:
        return None


def check_outcome(text):
    """Parse: a Recipe, or a RecipeError whose diagnostics are sound. Anything else fails."""
    try:
        recipe = parse_recipe(text, "p.dmgd")
    except RecipeError as e:
        assert e.diagnostics
        for d in e.diagnostics:
            assert d.severity == "error" and d.code in ("syntax", "too-many-errors") and d.message
            assert d.span is not None
            assert 0 <= d.span.start <= d.span.end <= len(text)
            assert d.span.line == text.count("\n", 0, d.span.start) + 1
            assert d.span.column == d.span.start - (text.rfind("\n", 0, d.span.start) + 1) + 1
        assert render_text(e.diagnostics, text, "p.dmgd").startswith("p.dmgd:")
        assert render_json(e.diagnostics, "p.dmgd").startswith("[")
        return None
    return recipe


def check_format(recipe):
    once = format_recipe(recipe)
    again = parse_recipe(once)
    assert meaning(again.statements) == meaning(recipe.statements)
    assert [c.text for c in again.comments] == [c.text.rstrip() for c in recipe.comments]
    assert format_recipe(again) == once
    assert once == "" or (once.endswith("\n") and not once.endswith("\n\n"))


# --- properties -----------------------------------------------------------------------


@PROFILE
@given(recipes())
def test_generated_recipes_parse_format_and_agree_with_lark(text):
    recipe = parse_recipe(text)
    assert recipe.source == text
    check_format(recipe)
    fast = generated_result(text)
    assert fast is not None
    assert fast == lark_result(text)


@PROFILE
@given(mutated())
def test_mutated_recipes_raise_only_recipe_errors_and_agree_with_lark(text):
    recipe = check_outcome(text)
    if recipe is not None:
        check_format(recipe)
    assert generated_result(text) == lark_result(text), text


@PROFILE
@given(st.one_of(st.text(max_size=80), st.binary(max_size=80).map(lambda b: b.decode("utf-8", errors="replace"))))
def test_random_text_raises_only_recipe_errors(text):
    check_outcome(text)
