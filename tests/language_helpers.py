"""What the language tests share: the reference recipe in its two forms, and `meaning`."""

from __future__ import annotations

import attrs

REFERENCE = """\
# DMGD reference schedule (CVPR 2026): DiT-XL/2, 50 respaced DDPM steps
steps   = 50
sampler = ddpm
cfg     = 4.0

t>=45:  explore
25..45: softlabel(bs=0.01, bn=0.06)
t<25:   refine
30..45: ot(K=10, rho=0.05..0.5)
"""

# The rules of REFERENCE in the spec's one-line form (no settings, the refine rule implicit).
ONE_LINE = "t>=45: explore; 25..45: softlabel(bs=0.01,bn=0.06); 30..45: ot(K=10,rho=0.05..0.5)"

_NOT_MEANING = ("span", "name_span", "text", "source", "path", "comments")


def meaning(node):
    """A node without its spans and number spellings: what it means."""
    if isinstance(node, tuple):
        return tuple(meaning(n) for n in node)
    if attrs.has(type(node)):
        return (type(node).__name__,) + tuple(
            (f.name, meaning(getattr(node, f.name)))
            for f in attrs.fields(type(node))
            if f.name not in _NOT_MEANING
        )
    return node


_GRAMMAR_PARSER: list = []


def parse_with_grammar(text):
    """What lark's parser built from grammar/dmgd.lark returns (the committed generated
    parser must agree with it); raises lark's UnexpectedInput."""
    if not _GRAMMAR_PARSER:
        from dmgd.language.grammar import build_lark
        from dmgd.language.parser import _Builder

        _GRAMMAR_PARSER.append(build_lark(transformer=_Builder()))
    return _GRAMMAR_PARSER[0].parse(text)
