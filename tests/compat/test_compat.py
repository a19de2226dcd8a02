"""headwise.compat.MultiheadAttention against torch.nn.MultiheadAttention, with the same weights, in float64.

Shape legend (torch's names): B batch, L query length, S key length, E embed_dim, H heads.
torch's mask polarity here: True = blocked; float masks are added to the scores.
"""

from __future__ import annotations

import copy
import inspect
import itertools
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from pairs import F64, make_pair, randn, randomize
from torch import nn

from headwise import compat

EXACT = {"atol": 1e-10, "rtol": 0.0}
pytestmark = pytest.mark.filterwarnings(
    "ignore:Support for mismatched key_padding_mask and attn_mask", "ignore:`torch.jit.script` is deprecated"
)


# ---------------------------------------------------------------------------------------------- helpers


def cotangent(t: torch.Tensor) -> torch.Tensor:
    """A fixed, non-uniform upstream gradient for `t`, so every output entry counts differently."""
    return torch.sin(torch.arange(t.numel(), dtype=t.dtype) * 0.7 + 0.3).view_as(t)


def run_function(
    module: nn.Module, compute, inputs: tuple[torch.Tensor, ...]
) -> dict[str, torch.Tensor | None]:
    """compute(*inputs) -> (output, weights or None), then backward: the output, the weights and the
    gradients of the inputs and of every parameter of `module`, by name."""
    leaves = [t.clone().requires_grad_() for t in inputs]
    output, weights = compute(*leaves)
    loss = (output * cotangent(output)).sum()
    if weights is not None:
        loss = loss + (weights * cotangent(weights)).sum()
    module.zero_grad()
    loss.backward()
    results = {"output": output.detach(), "weights": None if weights is None else weights.detach()}
    results.update({f"grad input {i}": leaf.grad for i, leaf in enumerate(leaves)})
    results.update({f"grad {name}": p.grad for name, p in module.named_parameters()})
    return results


def run(module: nn.Module, inputs: tuple[torch.Tensor, ...], **kwargs) -> dict[str, torch.Tensor | None]:
    """run_function for an attention module; inputs: (x,) for self-attention (query = key = value = x, one
    tensor) or (query, key, value)."""
    return run_function(module, lambda *t: module(*(t * 3 if len(t) == 1 else t), **kwargs), inputs)


