"""torch.compile: attention as one opaque custom op (headwise.ops), fullgraph with no graph breaks, equal to
eager forward and backward, dynamic shapes, and the models built on it (issue 13)."""

from __future__ import annotations

import pytest
import torch
from oracle import assert_by_ratio

import headwise
from headwise.nn.config import TransformerConfig
from headwise.nn.models import LanguageModel, Transformer
from headwise.ops import attention_backward_op, attention_op

OP = torch.ops.headwise.attention.default


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test compiles from scratch (the parametrised closures share one code object, and dynamo's
    recompile limit counts across them)."""
    torch._dynamo.reset()
    yield


class Capture:
    """A torch.compile backend that keeps each graph it is given and runs it as traced (no Inductor)."""

    def __init__(self) -> None:
        self.graphs: list[torch.fx.GraphModule] = []

    def __call__(self, graph: torch.fx.GraphModule, example_inputs):
        self.graphs.append(graph)
        return graph.forward

    def targets(self) -> list:
        return [
            node.target for graph in self.graphs for node in graph.graph.nodes if node.op == "call_function"
        ]


def test_opcheck_schema_fake_and_autograd():
    """torch's own checks of a custom op: schema, fake tensor kernel, autograd, dynamic shapes."""
    q = torch.randn(2, 4, 7, 8, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(2, 2, 9, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    mask = torch.rand(2, 1, 7, 9) > 0.3
    for args in (
        (q, k, v, None, True, 0.3, 0.0, "auto", True),
        (q, k, v, mask, False, 0.5, 0.0, "chunked", True),
    ):
        torch.library.opcheck(attention_op, args)


def test_a_compiled_call_is_one_opaque_op():
    """The graph holds headwise's op and no backend internals (no matmul, softmax or per-block loop)."""
    q, k, v = (torch.randn(1, 2, 300, 8) for _ in range(3))  # 300 > one chunk of 256 keys
    capture = Capture()
    compiled = torch.compile(
        lambda q, k, v: headwise.attention(q, k, v, causal=True, backend="chunked"),
        backend=capture,
        fullgraph=True,
    )
    compiled(q, k, v)
    targets = capture.targets()
    assert targets.count(OP) == 1
    assert not any("matmul" in str(t) or "softmax" in str(t) or "bmm" in str(t) for t in targets), targets


@pytest.mark.parametrize("backend", ["auto", "chunked", "dense", "sdpa"])
@pytest.mark.parametrize("masking", ["causal", "padding", "window"])
def test_compiled_attention_equals_eager_forward_and_backward(backend, masking):
    """fullgraph=True (Inductor for auto, AOT autograd's eager for the named backends: the op is opaque to
    both), against the float64 reference by the ratio rule (eager float32 as the
    baseline), gradients included; grouped-query heads; a predicate other than causal() materialised."""
    torch.manual_seed(0)
    q = torch.randn(2, 4, 33, 16)
    k, v = (torch.randn(2, 2, 33, 16) for _ in range(2))
    options = {
        "causal": {"causal": True},
        "padding": {
            "mask": (torch.arange(33) < torch.tensor([[20], [33]]))[:, None, None, :]
        },  # (B, 1, 1, Nk)
        "window": {"mask": headwise.masks.sliding_window(5) & headwise.masks.causal()},
    }[masking]

    def call(q, k, v):
        return headwise.attention(q, k, v, backend=backend, **options)

    compiled = torch.compile(call, fullgraph=True, backend="inductor" if backend == "auto" else "aot_eager")
    results = {}
    for name, fn, dtype in (
        ("compiled", compiled, None),
        ("eager", call, None),
        ("golden", call, torch.float64),
    ):
        inputs = [t.to(dtype or t.dtype).requires_grad_() for t in (q, k, v)]
        out = fn(*inputs)
        grads = torch.autograd.grad(out, inputs, torch.ones_like(out).mul_(0.1).add_(out.detach()))
        results[name] = (out, *grads)
    for what, fast, golden, baseline in zip(
        ("out", "dq", "dk", "dv"), results["compiled"], results["golden"], results["eager"], strict=True
    ):
        assert_by_ratio(fast.detach(), golden.detach(), baseline.detach(), 2.0, what)


def test_dynamic_shapes_compile_once():
    """dynamic=True: new sequence lengths reuse the graph (one compilation) and stay exact."""
    module = headwise.MultiHeadAttention(16, 4, num_kv_heads=2).double()
    capture = Capture()
    compiled = torch.compile(
        lambda x: module(x, is_causal=True)[0], backend=capture, fullgraph=True, dynamic=True
    )
    for length in (5, 9, 17):
        x = torch.randn(2, length, 16, dtype=torch.float64)
        torch.testing.assert_close(compiled(x), module(x, is_causal=True)[0], rtol=0, atol=1e-12)
    assert len(capture.graphs) == 1


def test_dropout_backward_redraws_the_forward_masks():
    """out = A·v is linear in v, so ⟨out, G⟩ = ⟨v, dv⟩ exactly when the backward's dropout masks are the
    forward's (a different draw breaks it by O(1)): compiled (traced through, as calls with dropout are),
    and through the op itself, as TorchScript calls it."""
    torch.manual_seed(1)
    q, k = (torch.randn(1, 2, 40, 8, dtype=torch.float64) for _ in range(2))
    v = torch.randn(1, 2, 40, 8, dtype=torch.float64, requires_grad=True)
    for backend in ("dense", "chunked", "sdpa"):
        compiled = torch.compile(
            lambda q, k, v, backend=backend: headwise.attention(q, k, v, dropout_p=0.5, backend=backend),
            fullgraph=True,
            backend="aot_eager",
        )
        for out in (compiled(q, k, v), attention_op(q, k, v, None, False, 8**-0.5, 0.5, backend, True)[0]):
            upstream = torch.randn_like(out)
            (dv,) = torch.autograd.grad(out, v, upstream)
            torch.testing.assert_close((out * upstream).sum(), (v * dv).sum(), rtol=1e-12, atol=1e-12)


def test_the_backward_op_is_the_gradient():
    """headwise::attention_backward called directly equals autograd through the eager reference."""
    q, k, v = (torch.randn(1, 2, 6, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    d_out = torch.randn(1, 2, 6, 4, dtype=torch.float64)
    out = headwise.attention(q, k, v, causal=True, backend="reference")
    expected = torch.autograd.grad(out, (q, k, v), d_out)
    got = attention_backward_op(
        d_out, q, k, v, None, True, 0.5, 0.0, "dense", True, False, torch.zeros((), dtype=torch.int64)
    )
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-12)


def _lm_loss(model, ids):
    logits = model(ids).logits  # (B, N, V)
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())


def _seq2seq_loss(model, ids):
    logits = model(ids, ids[:, :-1]).logits  # (B, N - 1, V): the source is the target, teacher-forced
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())


@pytest.mark.parametrize(
    ("model_class", "loss_of"), [(LanguageModel, _lm_loss), (Transformer, _seq2seq_loss)]
)
def test_models_train_under_fullgraph_compile_with_dynamic_shapes(model_class, loss_of):
    """A LanguageModel's and an encoder-decoder Transformer's forward and backward: no graph break, one
    graph for two sequence lengths (dynamic=True), equal to eager (float64, dropout off)."""
    torch.manual_seed(2)
    config = TransformerConfig(vocab_size=50, d_model=32, num_heads=4, num_kv_heads=2, d_ff=64, dropout=0.0)
    model = model_class(config).double()
    assert torch._dynamo.explain(loss_of)(model, torch.randint(50, (2, 12))).graph_break_count == 0
    capture = Capture()
    compiled = torch.compile(loss_of, fullgraph=True, dynamic=True, backend=capture)
    for length in (12, 17):
        ids = torch.randint(50, (2, length))
        eager_loss = loss_of(model, ids)
        eager_grads = torch.autograd.grad(eager_loss, list(model.parameters()))
        compiled_loss = compiled(model, ids)
        compiled_grads = torch.autograd.grad(compiled_loss, list(model.parameters()))
        torch.testing.assert_close(compiled_loss, eager_loss, rtol=0, atol=1e-12)
        for c, e in zip(compiled_grads, eager_grads, strict=True):
            torch.testing.assert_close(c, e, rtol=1e-10, atol=1e-12)
    assert len(capture.graphs) == 1


@pytest.mark.parametrize("average", [True, False])
def test_weights_asked_for_compile_without_graph_breaks(average):
    """need_weights=True (torch's default in its own module) reads the weights head by head: the head
    indices are checked in Python, not with .item() on a tensor (9 graph breaks before)."""
    module = headwise.MultiHeadAttention(16, 4).double()
    x = torch.randn(2, 5, 16, dtype=torch.float64)

    def call(x):
        return module(x, need_weights=True, average_attn_weights=average)

    assert torch._dynamo.explain(call)(x).graph_break_count == 0
    (out, weights), (eager_out, eager_weights) = torch.compile(call, fullgraph=True)(x), call(x)
    torch.testing.assert_close(out, eager_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(weights, eager_weights, rtol=0, atol=1e-12)


def test_dropout_masks_survive_tuning_on_first_use():
    """With tuning on, the op's first call measures its candidates (drawing random inputs) before it seeds
    the dropout, so that the backward, which finds the measured choice, redraws the same masks."""
    from headwise.backends import tuning

    tuning.enable()
    try:
        torch.manual_seed(4)
        q, k = (torch.randn(1, 2, 24, 8, dtype=torch.float64) for _ in range(2))
        v = torch.randn(1, 2, 24, 8, dtype=torch.float64, requires_grad=True)
        out, _ = attention_op(q, k, v, None, False, 0.35, 0.5, "auto", True)  # a new key: it measures
        upstream = torch.randn_like(out)
        (dv,) = torch.autograd.grad(out, v, upstream)
        torch.testing.assert_close((out * upstream).sum(), (v * dv).sum(), rtol=1e-12, atol=1e-12)
    finally:
        tuning.enable(False)
        tuning.TUNER.enabled = None


def test_training_with_dropout_compiles_without_graph_breaks():
    """Dropout on (a config's default): the attention is traced through, still in one graph."""
    config = TransformerConfig(vocab_size=50, d_model=32, num_heads=4, num_kv_heads=2, d_ff=64, dropout=0.1)
    model = LanguageModel(config).train()
    ids = torch.randint(50, (2, 12))
    assert torch._dynamo.explain(_lm_loss)(model, ids).graph_break_count == 0
    loss = torch.compile(_lm_loss, fullgraph=True)(model, ids)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())
