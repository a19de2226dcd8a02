"""headwise.compat.MultiheadAttention inside torch's machinery: dynamic quantization, nested tensors, the
encoder layers' inference fast path, TorchScript. Each against torch's own module with the same weights;
numbers by the ratio rule (tests/oracle.py): compat's and torch's float32 results against torch's float64.

Shape legend (torch's names): B batch, L query length, S key length, E embed_dim.
"""

from __future__ import annotations

import copy

import pytest
import torch
from oracle import assert_by_ratio
from pairs import make_pair, randomize
from test_compat import layer_inputs, run, run_function, swap_attention, transformer_layers
from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

import headwise
from headwise import compat

F64 = torch.float64
K = 2  # the ratio rule's factor: compat's error at most twice torch's float32 error
pytestmark = pytest.mark.filterwarnings(
    "ignore:torch.ao.quantization is deprecated",
    "ignore:torch.quantize_per_tensor",
    "ignore:The PyTorch API of nested tensors is in prototype stage",
    "ignore:enable_nested_tensor is True",
    "ignore:`torch.jit.script` is deprecated",
    "ignore:`torch.jit.save` is deprecated",
    "ignore:`torch.jit.load` is deprecated",
)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def check_by_ratio(ours: torch.Tensor, golden: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    assert_by_ratio(ours, golden, theirs, K, what, magnitude=golden.abs().max().item())


# ------------------------------------------------------------------------------------ dynamic quantization


class Regressor(nn.Module):
    """A small model around an attention layer, as a user would quantize it (torch's own quantized
    TransformerEncoderLayer fails in eval mode: its fast path reads linear1.weight.device)."""

    def __init__(self, attention_class: type[nn.Module], **options) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.attn = attention_class(8, 2, batch_first=True, **options)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(x)  # (B, L, 8)
        attended, _ = self.attn(hidden, memory, memory)  # (B, L, 8)
        return self.head(attended)  # (B, L, 3)


@pytest.mark.parametrize("options", [{}, {"kdim": 6, "vdim": 6, "add_bias_kv": True}], ids=str)
def test_quantize_dynamic_quantizes_the_same_layers_as_torchs_and_agrees(options: dict) -> None:
    """quantize_dynamic(model, {nn.Linear}) skips compat's out_proj as it skips torch's (a
    NonDynamicallyQuantizableLinear) and quantizes the rest alike, so the quantized models agree."""
    theirs = randomize(Regressor(nn.MultiheadAttention, **options)).eval()
    ours = Regressor(compat.MultiheadAttention, **options).eval()
    ours.load_state_dict(theirs.state_dict())
    golden = copy.deepcopy(theirs).double()  # unquantized, in float64: both errors are the quantization's
    x, memory = randn(2, 5, 4), randn(2, 3, options.get("kdim", 8), seed=1)
    quantized = [torch.ao.quantization.quantize_dynamic(model, {nn.Linear}) for model in (ours, theirs)]
    # Module names -> class names (torch's and compat's attention are both "MultiheadAttention").
    kinds = [{n: type(m).__name__ for n, m in model.named_modules()} for model in quantized]
    assert kinds[0] == kinds[1]
    assert type(quantized[0].attn.out_proj) is NonDynamicallyQuantizableLinear
    assert isinstance(quantized[0].head, torch.ao.nn.quantized.dynamic.Linear)
    with torch.no_grad():
        ours_output, theirs_output = (model(x, memory) for model in quantized)
        check_by_ratio(ours_output, golden(x.double(), memory.double()), theirs_output, "quantized output")


# ------------------------------------------------------------------------------------------ nested tensors


def sequences(*lengths: int, width: int = 8, seed: int = 0) -> list[torch.Tensor]:
    return [randn(length, width, seed=seed + i) for i, length in enumerate(lengths)]


def test_a_hooked_transformer_encoder_passes_nested_tensors_to_compat_as_to_torch() -> None:
    """A default TransformerEncoder (enable_nested_tensor=True) in eval mode without gradients turns a
    padded batch into a nested tensor; a forward hook on layers[0].self_attn (to capture the attention)
    makes that layer call its attention with it. Outputs and the captured attention outputs agree."""
    layer = randomize(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True))
    theirs = nn.TransformerEncoder(layer, num_layers=2).eval()
    ours = swap_attention(theirs)
    golden = copy.deepcopy(theirs).double()
    x = randn(3, 5, 8)  # (B, S, E)
    padding = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] + [True] * 4])  # (B, S)

    results = {}
    for name, model, src in (("ours", ours, x), ("theirs", theirs, x), ("golden", golden, x.double())):
        captured = []
        hook = model.layers[0].self_attn.register_forward_hook(
            lambda module, inputs, output, captured=captured: captured.append((inputs[0], output[0]))
        )
        with torch.no_grad():
            output = model(src, src_key_padding_mask=padding)  # (B, S, E)
        hook.remove()
        ((attention_input, attention_output),) = captured
        assert attention_input.is_nested and attention_output.is_nested
        results[name] = (output, attention_output.to_padded_tensor(0.0))  # (B, S, E) twice
    for i, what in enumerate(["encoder output", "attention output"]):
        check_by_ratio(results["ours"][i], results["golden"][i], results["theirs"][i], what)