def assert_same_results(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys()
    for name in theirs:
        if theirs[name] is None:
            assert ours[name] is None, name
        else:
            torch.testing.assert_close(
                ours[name], theirs[name], **EXACT, msg=lambda m, name=name: f"{name}: {m}"
            )


def causal_blocked(length: int) -> torch.Tensor:
    """torch's causal mask (L, L): True above the diagonal (a query may not see later keys)."""
    return torch.ones(length, length, dtype=torch.bool).triu(diagonal=1)


def as_float(blocked: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
    """The float form of a True = blocked mask: -inf where blocked, `noise` (or 0) elsewhere."""
    visible = torch.zeros(blocked.shape, dtype=F64) if noise is None else noise
    return visible.masked_fill(blocked, float("-inf"))


# ------------------------------------------------------------------------------ generated configurations


@dataclass
class Case:
    options: dict  # constructor arguments
    seed: int  # of the random weights
    inputs: tuple[torch.Tensor, ...]  # (x,) for self-attention, else (query, key, value)
    call: dict = field(default_factory=dict)  # forward keyword arguments


@st.composite
def cases(draw) -> Case:
    self_attention = draw(st.booleans())  # query = key = value: one tensor, torch's fused projection
    # torch treats is_causal as a hint about attn_mask, read top-left, and ignores the appended bias_k and
    # zero-attention keys when it follows the hint: compare only where that hint is exact (square, no
    # appended keys; see the tests test_is_causal_* below).
    is_causal = draw(st.integers(0, 3)) == 0
    widths = st.none() if self_attention else st.none() | st.integers(1, 6)
    num_heads = draw(st.integers(1, 3))
    embed_dim = num_heads * draw(st.integers(1, 4))
    kdim, vdim = draw(widths), draw(widths)
    options = {
        "embed_dim": embed_dim,
        "num_heads": num_heads,
        "bias": draw(st.booleans()),
        "add_bias_kv": not is_causal and draw(st.booleans()),
        "add_zero_attn": not is_causal and draw(st.booleans()),
        "kdim": kdim,
        "vdim": vdim,
        "batch_first": draw(st.booleans()),
    }
    batched = draw(st.booleans())
    batch = draw(st.integers(1, 3)) if batched else 1
    num_queries = draw(st.integers(1, 5))
    num_keys = num_queries if self_attention or is_causal else draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    generator = torch.Generator().manual_seed(seed)

    def noise(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=F64)

    def random_blocked(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator) < 0.4

    def layout(length: int, width: int) -> tuple[int, ...]:
        if not batched:
            return (length, width)
        return (batch, length, width) if options["batch_first"] else (length, batch, width)

    query = noise(*layout(num_queries, embed_dim))
    inputs = (query,)
    if not self_attention:
        inputs = (
            query,
            noise(*layout(num_keys, kdim or embed_dim)),
            noise(*layout(num_keys, vdim or embed_dim)),
        )

    # Every query keeps at least one visible key (torch gives NaN where headwise gives zeros otherwise):
    # the key `keep` is never blocked (key 0 under a causal mask, the only key the first query may see).
    keep = 0 if is_causal else draw(st.integers(0, num_keys - 1))
    call = {
        "need_weights": draw(st.booleans()),
        "average_attn_weights": draw(st.booleans()),
        "is_causal": is_causal,
    }
    padding_kind = draw(st.sampled_from(["none", "bool", "float"]))
    if padding_kind != "none":
        blocked = random_blocked(batch, num_keys)  # (B, S)
        blocked[:, keep] = False
        padding = blocked if padding_kind == "bool" else as_float(blocked, noise(batch, num_keys))
        call["key_padding_mask"] = padding if batched else padding[0]  # (B, S) or (S,)
    mask_rank = draw(st.sampled_from([2, 3] if is_causal else [0, 2, 3]))
    if mask_rank:
        if is_causal:
            blocked = causal_blocked(num_queries).expand(batch * num_heads, -1, -1)  # (B·H, L, S)
        else:
            blocked = random_blocked(batch * num_heads, num_queries, num_keys)  # (B·H, L, S)
            blocked[..., keep] = False
        blocked = blocked[0] if mask_rank == 2 else blocked  # (L, S) or (B·H, L, S)
        # A causal hint must be exactly the causal mask, so its float form has zeros where visible.
        visible = None if is_causal else noise(*blocked.shape)
        call["attn_mask"] = blocked if draw(st.booleans()) else as_float(blocked, visible)
    return Case(options, seed, inputs, call)


@settings(max_examples=250, deadline=None)
@given(case=cases())
def test_matches_torch_on_generated_configurations(case: Case) -> None:
    theirs, ours = make_pair(case.seed, **case.options)
    assert_same_results(run(ours, case.inputs, **case.call), run(theirs, case.inputs, **case.call))


@settings(max_examples=25, deadline=None)  # scripting takes about half a second per example
@given(case=cases())
def test_scripted_matches_torch_on_generated_configurations(case: Case) -> None:
    """torch.jit.script(compat.MultiheadAttention) runs TorchScript's path of forward (no Python checks;
    the custom op, or the reference's steps for the weights): it matches torch as the eager path does."""
    theirs, ours = make_pair(case.seed, **case.options)
    scripted = torch.jit.script(ours)
    assert_same_results(run(scripted, case.inputs, **case.call), run(theirs, case.inputs, **case.call))


# ------------------------------------------------------------------------------------ interface and state


def signature_of(function) -> list[tuple[str, inspect._ParameterKind, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("method", ["__init__", "forward"])
def test_signature_and_defaults_equal_torchs(method: str) -> None:
    ours = signature_of(getattr(compat.MultiheadAttention, method))
    theirs = signature_of(getattr(nn.MultiheadAttention, method))
    assert ours == theirs


@pytest.mark.parametrize("options", [{}, {"kdim": 3, "vdim": 5, "add_bias_kv": True, "bias": False}], ids=str)
def test_every_attribute_and_method_of_torchs_exists_with_its_signature(options: dict) -> None:
    """Everything dir() lists on torch's module is on compat's: methods with the same parameters (names,
    kinds, defaults), other attributes of the same type (out_proj a NonDynamicallyQuantizableLinear too)."""
    theirs = nn.MultiheadAttention(8, 2, **options)
    ours = compat.MultiheadAttention(8, 2, **options)
    assert set(dir(theirs)) - set(dir(ours)) == set()
    for name in dir(theirs):
        theirs_attribute, ours_attribute = getattr(theirs, name), getattr(ours, name)
        if not callable(theirs_attribute):
            assert type(ours_attribute) is type(theirs_attribute), name
            continue
        try:
            expected = signature_of(theirs_attribute)
        except ValueError:  # a builtin without a signature (object.__dir__, ...), the same on both
            assert type(ours_attribute) is type(theirs_attribute), name
            continue
        assert signature_of(ours_attribute) == expected, name


def test_defaults_behave_like_torchs() -> None:
    """Without keyword arguments: sequence-first inputs (L, B, E) and averaged weights returned."""
    theirs, ours = make_pair(embed_dim=6, num_heads=3)
    query, key = randn(4, 2, 6, seed=1), randn(5, 2, 6, seed=2)
    assert ours.batch_first is False
    assert_same_results(run(ours, (query, key, key)), run(theirs, (query, key, key)))


OPTIONS = [
    dict(zip(["bias", "add_bias_kv", "add_zero_attn", "kdim", "vdim", "batch_first"], values, strict=True))
    for values in itertools.product(
        [True, False], [True, False], [True, False], [None, 3], [None, 5], [False]
    )
] + [{"batch_first": True, "kdim": 3, "vdim": 3}]


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_state_dict_keys_shapes_and_values_equal_torchs(options: dict) -> None:
    theirs, ours = make_pair(embed_dim=6, num_heads=2, **options)
    theirs_state, ours_state = theirs.state_dict(), ours.state_dict()
    assert list(ours_state) == list(theirs_state)
    for name, tensor in theirs_state.items():
        torch.testing.assert_close(ours_state[name], tensor, atol=0, rtol=0)
    # ...and torch loads compat's checkpoints back with strict key checking.
    fresh = nn.MultiheadAttention(embed_dim=6, num_heads=2, **options, dtype=F64)
    fresh.load_state_dict(ours_state)
    assert all(torch.equal(fresh.state_dict()[name], tensor) for name, tensor in ours_state.items())


class Encoder(nn.Module):
    """A small model around an attention layer, as a user would have saved it."""

    def __init__(self, attention_class: type[nn.Module]) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 8, dtype=F64)
        self.attn = attention_class(8, 2, add_bias_kv=True, kdim=5, vdim=4, batch_first=True, dtype=F64)
        self.head = nn.Linear(8, 1, dtype=F64)

    def forward(
        self, x: torch.Tensor, memory_keys: torch.Tensor, memory_values: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.embed(x)  # (B, L, 8)
        attended, _ = self.attn(hidden, memory_keys, memory_values, need_weights=False)  # (B, L, 8)
        return self.head(attended)  # (B, L, 1)


def test_swapped_into_a_model_loads_a_torch_checkpoint(tmp_path) -> None:
    torch.manual_seed(0)
    original = Encoder(nn.MultiheadAttention)
    with torch.no_grad():
        original.attn.in_proj_bias.normal_()
        original.attn.out_proj.bias.normal_()
    torch.save(original.state_dict(), tmp_path / "checkpoint.pt")

    swapped = Encoder(compat.MultiheadAttention)
    swapped.load_state_dict(torch.load(tmp_path / "checkpoint.pt", weights_only=True))
    x, keys, values = (
        randn(2, 4, 3, seed=1),
        randn(2, 6, 5, seed=2),
        randn(2, 6, 4, seed=3),
    )
    torch.testing.assert_close(swapped(x, keys, values), original(x, keys, values), **EXACT)


def test_same_seed_gives_torchs_initial_weights() -> None:
    """Both draw the same random numbers in the same order at construction, so a model seeded the same way
    starts from the same weights."""
    for options in ({}, {"kdim": 3, "vdim": 5}, {"add_bias_kv": True, "bias": False}):
        torch.manual_seed(7)
        theirs = nn.MultiheadAttention(8, 2, **options, dtype=F64).state_dict()
        torch.manual_seed(7)
        ours = compat.MultiheadAttention(8, 2, **options, dtype=F64).state_dict()
        for name, tensor in theirs.items():
            torch.testing.assert_close(ours[name], tensor, atol=0, rtol=0)


@pytest.mark.parametrize(
    "options", [{}, {"kdim": 3, "vdim": 5}, {"add_bias_kv": True, "bias": False}], ids=str
)
def test_reset_parameters_draws_torchs_initial_weights_again(options: dict) -> None:
    """_reset_parameters (which torch's subclasses and users call to re-initialise) draws what torch's draws
    after the same seed, from random weights; out_proj's weight keeps its value in both."""
    theirs, ours = make_pair(embed_dim=8, num_heads=2, **options)
    before = {name: tensor.clone() for name, tensor in ours.state_dict().items()}
    for module in (theirs, ours):
        torch.manual_seed(11)
        module._reset_parameters()
    for name, tensor in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], tensor, atol=0, rtol=0)
        changed = not torch.equal(before[name], tensor)
        assert changed == (name != "out_proj.weight"), name


def swap_attention(model: nn.Module) -> nn.Module:
    """A copy of `model` with every torch.nn.MultiheadAttention replaced by compat's, with its weights."""
    model = copy.deepcopy(model)
    targets = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()]
    for parent, name, child in targets:
        if isinstance(child, nn.MultiheadAttention):
            replacement = compat.MultiheadAttention(
                child.embed_dim,
                child.num_heads,
                dropout=child.dropout,
                batch_first=child.batch_first,
                dtype=child.out_proj.weight.dtype,
            )
            replacement.load_state_dict(child.state_dict())
            setattr(parent, name, replacement.train(child.training))
    return model


def transformer_layers() -> dict[str, nn.Module]:
    options = {"d_model": 8, "nhead": 2, "dim_feedforward": 16, "dropout": 0.0, "dtype": F64}
    return {
        "encoder": randomize(nn.TransformerEncoderLayer(**options, batch_first=True)),
        "decoder": randomize(nn.TransformerDecoderLayer(**options, norm_first=True)),
    }


def layer_inputs(kind: str) -> tuple[tuple[torch.Tensor, ...], dict]:
    """The layer's inputs and mask arguments: a causal mask and padding (True = padding) in batch 1."""
    padding = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])  # (B, S)
    if kind == "encoder":  # batch first: src (B, S, E)
        return (randn(2, 5, 8),), {"src_key_padding_mask": padding, "src_mask": causal_blocked(5)}
    call = {"tgt_mask": causal_blocked(4), "tgt_is_causal": True, "memory_key_padding_mask": padding}
    return (randn(4, 2, 8, seed=1), randn(5, 2, 8, seed=2)), call  # tgt (L, B, E), memory (S, B, E)


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_swapped_into_torch_transformer_layers(kind: str) -> None:
    """torch's own layers call the attention with their masks (converted to float, causal hints...):
    the outputs and every gradient stay those of torch."""
    theirs = transformer_layers()[kind]
    ours = swap_attention(theirs)
    assert sum(isinstance(m, compat.MultiheadAttention) for m in ours.modules()) == (
        1 if kind == "encoder" else 2
    )
    inputs, call = layer_inputs(kind)
    results = [
        run_function(module, lambda *t, module=module: (module(*t, **call), None), inputs)
        for module in (ours, theirs)
    ]
    assert_same_results(*results)


