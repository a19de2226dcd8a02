"""torch's transforms and tools on headwise, each against torch itself doing the same thing (issue 25).

torch.func (vmap over the batch and over heads, per-sample gradients vmap(grad), grad, jacrev,
functional_call), torch.export (static and dynamic), torch.autocast on the CPU in bf16,
torch.compile(mode="max-autotune"), torch.utils.checkpoint, torch.jit.trace and torch.jit.script: each runs
on headwise and on torch's own nn.MultiheadAttention or SDPA, and the two are compared: in float64 to
1e-12 (or exactly), in float32 and bf16 by the ratio rule of tests/oracle.py (golden: torch in float64;
baseline: torch doing the same thing in the input dtype).

Shape legend: B batch, H heads, N / Nq / Nk lengths, Dh head width, E embed_dim (torch's name).
torch's mask polarity in compat's calls (True = blocked); headwise's own in headwise.attention's (True =
may attend).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from oracle import assert_by_ratio
from pairs import F64, make_pair, randn, randomize
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

import headwise
from headwise import compat

TIGHT = {"rtol": 0.0, "atol": 1e-12}  # float64: the same computation in another order
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated",
    "ignore:`torch.jit.trace` is deprecated",
    "ignore:`torch.jit.script_method` is deprecated",
    "ignore:Converting a tensor to a Python",
    "ignore:The PyTorch API of nested tensors",
    "ignore:.*quantiz",
    "ignore:enable_nested_tensor is True",
)


def qkv(*shapes: tuple[int, ...], dtype=torch.float32, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator, dtype=dtype) for shape in shapes]


def per_sample(f):
    """f on one sample (H, N, Dh) each, through a batch of one: what vmap over the batch maps."""
    return lambda q, k, v, *rest: f(q[None], k[None], v[None], *(r[None] for r in rest))[0]


# ---------------------------------------------------------------------------------------------- vmap


@pytest.mark.parametrize("masking", ["none", "bool mask", "causal"])
def test_vmap_over_the_batch_equals_sdpa(masking: str) -> None:
    """vmap of headwise.attention over the batch (a mask mapped with it) against vmap of SDPA, in float32
    by the ratio rule (golden: SDPA batched in float64)."""
    num_keys = 7 if masking == "causal" else 9  # causal square: SDPA's top-left is headwise's bottom-right
    q, k, v = qkv((4, 3, 7, 8), (4, 3, num_keys, 8), (4, 3, num_keys, 8))
    mask = torch.rand(4, 1, 7, num_keys, generator=torch.Generator().manual_seed(1)) > 0.3  # True = attend
    mask[..., 0] = True  # every query sees a key: SDPA's rows are then defined
    causal = masking == "causal"

    def ours(q, k, v, mask):
        return headwise.attention(q, k, v, mask=None if masking != "bool mask" else mask, causal=causal)

    def theirs(q, k, v, mask):
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=None if masking != "bool mask" else mask, is_causal=causal
        )

    fast = vmap(per_sample(ours))(q, k, v, mask)  # (B, H, Nq, Dh)
    baseline = vmap(per_sample(theirs))(q, k, v, mask)
    golden = theirs(q.double(), k.double(), v.double(), mask)
    assert_by_ratio(fast, golden, baseline, k=2)


def test_vmap_over_heads_equals_sdpa() -> None:
    """vmap over the heads dimension (in_dims=1, out_dims=1): each head alone, against SDPA the same way."""
    q, k, v = qkv((2, 4, 6, 8), (2, 4, 5, 8), (2, 4, 5, 8))

    def by_head(attend):
        return vmap(lambda q, k, v: attend(q[:, None], k[:, None], v[:, None])[:, 0], in_dims=1, out_dims=1)

    fast = by_head(headwise.attention)(q, k, v)  # (B, H, Nq, Dh)
    baseline = by_head(F.scaled_dot_product_attention)(q, k, v)
    golden = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    assert_by_ratio(fast, golden, baseline, k=2)


def test_under_vmap_a_nan_in_one_sample_leaves_the_other_samples_finite() -> None:
    """The non-finite rule per sample: sample 1 has a NaN in a key that its mask hides (no effect at all),
    sample 2 an inf in one query (that row alone NaN); every finite row equals SDPA on the finite inputs,
    and the NaN rows are those an eager call gives."""
    q, k, v = qkv((3, 2, 5, 4), (3, 2, 6, 4), (3, 2, 6, 4), dtype=F64)
    visible = torch.ones(3, 1, 1, 6, dtype=torch.bool)  # True = may attend
    visible[1, ..., 2] = False
    bad_q, bad_k = q.clone(), k.clone()
    bad_k[1, 0, 2, 1] = float("nan")  # hidden by sample 1's mask
    bad_q[2, 1, 3, 0] = float("inf")  # sample 2, head 1, query 3

    out = vmap(per_sample(lambda q, k, v, m: headwise.attention(q, k, v, mask=m)))(bad_q, bad_k, v, visible)
    eager = headwise.attention(bad_q, bad_k, v, mask=visible)  # the eager careful path
    torch.testing.assert_close(out, eager, **TIGHT, equal_nan=True)
    expected_nan = torch.zeros(3, 2, 5, dtype=torch.bool)
    expected_nan[2, 1, 3] = True
    assert torch.equal(out.isnan().any(-1), expected_nan) and torch.equal(out.isnan().all(-1), expected_nan)
    finite = F.scaled_dot_product_attention(q, k, v, attn_mask=visible)  # (B, H, Nq, Dh), the finite inputs
    torch.testing.assert_close(out[~expected_nan], finite[~expected_nan], **TIGHT)


@pytest.mark.parametrize("need_weights", [True, False])
def test_vmap_of_compat_equals_vmap_of_torchs_module(need_weights: bool) -> None:
    """vmap over samples of the module's call (weights too, averaged over heads), to 1e-12 in float64."""
    theirs, ours = make_pair(embed_dim=8, num_heads=2, batch_first=True)
    x = randn(5, 4, 8)  # (B, N, E)
    padding = torch.zeros(5, 4, dtype=torch.bool)  # True = blocked
    padding[2, 1:3] = True

    def call(module):
        def one(x, p):  # x (N, E), p (N,) -> output (N, E) and weights (N, N) when asked for
            out, weights = module(
                x[None], x[None], x[None], key_padding_mask=p[None], need_weights=need_weights
            )
            return [out[0]] if weights is None else [out[0], weights[0]]

        return vmap(one)

    for got, expected in zip(call(ours)(x, padding), call(theirs)(x, padding), strict=True):
        torch.testing.assert_close(got, expected, **TIGHT)