@pytest.mark.parametrize("average_attn_weights", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_nested_self_attention_in_torchs_fast_path_agrees(need_weights: bool, average_attn_weights: bool):
    """Where torch's module takes nested tensors itself (eval, no gradients, self-attention): the output is
    nested like the query, the weights padded (B, [H,] max L, max L) with zeros for the padded queries."""
    theirs = randomize(nn.MultiheadAttention(8, 2, batch_first=True)).eval()
    ours = compat.MultiheadAttention(8, 2, batch_first=True).eval()
    ours.load_state_dict(theirs.state_dict())
    golden = copy.deepcopy(theirs).double()
    x = sequences(5, 3, 1)
    call = {"need_weights": need_weights, "average_attn_weights": average_attn_weights}
    results = {}
    with torch.no_grad():
        for name, module, dtype in (("ours", ours, None), ("theirs", theirs, None), ("golden", golden, F64)):
            nested = torch.nested.nested_tensor([t.to(dtype) for t in x])  # (B, ragged L, E)
            output, weights = module(nested, nested, nested, **call)
            assert output.is_nested and [len(t) for t in output.unbind()] == [5, 3, 1]
            results[name] = (output.to_padded_tensor(0.0), weights)
    check_by_ratio(results["ours"][0], results["golden"][0], results["theirs"][0], "output")
    if need_weights:
        check_by_ratio(results["ours"][1], results["golden"][1], results["theirs"][1], "weights")
    else:
        assert results["ours"][1] is None


@pytest.mark.parametrize("training", [True, False])
def test_nested_cross_attention_equals_each_sequence_alone(training: bool) -> None:
    """Beyond torch (which refuses nested tensors outside its fast path): cross-attention, in training too,
    each nested sequence attending to its own keys equals torch's module on that sequence alone."""
    theirs = randomize(nn.MultiheadAttention(8, 2, kdim=6, vdim=4, batch_first=True)).train(training)
    ours = compat.MultiheadAttention(8, 2, kdim=6, vdim=4, batch_first=True).train(training)
    ours.load_state_dict(theirs.state_dict())
    golden = copy.deepcopy(theirs).double()
    queries, keys, values = (
        sequences(4, 2, 3),
        sequences(3, 5, 1, width=6, seed=10),
        sequences(3, 5, 1, width=4),
    )
    nested = [torch.nested.nested_tensor(t) for t in (queries, keys, values)]
    output, weights = ours(*nested)  # nested (B, ragged L, E), weights (B, max L, max S)
    for b, ours_row in enumerate(output.unbind()):
        q, k, v = queries[b], keys[b], values[b]
        theirs_row, theirs_weights = theirs(q, k, v)  # unbatched (L_b, E), weights (L_b, S_b)
        golden_row, golden_weights = golden(q.double(), k.double(), v.double())
        check_by_ratio(ours_row, golden_row, theirs_row, f"output {b}")
        ours_weights = weights[b, : len(q), : len(k)]
        check_by_ratio(ours_weights, golden_weights, theirs_weights, f"weights {b}")
        assert (weights[b, len(q) :] == 0).all() and (weights[b, :, len(k) :] == 0).all()


def test_nested_tensors_with_masks_or_sequence_first_are_refused() -> None:
    """As torch refuses them (AssertionError): masks, which nested tensors replace; batch_first=False."""
    ours = compat.MultiheadAttention(8, 2, batch_first=True).eval()
    nested = torch.nested.nested_tensor(sequences(3, 2))
    padding = torch.zeros(2, 3, dtype=torch.bool)
    with pytest.raises(AssertionError, match="key_padding_mask must be None with nested tensors"):
        ours(nested, nested, nested, key_padding_mask=padding)
    with pytest.raises(ValueError, match="nested tensors need batch_first=True"):
        compat.MultiheadAttention(8, 2)(nested, nested, nested)
    other_lengths = torch.nested.nested_tensor(sequences(1, 4))  # keys of other lengths than the queries
    with pytest.raises(ValueError, match="is_causal with nested tensors needs each query sequence as long"):
        ours(nested, other_lengths, other_lengths, is_causal=True)  # would align to the longest (review)


# ------------------------------------------------------------------------ torch's fast path bypasses compat


@pytest.fixture
def fast_path_disabled():
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    yield
    torch.backends.mha.set_fastpath_enabled(enabled)


def fully_padded_layer_call() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """An eval-mode encoder layer with compat's attention, src (B, S, E) and a padding mask (B, S) that hides
    every key of batch 1."""
    layer = randomize(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)).eval()
    padding = torch.tensor([[False, False, True, True], [True] * 4])
    return swap_attention(layer), randn(2, 4, 8), padding