def test_torch_encoder_layer_inference_fast_path_runs_with_compat() -> None:
    """In eval mode without gradients torch.nn.TransformerEncoderLayer merges the masks with
    self_attn.merge_masks and runs its fused kernel on the attention's weights."""
    theirs = transformer_layers()["encoder"].eval()
    ours = swap_attention(theirs)
    (x,), call = layer_inputs("encoder")
    with torch.no_grad():
        torch.testing.assert_close(ours(x, **call), theirs(x, **call), **EXACT)


# ------------------------------------------------------------------------------------------------ dropout


@pytest.mark.parametrize("need_weights", [True, False])
def test_dropout_in_training_draws_the_same_random_numbers_as_torch(need_weights: bool) -> None:
    """Both apply dropout to a (B, H, L, S) block of weights with torch's generator, so with the same seed
    they drop the same weights: outputs, returned weights and gradients are equal."""
    theirs, ours = make_pair(embed_dim=8, num_heads=2, dropout=0.4, batch_first=True)
    x = randn(3, 6, 8)
    results = []
    for module in (ours, theirs):
        torch.manual_seed(1234)
        results.append(run(module.train(), (x,), need_weights=need_weights, average_attn_weights=False))
    assert_same_results(*results)

    evaluated = run(ours.eval(), (x,), need_weights=need_weights, average_attn_weights=False)
    assert (results[0]["output"] - evaluated["output"]).abs().max() > 0.1  # dropout did drop weights