# ------------------------------------------------------------------------------- grad, jacrev, per sample


def test_per_sample_gradients_equal_torchs() -> None:
    """vmap(grad(loss)) over a batch: each sample's gradient of every parameter (Opacus-style DP-SGD), to
    1e-10 against torch's module with the same weights doing the same."""
    theirs, ours = make_pair(embed_dim=8, num_heads=2, batch_first=True, dropout=0.0)
    x, target = randn(6, 5, 8, seed=1), randn(6, 5, 8, seed=2)  # (B, N, E) each

    def per_sample_grads(module):
        params = {name: p.detach() for name, p in module.named_parameters()}

        def loss(params, x, target):
            out, _ = functional_call(module, params, (x[None], x[None], x[None]), {"need_weights": False})
            return ((out[0] - target) ** 2).sum()

        return vmap(grad(loss), in_dims=(None, 0, 0))(params, x, target)  # {name: (B, *shape)}

    ours_grads, theirs_grads = per_sample_grads(ours), per_sample_grads(theirs)
    assert ours_grads.keys() == theirs_grads.keys()
    for name, expected in theirs_grads.items():
        torch.testing.assert_close(ours_grads[name], expected, rtol=0, atol=1e-10, msg=name)
    # and the sum over samples is the batch's gradient
    batch_loss = ((ours(x, x, x, need_weights=False)[0] - target) ** 2).sum()
    names, params = zip(*ours.named_parameters(), strict=True)
    for name, batch_grad in zip(names, torch.autograd.grad(batch_loss, params), strict=True):
        torch.testing.assert_close(ours_grads[name].sum(0), batch_grad, rtol=0, atol=1e-10, msg=name)