def test_in_torchs_inference_fast_path_the_encoder_layer_never_calls_compat() -> None:
    """As compat's docstring says: eval, no gradients and the fast path's conditions: torch's fused kernel
    runs on compat's weights, nothing of headwise runs, and a fully masked query is NaN (torch's result)."""
    layer, src, padding = fully_padded_layer_call()
    with torch.no_grad(), headwise.trace() as steps:
        output = layer(src, src_key_padding_mask=padding)  # (B, S, E)
    assert len(steps) == 0
    assert output[1].isnan().all() and output[0].isfinite().all()


@pytest.mark.parametrize("switch", ["fast path disabled", "forward hook"])
def test_disabling_the_fast_path_or_a_hook_makes_the_encoder_layer_call_compat(switch: str, request) -> None:
    """torch.backends.mha.set_fastpath_enabled(False), or a forward hook on the layer, routes the layer
    through compat: headwise computes it, and a fully masked query gets zero weights (finite outputs)."""
    layer, src, padding = fully_padded_layer_call()
    if switch == "fast path disabled":
        request.getfixturevalue("fast_path_disabled")
    else:
        layer.register_forward_hook(lambda module, inputs, output: None)
    with torch.no_grad(), headwise.trace() as steps:
        output = layer(src, src_key_padding_mask=padding)
    assert "weights" in steps.names()
    assert output.isfinite().all()


# ---------------------------------------------------------------------------------------------- TorchScript


