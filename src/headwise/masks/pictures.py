"""Pictures of masks and score modifiers as text: what `print(predicate)` and `print(modifier)` show."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .common import first

if TYPE_CHECKING:
    from .predicates import Predicate
    from .score_mods import ALiBi, Softcap

PICTURE_SIZE = 8  # queries and keys that print() draws, unless the predicate's data fixes them
PICTURE_WIDTH = 80  # a picture spaces its columns out while they fit in this many characters


def predicate(rule: Predicate, num_queries: int | None, num_keys: int | None) -> str:
    """A predicate's pattern: a title line, then a row per query and a column per key, ■ = may attend,
    · = blocked. Batch element 0 and head 0; the sizes default to the data's, else to 8."""
    batch, data_queries, data_keys = rule.sizes()
    num_queries = first(num_queries, data_queries, PICTURE_SIZE)
    num_keys = first(num_keys, data_keys, PICTURE_SIZE)
    grid = rule.materialize(first(batch, 1), 1, num_queries, num_keys)[0, 0]  # (Nq, Nk)
    where = "" if batch is None else ", batch 0"
    header = f"{rule.title}: {num_queries} queries × {num_keys} keys{where}"
    gap = " " if 2 * num_keys <= PICTURE_WIDTH else ""
    return "\n".join([header, *(gap.join("■" if x else "·" for x in row) for row in grid.tolist())])


def alibi(modifier: ALiBi, num_queries: int, num_keys: int) -> str:
    """The title, then head 0's bias: a row per query, a column per key."""
    zeros = torch.zeros(1, modifier.heads(), num_queries, num_keys, dtype=torch.float64)  # (1, H, Nq, Nk)
    bias = modifier.dense(zeros)[0, 0]  # (Nq, Nk)
    slope = modifier.slopes[0].item()
    header = f"bias of head 0 (slope {slope:g}), {num_queries} queries × {num_keys} keys:"
    return "\n".join([modifier.title, header, *_number_rows(bias.tolist())])


def softcap(modifier: Softcap) -> str:
    """The title, then a few scores and what they become."""
    cap = modifier.cap
    ratios = torch.tensor([-3.0, -1.0, -0.25, 0.0, 0.25, 1.0, 3.0], dtype=torch.float64)  # (7,)
    samples = ratios * cap  # (7,)
    capped = modifier.dense(samples.view(1, 1, 1, -1)).flatten()  # (7,)
    rows = _number_rows([samples.tolist(), capped.tolist()])
    formula = f"a score s becomes {cap:g} · tanh(s / {cap:g})"
    return "\n".join([f"{modifier.title}: {formula}", f"s       {rows[0]}", f"capped  {rows[1]}"])


def _number_rows(rows: list[list[float]]) -> list[str]:
    """Rows of numbers as lines of right-aligned columns, 2 decimals."""
    cells = [[f"{value + 0.0:.2f}" for value in row] for row in rows]  # + 0.0 turns -0.0 into 0.0
    width = max((len(cell) for row in cells for cell in row), default=0)
    return [" ".join(cell.rjust(width) for cell in row) for row in cells]
