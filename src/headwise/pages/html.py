"""A Report as one self-contained HTML page: the walkthrough, a head view and a model view.

    write_html(lecture_report(run_example(Example())), "report.html")

The page needs no network. Its CSS (assets/report.css) and JavaScript are inlined: the script is the pieces
SCRIPT lists (assets/report-*.js, one per view and those they share), joined in that order inside one
strict-mode function, so that they share their names and leave none on window; no build step. The
report travels as JSON in a <script type="application/json"> block in which every <, > and & is written
\\u003c, \\u003e and \\u0026, so that no token or title can close the block; the JavaScript puts every piece
of user text on the page with textContent, never as HTML. A Content-Security-Policy lets only the page's own
script and style run (by hash) and forbids every request.

How numbers travel (each array says which way, and the page says how precise it is):

    at most EXACT_LIMIT values      "float64": exactly, little-endian, base64
    more, attention weights         "fixed4":  rounded to 4 decimals (uint16 ten-thousandths), as the terminal
      (HeadMaps, in [0, FIXED_MAX])            prints them
    more, |finite| <= HALF_MAX      "float16": 3 significant digits (-inf, the masked scores, stays -inf)
    more, larger                    "float32": 7 significant digits

Arrays stored with "fixed4", "float16" or "float32" are split into byte planes (every value's first byte,
then every second byte, ...) and deflated with zlib, which the browser undoes with DecompressionStream.
The maps of 512 tokens in 2 layers × 4 heads (2 million weights) take about 1 MB this way (5.6 MB as plain
float16, about 20 MB as JSON numbers); with the walkthrough of the same 512 tokens (16 more matrices of
512 × 512, as float16) the page is about 8 MB. float16 keeps 3 significant digits down to 6e-5 and rounds
smaller magnitudes to multiples of 6e-8.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import html
import importlib.resources
import json
import os
import re
import sys
import zlib
from pathlib import Path
from typing import Any

import torch

from ..files import write_text
from .model import LEGEND, HeadMaps, Matrix, NeuronData, Playground, Report, WalkStep

EXACT_LIMIT = 4096  # arrays up to 64 × 64 travel exactly, as float64
FIXED_SCALE = 10_000  # "fixed4": value × 10⁴ rounded, as uint16
FIXED_MAX = 65_535 / FIXED_SCALE  # 6.5535: the largest "fixed4" value (dropout scales weights above 1)
HALF_MAX = 65_504.0  # the largest finite float16
DEFLATE_LEVEL = 6
ITEM_SIZE = {"float64": 8, "float32": 4, "float16": 2, "fixed4": 2}
PRECISION = {  # what the page says about each encoding
    "float64": "exact (float64)",
    "fixed4": "rounded to 4 decimals to keep the file small",
    "float16": "stored as float16 (3 significant digits) to keep the file small",
    "float32": "stored as float32 (7 significant digits) to keep the file small",
}
DATA_ID = "report-data"
STYLE = "report.css"
SCRIPT = (  # the pieces of the page's script, in the order it needs them: start() in the last runs the page
    "report-common.js",  # the overview; shared settings, the DOM, numbers, colour scales and legends
    "report-data.js",  # the embedded report read, its arrays decoded
    "report-canvas.js",  # heatmaps, the tooltip, lazy drawing and <body data-ready>
    "report-walkthrough.js",  # the walkthrough view
    "report-heads.js",  # the head view
    "report-model.js",  # the model view and its large view
    "report-neurons.js",  # the neuron view
    "report-playground.js",  # your own numbers: the walkthrough recomputed in the page
    "report-main.js",  # the page, and start()
)
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}
_DATA_BLOCK = re.compile(
    rf'<script type="application/json" id="{DATA_ID}">(?P<json>.*?)</script>', flags=re.DOTALL
)


def _little_endian(values: torch.Tensor) -> torch.Tensor:
    """A tensor's bytes as (n, itemsize) uint8, each value's bytes little-endian first."""
    flat = values.contiguous().reshape(-1)  # (n,)
    planes = flat.view(torch.uint8).reshape(-1, flat.element_size())  # (n, itemsize)
    return planes.flip(-1) if sys.byteorder == "big" else planes


def _bytes(values: torch.Tensor) -> bytes:
    """A CPU uint8 tensor's bytes, copied in one go (bytes(storage) would go value by value)."""
    values = values.contiguous()
    return ctypes.string_at(values.data_ptr(), values.numel())