def float32_and_golden(theirs: nn.Module, ours: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(ours scripted, torch's float32, torch's float64) from a float64 pair with the same weights."""
    golden = copy.deepcopy(theirs)
    return torch.jit.script(copy.deepcopy(ours).float()), copy.deepcopy(theirs).float(), golden


def check_results_by_ratio(ours: dict, golden: dict, theirs: dict) -> None:
    """Outputs, weights and every gradient of run()/run_function() results."""
    assert ours.keys() == golden.keys() == theirs.keys()
    for name, value in golden.items():
        if value is None:
            assert ours[name] is None and theirs[name] is None, name
        else:
            check_by_ratio(ours[name], value, theirs[name], name)


SCRIPTED_OPTIONS = [
    {"batch_first": True},
    {"kdim": 5, "vdim": 3, "add_bias_kv": True},
    {"bias": False, "add_zero_attn": True, "batch_first": True},
]


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("options", SCRIPTED_OPTIONS, ids=str)
def test_scripted_compat_agrees_with_torchs_module(options: dict, need_weights: bool) -> None:
    """torch.jit.script(compat.MultiheadAttention) runs headwise's attention (torch.ops.headwise.attention,
    or torch.ops.headwise.attention_with_weights when the weights are asked for): outputs, weights and
    gradients, with padding and a mask, batched and unbatched."""
    theirs64, ours64 = make_pair(embed_dim=8, num_heads=2, **options)
    scripted, theirs, golden = float32_and_golden(theirs64, ours64)
    batch_first, kdim, vdim = (
        options.get("batch_first", False),
        options.get("kdim", 8),
        options.get("vdim", 8),
    )
    padding = torch.tensor([[False] * 3 + [True] * 2, [False] * 5])  # (B, S)
    blocked = torch.tensor([[False, True, False, True, True]] * 4)  # (L, S)
    for batched in (True, False):
        shape = (lambda n, w: (2, n, w) if batch_first else (n, 2, w)) if batched else (lambda n, w: (n, w))
        inputs = (randn(*shape(4, 8), seed=1), randn(*shape(5, kdim), seed=2), randn(*shape(5, vdim), seed=3))
        call = {"need_weights": need_weights, "attn_mask": blocked}
        if batched:
            call["key_padding_mask"] = padding
        results = [
            run(module, tuple(t.to(dtype) for t in inputs), **call)
            for module, dtype in ((scripted, torch.float32), (golden, F64), (theirs, torch.float32))
        ]
        check_results_by_ratio(*results)


def test_scripted_weights_take_the_eager_route_dropout_and_gradients_included() -> None:
    """need_weights=True in training with dropout: the scripted module (headwise::attention_with_weights)
    gives the eager module's output, weights and gradients bit for bit from the same seed (one route,
    the same backend, the same dropout draws, and its backward redraws them)."""
    _, ours = make_pair(embed_dim=8, num_heads=2, dropout=0.3, batch_first=True)
    ours.train()
    scripted = torch.jit.script(ours)
    x = randn(2, 5, 8).double()
    results = []
    for module in (ours, scripted):
        inputs = x.clone().requires_grad_()
        torch.manual_seed(11)
        output, weights = module(inputs, inputs, inputs, need_weights=True, average_attn_weights=False)
        (output.sum() + (weights * torch.arange(5.0, dtype=F64)).sum()).backward()
        results.append((output, weights, inputs.grad, *(p.grad for p in module.parameters())))
        ours.zero_grad()
    assert 0.0 < float((results[0][1] == 0).double().mean()) < 1.0  # dropout zeroed some weights
    for eager, scripted_result in zip(*results, strict=True):
        assert torch.equal(eager, scripted_result)


def test_scripted_compat_survives_a_save_and_load(tmp_path) -> None:
    """torch.jit.save and torch.jit.load (the custom op is registered by importing headwise): the same
    results, bit for bit."""
    _, ours = make_pair(embed_dim=8, num_heads=2, add_bias_kv=True)
    scripted = torch.jit.script(ours)
    torch.jit.save(scripted, tmp_path / "attention.pt")
    loaded = torch.jit.load(tmp_path / "attention.pt")
    x = randn(4, 2, 8).double()
    for need_weights in (True, False):
        for got, expected in zip(
            loaded(x, x, x, need_weights=need_weights),
            scripted(x, x, x, need_weights=need_weights),
            strict=True,
        ):
            assert (got is None and expected is None) or torch.equal(got, expected)


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_torchs_layers_with_compat_swapped_in_script_and_agree(kind: str) -> None:
    """torch.jit.script of torch's encoder and decoder layers with compat's attention swapped in (as torch's
    own tests script them): in training mode (headwise computes), outputs and gradients agree."""
    theirs64 = transformer_layers()[kind]
    scripted, theirs, golden = float32_and_golden(theirs64, swap_attention(theirs64))
    inputs, call = layer_inputs(kind)
    results = [
        run_function(
            module, lambda *t, module=module: (module(*t, **call), None), tuple(t.to(dtype) for t in inputs)
        )
        for module, dtype in ((scripted, torch.float32), (golden, F64), (theirs, torch.float32))
    ]
    check_results_by_ratio(*results)
