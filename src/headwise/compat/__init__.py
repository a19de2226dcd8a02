"""A drop-in for torch.nn.MultiheadAttention, computed by headwise.

Same constructor and forward signatures, defaults, mask polarity (True = blocked), state_dict keys and
results (outputs, returned weights and gradients match torch's in float64). The masks are converted to
headwise's polarity (True = may attend) here, at the edge, and nowhere else.

`is_causal=True` needs `attn_mask`, as in torch (the same RuntimeError and words without one). torch
treats it as an unchecked hint that attn_mask is causal; compat applies a causal mask (bottom-right aligned)
itself and combines it with attn_mask. The results agree when attn_mask is the square causal mask, with one
exception in torch: with bias_k or add_zero_attn, need_weights=False and no key_padding_mask, torch follows
the hint with a top-left causal mask over the S + 1 keys and hides the appended key, where its
need_weights=True path (and compat) keep it visible.

Where it differs from torch, on purpose:
- a query whose keys are all masked gets zeros, where torch returns NaN (with need_weights=True);
- nested tensors (batch first, ragged lengths) are accepted wherever torch accepts them (its inference fast
  path) and also in training and for cross-attention: they are padded, the padding masked, and the output
  nested again. torch takes them only without masks, and so does compat; is_causal (there without
  attn_mask, which nested tensors cannot take) only where each query sequence is as long as its keys (a
  padded batch would align the causal diagonal to the longest).
- torch.nn.MultiheadAttention's own fused kernel (torch._native_multi_head_attention, its inference fast
  path) is never called: compat always computes with headwise.

Invalid shapes are refused in torch's order and with torch's words first (its ranks check: "For batched
(3-D) `query`, expected `key` and `value` to be 3-D but found ..."), then headwise's account of the shape
expected and the one received.

Errors a torch user catches are caught: each error compat raises for an input that torch also refuses is an
instance of torch's exception class for it as well as of headwise's usual one (ValueError, TypeError), e.g.
ValueAssertionError for a query of the wrong shape, ValueRuntimeError for an attn_mask of the wrong shape.

TorchScript: `torch.jit.script` compiles forward's scripted path (no checks, no nested tensors, no trace),
where the attention is the custom op torch.ops.headwise.attention (headwise's backends, chosen as in an
eager call), or the reference's steps when the weights are asked for; `import headwise` before
`torch.jit.load` registers the op. Dynamic quantization: out_proj is torch's NonDynamicallyQuantizableLinear,
which `torch.ao.quantization.quantize_dynamic` leaves in floating point, as in torch's module.

When torch does not call this module at all: torch.nn.TransformerEncoderLayer (and TransformerEncoder) in
eval mode, with no gradient needed, runs its own fused kernel (torch._transformer_encoder_layer_fwd) on this
module's weights instead of calling it, whenever its fast path conditions hold: torch.backends.mha's fast
path enabled, a batched (3-D) src, batch_first=True, bias=True, kdim = vdim = embed_dim, an even num_heads,
a relu or gelu activation, norm1.eps == norm2.eps, no autocast, no forward hooks or pre-hooks on the layer
or its submodules, src and the weights on cpu, cuda, xpu or a privateuse1 device, and (for a nested src)
no masks. The results are then torch's: NaN for a query whose keys are all masked.
`torch.backends.mha.set_fastpath_enabled(False)` makes every layer call compat; a forward hook on the layer
(or its self_attn) does too, for that layer.

The package, by job: module.py (MultiheadAttention: its parameters, the eager and the TorchScript path of
forward, torch's masks in headwise's polarity), checks.py (the eager call's checks, in torch's order),
nested.py (nested tensors padded and nested again), errors.py (the exception classes that are also
torch's, like_torch).
"""

from .errors import (
    TypeAssertionError,
    TypeAttributeError,
    TypeRuntimeError,
    ValueAssertionError,
    ValueRuntimeError,
)
from .module import MultiheadAttention

__all__ = [
    "MultiheadAttention",
    "TypeAssertionError",
    "TypeAttributeError",
    "TypeRuntimeError",
    "ValueAssertionError",
    "ValueRuntimeError",
]