# ------------------------------------------------------------------------- where compat differs on purpose


def test_fully_masked_query_gives_zeros_where_torch_gives_nan() -> None:
    """With need_weights=True torch returns NaN for a query with no visible key; compat returns zero weights,
    so the output is the output projection's bias, and finite gradients. Other queries match torch."""
    theirs, ours = make_pair(embed_dim=6, num_heads=2, batch_first=True)
    x = randn(2, 3, 6)
    padding = torch.tensor([[False, True, False], [True, True, True]])  # batch 1: every key padded
    ours_results = run(ours, (x,), key_padding_mask=padding)
    theirs_results = run(theirs, (x,), key_padding_mask=padding)

    assert theirs_results["output"][1].isnan().all() and theirs_results["weights"][1].isnan().all()
    torch.testing.assert_close(ours_results["weights"][1], torch.zeros(3, 3, dtype=F64), atol=0, rtol=0)
    torch.testing.assert_close(ours_results["output"][1], ours.out_proj.bias.detach().expand(3, 6), **EXACT)
    for name in ("output", "weights"):
        torch.testing.assert_close(ours_results[name][0], theirs_results[name][0], **EXACT)
    assert all(grad.isfinite().all() for name, grad in ours_results.items() if name.startswith("grad"))


def test_fully_masked_query_without_weights_matches_torchs_zeros() -> None:
    """With need_weights=False torch (SDPA) also gives zeros for such a query, forward and backward."""
    theirs, ours = make_pair(embed_dim=6, num_heads=2, batch_first=True)
    x = randn(2, 3, 6)
    padding = torch.tensor([[False, True, False], [True, True, True]])
    call = {"key_padding_mask": padding, "need_weights": False}
    assert_same_results(run(ours, (x,), **call), run(theirs, (x,), **call))


