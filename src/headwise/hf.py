"""Hugging Face transformers on headwise attention: `attn_implementation="headwise"`.

    import headwise.hf
    headwise.hf.register()  # once per process; returns "headwise"
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="headwise")
    # or, on a model already built: model.set_attn_implementation("headwise")

register() adds two functions to transformers' global registries under one name:
- `headwise_attention` to `AttentionInterface`: the attention layers call it with (B, H, N, Dh) tensors;
- `headwise_mask` to `AttentionMaskInterface`: the model calls it once per forward to build the mask.
  Without it transformers builds no mask at all for an unknown implementation (padding is silently ignored).
  It is transformers' own boolean mask (True = may attend, headwise's polarity), materialised whenever
  anything is masked: causal, padding, sliding windows and packed sequences all arrive in it, so a given
  mask is the whole truth, and `is_causal` only matters when a layer gets none (full attention, or a model
  that builds no mask).

transformers is imported only inside register(), headwise_mask() and the check for wanted weights:
`import headwise` never imports it.
"""

from __future__ import annotations

from typing import Any

import torch

from .functional import attention
from .masks import combine, softcap

__all__ = ["headwise_attention", "headwise_mask", "register"]


def register(name: str = "headwise") -> str:
    """Make `attn_implementation=name` run headwise in transformers models; idempotent. Returns `name`.

    Raises ImportError (with the pip command) without transformers, and ValueError if `name` is "eager" or is
    already registered to another attention or mask function.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    try:
        from transformers import AttentionInterface, AttentionMaskInterface
    except ImportError as error:
        raise ImportError(
            "headwise.hf.register() needs Hugging Face transformers (with AttentionInterface and "
            "AttentionMaskInterface): pip install transformers"
        ) from error
    if name == "eager":
        raise ValueError("name must not be 'eager': transformers always runs its own eager attention for it")
    pairs = ((AttentionInterface, headwise_attention), (AttentionMaskInterface, headwise_mask))
    for interface, function in pairs:
        current = interface().get(name)  # a fresh instance reads the global mapping only
        if current is not None and current is not function:
            raise ValueError(
                f"name {name!r} is already registered in transformers' {interface.__name__} to "
                f"{getattr(current, '__qualname__', current)!r}; pick another name"
            )
    for interface, function in pairs:
        interface.register(name, function)  # class-wide: every model and mask factory sees it
    return name


def headwise_mask(**kwargs: Any) -> torch.Tensor | None:
    """transformers' mask factory for headwise: its bool mask (B, 1, Nq, Nk), True = may attend, or None.

    Takes the keyword arguments transformers' `create_causal_mask` / `create_bidirectional_mask` / ... pass to
    `sdpa_mask` (batch_size, q_length, kv_length, q_offset, kv_offset, mask_function, attention_mask, ...).
    A causal pattern is always built: sdpa's shortcut of returning None for "use is_causal instead" relies on
    torch's upper-left alignment when a static cache has empty slots after the prompt (Nk > Nq, offset 0),
    where headwise's bottom-right causal would let the prompt see the empty slots. The other shortcut stays:
    None for full attention without padding, where the layer gets is_causal=False (module or keyword).
    """
    from transformers.masking_utils import sdpa_mask

    kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(**kwargs)


def headwise_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """transformers' attention-function contract, computed by `headwise.attention`.

    Args:
        module: the calling attention layer; read for `.training` (dropout) and `.is_causal` (when no mask).
        query (B, Hq, Nq, Dh), key (B, Hkv, Nk, Dh), value (B, Hkv, Nk, Dv): Hq a multiple of Hkv;
            grouped-query attention runs natively, without repeating key/value heads.
        attention_mask: None, bool (True = may attend) or float added to the scores, broadcastable to
            (B, Hq, Nq, Nk); usually (B, 1, Nq, Nk) from `headwise_mask`, or a 4-D mask the caller built.
        scaling: multiplies the scores; None means 1 / sqrt(Dh).
        dropout: probability of dropping an attention weight, applied only while `module.training`.
        kwargs: is_causal (used only when attention_mask is None; defaults to module.is_causal, else True, as
            transformers' sdpa does), softcap (tanh capping of the scaled scores), position_bias (added to the
            scores), output_attentions (return the weights; `_weights_wanted` says when models that do not
            pass it want them). Others (sliding_window, position_ids, ...) are already in the mask and
            ignored; attention sinks (s_aux) and paged caches are refused.

    Returns:
        (attn_output (B, Nq, Hq, Dv) contiguous, weights (B, Hq, Nq, Nk) after dropout if they are wanted,
        else None). A query that may see no key (e.g. a left-padding position) gets zeros, where eager's
        finite mask gives a uniform average; real tokens never read those rows.
    """
    if kwargs.get("s_aux") is not None:
        raise ValueError("headwise does not support attention sinks (s_aux); use attn_implementation='eager'")
    if kwargs.get("cache") is not None:
        raise ValueError(
            "headwise does not support transformers' paged cache (continuous batching), got cache="
            f"{type(kwargs['cache']).__name__}; use attn_implementation='sdpa' or 'paged|eager'"
        )
    if attention_mask is not None and not (
        isinstance(attention_mask, torch.Tensor)
        and (attention_mask.dtype == torch.bool or attention_mask.dtype.is_floating_point)
        and attention_mask.dim() == 4
    ):
        got = (
            f"{attention_mask.dtype} tensor of shape {tuple(attention_mask.shape)}"
            if isinstance(attention_mask, torch.Tensor)
            else type(attention_mask).__name__
        )
        raise TypeError(
            "attention_mask must be None or a 4-D bool (True = may attend) or float tensor "
            f"(B, 1|H, Nq, Nk), got {got}; call headwise.hf.register() so that transformers builds its "
            "masks with headwise_mask"
        )

    # A given mask already holds causality, placed by the cache's offsets: is_causal only stands in for none.
    is_causal = kwargs.get("is_causal")
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    causal = attention_mask is None and bool(is_causal)
    mask = combine(attention_mask, kwargs.get("position_bias"), query.dtype)  # (B|1, H|1, Nq, Nk) or None
    cap = kwargs.get("softcap")
    want_weights = _weights_wanted(module, kwargs)

    result = attention(
        query,
        key,
        value,
        mask=mask,
        causal=causal,
        scale=scaling,
        dropout_p=dropout if module.training else 0.0,
        return_weights=want_weights,
        score_mod=softcap(cap) if cap is not None else None,
    )  # out (B, Hq, Nq, Dv), and weights (B, Hq, Nq, Nk) if asked
    out, weights = result if isinstance(result, tuple) else (result, None)  # a tuple when weights were asked
    return out.transpose(1, 2).contiguous(), weights  # (B, Nq, Hq, Dv): transformers merges the heads next


def _weights_wanted(module: torch.nn.Module, kwargs: dict[str, Any]) -> bool:
    """Whether the caller will use the attention weights: transformers' output_attentions, however it arrives.

    Most models pass output_attentions down to the attention function; GPT-2 (the only one in transformers
    5.23) pops it at the model, and only transformers' output recorder knows: `@capture_outputs` sets a
    collector with an "attentions" (or "cross_attentions", ...) list for the forward, and a forward hook on
    each attention layer appends the layer's second output to it. So the weights are wanted when the flag is
    passed, or when the layer has forward hooks (the recorder installs them on first use and leaves them) and
    the active collector gathers attentions. Checking the hooks first keeps the collector, a ContextVar that
    torch.compile cannot read without a graph break, out of the calls of layers that nothing records.
    """
    if kwargs.get("output_attentions"):
        return True
    if not module._forward_hooks:
        return False
    try:
        from transformers.utils.output_capturing import _active_collector
    except ImportError:  # a transformers without the output recorder: the flag is the only signal
        return False
    collected = _active_collector.get()  # {"attentions": [...], "hidden_states": [...], ...} or None
    return collected is not None and any(key.endswith("attentions") for key in collected)
