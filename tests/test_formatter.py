"""`dmgd fmt`'s canonical layout and the recipe hash."""

from __future__ import annotations

import hashlib

import pytest

from dmgd.language import canonical_hash, canonical_text, format_recipe, parse_recipe
from language_helpers import ONE_LINE, REFERENCE, meaning


def fmt(text: str) -> str:
    return format_recipe(parse_recipe(text))


def test_reference_recipe():
    assert fmt(REFERENCE) == """\
# DMGD reference schedule (CVPR 2026): DiT-XL/2, 50 respaced DDPM steps
steps = 50
sampler = ddpm
cfg = 4.0

t>=45: explore
25..45: softlabel(bs=0.01, bn=0.06)
t<25: refine
30..45: ot(K=10, rho=0.05..0.5)
"""


def test_one_line_form_is_split():
    assert fmt(ONE_LINE) == """\
t>=45: explore
25..45: softlabel(bs=0.01, bn=0.06)
30..45: ot(K=10, rho=0.05..0.5)
"""


def test_comments_stay_where_they_were():
    text = """


# top comment
steps=5;cfg=2   # about cfg   \n\
    # an indented comment



*:x(a=1 ,b = 2,)     # trailing
# last
;
"""
    assert fmt(text) == """\
# top comment
steps = 5
cfg = 2  # about cfg
# an indented comment

*: x(a=1, b=2)  # trailing
# last
"""


def test_canonical_spacing_and_windows():
    text = "25 .. 45 : a\n25..=45:a\nt >= 45:a\nt>45:a\nt<=2.5:a\nt < 25:a\n90% .. 100%:a\nt>=90%:a\n" \
           "sigma   0.28 .. 5.42 : a\n * : a , b ( ) , c\n0.5..1.0: a\n"
    assert fmt(text) == """\
25..45: a
25..=45: a
t>=45: a
t>45: a
t<=2.5: a
t<25: a
90%..100%: a
t>=90%: a
sigma 0.28..5.42: a
*: a, b, c
0.5..1: a
"""


@pytest.mark.parametrize("written, canonical", [
    ("50", "50"), ("007", "7"), ("-0", "0"), ("-12", "-12"), ("9223372036854775807", "9223372036854775807"),
    ("50.0", "50.0"), ("0.050", "0.05"), ("1e-3", "0.001"), ("1E5", "100000.0"), ("1e-10", "1e-10"),
    ("-0.5", "-0.5"), ("1.5e300", "1.5e+300"), ("1e-999", "0.0"), ("1.7e308", "1.7e+308"), ("0.1", "0.1"),
    ("3.14159265358979323846", "3.141592653589793"), ("2e+16", "2e+16"),
])
def test_numbers(written, canonical):
    out = fmt(f"x = {written}")
    assert out == f"x = {canonical}\n"
    assert parse_recipe(out).statements[0].value.value == parse_recipe(f"x = {written}").statements[0].value.value


@pytest.mark.parametrize("written, canonical", [
    ("90%", "90%"), ("90.0%", "90%"), ("12.5%", "12.5%"), ("1e2%", "100%"), ("1e300%", "1e+300%"),
    ("0.001%", "0.001%"), ("1e20%", "1e+20%"),
])
def test_percents(written, canonical):
    assert fmt(f"x = {written}") == f"x = {canonical}\n"
    assert fmt(f"t>={written}: a") == f"t>={canonical}: a\n"


def test_strings_booleans_names_ramps():
    text = r'a = "q\"b\\s";b=true;c=false;d=ddim;*: ot(rho=0.05..0.5, l=cos(0..1), e=exp(1e-2..1), n=-1..-2.50)'
    assert fmt(text) == """\
a = "q\\"b\\\\s"
b = true
c = false
d = ddim
*: ot(rho=0.05..0.5, l=cos(0..1), e=exp(0.01..1), n=-1..-2.5)
"""


def test_blank_lines_collapse_and_ends_with_one_newline():
    assert fmt("\n\n\na = 1\n\n\n\nb = 2\n\n\n") == "a = 1\n\nb = 2\n"
    assert fmt("a = 1") == "a = 1\n"
    assert fmt("a = 1\r\n\r\n\r\nb = 2\r\n") == "a = 1\n\nb = 2\n"


def test_empty_and_comment_only():
    assert fmt("") == ""
    assert fmt("\n\n  \n") == ""
    assert fmt("# just a note\n\n\n# and another") == "# just a note\n\n# and another\n"


def test_idempotent_and_meaning_preserving_on_examples():
    examples = [
        REFERENCE,
        "t>=45: explore; 25..45: softlabel(bs=0.01,bn=0.06); 30..45: ot(K=10,rho=0.05..0.5)",
        'model = "C:\\\\data\\\\x"  # windows path\nseed = 007\nsigma 1e-1..8E1: mode(rho=exp(0.1..1.0))',
        "# a\n\n\n# b\nx=1 # c\n\n;;\n# d",
    ]
    for text in examples:
        once = fmt(text)
        assert fmt(once) == once
        assert meaning(parse_recipe(once).statements) == meaning(parse_recipe(text).statements)
        assert [c.text for c in parse_recipe(once).comments] == [c.text.rstrip() for c in parse_recipe(text).comments]


def test_canonical_text_has_no_comments_or_blank_lines():
    assert canonical_text(parse_recipe(REFERENCE)) == """\
steps = 50
sampler = ddpm
cfg = 4.0
t>=45: explore
25..45: softlabel(bs=0.01, bn=0.06)
t<25: refine
30..45: ot(K=10, rho=0.05..0.5)
"""
    assert canonical_text(parse_recipe("# nothing")) == ""


def test_hash_is_sha256_of_canonical_text():
    r = parse_recipe(REFERENCE)
    assert canonical_hash(r) == hashlib.sha256(canonical_text(r).encode()).hexdigest()
    assert len(canonical_hash(r)) == 64


def test_hash_ignores_comments_and_layout_but_not_meaning():
    base = canonical_hash(parse_recipe(REFERENCE))
    relaid = "steps=50;sampler=ddpm;cfg=4.0\n# a different comment\nt>=45:explore\n" \
             "25..45:softlabel(bs=1e-2,bn=0.060)\n\n\nt<25:refine;30..45:ot(K=10,rho=0.05..0.5)  # note"
    assert canonical_hash(parse_recipe(relaid)) == base
    changed = REFERENCE.replace("rho=0.05..0.5", "rho=0.05..0.6")
    assert canonical_hash(parse_recipe(changed)) != base
    reordered = REFERENCE.replace("t<25:   refine\n", "") + "t<25: refine\n"
    assert canonical_hash(parse_recipe(reordered)) != base  # rule order is part of a recipe


def test_hash_of_odd_strings():
    r = parse_recipe('model = "\udcff and \x00"')
    assert len(canonical_hash(r)) == 64