@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "scripted"])
def test_is_causal_without_attn_mask_is_refused_as_torch_refuses_it(scripted: bool) -> None:
    """torch requires attn_mask with is_causal (a hint about it): the same error (RuntimeError; scripted,
    torch.jit.Error), in the same words."""
    theirs, ours = make_pair(embed_dim=6, num_heads=3)
    x = randn(5, 2, 6)
    theirs_called, ours_called = (torch.jit.script(m) if scripted else m for m in (theirs, ours))
    with pytest.raises(RuntimeError if not scripted else torch.jit.Error) as torch_error:
        theirs_called(x, x, x, is_causal=True)
    with pytest.raises(torch_error.type) as ours_error:
        ours_called(x, x, x, is_causal=True)
    words = str(torch_error.value).splitlines()[-1].removeprefix("builtins.RuntimeError: ")
    assert "Need attn_mask if specifying the is_causal hint" in words
    assert words in str(ours_error.value)
    assert_same_results(
        run(ours, (x,), is_causal=True, attn_mask=causal_blocked(5)),
        run(theirs, (x,), is_causal=True, attn_mask=causal_blocked(5)),
    )


@pytest.mark.parametrize("options", [{"add_bias_kv": True}, {"add_zero_attn": True}], ids=str)
def test_is_causal_keeps_the_appended_keys_visible(options: dict) -> None:
    """The bias_k and zero-attention keys are appended after the masks and stay visible to every query.

    torch agrees when it reads attn_mask (need_weights=True), but with need_weights=False and no
    key_padding_mask it follows the is_causal hint with a top-left causal mask over S + 1 keys, which hides
    the appended key from all but the last query; compat does not copy that inconsistency."""
    theirs, ours = make_pair(embed_dim=6, num_heads=2, **options)
    x = randn(4, 2, 6)
    call = {"attn_mask": causal_blocked(4), "is_causal": True}
    theirs_reading_the_mask = run(theirs, (x,), need_weights=True, **call)
    assert_same_results(run(ours, (x,), need_weights=True, **call), theirs_reading_the_mask)
    ours_without_weights = run(ours, (x,), need_weights=False, **call)["output"]
    torch.testing.assert_close(ours_without_weights, theirs_reading_the_mask["output"], **EXACT)
    hinted = run(theirs, (x,), need_weights=False, **call)["output"]
    assert (hinted - theirs_reading_the_mask["output"]).abs().max() > 1e-3  # torch's two paths disagree


