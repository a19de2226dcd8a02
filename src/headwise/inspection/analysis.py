"""What each head does: per-head statistics of self-attention over one or many texts, and a ranked table
that names each head by its strongest pattern.

    HeadMaps (L, H, N, N) per text -> statistics per head, averaged over the query rows, then the texts
      -> a role per head: the largest of previous / next / same token, first-token sink, special-token
         sink when it reaches ROLE_MIN; else "broad" (spread out) or "mixed"
      -> HeadTable: the heads ranked, named roles first, strongest first

    table = analyse(read(model, tokenizer, text)[0])   # or analyse([maps_1, maps_2, ...])
    table.find("previous token")[0]                     # HeadStats(layer=0, head=2, ..., score=1.000)
    heads_linking(maps, "it", "animal")[0]              # the head whose "it" attends most to "animal"

Every statistic is a share of a query's attention (a number in [0, 1]) except entropy (nats) and distance
(positions). A token is special when it is written like [CLS], <s>, </s> or <|endoftext|> (SPECIAL_TOKEN), or
is in the `special` set given.
"""

from __future__ import annotations

import html
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields

import torch

from ..checks import positive_int
from ..pages.model import HeadMaps

SPECIAL_TOKEN = re.compile(r"\[[A-Za-z_]+\]|<\|?/?[A-Za-z_]+\|?>")  # [CLS] [SEP] <s> </s> <|endoftext|>
ROLE_MIN = 0.5  # a head is named by a pattern that takes at least half of its attention
BROAD_MIN = 0.8  # else "broad" when its entropy is at least 80% of the uniform distribution's
PATTERNS = ("previous token", "next token", "same token", "first-token sink", "special-token sink")
BROAD, MIXED = "broad", "mixed"


@dataclass(frozen=True)
class HeadStats:
    """One head's statistics (means over query rows, then texts) and the role they name.

    entropy: of a query's weights, nats. broadness: entropy / log(keys it may see), 0 focused to 1 uniform.
    first / special / previous / next / same: the share of attention on the first token, on the special
    tokens after it (the first, [CLS] or <s>, counts in `first` only), on the token before (rows 1..N-1),
    after (rows 0..N-2) and on itself. distance: mean |i - j| in positions.
    role: what it does (PATTERNS, BROAD or MIXED); score: the statistic behind the role."""

    layer: int
    head: int
    entropy: float
    broadness: float
    first: float
    special: float
    previous: float
    next: float
    same: float
    distance: float
    role: str
    score: float


COLUMNS = ("layer", "head", "role", "score", *(f.name for f in fields(HeadStats)[2:-2]))  # as printed


@dataclass(frozen=True)
class HeadTable:
    """Every head's statistics, ranked: named roles (PATTERNS) first, then broad, then mixed; within each,
    the highest score first. Prints as a text table; displays as an HTML table in a notebook."""

    title: str
    texts: int
    rows: tuple[HeadStats, ...]

    def find(self, role: str) -> tuple[HeadStats, ...]:
        """The heads with this role, strongest first (empty when none has it)."""
        if role not in (*PATTERNS, BROAD, MIXED):
            raise ValueError(f"role must be one of {[*PATTERNS, BROAD, MIXED]}, got {role!r}")
        return tuple(row for row in self.rows if row.role == role)

    def top(self, count: int) -> HeadTable:
        """The table of the first `count` heads only."""
        return HeadTable(self.title, self.texts, self.rows[: positive_int(count, "count")])

    def cells(self) -> list[list[str]]:
        """The table as printed: a header, then one row per head."""
        header = ["rank", *COLUMNS]
        body = [
            [str(rank), *(_cell(getattr(row, name)) for name in COLUMNS)]
            for rank, row in enumerate(self.rows, start=1)
        ]
        return [header, *body]

    def text(self) -> str:
        """The table as fixed-width text."""
        cells = self.cells()
        widths = [max(len(row[column]) for row in cells) for column in range(len(cells[0]))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in cells
        ]
        return self._caption() + "\n" + "\n".join(lines)

    def _caption(self) -> str:
        return f"{self.title} ({self.texts} text{'s' if self.texts != 1 else ''})"

    def __str__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        header, *body = self.cells()
        head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
        caption = html.escape(self._caption())
        return (
            f"<table><caption>{caption}</caption><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
        )


