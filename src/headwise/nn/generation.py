"""Generation, one token at a time: greedy, with a temperature, or from the top k.

With a KV cache each step feeds only the newest token: its keys and values join the cache, and it attends
to every token before it. Without one, each step recomputes the whole sequence; both give the same tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..cache import KVCache
from ..checks import non_negative_number, positive_int
from ..positions import check_length


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Run the block in evaluation mode (no dropout), then put the model's mode back."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def next_tokens(
    logits: torch.Tensor,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits (B, V) -> one token per row (B,): the likeliest if temperature is 0, else drawn from
    softmax(logits / temperature), among the top_k likeliest if top_k is given."""
    non_negative_number(temperature, "temperature")  # 0 = greedy
    if top_k is not None:
        positive_int(top_k, "top_k")
    if temperature == 0:
        return logits.argmax(dim=-1)  # (B,)
    scaled = logits.float() / temperature  # (B, V)
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[:, -1:]  # (B, 1): the k-th largest score
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))  # (B, V)
    probabilities = scaled.softmax(dim=-1)  # (B, V)
    return torch.multinomial(probabilities, 1, generator=generator)[:, 0]  # (B,)


def generate(
    step: Callable[[torch.Tensor, KVCache | None], torch.Tensor],
    prompt: torch.Tensor,
    *,
    max_new_tokens: int,
    max_positions: int,
    cache: KVCache | None,
    stop_token: int | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Extend prompt (B, N) by up to max_new_tokens tokens; returns the new ones (B, n).

    step(tokens (B, n), cache) -> logits (B, n, V) runs the model on `tokens`, which come after the cached
    ones (with a cache: the prompt first, then one token per step; without: the whole sequence each time).
    A row that produced stop_token is padded with it until every row has stopped.
    """
    positive_int(max_new_tokens, "max_new_tokens")
    non_negative_number(temperature, "temperature")  # before the first step, not after it
    if prompt.dim() != 2 or prompt.shape[1] == 0:
        raise ValueError(
            f"the prompt must be token ids (B, N) with at least one token (N >= 1), got shape "
            f"{tuple(prompt.shape)}"
        )
    check_length(prompt.shape[1] + max_new_tokens - 1, max_positions)  # the last token is never fed back
    tokens, new = prompt, prompt  # (B, N), the tokens the next step feeds
    stopped = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)  # (B,)
    for _ in range(max_new_tokens):
        logits = step(new if cache is not None else tokens, cache)[:, -1]  # (B, V): the last position's
        chosen = next_tokens(logits, temperature=temperature, top_k=top_k, generator=generator)  # (B,)
        if stop_token is not None:
            chosen = chosen.masked_fill(stopped, stop_token)  # (B,)
            stopped |= chosen == stop_token
        new = chosen[:, None]  # (B, 1)
        tokens = torch.cat([tokens, new], dim=1)  # (B, N + 1)
        if stop_token is not None and bool(stopped.all()):
            break
    return tokens[:, prompt.shape[1] :]  # (B, n)