# ---------------------------------------------------------------------------------------------- bad input


def test_constructor_rejects_embed_dim_not_divisible_by_num_heads() -> None:
    with pytest.raises(ValueError, match=r"embed_dim \(10\) must be divisible by num_heads \(4\)"):
        compat.MultiheadAttention(10, 4)


def bad_forward_calls():
    """(description, positional inputs, keyword arguments, error, message) for a module
    compat.MultiheadAttention(6, 2, kdim=4, vdim=5) (sequence first) with L = 3, S = 2, B = 2."""
    q, k, v = (
        randn(3, 2, 6, seed=1),
        randn(2, 2, 4, seed=2),
        randn(2, 2, 5, seed=3),
    )
    return [
        ("query not a tensor", ([1.0], k, v), {}, TypeError, r"query must be a torch\.Tensor, got list"),
        ("key not a tensor", (q, None, v), {}, TypeError, r"key must be a torch\.Tensor, got NoneType"),
        (
            "query 4-D",
            (q[None], k, v),
            {},
            ValueError,
            r"query must have shape \(L, B, 6\).*got \(1, 3, 2, 6\)",
        ),
        (
            "key unbatched",
            (q, k[:, 0], v),
            {},
            ValueError,
            r"key and value must have shapes \(S, B, 4\) and \(S, B, 5\) like query, got \(2, 4\) and",
        ),
        ("key width", (q, v, v), {}, ValueError, r"key must have shape \(S, B, 4\).*got \(2, 2, 5\)"),
        ("value width", (q, k, k), {}, ValueError, r"value must have shape \(S, B, 5\).*got \(2, 2, 4\)"),
        ("batch", (q[:, :1], k, v), {}, ValueError, r"batch size B, got 1, 2, 2"),
        (
            "lengths",
            (q, k, v[:1]),
            {},
            ValueError,
            r"key and value must have the same length S.* got shapes \(2, 2, 4\) and \(1, 2, 5\)",
        ),
        ("dtype", (q.float(), k, v), {}, TypeError, r"query has dtype torch\.float32.*float64"),
        (
            "padding broadcast only",
            (q, k, v),
            {"key_padding_mask": torch.zeros(1, 2, dtype=torch.bool)},
            ValueError,
            r"key_padding_mask must have shape \(2, 2\), got \(1, 2\)",
        ),
        (
            "padding dtype",
            (q, k, v),
            {"key_padding_mask": torch.zeros(2, 2, dtype=torch.long)},
            TypeError,
            r"key_padding_mask has dtype torch\.int64",
        ),
        (
            "2-D mask broadcast only",
            (q, k, v),
            {"attn_mask": torch.zeros(3, 1, dtype=torch.bool)},
            ValueError,
            r"attn_mask must have shape \(3, 2\) or \(4, 3, 2\), got \(3, 1\)",
        ),
        (
            "3-D mask broadcast only",
            (q, k, v),
            {"attn_mask": torch.zeros(1, 3, 2, dtype=torch.bool)},
            ValueError,
            r"attn_mask must have shape \(3, 2\) or \(4, 3, 2\), got \(1, 3, 2\)",
        ),
        (
            "4-D mask",
            (q, k, v),
            {"attn_mask": torch.zeros(2, 2, 3, 2, dtype=torch.bool)},
            ValueError,
            r"attn_mask must have shape \(L, S\) or \(B·num_heads, L, S\), got \(2, 2, 3, 2\)",
        ),
        (
            "mask dtype",
            (q, k, v),
            {"attn_mask": torch.zeros(3, 2, dtype=torch.int32)},
            TypeError,
            r"attn_mask has dtype torch\.int32",
        ),
    ]


BAD_FORWARD_CALLS = bad_forward_calls()


@pytest.mark.parametrize(
    ("inputs", "kwargs", "error", "message"),
    [c[1:] for c in BAD_FORWARD_CALLS],
    ids=[c[0] for c in BAD_FORWARD_CALLS],
)
def test_forward_rejects_bad_input(inputs, kwargs, error, message) -> None:
    module = compat.MultiheadAttention(6, 2, kdim=4, vdim=5, dtype=F64)
    with pytest.raises(error, match=message):
        module(*inputs, **kwargs)


def error_class(call) -> type[BaseException]:
    """The class of the exception that call() raises (failing the test if it raises none)."""
    try:
        call()
    except Exception as error:  # any class: the test compares it with torch's
        return type(error)
    pytest.fail("no exception was raised")


