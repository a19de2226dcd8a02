"""headwise.nn.models: the encoder-decoder held to torch.nn.Transformer with the same weights (outputs and
gradients, post-norm and pre-norm, padding), decoding with the KV cache held to the full pass for every
kind of position, generation (greedy, temperature, top-k, stop tokens), the attentions a model returns, the
config and the errors.

Shape legend: B batch, Ns / Nt source and target lengths, D model width, V vocabulary.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from headwise.nn.config import POSITIONS, TransformerConfig
from headwise.nn.conversion import _torch_name_to_ours
from headwise.nn.generation import next_tokens
from headwise.nn.models import EncoderDecoder, LanguageModel, Transformer

F64 = torch.float64
EXACT = {"atol": 1e-12, "rtol": 0.0}
V = 13


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def ids(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, shape, generator=torch.Generator().manual_seed(seed))


def config(**changes) -> TransformerConfig:
    fields = {"vocab_size": V, "d_model": 16, "num_heads": 4, "d_ff": 24, "dropout": 0.0, "max_positions": 40}
    return TransformerConfig(**{**fields, **changes})


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_decoder_matches_torch_transformer(norm_first, activation):
    torch.manual_seed(0)
    reference = nn.Transformer(
        d_model=16,
        nhead=4,
        num_encoder_layers=2,
        num_decoder_layers=3,
        dim_feedforward=24,
        dropout=0.0,
        activation=activation,
        norm_first=norm_first,
        batch_first=True,
        dtype=F64,
    )
    with torch.no_grad():  # random biases and norm weights, so that a swapped one shows
        for parameter in reference.parameters():
            parameter.add_(randn(*parameter.shape, seed=parameter.numel()) * 0.1)
    ours = EncoderDecoder.from_torch(reference)
    source, target = randn(3, 7, 16, seed=1), randn(3, 5, 16, seed=2)  # (B, Ns, D), (B, Nt, D)
    source_real = torch.ones(3, 7, dtype=torch.bool)  # (B, Ns): True = a real token
    source_real[1, 4:] = False
    target_real = torch.ones(3, 5, dtype=torch.bool)  # (B, Nt)
    target_real[2, 3:] = False

    inputs_ref = [t.clone().requires_grad_() for t in (source, target)]
    expected = reference(
        *inputs_ref,
        src_key_padding_mask=~source_real,  # torch: True = padding
        tgt_key_padding_mask=~target_real,
        memory_key_padding_mask=~source_real,
        tgt_mask=torch.ones(5, 5, dtype=torch.bool).triu(diagonal=1),  # torch: True = may not attend
        tgt_is_causal=True,
    )  # (B, Nt, D)
    inputs = [t.clone().requires_grad_() for t in (source, target)]
    got = ours(*inputs, source_padding_mask=source_real, target_padding_mask=target_real)  # (B, Nt, D)
    torch.testing.assert_close(got, expected, **EXACT)

    grad = randn(*expected.shape, seed=3)
    expected.backward(grad)
    got.backward(grad)
    for mine, theirs in zip(inputs, inputs_ref, strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad, **EXACT)
    parameters = dict(ours.named_parameters())
    for name, parameter in reference.named_parameters():
        torch.testing.assert_close(parameters[_torch_name_to_ours(name)].grad, parameter.grad, **EXACT)


def test_from_torch_rejects_other_modules():
    with pytest.raises(TypeError, match=r"must be a torch\.nn\.Transformer, got Linear"):
        EncoderDecoder.from_torch(nn.Linear(2, 2))


def _model(kind: str, positions: str, **changes) -> nn.Module:
    torch.manual_seed(1)
    cls = LanguageModel if kind == "lm" else Transformer
    # Untied: with random weights, a tied head mostly predicts the token it was fed.
    fields = {"positions": positions, "num_kv_heads": 2, "norm_first": True, "tie_embeddings": False}
    model = cls(config(**fields, **changes)).to(F64).eval()
    with torch.no_grad():  # larger weights than the init, so that a wrong position changes the argmax
        for parameter in model.parameters():
            parameter.mul_(3.0)
    return model


@pytest.mark.parametrize("positions", POSITIONS)
def test_language_model_decoding_with_the_cache_equals_the_full_pass(positions):
    model = _model("lm", positions)
    sequence = ids(2, 12, seed=4)  # (B, N)
    full = model(sequence).logits  # (B, N, V)
    cache = model.decoder.new_cache()
    with torch.no_grad():  # the cache is for inference
        steps = [model(sequence[:, :5], cache=cache).logits]
        steps += [model(sequence[:, i : i + 1], cache=cache).logits for i in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, **EXACT)


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("kind", ["lm", "seq2seq"])
@pytest.mark.parametrize("sampling", [{}, {"temperature": 0.9, "top_k": 4}])
def test_cached_generation_equals_uncached(positions, kind, sampling):
    model = _model(kind, positions)
    prompt = ids(3, 5, seed=5)  # (B, N)
    options = {"max_new_tokens": 9, **sampling}
    if kind == "seq2seq":
        options["start_token"] = 1

    def run(use_cache: bool) -> torch.Tensor:
        generator = torch.Generator().manual_seed(6)
        return model.generate(prompt, use_cache=use_cache, generator=generator, **options)  # (B, 9)

    cached, uncached = run(True), run(False)
    assert torch.equal(cached, uncached)
    assert cached.shape == (3, 9)
    assert len(set(cached.flatten().tolist())) > 1  # not a degenerate model that repeats one token


def test_greedy_generation_takes_the_argmax_of_the_full_pass():
    model = _model("lm", "rotary")
    prompt = ids(2, 4, seed=7)
    new = model.generate(prompt, max_new_tokens=6)  # (B, 6)
    sequence = torch.cat([prompt, new], dim=1)  # (B, 10)
    predicted = model(sequence).logits.argmax(dim=-1)  # (B, 10): the next token after each position
    assert torch.equal(predicted[:, 3:-1], new)


def test_generation_stops_each_row_at_the_stop_token():
    model = _model("lm", "sinusoidal")
    prompt = ids(2, 3, seed=8)
    free = model.generate(prompt, max_new_tokens=8)  # (B, 8)
    stop = free[0, 2].item()  # row 0 produces it at step 3 (or earlier)
    stopped = model.generate(prompt, max_new_tokens=8, stop_token=stop)  # (B, n)
    for row in range(2):
        hits = (free[row] == stop).nonzero()
        end = hits[0].item() + 1 if len(hits) else 8
        assert torch.equal(stopped[row, :end], free[row, :end])
        assert (stopped[row, end:] == stop).all()


def test_next_tokens_sampling_follows_the_softmax_within_top_k():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).expand(20000, 4)  # (B, V)
    generator = torch.Generator().manual_seed(9)
    drawn = next_tokens(logits, temperature=2.0, top_k=3, generator=generator)  # (B,)
    frequency = torch.bincount(drawn, minlength=4).double() / drawn.numel()  # (V,)
    expected = torch.tensor([1.0, 0.5, 0.0, -torch.inf]).double().softmax(dim=0)  # top 3, temperature 2
    torch.testing.assert_close(frequency, expected, atol=0.015, rtol=0)
    assert torch.equal(next_tokens(logits[:2]), torch.tensor([0, 0]))
    assert torch.equal(
        next_tokens(logits[:2], temperature=5.0, top_k=1, generator=generator), torch.tensor([0, 0])
    )
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        next_tokens(logits, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k must be a positive integer, got 0"):
        next_tokens(logits, temperature=1.0, top_k=0)


def test_models_return_the_attention_weights_of_every_layer():
    model = _model("seq2seq", "sinusoidal")
    source, target = ids(2, 6, seed=10), ids(2, 4, seed=11)
    real = torch.ones(2, 6, dtype=torch.bool)
    real[0, 4:] = False  # the last two source tokens of row 0 are padding
    out = model(source, target, source_padding_mask=real, output_attentions=True)
    assert len(out.encoder.attentions) == 2 and len(out.decoder.cross_attentions) == 2
    for weights in (*out.encoder.attentions, *out.decoder.attentions, *out.decoder.cross_attentions):
        torch.testing.assert_close(weights.sum(dim=-1), torch.ones(weights.shape[:-1], dtype=F64), **EXACT)
    for weights in out.decoder.attentions:  # causal: nothing above the diagonal
        assert (weights.triu(diagonal=1) == 0).all()
    for weights in (*out.encoder.attentions, *out.decoder.cross_attentions):  # padding gets nothing
        assert (weights[0, ..., 4:] == 0).all() and (weights[1, ..., 4:] > 0).all()
    plain = model(source, target, source_padding_mask=real)
    torch.testing.assert_close(plain.logits, out.logits, **EXACT)
    assert plain.encoder.attentions is None and plain.decoder.cross_attentions is None


def test_hidden_states_hold_the_input_and_every_layer():
    model = _model("lm", "learned")
    out = model(ids(2, 5, seed=12))
    states = out.decoder.hidden_states
    assert len(states) == 3
    torch.testing.assert_close(states[0], model.embeddings(ids(2, 5, seed=12)), **EXACT)
    torch.testing.assert_close(out.decoder.last_hidden_state, model.decoder.norm(states[-1]), **EXACT)


def test_tied_embeddings_share_one_matrix():
    model = LanguageModel(config())
    assert model.lm_head.weight is model.embeddings.tokens.weight
    untied = LanguageModel(config(tie_embeddings=False))
    assert untied.lm_head.weight is not untied.embeddings.tokens.weight


def test_config_round_trips_and_rejects_unknown_fields():
    original = config(positions="alibi", num_kv_heads=2)
    assert TransformerConfig.from_dict(original.to_dict()) == original
    with pytest.raises(ValueError, match=r"unknown TransformerConfig field\(s\) \['heads'\]"):
        TransformerConfig.from_dict({**original.to_dict(), "heads": 3})


def test_the_documented_import_paths_give_the_same_objects():
    import headwise.nn.positions
    import headwise.pretrained
    import headwise.transformer
    from headwise import positions
    from headwise.nn import config, layers, models, pretrained

    for documented, modules in (
        (headwise.transformer, (config, layers, models)),
        (headwise.nn.positions, (positions,)),
        (headwise.pretrained, (pretrained,)),
    ):
        for name in documented.__all__:
            assert any(getattr(module, name, None) is getattr(documented, name) for module in modules), name
    assert headwise.pretrained.__all__ == pretrained.__all__


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"d_model": 18}, ValueError, r"d_model \(18\) must be a multiple of num_heads \(4\)"),
        ({"num_kv_heads": 3}, ValueError, r"a multiple of num_kv_heads \(3\)"),
        ({"dropout": 1.0}, ValueError, "dropout must be a probability in"),
        ({"activation": "tanh"}, ValueError, "activation must be one of"),
        ({"activation": ["relu"]}, ValueError, r"activation must be one of .*, got \['relu'\]"),
        ({"positions": "relative"}, ValueError, "positions must be one of"),
        ({"d_model": 12, "num_heads": 4, "positions": "rotary"}, ValueError, "rotary positions need an even"),
        ({"layer_norm_eps": 0.0}, ValueError, "layer_norm_eps must be a finite number > 0"),
        ({"norm_first": 1}, TypeError, "norm_first must be a bool"),
        ({"num_encoder_layers": -1}, ValueError, "num_encoder_layers must be an integer >= 0"),
        ({"max_positions": 0}, ValueError, "max_positions must be a positive integer"),
    ],
)
def test_bad_configs(changes, error, message):
    with pytest.raises(error, match=message):
        config(**changes)


def test_bad_inputs_say_what_is_wrong():
    model = _model("seq2seq", "rotary")
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 13\), got values from 0 to 13"):
        model(torch.tensor([[0, 13]]), ids(1, 2))
    with pytest.raises(TypeError, match="ids must be an integer tensor"):
        model(torch.zeros(1, 2), ids(1, 2))
    with pytest.raises(ValueError, match="41 tokens but the model has positions for 40"):
        model(ids(1, 41), ids(1, 2))
    with pytest.raises(ValueError, match="45 tokens but the model has positions for 40"):
        model.generate(ids(1, 3), start_token=0, max_new_tokens=45)
    with pytest.raises(
        ValueError, match=r"memory .* must be given exactly when the layer has cross-attention"
    ):
        model.decoder(torch.zeros(1, 2, 16, dtype=F64))
    with pytest.raises(ValueError, match="vocab_size must be a positive integer, got 0"):
        LanguageModel(config(vocab_size=0))


def test_generation_runs_without_dropout_and_restores_the_mode():
    model = LanguageModel(config(dropout=0.5)).to(F64)  # training mode, as built
    prompt = ids(2, 4, seed=13)
    first = model.generate(prompt, max_new_tokens=8)
    assert torch.equal(model.generate(prompt, max_new_tokens=8), first) and model.training


def test_generation_refuses_an_empty_prompt_and_a_nan_temperature_before_running_the_model():
    model = _model("lm", "rotary")
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    with pytest.raises(ValueError, match=r"the prompt must be token ids \(B, N\) with at least one token"):
        model.generate(ids(2, 0), max_new_tokens=3)
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0, got nan"):
        model.generate(ids(2, 3), max_new_tokens=3, temperature=float("nan"))
    assert calls == []


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"bias": False, "final_norm": False, "positions": "learned", "tie_embeddings": False},
        {"num_kv_heads": 1, "positions": "rotary", "type_vocab_size": 2, "embedding_norm": True},
        {"positions": "alibi", "num_encoder_layers": 0, "num_decoder_layers": 3},
    ],
)
@pytest.mark.parametrize("cls", [Transformer, LanguageModel])
def test_parameter_count_is_the_models_own(cls, changes):
    model_config = config(**changes)
    model = cls(model_config)
    assert model_config.parameter_count(encoder=cls is Transformer) == sum(
        p.numel() for p in model.parameters()
    )
    assert model_config.buffer_count() == sum(b.numel() for b in model.buffers())


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda m, s, t, bad: m(s, t, source_padding_mask=bad), "source_padding_mask"),
        (lambda m, s, t, bad: m(s, t, target_padding_mask=bad), "target_padding_mask"),
        (lambda m, s, t, bad: m.encode(s, padding_mask=bad), "padding_mask"),
        (lambda m, s, t, bad: m.decode(t, m.encode(s).last_hidden_state, padding_mask=bad), "padding_mask"),
        (lambda m, s, t, bad: m.decode(t, m.encode(s).last_hidden_state, memory_padding_mask=bad), "memory"),
        (
            lambda m, s, t, bad: m.generate(s, start_token=1, max_new_tokens=2, source_padding_mask=bad),
            "source",
        ),
    ],
)
def test_a_wrong_padding_mask_is_named_as_the_caller_passed_it(call, name):
    """Issue 12: a wrong source_padding_mask was reported as the attention's key_padding_mask."""
    model = Transformer(config(vocab_size=20))
    source, target = ids(2, 7), ids(2, 5, seed=1)
    for bad, error in ((torch.ones(2, 3, dtype=torch.bool), ValueError), (torch.ones(2, 7), TypeError)):
        with pytest.raises(error, match=f"^{name}"):
            call(model, source, target, bad)