def test_grad_and_jacrev_equal_sdpas() -> None:
    """torch.func.grad (w.r.t. q, k and v) and jacrev (w.r.t. q) of headwise.attention and of SDPA."""
    q, k, v = qkv((1, 2, 4, 3), (1, 2, 5, 3), (1, 2, 5, 3), dtype=F64)
    upstream = torch.sin(torch.arange(24, dtype=F64)).view(1, 2, 4, 3)

    def loss(attend):
        return lambda q, k, v: (attend(q, k, v) * upstream).sum()

    for got, expected in zip(
        grad(loss(headwise.attention), argnums=(0, 1, 2))(q, k, v),
        grad(loss(F.scaled_dot_product_attention), argnums=(0, 1, 2))(q, k, v),
        strict=True,
    ):
        torch.testing.assert_close(got, expected, **TIGHT)
    jacobian = jacrev(headwise.attention)(q, k, v)  # (1, 2, 4, 3, 1, 2, 4, 3)
    torch.testing.assert_close(jacobian, jacrev(F.scaled_dot_product_attention)(q, k, v), **TIGHT)


def test_functional_call_uses_the_given_parameters_as_torchs_does() -> None:
    """functional_call with another module's parameters: compat computes with them, as torch's does."""
    theirs, ours = make_pair(embed_dim=6, num_heads=3)
    other = {name: p.detach() for name, p in randomize(copy.deepcopy(theirs), seed=7).named_parameters()}
    x = randn(4, 2, 6)  # (L, B, E)
    got = functional_call(ours, other, (x, x, x))
    expected = functional_call(theirs, other, (x, x, x))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, **TIGHT)
    assert (got[0] - ours(x, x, x)[0]).abs().max() > 0.1  # the given parameters, not the module's


# ------------------------------------------------------------------------------------------ export, compile


class Block(nn.Module):
    """Self-attention with a key padding mask (True = blocked), the attention module given."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        return self.attention(x, x, x, key_padding_mask=padding, need_weights=False)[0]


def padded_inputs(batch: int, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    padding = torch.zeros(batch, length, dtype=torch.bool)  # (B, N), True = blocked
    padding[-1, length // 2 :] = True
    return randn(batch, length, 8, seed=seed), padding


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_export_equals_eager_and_torchs_export(dynamic: bool) -> None:
    """torch.export.export of a block with compat (dynamic: the length as a Dim, run at another length),
    equal to eager and to torch's module exported the same way."""
    theirs, ours = make_pair(embed_dim=8, num_heads=2, batch_first=True)
    x, padding = padded_inputs(2, 5)
    shapes = None
    if dynamic:
        length = torch.export.Dim("N", min=2, max=64)
        shapes = ({1: length}, {1: length})
    run_x, run_padding = padded_inputs(2, 9, seed=1) if dynamic else (x, padding)
    results = []
    for module in (ours, theirs):
        block = Block(module).eval()
        exported = torch.export.export(block, (x, padding), dynamic_shapes=shapes).module()
        results.append(exported(run_x, run_padding))
        torch.testing.assert_close(results[-1], block(run_x, run_padding), **TIGHT)
    torch.testing.assert_close(results[0], results[1], **TIGHT)