def analyse(maps: HeadMaps | Sequence[HeadMaps], *, special: Collection[str] = ()) -> HeadTable:
    """Every head's statistics over one text's self-attention maps, or several texts' (all with the same
    layers and heads), ranked and named. `special`: more token strings to count as special."""
    texts = (maps,) if isinstance(maps, HeadMaps) else tuple(maps)
    if not texts or not all(isinstance(text, HeadMaps) for text in texts):
        raise TypeError(f"maps must be HeadMaps or a non-empty list of them, got {maps!r:.80}")
    heads = {tuple(text.weights.shape[:2]) for text in texts}
    if len(heads) != 1:
        raise ValueError(f"maps must all have the same layers × heads, got {sorted(heads)}")
    statistics = torch.stack([_statistics(text, special) for text in texts]).mean(0)  # (L, H, 8)
    layers, num_heads = statistics.shape[:2]
    rows = [
        _named(layer, head, statistics[layer, head].tolist())
        for layer in range(layers)
        for head in range(num_heads)
    ]
    bucket = {role: 0 for role in PATTERNS} | {BROAD: 1, MIXED: 2}
    rows.sort(key=lambda row: (bucket[row.role], -row.score, row.layer, row.head))
    return HeadTable(texts[0].title, len(texts), tuple(rows))


def _statistics(maps: HeadMaps, special: Collection[str]) -> torch.Tensor:
    """One text's statistics per head: (L, H, 8), in the order of HeadStats' fields from entropy on."""
    tokens = maps.query_tokens
    if maps.key_tokens != tokens or len(tokens) < 2:
        raise ValueError(
            f"{maps.title}: the statistics are of self-attention over at least 2 tokens (the same tokens for "
            f"queries and keys), got {len(tokens)} query and {len(maps.key_tokens)} key tokens"
        )
    weights = maps.weights.to(torch.float64)  # (L, H, N, N)
    n = len(tokens)
    entropy = torch.special.entr(weights).sum(-1)  # (L, H, N): -Σ w log w, 0 log 0 = 0
    visible = (weights > 0).sum(-1)  # (L, H, N): the keys a query may see
    broadness = torch.where(visible > 1, entropy / visible.clamp(min=2).log(), 0.0)  # (L, H, N)
    is_special = torch.tensor([SPECIAL_TOKEN.fullmatch(t) is not None or t in special for t in tokens])
    is_special[0] = False  # the first token has its own column
    positions = torch.arange(n, dtype=torch.float64)
    distance = (positions[:, None] - positions[None, :]).abs()  # (N, N): |i - j|
    columns = [
        entropy.mean(-1),
        broadness.mean(-1),
        weights[..., 0].mean(-1),  # the first token
        weights[..., is_special].sum(-1).mean(-1),
        weights.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1),  # (L, H, N - 1) -> (L, H): key i - 1
        weights.diagonal(offset=1, dim1=-2, dim2=-1).mean(-1),  # key i + 1
        weights.diagonal(dim1=-2, dim2=-1).mean(-1),  # key i
        (weights * distance).sum(-1).mean(-1),
    ]
    return torch.stack(columns, dim=-1)  # (L, H, 8)


def _named(layer: int, head: int, values: list[float]) -> HeadStats:
    """A head's statistics with its role: the strongest pattern at ROLE_MIN or above, else broad or mixed."""
    entropy, broadness, first, special, previous, next_, same, distance = values
    scores = dict(zip(PATTERNS, (previous, next_, same, first, special), strict=True))
    role, score = max(scores.items(), key=lambda item: item[1])
    if score < ROLE_MIN:
        role, score = (BROAD, broadness) if broadness >= BROAD_MIN else (MIXED, score)
    return HeadStats(
        layer, head, entropy, broadness, first, special, previous, next_, same, distance, role, score
    )


@dataclass(frozen=True)
class PairWeight:
    """How much one head's query token attends to one key token."""

    layer: int
    head: int
    weight: float


def heads_linking(maps: HeadMaps, query: str | int, key: str | int) -> tuple[PairWeight, ...]:
    """Every head's weight from `query` to `key` (a token, its first occurrence, or a position), highest
    first: which heads link, say, "it" to "animal"."""
    i = token_position(query, maps.query_tokens, "query")
    j = token_position(key, maps.key_tokens, "key")
    weights = maps.weights[:, :, i, j]  # (L, H)
    pairs = [
        PairWeight(layer, head, float(weights[layer, head]))
        for layer in range(weights.shape[0])
        for head in range(weights.shape[1])
    ]
    return tuple(sorted(pairs, key=lambda pair: -pair.weight))


def token_position(token: str | int, tokens: tuple[str, ...], name: str) -> int:
    """A token's position: the index given, or the first occurrence of the token given."""
    if isinstance(token, int) and not isinstance(token, bool):
        if not 0 <= token < len(tokens):
            raise ValueError(f"{name} must be a position from 0 to {len(tokens) - 1}, got {token}")
        return token
    if isinstance(token, str) and token in tokens:
        return tokens.index(token)
    raise ValueError(f"{name} must be one of the tokens {list(tokens)} or a position, got {token!r}")


def _cell(value: object) -> str:
    """A table cell: floats to 3 decimals."""
    return f"{value:.3f}" if isinstance(value, float) else str(value)