def choose_encoding(values: torch.Tensor, *, weights: bool = False) -> str:
    """How an array travels: exactly while small, else the smallest encoding that keeps it readable:
    4 decimals for attention weights (`weights`, all in [0, FIXED_MAX]), else 3 or 7 significant digits."""
    values = values.to(torch.float64)
    if values.numel() <= EXACT_LIMIT:
        return "float64"
    finite = values[values.isfinite()]
    if weights and finite.numel() == values.numel() and ((values >= 0) & (values <= FIXED_MAX)).all():
        return "fixed4"
    if finite.numel() == 0 or finite.abs().max() <= HALF_MAX:
        return "float16"
    return "float32"


def encode_array(
    values: torch.Tensor, encoding: str | None = None, *, weights: bool = False
) -> dict[str, Any]:
    """Any-shaped float tensor -> {"shape", "encoding", "deflated", "data": base64}, row-major.

    encoding: one of ITEM_SIZE's keys, or None to let choose_encoding pick (`weights`: the values are
    attention weights, which may be rounded to 4 decimals)."""
    values = values.detach().to("cpu", torch.float64)
    encoding = encoding or choose_encoding(values, weights=weights)
    if encoding == "fixed4":
        stored = values.mul(FIXED_SCALE).round().to(torch.int32).to(torch.uint16)  # same shape
    elif encoding in ITEM_SIZE:
        stored = values.to(getattr(torch, encoding))
    else:
        raise ValueError(f"unknown encoding {encoding!r}; expected one of {sorted(ITEM_SIZE)}")
    planes = _little_endian(stored)  # (n, itemsize)
    deflated = encoding != "float64"
    # Deflated arrays go as byte planes: all first bytes, then all second bytes, ... (more repeats to find).
    raw = zlib.compress(_bytes(planes.T), DEFLATE_LEVEL) if deflated else _bytes(planes)
    return {
        "shape": list(values.shape),
        "encoding": encoding,
        "deflated": deflated,
        "data": base64.b64encode(raw).decode("ascii"),
    }


def decode_array(encoded: dict[str, Any]) -> torch.Tensor:
    """encode_array's inverse: the stored values as a float64 tensor of the stored shape (for tests)."""
    encoding, shape = encoded["encoding"], tuple(encoded["shape"])
    size = ITEM_SIZE[encoding]
    raw = base64.b64decode(encoded["data"])
    if encoded["deflated"]:
        raw = zlib.decompress(raw)
    if not raw:
        return torch.zeros(shape, dtype=torch.float64)  # an empty array
    planes = torch.frombuffer(bytearray(raw), dtype=torch.uint8)  # (n · itemsize,)
    planes = planes.reshape(size, -1).T if encoded["deflated"] else planes.reshape(-1, size)  # (n, size)
    if sys.byteorder == "big":
        planes = planes.flip(-1)
    dtype = torch.uint16 if encoding == "fixed4" else getattr(torch, encoding)
    values = planes.contiguous().view(dtype).reshape(shape).to(torch.float64)
    return values / FIXED_SCALE if encoding == "fixed4" else values


def _matrix_data(matrix: Matrix) -> dict[str, Any]:
    """One matrix (R, C) with its labels, caption and printed cells."""
    return {
        "rows": list(matrix.rows),
        "columns": list(matrix.columns),
        "caption": matrix.caption,
        "cells": None if matrix.cells is None else [list(row) for row in matrix.cells],
        "values": encode_array(matrix.values),  # (R, C)
    }


def _step_data(step: WalkStep) -> dict[str, Any]:
    """One walkthrough step: text, shape with its axes, and its matrices (one per head, or one)."""
    return {
        "name": step.name,
        "formula": step.formula,
        "sentence": step.sentence,
        "lecture": step.lecture,
        "shape": list(step.shape),
        "axes": list(step.axes),
        "lecture_axes": list(step.lecture_axes),
        "stage": step.stage,
        "matrices": [_matrix_data(matrix) for matrix in step.matrices],
        "checks": [{"passed": check.passed, "text": check.text} for check in step.checks],
    }


def _maps_data(maps: HeadMaps) -> dict[str, Any]:
    """One kind of attention: its tokens and weights (L, H, Nq, Nk)."""
    return {
        "title": maps.title,
        "query_tokens": list(maps.query_tokens),
        "key_tokens": list(maps.key_tokens),
        "pair_start": maps.pair_start,
        "weights": encode_array(maps.weights, weights=True),  # (L, H, Nq, Nk)
    }