def test_autocast_cpu_bf16_by_the_ratio_rule() -> None:
    """Under torch.autocast("cpu", torch.bfloat16) compat returns torch's dtype, within twice the error of
    torch's module under the same autocast (golden: torch's module in float64, no autocast)."""
    theirs = randomize(nn.MultiheadAttention(16, 4, batch_first=True))
    ours = compat.MultiheadAttention(16, 4, batch_first=True)
    ours.load_state_dict(theirs.state_dict())
    x, padding = torch.randn(3, 12, 16, generator=torch.Generator().manual_seed(3)), torch.zeros(3, 12).bool()
    padding[0, 8:] = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast, fast_weights = ours(x, x, x, key_padding_mask=padding)
        baseline, baseline_weights = theirs(x, x, x, key_padding_mask=padding)
    golden, golden_weights = copy.deepcopy(theirs).double()(*(x.double(),) * 3, key_padding_mask=padding)
    assert fast.dtype == baseline.dtype == torch.bfloat16 and fast_weights.dtype == baseline_weights.dtype
    assert_by_ratio(fast, golden.detach(), baseline, k=2)
    assert_by_ratio(fast_weights, golden_weights.detach(), baseline_weights, k=2, what="weights")


@pytest.mark.slow
def test_compile_max_autotune_equals_eager_and_torchs() -> None:
    """torch.compile(mode="max-autotune") on the CPU (6 s here): compat compiled equals compat eager and
    torch's module compiled the same way, in float32 to the rounding of a float32 attention."""
    theirs = randomize(nn.MultiheadAttention(8, 2, batch_first=True))
    ours = compat.MultiheadAttention(8, 2, batch_first=True)
    ours.load_state_dict(theirs.state_dict())
    x, padding = padded_inputs(2, 6)
    x = x.float()
    with torch.no_grad():
        compiled = [torch.compile(Block(m).eval(), mode="max-autotune")(x, padding) for m in (ours, theirs)]
        golden = Block(copy.deepcopy(theirs).double()).eval()(x.double(), padding)
        eager = Block(ours).eval()(x, padding)
    assert_by_ratio(compiled[0], golden, compiled[1], k=2)
    assert_by_ratio(eager, golden, compiled[1], k=2, what="eager")


# ----------------------------------------------------------------------------- checkpoint, trace, script


def encoder_layers(dropout: float = 0.1) -> tuple[nn.TransformerEncoderLayer, nn.TransformerEncoderLayer]:
    """torch's encoder layer (float64, random weights) and a copy with compat as its self_attn."""
    theirs = randomize(nn.TransformerEncoderLayer(8, 2, 16, dropout=dropout, batch_first=True, dtype=F64))
    ours = copy.deepcopy(theirs)
    ours.self_attn = compat.MultiheadAttention(8, 2, dropout=dropout, batch_first=True, dtype=F64)
    ours.self_attn.load_state_dict(theirs.self_attn.state_dict())
    return theirs, ours


def test_checkpoint_around_a_layer_recomputes_the_same_dropout() -> None:
    """torch.utils.checkpoint around a training layer with dropout: outputs and gradients equal those without
    it (the recomputed forward redraws the same masks), as for torch's layer, and equal torch's."""
    x = randn(2, 5, 8).requires_grad_()
    results = {}
    for name, layer in zip(("torch", "compat"), encoder_layers(), strict=True):
        for checkpointed in (False, True):
            torch.manual_seed(5)
            out = (
                torch.utils.checkpoint.checkpoint(layer, x, use_reentrant=False) if checkpointed else layer(x)
            )
            grads = torch.autograd.grad((out * torch.cos(out)).sum(), [x, *layer.parameters()])
            results[name, checkpointed] = (out, *grads)
    for name in ("torch", "compat"):
        for got, expected in zip(results[name, True], results[name, False], strict=True):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
    for got, expected in zip(results["compat", True], results["torch", True], strict=True):
        torch.testing.assert_close(got, expected, **TIGHT)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_jit_trace_equals_eager_and_keeps_the_non_finite_rule(mode: str) -> None:
    """torch.jit.trace (its check, a second trace without gradients, included) of a block with compat: on new
    inputs it equals eager and torch's module; a NaN in a padded key of a later input has no effect (the
    careful path is in the graph, not frozen out by the finite example); torch's own module fails the trace
    check in eval mode (its fast path depends on the gradient mode), so it is traced without gradients."""
    theirs, ours = make_pair(embed_dim=8, num_heads=2, batch_first=True)
    x, padding = padded_inputs(2, 6)
    traced = torch.jit.trace(Block(ours).train(mode == "train"), (x, padding))
    with torch.no_grad():
        theirs_traced = torch.jit.trace(Block(theirs).train(mode == "train"), (x, padding))
    new_x, new_padding = padded_inputs(2, 6, seed=1)
    torch.testing.assert_close(traced(new_x, new_padding), Block(ours)(new_x, new_padding), **TIGHT)
    torch.testing.assert_close(traced(new_x, new_padding), theirs_traced(new_x, new_padding), **TIGHT)
    poisoned = new_x.clone()
    poisoned[-1, -1, 0] = float("nan")  # a key (and query) that the padding hides from every other query
    out = traced(poisoned, new_padding)  # (B, N, E)
    torch.testing.assert_close(out[:, :-1], Block(ours)(new_x, new_padding)[:, :-1], **TIGHT)
    assert out[-1, -1].isnan().all()  # its own query row is NaN, as in an eager call