@pytest.mark.parametrize(
    ("inputs", "kwargs"), [c[1:3] for c in BAD_FORWARD_CALLS], ids=[c[0] for c in BAD_FORWARD_CALLS]
)
def test_forward_errors_are_instances_of_the_class_torch_raises(inputs, kwargs) -> None:
    """Code written against torch that catches torch's exception (AssertionError, RuntimeError,
    AttributeError) for a bad input catches compat's for the same input."""
    theirs = nn.MultiheadAttention(6, 2, kdim=4, vdim=5, dtype=F64)
    ours = compat.MultiheadAttention(6, 2, kdim=4, vdim=5, dtype=F64)
    with pytest.raises(error_class(lambda: theirs(*inputs, **kwargs))):
        ours(*inputs, **kwargs)


UNBATCHED = randn(3, 6)  # (L, E)
BAD_MASKS = {
    "unbatched padding (1, S)": {"key_padding_mask": torch.zeros(1, 3, dtype=torch.bool)},
    "unbatched 2-D mask sizes": {"attn_mask": torch.zeros(3, 1, dtype=torch.bool)},
    "unbatched 3-D mask sizes": {"attn_mask": torch.zeros(1, 3, 3, dtype=torch.bool)},
    "uint8 mask": {"attn_mask": torch.zeros(3, 3, dtype=torch.uint8)},
    "uint8 padding": {"key_padding_mask": torch.zeros(3, dtype=torch.uint8)},
}


@pytest.mark.parametrize("kwargs", BAD_MASKS.values(), ids=BAD_MASKS)
def test_unbatched_and_uint8_mask_errors_are_instances_of_the_class_torch_raises(kwargs: dict) -> None:
    theirs = nn.MultiheadAttention(6, 2, dtype=F64)
    ours = compat.MultiheadAttention(6, 2, dtype=F64)
    expected = error_class(lambda: theirs(UNBATCHED, UNBATCHED, UNBATCHED, **kwargs))
    with pytest.raises(expected) as raised:
        ours(UNBATCHED, UNBATCHED, UNBATCHED, **kwargs)
    assert isinstance(raised.value, ValueError | TypeError)  # headwise's classes too, with its message


def test_constructor_error_is_an_instance_of_the_class_torch_raises() -> None:
    with pytest.raises(error_class(lambda: nn.MultiheadAttention(10, 4)), match=r"embed_dim \(10\)"):
        compat.MultiheadAttention(10, 4)