def _neuron_data(neurons: NeuronData) -> dict[str, Any]:
    """The neuron view's tokens, queries (L, Hq, N, Dh), keys (L, Hkv, N, Dh), scores and weights
    (L, Hq, N, N), and the first selection [layer, head, query]."""
    return {
        "tokens": list(neurons.tokens),
        "queries": encode_array(neurons.queries),
        "keys": encode_array(neurons.keys),
        "scores": encode_array(neurons.scores),
        "weights": encode_array(neurons.weights, weights=True),
        "selected": list(neurons.selected),
        "layer_numbers": list(neurons.layer_numbers or range(neurons.queries.shape[0])),
    }


def _playground_data(playground: Playground) -> dict[str, Any]:
    """The "your own numbers" section's start: tokens, every matrix in float64 exactly, heads, causal."""
    matrices = ("inputs", "w_query", "w_key", "w_value", "b_query", "b_key", "b_value", "w_out", "b_out")
    return {
        "name": playground.name,
        "tokens": list(playground.tokens),
        **{name: encode_array(getattr(playground, name), "float64") for name in matrices},
        "heads": playground.heads,
        "causal": playground.causal,
    }


def report_data(report: Report) -> dict[str, Any]:
    """Everything the page draws, as JSON-ready data (the arrays encoded by encode_array)."""
    return {
        "version": 1,
        "title": report.title,
        "description": report.description,
        "legend": LEGEND,
        "precision": PRECISION,
        "steps": [_step_data(step) for step in report.steps],
        "attention": [_maps_data(maps) for maps in report.attention],
        "neurons": None if report.neurons is None else _neuron_data(report.neurons),
        "playgrounds": [_playground_data(playground) for playground in report.playgrounds],
        "model_view": {
            "layers": None if report.model_layers is None else list(report.model_layers),
            "heads": None if report.model_heads is None else list(report.model_heads),
        },
    }


def script_json(data: Any) -> str:
    """JSON that is safe inside <script type="application/json">: <, > and & written as \\u003c, \\u003e,
    \\u0026 (JSON.parse reads them back as the characters), so no text can end the script block."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return re.sub(r"[<>&]", lambda match: _JSON_ESCAPES[match.group()], text)


def read_report_data(page: str) -> dict[str, Any]:
    """The data embedded in a page written by render_html (for tests and tools)."""
    found = _DATA_BLOCK.search(page)
    if found is None:
        raise ValueError(f'no <script type="application/json" id="{DATA_ID}"> block in the page')
    return json.loads(found.group("json"))


def asset(name: str, package: str = __package__) -> str:
    """assets/<name> of `package` (headwise.pages: the report page's; headwise.explain has the worksheet's),
    which must not contain what could end (or change how HTML reads) the element it is inlined in:
    </script, </style, <script or <!--."""
    text = (importlib.resources.files(package) / "assets" / name).read_text(encoding="utf-8")
    found = re.search(r"</?script|</style|<!--", text, flags=re.IGNORECASE)
    if found:
        raise ValueError(f"assets/{name} contains {found.group()!r} and cannot be inlined in the page")
    return text


def _script() -> str:
    """The page's script: SCRIPT's pieces in order, inside one strict-mode function."""
    body = "\n".join(asset(name) for name in SCRIPT)
    return f"(function () {{\n'use strict';\n\n{body}}})();\n"


def sha256_source(text: str) -> str:
    """A CSP source for an inline element's exact text: 'sha256-<base64>'."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def page(title: str, css: str, body: str, js: str | None = None) -> str:
    """One self-contained HTML page (a str): `title` (plain text, escaped here), the inline `css`, the
    `body` (HTML), and the inline script `js` when there is one; a Content-Security-Policy lets only that
    style and script run (by hash) and forbids every request."""
    script = f"script-src {sha256_source(js)}; " if js is not None else ""
    policy = (
        f"default-src 'none'; {script}style-src {sha256_source(css)}; base-uri 'none'; form-action 'none'"
    )
    script_element = "" if js is None else f"<script>{js}</script>\n"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{policy}">
<meta name="generator" content="headwise">
<title>{html.escape(title)} · headwise</title>
<style>{css}</style>
</head>
<body>
{body}{script_element}</body>
</html>
"""


def render_html(report: Report) -> str:
    """The report as one HTML page (a str) that needs no network to view."""
    js = _script()
    body = (
        "<noscript>This report draws its views with JavaScript; please enable it to see them.</noscript>\n"
        f'<script type="application/json" id="{DATA_ID}">{script_json(report_data(report))}</script>\n'
    )
    return page(report.title, asset(STYLE), body, js)


def write_html(report: Report, path: str | os.PathLike[str]) -> Path:
    """Write render_html(report) to `path` atomically (a temporary file beside it, then a rename), so a
    reader never sees half a page. Returns the path."""
    return write_text(path, render_html(report))
