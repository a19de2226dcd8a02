"""The models: stacks of layers, and the two language models built from them.

    Encoder: EncoderLayer × L (+ a final LayerNorm), (B, N, D) -> (B, N, D)
    Decoder: DecoderLayer × L (+ a final LayerNorm), (B, N, D) -> (B, N, D), with or without
        cross-attention, with a KV cache
    EncoderDecoder: the two stacks without embeddings, as torch.nn.Transformer (batch first)
    Transformer: token ids -> Embeddings -> Encoder and Decoder -> a linear head to one score per
        vocabulary entry (B, Nt, V), as "Attention Is All You Need"
    LanguageModel: token ids -> Embeddings -> Decoder without cross-attention -> (B, N, V), as GPT

EncoderDecoder.from_torch takes a torch.nn.Transformer's weights (the name map is in nn.conversion).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..cache import KVCache
from ..masks import check_padding_mask
from .config import TransformerConfig
from .conversion import config_from_torch, state_dict_from_torch
from .generation import evaluating, generate
from .layers import DecoderLayer, Embeddings, EncoderLayer, LayerOutput, check_ids, layer_norm


@dataclass
class StackOutput:
    """What a stack of layers computed.

    last_hidden_state: (B, N, D), after the final norm if the stack has one.
    hidden_states: the stack's input, then each layer's output (before the final norm): L + 1 × (B, N, D).
    attentions: one (B, Hq, N, Nk) tensor per layer when asked, else None.
    cross_attentions: in a decoder with an encoder, one (B, Hq, N, Ns) per layer when asked, else None.
    """

    last_hidden_state: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...]
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None


def _check_padding(mask: object, name: str, tokens: torch.Tensor) -> None:
    """Check a padding mask against the tokens (B, N) or embeddings (B, N, D) it covers, by its caller's
    name (a wrong source_padding_mask is not reported as the attention's key_padding_mask)."""
    if mask is not None:
        check_padding_mask(mask, name, (tokens.shape[0], tokens.shape[1]), tokens.device)


class Encoder(nn.Module):
    """A stack of EncoderLayers and, with config.final_norm, a LayerNorm: (B, N, D) -> (B, N, D)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_encoder_layers))
        self.norm = layer_norm(config) if config.final_norm else None

    def forward(
        self, x: torch.Tensor, *, padding_mask: torch.Tensor | None = None, need_weights: bool = False
    ) -> StackOutput:
        """x (B, N, D), padding_mask (B, N) bool, True = a real token -> StackOutput."""
        _check_padding(padding_mask, "padding_mask", x)
        outputs: list[LayerOutput] = []
        for layer in self.layers:
            outputs.append(
                layer(
                    outputs[-1].hidden if outputs else x, padding_mask=padding_mask, need_weights=need_weights
                )
            )
        return _stack_output(x, outputs, self.norm, need_weights, cross=False)


class Decoder(nn.Module):
    """A stack of DecoderLayers and, with config.final_norm, a LayerNorm: (B, N, D) -> (B, N, D)."""

    def __init__(self, config: TransformerConfig, *, cross_attention: bool = True) -> None:
        super().__init__()
        self.cross_attention = cross_attention
        self.layers = nn.ModuleList(
            DecoderLayer(config, cross_attention=cross_attention) for _ in range(config.num_decoder_layers)
        )
        self.norm = layer_norm(config) if config.final_norm else None

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        *,
        padding_mask: torch.Tensor | None = None,
        memory_padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        cache: KVCache | None = None,
    ) -> StackOutput:
        """x (B, N, D), memory (B, Ns, D) or None -> StackOutput; a cache has one layer per DecoderLayer."""
        if cache is not None and cache.num_layers != len(self.layers):
            raise ValueError(f"cache has {cache.num_layers} layers but the decoder has {len(self.layers)}")
        if memory is not None:
            _check_padding(memory_padding_mask, "memory_padding_mask", memory)
        if padding_mask is not None:  # over the keys: the cached tokens, then x's
            keys = x.shape[1] + (0 if cache is None else cache.length)
            check_padding_mask(padding_mask, "padding_mask", (x.shape[0], keys), x.device)
        outputs: list[LayerOutput] = []
        for index, layer in enumerate(self.layers):
            outputs.append(
                layer(
                    outputs[-1].hidden if outputs else x,
                    memory,
                    padding_mask=padding_mask,
                    memory_padding_mask=memory_padding_mask,
                    need_weights=need_weights,
                    cache=cache,
                    cache_layer=index if cache is not None else 0,
                )
            )
        return _stack_output(x, outputs, self.norm, need_weights, cross=self.cross_attention)

    def new_cache(self, max_length: int | None = None) -> KVCache:
        """An empty KVCache with one layer per DecoderLayer."""
        return KVCache(len(self.layers), max_length=max_length)


def _stack_output(
    x: torch.Tensor, outputs: list[LayerOutput], norm: nn.Module | None, need_weights: bool, *, cross: bool
) -> StackOutput:
    """The stack's output from its input x (B, N, D) and its layers' outputs, normed by `norm` if any."""
    hidden_states = (x, *(output.hidden for output in outputs))  # L + 1 × (B, N, D)
    last = hidden_states[-1] if norm is None else norm(hidden_states[-1])  # (B, N, D)
    return StackOutput(
        last,
        hidden_states,
        tuple(_asked(output.self_attention) for output in outputs) if need_weights else None,
        tuple(_asked(output.cross_attention) for output in outputs) if need_weights and cross else None,
    )


def _asked(weights: torch.Tensor | None) -> torch.Tensor:
    """A layer's attention weights, which it returns when need_weights is set."""
    if weights is None:
        raise RuntimeError("a layer returned no attention weights, though need_weights was set")
    return weights


class EncoderDecoder(nn.Module):
    """The encoder and decoder stacks without embeddings, as torch.nn.Transformer (batch first):
    source (B, Ns, D), target (B, Nt, D) -> (B, Nt, D)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def forward(
        self,
        source: torch.Tensor,
        target: torch.Tensor,
        *,
        source_padding_mask: torch.Tensor | None = None,
        target_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """source (B, Ns, D), target (B, Nt, D), padding masks (B, Ns) / (B, Nt) bool with True = a real
        token (torch.nn.Transformer's are the opposite: pass ~its_mask) -> (B, Nt, D). The target
        attends causally to itself."""
        _check_padding(source_padding_mask, "source_padding_mask", source)
        _check_padding(target_padding_mask, "target_padding_mask", target)
        memory = self.encoder(source, padding_mask=source_padding_mask).last_hidden_state  # (B, Ns, D)
        return self.decoder(
            target, memory, padding_mask=target_padding_mask, memory_padding_mask=source_padding_mask
        ).last_hidden_state  # (B, Nt, D)

    @classmethod
    def from_torch(cls, model: nn.Transformer) -> EncoderDecoder:
        """The same network with a torch.nn.Transformer's weights (headwise is batch first: transpose
        the inputs of a model made with batch_first=False)."""
        config = config_from_torch(model)
        weight = model.encoder.layers[0].linear1.weight
        converted = cls(config).to(device=weight.device, dtype=weight.dtype)
        converted.load_state_dict(state_dict_from_torch(model.state_dict()))
        return converted.train(model.training)


class _Head(nn.Module):
    """The embeddings and the output head shared by both models."""

    def _build_head(self, config: TransformerConfig) -> None:
        self.config = config
        self.embeddings = Embeddings(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embeddings.tokens.weight  # (V, D), one matrix for both


@dataclass
class Seq2SeqOutput:
    """logits (B, Nt, V) and the encoder's and decoder's StackOutputs (attentions when asked)."""

    logits: torch.Tensor
    encoder: StackOutput
    decoder: StackOutput


class Transformer(_Head):
    """The encoder-decoder transformer of "Attention Is All You Need": source ids (B, Ns) and target ids
    (B, Nt) -> scores for the next target token (B, Nt, V). One vocabulary and one embedding table serve
    both sides."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self._build_head(config)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def encode(
        self,
        source_ids: torch.Tensor,
        *,
        padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> StackOutput:
        """source_ids (B, Ns), padding_mask (B, Ns) with True = a real token -> the encoder's StackOutput."""
        _check_padding(padding_mask, "padding_mask", source_ids)
        return self.encoder(self.embeddings(source_ids), padding_mask=padding_mask, need_weights=need_weights)

    def decode(
        self,
        target_ids: torch.Tensor,
        memory: torch.Tensor,
        *,
        memory_padding_mask: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, StackOutput]:
        """target_ids (B, Nt) (the new tokens, with a cache), memory (B, Ns, D) -> logits (B, Nt, V) and
        the decoder's StackOutput."""
        start = 0 if cache is None else cache.length
        decoded = self.decoder(
            self.embeddings(target_ids, start=start),
            memory,
            padding_mask=padding_mask,
            memory_padding_mask=memory_padding_mask,
            need_weights=need_weights,
            cache=cache,
        )
        return self.lm_head(decoded.last_hidden_state), decoded  # (B, Nt, V)

    def forward(
        self,
        source_ids: torch.Tensor,
        target_ids: torch.Tensor,
        *,
        source_padding_mask: torch.Tensor | None = None,
        target_padding_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> Seq2SeqOutput:
        """source_ids (B, Ns), target_ids (B, Nt) (teacher forcing: the target shifted right, after a start
        token) -> Seq2SeqOutput with logits (B, Nt, V)."""
        _check_padding(source_padding_mask, "source_padding_mask", source_ids)
        _check_padding(target_padding_mask, "target_padding_mask", target_ids)
        encoded = self.encode(source_ids, padding_mask=source_padding_mask, need_weights=output_attentions)
        logits, decoded = self.decode(
            target_ids,
            encoded.last_hidden_state,
            memory_padding_mask=source_padding_mask,
            padding_mask=target_padding_mask,
            need_weights=output_attentions,
        )
        return Seq2SeqOutput(logits, encoded, decoded)

    @torch.no_grad()
    def generate(
        self,
        source_ids: torch.Tensor,
        *,
        start_token: int,
        max_new_tokens: int,
        stop_token: int | None = None,
        source_padding_mask: torch.Tensor | None = None,
        temperature: float = 0.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Translate: source_ids (B, Ns) -> the new target tokens (B, n ≤ max_new_tokens), each sequence
        padded with stop_token after it stops. temperature 0 is greedy; top_k keeps the k likeliest. Runs in
        evaluation mode (no dropout) and puts the model's mode back."""
        _check_padding(source_padding_mask, "source_padding_mask", source_ids)
        with evaluating(self):  # no dropout while generating
            memory = self.encode(source_ids, padding_mask=source_padding_mask).last_hidden_state  # (B, Ns, D)
            start = torch.full(
                (source_ids.shape[0], 1), start_token, dtype=torch.long, device=source_ids.device
            )

            def step(tokens: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
                logits, _ = self.decode(tokens, memory, memory_padding_mask=source_padding_mask, cache=cache)
                return logits  # (B, n, V)

            return generate(
                step,
                start,
                max_new_tokens=max_new_tokens,
                max_positions=self.config.max_positions,
                cache=self.decoder.new_cache() if use_cache else None,
                stop_token=stop_token,
                temperature=temperature,
                top_k=top_k,
                generator=generator,
            )


@dataclass
class LanguageModelOutput:
    """logits (B, N, V) and the decoder's StackOutput (attentions when asked)."""

    logits: torch.Tensor
    decoder: StackOutput


class LanguageModel(_Head):
    """A decoder-only language model (as GPT): token ids (B, N) -> scores for the next token (B, N, V)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self._build_head(config)
        self.decoder = Decoder(config, cross_attention=False)

    def forward(
        self,
        ids: torch.Tensor,
        *,
        padding_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        output_attentions: bool = False,
    ) -> LanguageModelOutput:
        """ids (B, N) (the new tokens, with a cache) -> LanguageModelOutput with logits (B, N, V)."""
        start = 0 if cache is None else cache.length
        decoded = self.decoder(
            self.embeddings(ids, start=start),
            padding_mask=padding_mask,
            need_weights=output_attentions,
            cache=cache,
        )
        return LanguageModelOutput(self.lm_head(decoded.last_hidden_state), decoded)  # logits (B, N, V)

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: torch.Tensor,
        *,
        max_new_tokens: int,
        stop_token: int | None = None,
        temperature: float = 0.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """prompt_ids (B, N) -> the new tokens (B, n ≤ max_new_tokens); see Transformer.generate."""
        with evaluating(self):  # no dropout while generating
            check_ids(prompt_ids, "prompt_ids", self.config.vocab_size)
            return generate(
                lambda tokens, cache: self(tokens, cache=cache).logits,
                prompt_ids,
                max_new_tokens=max_new_tokens,
                max_positions=self.config.max_positions,
                cache=self.decoder.new_cache() if use_cache else None,
                stop_token=stop_token,
                temperature=temperature,
                top_k=top_k,
                generator=generator,
            )
