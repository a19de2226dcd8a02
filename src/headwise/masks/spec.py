"""A predicate as plain data, (spec, tensors), for what takes only strings and tensors: torch's custom op.

`encode(causal() & documents(ids))` -> ("and(causal(),documents(#0,#0))", [ids]): the predicate's tree
written with its int parameters, its tensors (document ids, lengths) as #index into the list. `decode`
builds the same predicate back. A predicate of a class this module does not know (a user's subclass) has
no spec: encode returns None, and the caller materialises it instead.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from .common import non_decreasing
from .predicates import And, Not, Or, Predicate
from .rules import Causal, Documents, KeyLengths, PrefixLM, SlidingWindow, _key_lengths


def encode(predicate: Predicate) -> tuple[str, list[torch.Tensor]] | None:
    """-> (spec, tensors) that `decode` turns back into `predicate`, or None for an unknown class."""
    tensors: list[torch.Tensor] = []
    spec = _encode(predicate, tensors)
    return None if spec is None else (spec, tensors)


def _encode(predicate: Predicate, tensors: list[torch.Tensor]) -> str | None:
    def tensor(t: torch.Tensor) -> str:
        for index, known in enumerate(tensors):
            if known is t:
                return f"#{index}"
        tensors.append(t)
        return f"#{len(tensors) - 1}"

    # The exact classes only: a user's subclass may mean something else (type() narrows as isinstance does).
    if type(predicate) is Causal:
        return "causal()"
    if type(predicate) is SlidingWindow:
        return f"sliding_window({predicate.left},{predicate.right})"
    if type(predicate) is KeyLengths:
        return f"key_lengths({tensor(predicate.lengths)},{predicate.argument})"
    if type(predicate) is Documents:
        return f"documents({tensor(predicate.query_doc_ids)},{tensor(predicate.key_doc_ids)})"
    if type(predicate) is PrefixLM and isinstance(predicate.second, KeyLengths):  # as prefix_lm() makes it
        return f"prefix_lm({tensor(predicate.second.lengths)})"
    if type(predicate) is Not:
        inner = _encode(predicate.inner, tensors)
        return None if inner is None else f"not({inner})"
    if type(predicate) is And or type(predicate) is Or:
        first, second = _encode(predicate.first, tensors), _encode(predicate.second, tensors)
        if first is None or second is None:
            return None
        return f"{'and' if type(predicate) is And else 'or'}({first},{second})"
    return None


_TOKEN = re.compile(r"\s*([a-z_]+|#\d+|\d+|[(),])")


def decode(spec: str, tensors: list[torch.Tensor]) -> Predicate:
    """The predicate that `encode` wrote as (spec, tensors); a ValueError for a spec it did not write."""
    tokens = _TOKEN.findall(spec)
    if "".join(tokens) != spec.replace(" ", ""):
        raise ValueError(f"not a predicate spec: {spec!r}")
    predicate, rest = _decode(tokens, tensors)
    if rest:
        raise ValueError(f"not a predicate spec: {spec!r} (left over: {''.join(rest)!r})")
    return predicate


def _decode(tokens: list[str], tensors: list[torch.Tensor]) -> tuple[Predicate, list[str]]:
    """The predicate at the head of `tokens`, and the tokens after it."""
    if len(tokens) < 3 or tokens[1] != "(":
        raise ValueError(f"not a predicate spec at {''.join(tokens)!r}")
    name, rest = tokens[0], tokens[2:]
    arguments: list[object] = []
    while rest and rest[0] != ")":
        if rest[0] == ",":
            rest = rest[1:]
        elif rest[0].startswith("#"):
            arguments.append(tensors[int(rest[0][1:])])
            rest = rest[1:]
        elif rest[0].isdigit():
            arguments.append(int(rest[0]))
            rest = rest[1:]
        elif len(rest) > 1 and rest[1] == "(":
            inner, rest = _decode(rest, tensors)
            arguments.append(inner)
        else:
            arguments.append(rest[0])  # a word: the name of a lengths argument
            rest = rest[1:]
    if not rest:
        raise ValueError(f"not a predicate spec: unclosed {name}(")
    return _build(name, arguments), rest[1:]


def _build(name: str, arguments: list[Any]) -> Predicate:
    """The predicate `name` of the decoded `arguments` (tensors, ints, words, inner predicates)."""
    if name == "causal":
        return Causal()
    if name == "sliding_window":
        return SlidingWindow(*arguments)
    if name == "key_lengths":
        return _key_lengths(*arguments)
    if name == "documents":
        query_ids, key_ids = arguments
        return Documents(query_ids, key_ids, non_decreasing(query_ids) and non_decreasing(key_ids))
    if name == "prefix_lm":
        return PrefixLM(Causal(), _key_lengths(arguments[0], "prefix_lengths"))
    if name == "not":
        return Not(*arguments)
    if name in ("and", "or"):
        return (And if name == "and" else Or)(*arguments)
    raise ValueError(f"not a predicate spec: unknown predicate {name!r}")
