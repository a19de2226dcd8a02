"""KVCache: the keys and values of the tokens decoded so far, per layer, for incremental decoding.

    cache = headwise.KVCache(num_layers=2)                      # grows by doubling
    with torch.no_grad():
        for i, layer in enumerate(layers):                      # prefill: the whole prompt, Nq = P
            x, _ = layer(x, is_causal=True, cache=cache, cache_layer=i)
        ...                                                     # then one token at a time, Nq = 1

Each layer keeps its keys (B, Hkv, capacity, Dh) and values (B, Hkv, capacity, Dv) in preallocated
buffers, after projection and head split (so grouped-query attention stores its Hkv heads only), and
`append` hands back views of the filled part, (B, Hkv, N, Dh) and (B, Hkv, N, Dv). Without max_length the
capacity doubles when full, so appending costs amortised O(1) per token (each doubling copies the cache
once); with max_length the buffers are allocated at that length and appending past it is an error.
Batch size, heads, head widths, dtype and device come from the first append (after reset(), the next one).
"""

from __future__ import annotations

import numbers

import torch

from .checks import all_finite, positive_int


class LayerCache:
    """One layer's cached keys (B, Hkv, N, Dh) and values (B, Hkv, N, Dv); made by KVCache."""

    def __init__(self, name: str, max_length: int | None) -> None:
        self.name = name  # "layer 3", for error messages
        self.max_length = max_length
        self.reset()

    def reset(self) -> None:
        """Forget every token and free the buffers; the next append may have any shape, dtype or device."""
        self.length = 0  # tokens cached: N
        self.finite = True  # whether every cached key and value is known to be finite
        self._keys: torch.Tensor | None = None  # (B, Hkv, capacity, Dh)
        self._values: torch.Tensor | None = None  # (B, Hkv, capacity, Dv)

    @property
    def keys(self) -> torch.Tensor | None:
        """The cached keys (B, Hkv, N, Dh), oldest first, or None before the first append."""
        return None if self._keys is None else self._keys[:, :, : self.length]

    @property
    def values(self) -> torch.Tensor | None:
        """The cached values (B, Hkv, N, Dv), oldest first, or None before the first append."""
        return None if self._values is None else self._values[:, :, : self.length]

    @property
    def capacity(self) -> int:
        """Tokens the buffers hold before they must grow (0 before the first append)."""
        return 0 if self._keys is None else self._keys.shape[2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the new tokens' keys k (B, Hkv, n, Dh) and values v (B, Hkv, n, Dv) after the cached ones.

        Returns the keys (B, Hkv, N, Dh) and values (B, Hkv, N, Dv) of all N = length tokens cached so far,
        oldest first: views of the buffers. Raises, leaving the cache as it was, if k and v do not match
        what is cached or would pass max_length.
        """
        _check_new(k, v)
        if self._keys is not None and self._values is not None:
            self._check_matches(self._keys, self._values, k, v)
        end = self.length + k.shape[2]  # N after this append
        if self.max_length is not None and end > self.max_length:
            raise ValueError(
                f"KVCache {self.name} holds at most max_length={self.max_length} tokens: it has "
                f"{self.length} and {k.shape[2]} more were appended; make the cache with a larger "
                "max_length, or max_length=None to grow by doubling"
            )
        if self._keys is None:
            self._reallocate(k, v, end if self.max_length is None else self.max_length)
        elif end > self.capacity:  # only without max_length
            self._reallocate(k, v, max(end, 2 * self.capacity))
        keys, values = self._keys, self._values  # (B, Hkv, capacity, Dh), (B, Hkv, capacity, Dv)
        assert keys is not None and values is not None  # allocated above
        keys[:, :, self.length : end] = k
        values[:, :, self.length : end] = v
        self.length = end
        # Checked on the new tokens only, so that attention need not read the whole cache again for it
        # (under torch.compile, where the check would break the graph: unknown, and attention checks).
        self.finite = self.finite and not torch.compiler.is_compiling() and all_finite(k, v)
        return keys[:, :, :end], values[:, :, :end]  # (B, Hkv, N, Dh), (B, Hkv, N, Dv)

    def _reallocate(self, k: torch.Tensor, v: torch.Tensor, capacity: int) -> None:
        """New buffers of `capacity` tokens shaped like k and v, holding the cached tokens."""
        keys = k.new_empty(k.shape[0], k.shape[1], capacity, k.shape[3])  # (B, Hkv, capacity, Dh)
        values = v.new_empty(v.shape[0], v.shape[1], capacity, v.shape[3])  # (B, Hkv, capacity, Dv)
        if self._keys is not None and self._values is not None and self.length:
            keys[:, :, : self.length] = self._keys[:, :, : self.length]
            values[:, :, : self.length] = self._values[:, :, : self.length]
        self._keys, self._values = keys, values

    def _check_matches(
        self, keys: torch.Tensor, values: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> None:
        """A ValueError or TypeError unless the new k and v fit the buffers keys and values."""
        cached = {
            "batch size B": (keys.shape[0], k.shape[0]),
            "key/value heads Hkv": (keys.shape[1], k.shape[1]),
            "key head width Dh": (keys.shape[3], k.shape[3]),
            "value head width Dv": (values.shape[3], v.shape[3]),
            "device": (keys.device, k.device),
        }
        for what, (expected, got) in cached.items():
            if expected != got:
                raise ValueError(
                    f"KVCache {self.name} holds {what} = {expected}, but the new keys and values have {got}; "
                    "call cache.reset() before decoding a different batch"
                )
        if k.dtype != keys.dtype:
            raise TypeError(
                f"KVCache {self.name} holds {keys.dtype}, but the new keys and values are {k.dtype}; "
                "convert them, or call cache.reset() first"
            )


def _check_new(k: torch.Tensor, v: torch.Tensor) -> None:
    """A TypeError or ValueError unless k and v are new keys and values a cache can take."""
    for name, t in (("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            width = "Dh" if name == "k" else "Dv"
            raise ValueError(f"{name} must be 4-D (B, Hkv, n, {width}), got shape {tuple(t.shape)}")
        if t.requires_grad:
            raise ValueError(
                f"{name} requires grad, but KVCache is for inference: its buffers are written in place, "
                "which autograd cannot see through; decode under torch.no_grad() or torch.inference_mode()"
            )
    if k.shape[:3] != v.shape[:3]:
        raise ValueError(f"k and v must share (B, Hkv, n), got {tuple(k.shape[:3])} and {tuple(v.shape[:3])}")
    if k.dtype != v.dtype or k.device != v.device:
        raise ValueError(
            f"k and v must share dtype and device, got {k.dtype} on {k.device} and {v.dtype} on {v.device}"
        )


class KVCache:
    """Keys and values of the tokens decoded so far, for every attention layer of a decoder stack.

    Pass it to MultiHeadAttention.forward(x, cache=cache, cache_layer=i) for layer i: the new tokens' keys
    and values are appended to `cache.layers[i]` and the queries attend to every cached token.

    Args:
        num_layers: attention layers that share this cache, numbered 0 .. num_layers - 1.
        max_length: None to grow the buffers by doubling when full; or the most tokens a sequence may
            reach, allocated at once on the first append (appending past it is an error).

    Attributes:
        layers: one LayerCache per layer, each with `length`, `capacity`, `keys`, `values`, `append(k, v)`
            and `reset()`.
    """

    def __init__(self, num_layers: int = 1, *, max_length: int | None = None) -> None:
        self.num_layers = positive_int(num_layers, "num_layers")
        self.max_length = None if max_length is None else positive_int(max_length, "max_length")
        self.layers = tuple(LayerCache(f"layer {i}", self.max_length) for i in range(self.num_layers))

    @property
    def length(self) -> int:
        """Tokens cached in layer 0; every layer holds as many between decoding steps."""
        return self.layers[0].length

    def layer(self, index: int) -> LayerCache:
        """`layers[index]`, or an error naming the valid range."""
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(f"a KVCache layer index must be an int, got {type(index).__name__}")
        if not 0 <= index < self.num_layers:
            raise ValueError(
                f"a KVCache layer index must be in [0, {self.num_layers}) (this cache has {self.num_layers} "
                f"layer(s)), got {index}"
            )
        return self.layers[index]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append k (B, Hkv, n, Dh) and v (B, Hkv, n, Dv) to `layer`; returns that layer's keys
        (B, Hkv, N, Dh) and values (B, Hkv, N, Dv), N tokens in all (see LayerCache.append)."""
        return self.layer(layer).append(k, v)

    def reset(self) -> None:
        """Empty every layer, to decode a new batch of sequences."""
        for layer in self.layers:
            layer.reset()

    def __repr__(self) -> str:
        limit = "doubling" if self.max_length is None else f"max_length={self.max_length}"
        return f"KVCache(num_layers={self.num_layers}, {limit}, length={self.length})"