def test_jit_script_in_training_draws_eager_s_dropout() -> None:
    """torch's test_transformerencoderlayer_subclass(_model) with compat swapped in: a scripted subclass of
    TransformerEncoderLayer (and a 6-layer encoder of it) in training, with dropout, gives exactly the eager
    model's outputs from the same seed, as torch's own does."""

    class Layer(nn.TransformerEncoderLayer):
        pass

    def build(attention):
        layer = Layer(d_model=8, nhead=4, dim_feedforward=32, batch_first=True)
        if attention is compat.MultiheadAttention:
            layer.self_attn = compat.MultiheadAttention(8, 4, dropout=0.1, batch_first=True)
        return layer

    src = torch.rand(2, 4, 8, generator=torch.Generator().manual_seed(0))
    src_mask = torch.zeros(4, 4, dtype=torch.bool)
    for attention in (nn.MultiheadAttention, compat.MultiheadAttention):
        for model in (build(attention), nn.TransformerEncoder(build(attention), num_layers=6)):
            scripted = torch.jit.script(model)
            mask = {"src_mask" if isinstance(model, Layer) else "mask": src_mask}
            torch.manual_seed(42)
            eager = model(src, **mask)
            torch.manual_seed(42)
            assert torch.equal(scripted(src, **mask), eager), attention
            torch.manual_seed(43)
            assert not torch.equal(model(src, **mask), eager)  # dropout did drop


def test_inside_a_dynamically_quantized_encoder_layer_compat_runs_as_torchs() -> None:
    """quantize_dynamic on a TransformerEncoderLayer with compat as self_attn: sequence first, equal to
    torch's layer quantized the same way (float32: attention's rounding, ~100 ulps of outputs of size ~1
    after the LayerNorm). Batch first, torch 2.13's own layer raises AttributeError in eval (its check reads
    `.device` of linear1.weight, a method once quantized): compat's layer raises the same, not another."""
    quantize = torch.ao.quantization.quantize_dynamic
    x = torch.randn(4, 3, 8, generator=torch.Generator().manual_seed(0))
    for batch_first in (False, True):
        theirs = nn.TransformerEncoderLayer(8, 2, 16, batch_first=batch_first).eval()
        ours = copy.deepcopy(theirs)
        ours.self_attn = compat.MultiheadAttention(8, 2, dropout=0.1, batch_first=batch_first)
        ours.self_attn.load_state_dict(theirs.self_attn.state_dict())
        theirs, ours = (quantize(m, {nn.Linear}, dtype=torch.qint8) for m in (theirs, ours))
        assert type(ours.self_attn.out_proj) is type(theirs.self_attn.out_proj)  # left in floating point
        if not batch_first:
            with torch.no_grad():
                torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-5)
            continue
        with pytest.raises(AttributeError) as torch_error, torch.no_grad():
            theirs(x)
        with pytest.raises(AttributeError, match=str(torch_error.value)), torch.no_grad():
            ours(x)