def test_unbatched_masks_have_torchs_unbatched_shapes() -> None:
    module = compat.MultiheadAttention(6, 2, dtype=F64)
    x = randn(3, 6)
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(S,\), got \(1, 3\)"):
        module(x, x, x, key_padding_mask=torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"shape to be \(2, 3, 3\) but got torch.Size\(\[1, 3, 3\]\)"):
        module(x, x, x, attn_mask=torch.zeros(1, 3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"attn_mask must have shape \(3, 3\) or \(2, 3, 3\), got \(3, 1\)"):
        module(x, x, x, attn_mask=torch.zeros(3, 1, dtype=torch.bool))


def test_an_integer_key_padding_mask_is_refused_in_torchs_polarity():
    module = compat.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(2, 3, 8)
    with pytest.raises(TypeError, match=r"expected torch\.bool \(True = may not attend, torch's polarity\)"):
        module(x, x, x, key_padding_mask=torch.zeros(2, 3, dtype=torch.int64))


def torch_shape_checks():
    """(description, query, key, value, masks): torch's invalid-shape cases of its own MHA tests, for a module
    (4, 4): batched (4, 4, 4) and unbatched (4, 4) queries with a key, value or mask of the wrong rank, and an
    unbatched 3-D attn_mask of the wrong shape."""
    batched, unbatched = randn(4, 4, 4), randn(4, 4)
    padding = torch.tensor([False, False, True, True])
    return [
        ("batched, 2-D key", batched, unbatched, batched, {}),
        ("batched, 2-D value", batched, batched, unbatched, {}),
        ("batched, 1-D key_padding_mask", batched, batched, batched, {"key_padding_mask": padding}),
        ("batched, 1-D attn_mask", batched, batched, batched, {"attn_mask": padding}),
        ("unbatched, 3-D key", unbatched, batched, unbatched, {}),
        ("unbatched, 3-D value", unbatched, unbatched, batched, {}),
        (
            "unbatched, 2-D key_padding_mask",
            unbatched,
            unbatched,
            unbatched,
            {"key_padding_mask": padding[None]},
        ),
        ("unbatched, 1-D attn_mask", unbatched, unbatched, unbatched, {"attn_mask": padding}),
        (
            "unbatched, 3-D attn_mask of another shape",
            unbatched,
            unbatched,
            unbatched,
            {"attn_mask": torch.zeros(5, 4, 4, dtype=torch.bool)},
        ),
    ]


TORCH_SHAPE_CHECKS = torch_shape_checks()


@pytest.mark.parametrize("batch_first", [False, True], ids=["seq-first", "batch-first"])
@pytest.mark.parametrize(
    ("query", "key", "value", "masks"),
    [c[1:] for c in TORCH_SHAPE_CHECKS],
    ids=[c[0] for c in TORCH_SHAPE_CHECKS],
)
def test_invalid_shapes_are_refused_in_torchs_words(query, key, value, masks, batch_first: bool) -> None:
    """torch's tests match its messages (assertRaisesRegex): compat's message starts with torch's own, word
    for word, and then says which shapes it expected; an AssertionError, as torch's."""
    theirs = nn.MultiheadAttention(4, 4, batch_first=batch_first, dtype=F64)
    ours = compat.MultiheadAttention(4, 4, batch_first=batch_first, dtype=F64)
    with pytest.raises(AssertionError) as torch_error:
        theirs(query, key, value, **masks)
    with pytest.raises(AssertionError) as ours_error:
        ours(query, key, value, **masks)
    assert str(ours_error.value).startswith(str(torch_error.value)), (
        str(ours_error.value),
        str(torch_error.value),
    )
    assert len(str(ours_error.value)) > len(str(torch_error.value))  # and headwise's account of the shapes


def test_an_empty_nested_tensor_is_refused_with_torchs_rank_message() -> None:
    """torch.nested.nested_tensor([]) is 1-D: refused as torch's shape check words it (torch's own test
    expects this message), not an IndexError; torch's encoder layer refuses it too (its fast-path message)."""
    empty = torch.nested.nested_tensor([])
    ours = compat.MultiheadAttention(8, 2, batch_first=True).eval()
    message = "query should be unbatched 2D or batched 3D tensor but received 1-D query tensor"
    with pytest.raises(AssertionError, match=message):
        ours(empty, empty, empty)
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True).eval()
    with pytest.raises(AssertionError):
        layer(empty)
    layer.self_attn = ours
    with pytest.raises(AssertionError, match=message):
        layer(empty)


@pytest.mark.parametrize("batch_first", [False, True])
def test_output_has_torchs_memory_layout(batch_first: bool) -> None:
    """The output's strides are torch's ((L, B, E) in memory either way), so that a dropout after it (as in
    torch's TransformerEncoderLayer) fills its mask in the same order: the same seed, the same outputs."""
    theirs, ours = make_pair(embed_dim=6, num_heads=2, batch_first=batch_first)
    x = randn(3, 4, 6)
    assert ours(x, x, x)[0].stride() == theirs(x, x, x)[0].stride()
    results = []
    for module in (ours, theirs):
        torch.manual_seed(2)
        results.append(F.dropout(module(x, x, x, need_weights=False)[0], p=0.5))
    torch.testing.assert_close(results[0], results[1], **EXACT)


def test_a_parameter_of_another_dtype_is_refused_by_its_name() -> None:
    """An in_proj_bias in float16 beside float64 weights: torch raises RuntimeError sequence first (and
    computes batch first, promoting the bias in its projection of a transposed input); compat refuses both
    with a RuntimeError that names the parameter (torch's test_multihead_attn_fast_path_query_and_bias_have_
    different_dtypes: a difference, listed in docs/use/drop-in.md)."""
    theirs, ours = make_pair(embed_dim=4, num_heads=2)
    for module in (theirs, ours):
        module.in_proj_bias = nn.Parameter(module.in_proj_bias.detach().half())
    x = randn(3, 2, 4)
    with pytest.raises(RuntimeError):
        theirs(x, x, x)
    with pytest.raises(RuntimeError, match=r"in_proj_bias has dtype torch\.float16 but the module's weights"):
        ours(x, x, x)
