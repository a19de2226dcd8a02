"""attn_implementation="headwise" across transformers' model families, against their own eager and sdpa.

Each family is a tiny random-weight model built from a seeded config (2 layers, width 32, no download) and
switched between implementations with `set_attn_implementation`, so the weights are the same. Together they
exercise padding on either side, grouped-query heads, sliding windows, softcapping, relative position
biases, cross-attention, and the KV cache (dynamic and static) in generate().

The oracle ("golden") is the model in float64 under one of transformers' own implementations:
- eager where its softmax runs in the input dtype (BERT, GPT-2, T5, BART, Whisper): exact, weights included;
- sdpa where eager casts the softmax to float32 even for float64 inputs (Llama, Mistral, Qwen2:
  `softmax(..., dtype=torch.float32)`): exact outputs and gradients; the golden weights are eager's,
  float32-accurate;
- eager for Gemma 2, which has no sdpa (softcapping): float32-accurate throughout.
Where the golden is exact, headwise in float64 must equal it to 1e-12 (outputs, weights) and 1e-10
(gradients); headwise in float32 is always held to the ratio rule with eager in float32 as the baseline.
Generation must give the golden's tokens, and eager's and sdpa's.

A decoder's golden runs each sequence alone, unpadded, at the positions it has in the batch: in a padded
batch a causal or sliding-window query may see no key, and eager's float64 finfo.min mask turns into -inf in
its float32 softmax, gives that row NaN, and 0 · NaN spreads it to every token in the next layer. Padded
positions are never compared: headwise gives a query that sees no key zeros where eager's finite mask gives a
uniform average, and real tokens never read those rows.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import pytest

transformers = pytest.importorskip("transformers")

import torch  # noqa: E402
from oracle import assert_by_ratio, linear_gradient_scales  # noqa: E402

from headwise import hf  # noqa: E402

NAME = hf.register()
VOCAB = 97
BATCH_LENGTHS = [10, 7, 3]  # (B,) real tokens per sequence, padded to N = 10
DECODER_LENGTH = 6  # an encoder-decoder's decoder tokens, unpadded
FRAMES = 16  # Whisper's input frames: its encoder sees FRAMES / 2 positions after the stride-2 convolution
GENERATED = 5  # new tokens per generate() call
SMALL = dict(vocab_size=VOCAB, pad_token_id=0, bos_token_id=1, eos_token_id=None)  # no early stop in generate
DECODER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, max_position_embeddings=64)
DECODER.update(num_attention_heads=4, num_key_value_heads=2, initializer_range=0.1)  # GQA: G = 2
T5 = dict(d_model=32, d_kv=8, d_ff=64, num_heads=4, num_layers=2, relative_attention_num_buckets=8)
T5.update(decoder_start_token_id=0)


@dataclass(frozen=True)
class Family:
    """One model family: how to build it, what it is, and which of transformers' implementations is exact.

    build() -> the model in eval mode, float32, eager. kind: "encoder" (bidirectional, no generate),
    "decoder" (causal language model), "seq2seq" (encoder-decoder with cross-attention) or "speech"
    (an encoder-decoder on log-mel features: Whisper).
    exact_eager: eager's softmax runs in the input dtype, so float64 eager is float64 arithmetic.
    sdpa: the model accepts attn_implementation="sdpa".
    """

    name: str
    build: Callable[[], torch.nn.Module]
    kind: str
    exact_eager: bool
    sdpa: bool = True

    @property
    def golden(self) -> str:
        """The implementation whose float64 run is the oracle."""
        return "eager" if self.exact_eager or not self.sdpa else "sdpa"

    @property
    def exact(self) -> bool:
        """Whether the golden's outputs are float64 arithmetic throughout (its weights: exact_eager)."""
        return self.exact_eager or self.sdpa


def _seeded(model_class, config_class, **settings) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        config = config_class(attn_implementation="eager", **SMALL, **settings)
        return model_class(config).eval()

    return build


FAMILIES = [
    Family(
        "bert",
        _seeded(
            transformers.BertModel,
            transformers.BertConfig,
            hidden_size=32,
            num_attention_heads=4,
            num_hidden_layers=2,
            intermediate_size=64,
            max_position_embeddings=32,
        ),
        kind="encoder",
        exact_eager=True,
    ),
    Family(
        "gpt2",
        _seeded(
            transformers.GPT2LMHeadModel,
            transformers.GPT2Config,
            n_embd=32,
            n_head=4,
            n_layer=2,
            n_positions=32,
            initializer_range=0.1,
        ),
        kind="decoder",
        exact_eager=True,
    ),
    Family(
        "llama",
        _seeded(transformers.LlamaForCausalLM, transformers.LlamaConfig, **DECODER),
        kind="decoder",
        exact_eager=False,
    ),
    Family(
        "mistral",  # a window of 4 keys, shorter than the prompt
        _seeded(transformers.MistralForCausalLM, transformers.MistralConfig, sliding_window=4, **DECODER),
        kind="decoder",
        exact_eager=False,
    ),
    Family(
        "gemma2",  # sliding and full layers alternate; capping at 0.5 bends scores of order 1
        _seeded(
            transformers.Gemma2ForCausalLM,
            transformers.Gemma2Config,
            head_dim=8,
            sliding_window=4,
            attn_logit_softcapping=0.5,
            query_pre_attn_scalar=8,
            **DECODER,
        ),
        kind="decoder",
        exact_eager=False,
        sdpa=False,
    ),
    Family(
        "qwen2",  # sliding window in the layers above max_window_layers
        _seeded(
            transformers.Qwen2ForCausalLM,
            transformers.Qwen2Config,
            use_sliding_window=True,
            sliding_window=4,
            max_window_layers=1,
            **DECODER,
        ),
        kind="decoder",
        exact_eager=False,
    ),
    Family(
        "t5",  # relative position bias added to the scores, which T5 does not scale
        _seeded(
            transformers.T5ForConditionalGeneration,
            transformers.T5Config,
            **T5,
            initializer_factor=2.0,  # logits of order 1, so greedy choices are not near-ties
        ),
        kind="seq2seq",
        exact_eager=True,
    ),
    Family(
        "bart",
        _seeded(
            transformers.BartForConditionalGeneration,
            transformers.BartConfig,
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=32,
            decoder_start_token_id=1,
            forced_eos_token_id=None,
            init_std=0.2,  # logits of order 1, so greedy choices are not near-ties
        ),
        kind="seq2seq",
        exact_eager=True,
    ),
    Family(
        "whisper",  # 8 mel bins
        _seeded(
            transformers.WhisperForConditionalGeneration,
            transformers.WhisperConfig,
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            num_mel_bins=8,
            max_source_positions=FRAMES // 2,
            max_target_positions=32,
            decoder_start_token_id=1,
            init_std=0.5,  # enough for the features to steer greedy choices
        ),
        kind="speech",
        exact_eager=True,
    ),
]
BY_NAME = {family.name: family for family in FAMILIES}


def _padded(lengths: list[int], total: int, side: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids (B, N) and attention_mask (B, N) with 1 on the real tokens, padded on `side`."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (len(lengths), total), generator=generator)  # (B, N)
    positions = torch.arange(total)[None, :]  # (1, N)
    lengths = torch.tensor(lengths)[:, None]  # (B, 1)
    real = positions >= total - lengths if side == "left" else positions < lengths  # (B, N)
    return ids.masked_fill(~real, 0), real.long()


def _inputs(family: Family, side: str) -> dict[str, torch.Tensor]:
    """A batch of the family's inputs padded on `side` ("left", "right" or "none": all of length N); a
    decoder's positions count from 0 at its first real token.

    An encoder-decoder pads its encoder's tokens and not its decoder's; Whisper, whose encoder takes
    fixed-length features, pads its decoder's tokens.
    """
    lengths = [max(BATCH_LENGTHS)] * len(BATCH_LENGTHS) if side == "none" else BATCH_LENGTHS
    ids, mask = _padded(lengths, total=max(BATCH_LENGTHS), side=side, seed=1)  # (B, N)
    if family.kind == "speech":
        features = torch.randn(len(BATCH_LENGTHS), 8, FRAMES, generator=torch.Generator().manual_seed(2))
        return dict(input_features=features, decoder_input_ids=ids, decoder_attention_mask=mask)  # (B, 8, F)
    inputs = dict(input_ids=ids, attention_mask=mask)
    if family.kind == "decoder":
        inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, N), as generate() sets them
    if family.kind == "seq2seq":
        unpadded = [DECODER_LENGTH] * len(BATCH_LENGTHS)
        inputs["decoder_input_ids"] = _padded(unpadded, DECODER_LENGTH, side, seed=2)[0]  # (B, Nd)
    return inputs


def _float64(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inputs for a float64 model: features in float64, tokens and masks as they are."""
    return {key: value.double() if value.is_floating_point() else value for key, value in inputs.items()}


def _alone(inputs: dict[str, torch.Tensor], b: int) -> dict[str, torch.Tensor]:
    """Sequence b of a decoder's batch on its own: its real tokens (1, L), unpadded (positions 0..L-1)."""
    ids = inputs["input_ids"][b, inputs["attention_mask"][b].bool()][None]  # (1, L)
    alone = dict(input_ids=ids, attention_mask=torch.ones_like(ids))
    if "position_ids" in inputs:
        alone["position_ids"] = torch.arange(ids.shape[1])[None]  # (1, L)
    return alone


def _real(inputs: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """For each kind of attention weights, which queries (B, Nq) and which keys (B, Nk) are real tokens."""
    if "input_features" in inputs:
        features = inputs["input_features"]  # (B, mel bins, F): all real, F / 2 positions after the stride
        source = torch.ones(len(features), features.shape[-1] // 2, dtype=torch.bool)  # (B, F / 2)
    else:
        source = inputs["attention_mask"].bool()  # (B, N)
    if "decoder_input_ids" not in inputs:
        return {"attentions": (source, source)}
    target = torch.ones_like(inputs["decoder_input_ids"], dtype=torch.bool)  # (B, Nd)
    if "decoder_attention_mask" in inputs:
        target = inputs["decoder_attention_mask"].bool()
    return {
        "encoder_attentions": (source, source),
        "decoder_attentions": (target, target),
        "cross_attentions": (target, source),
    }


def _run(model, implementation: str, **inputs):
    model.set_attn_implementation(implementation)
    assert model.config._attn_implementation == implementation
    return model(**inputs)


def _output(model, implementation: str, inputs: dict[str, torch.Tensor], **options) -> tuple:
    """(the model's output, its main tensor at the real tokens (R, V|D): logits, else last_hidden_state)."""
    output = _run(model, implementation, **inputs, **options)
    main = output.logits if "logits" in output else output.last_hidden_state  # (B, N, V|D)
    queries = _real(inputs)["decoder_attentions" if "decoder_input_ids" in inputs else "attentions"][0]
    return output, main[queries]  # (R, V|D)


def _on_keys(weights: torch.Tensor, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """weights (B, H, Nq, Nk) of the chosen queries (B, Nq) on the chosen keys (B, Nk), flattened over
    (b, H, chosen queries, chosen keys)."""
    return torch.cat([weights[b][:, queries[b]][:, :, keys[b]].flatten() for b in range(len(weights))])


def _record(model, implementation: str, inputs: dict[str, torch.Tensor]) -> tuple:
    """Run with output_attentions=True -> (main output at the real tokens (R, V|D), weights, on padding).

    weights: for each kind of attention the model returns, per layer, the real queries' weights on the real
    keys (_on_keys); on padding: the total weight the real queries give padding keys.
    """
    output, main = _output(model, implementation, inputs, output_attentions=True)
    names = ("attentions", "encoder_attentions", "decoder_attentions", "cross_attentions")
    weights, on_padding = {}, 0.0
    for kind, (queries, keys) in _real(inputs).items():  # (B, Nq), (B, Nk)
        layers = output.get(kind) or ()  # (B, H, Nq, Nk) per layer; empty where none came back
        if layers:
            weights[kind] = [_on_keys(w, queries, keys) for w in layers]
            on_padding += sum(_on_keys(w, queries, ~keys).abs().sum().item() for w in layers)
    assert not [name for name in names if output.get(name) and name not in weights]  # none left unchecked
    return main, weights, on_padding


def _golden_record(family: Family, model, implementation: str, inputs: dict[str, torch.Tensor]) -> tuple:
    """_record's (main, weights) of the float64 golden: a decoder's sequences one at a time, unpadded."""
    if family.kind != "decoder":
        main, weights, _ = _record(model, implementation, inputs)
        return main, weights
    alone = [_record(model, implementation, _alone(inputs, b)) for b in range(len(inputs["input_ids"]))]
    main = torch.cat([record[0] for record in alone])  # (R, V)
    weights = {
        kind: [torch.cat([record[1][kind][layer] for record in alone]) for layer in range(len(layers))]
        for kind, layers in alone[0][1].items()
    }
    return main, weights


# Forward: outputs and attention weights ---------------------------------------------------------------------


@pytest.mark.parametrize("side", ["left", "right", "none"])
@pytest.mark.parametrize("name", [family.name for family in FAMILIES])
def test_outputs_and_attentions_match_eager(name, side):
    """With and without the weights (which headwise computes on different backends). Unpadded, transformers
    may build no mask at all: the layer's is_causal then decides."""
    family = BY_NAME[name]
    model = family.build()
    model64 = copy.deepcopy(model).double()
    inputs = _inputs(family, side)
    with torch.no_grad():
        golden, _ = _golden_record(family, model64, family.golden, _float64(inputs))  # (R, V|D)
        _, golden_weights = _golden_record(family, model64, "eager", _float64(inputs))
        ours64, ours64_weights, on_padding64 = _record(model64, NAME, _float64(inputs))
        eager, eager_weights, _ = _record(model, "eager", inputs)
        ours, ours_weights, on_padding = _record(model, NAME, inputs)
        plain64 = _output(model64, NAME, _float64(inputs))[1]  # (R, V|D), no weights asked for
        plain = _output(model, NAME, inputs)[1]

    magnitude = golden.abs().max().item()
    for what, got64, got in (("with weights", ours64, ours), ("without weights", plain64, plain)):
        if family.exact:
            atol = 1e-12 * max(1.0, magnitude)
            torch.testing.assert_close(got64, golden, rtol=0, atol=atol, msg=f"float64 output {what}")
        assert_by_ratio(got, golden, eager, k=2, what=f"float32 output {what}", magnitude=magnitude)

    # Every kind of weights that eager returns (self, encoder, decoder, cross), and nothing else:
    assert ours_weights.keys() == eager_weights.keys() == golden_weights.keys() != set()
    for kind, layers in ours_weights.items():
        assert len(layers) == len(eager_weights[kind]) == len(golden_weights[kind]) == 2
        for layer, weights in enumerate(layers):
            what = f"{kind}[{layer}]"
            if family.exact_eager:
                torch.testing.assert_close(
                    ours64_weights[kind][layer], golden_weights[kind][layer], rtol=0, atol=1e-12, msg=what
                )
            assert_by_ratio(weights, golden_weights[kind][layer], eager_weights[kind][layer], k=2, what=what)
    assert on_padding == on_padding64 == 0  # no real query gives a padding key any weight


def test_gpt2_attention_returns_weights_only_while_transformers_records_them():
    """GPT-2 pops output_attentions at the model: the layer learns it from transformers' output recorder.

    Its hooks stay on the layers after the first request, so a later call without output_attentions must
    not compute the weights (they would force a slower backend).
    """
    model = BY_NAME["gpt2"].build()
    inputs = _inputs(BY_NAME["gpt2"], "right")
    returned = []  # what the first layer's attention returns as its weights, call by call
    model.transformer.h[0].attn.register_forward_hook(lambda layer, args, output: returned.append(output[1]))
    with torch.no_grad():
        asked = _run(model, NAME, **inputs, output_attentions=True)
        plain = _run(model, NAME, **inputs)
    assert len(returned) == 2 and returned[0] is asked.attentions[0] and returned[0].shape == (3, 4, 10, 10)
    assert returned[1] is None and plain.attentions is None
    torch.testing.assert_close(plain.logits, asked.logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize("side", ["left", "none"])
def test_llama_run_bidirectionally_matches_eager(side):
    """config.is_causal=False: the layers keep is_causal=True; transformers passes is_causal=False per call
    and builds a bidirectional mask (or none, unpadded)."""
    family = BY_NAME["llama"]
    model = family.build()
    model.config.is_causal = False
    model64 = copy.deepcopy(model).double()
    inputs = _inputs(family, side)
    with torch.no_grad():
        golden = _golden_record(family, model64, family.golden, inputs)[0]  # (R, V)
        eager = _output(model, "eager", inputs)[1]
        ours = _output(model, NAME, inputs)[1]
        causal = _output(family.build(), NAME, inputs)[1]
    assert_by_ratio(ours, golden, eager, k=2, what="logits", magnitude=golden.abs().max().item())
    assert (ours - causal).abs().max() > 0.1  # it did change what the model computes


# Backward: every parameter's gradient ----------------------------------------------------------------------


def _gradients(model, implementation: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """d(sum of the main output at the real tokens) / d(each parameter)."""
    model.zero_grad(set_to_none=True)
    _output(model, implementation, inputs)[1].sum().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _golden_gradients(family: Family, model, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """_gradients of the float64 golden: for a decoder, the sum over its sequences run alone."""
    if family.kind != "decoder":
        return _gradients(model, family.golden, inputs)
    alone = [_gradients(model, family.golden, _alone(inputs, b)) for b in range(len(inputs["input_ids"]))]
    return {name: sum(grads[name] for grads in alone) for name in alone[0]}


@pytest.mark.parametrize("name", [family.name for family in FAMILIES])
def test_gradients_match_eager(name):
    _assert_gradients_match_eager(BY_NAME[name])


def test_t5_gradients_with_large_unscaled_scores_match_eager():
    """T5 does not scale its scores, and at 4 times T5's init they reach ±700: SDPA's CPU flash backward,
    which recomputes the weights from a float32 lse, gave dq 300 times less accurate than eager's there
    (5.9e-4 vs 1.8e-6 at |dq| 0.16) on some CPUs; auto no longer takes it for float32 training."""
    model_class, config_class = transformers.T5ForConditionalGeneration, transformers.T5Config
    build = _seeded(model_class, config_class, **T5, initializer_factor=4.0)  # scores of ±700
    _assert_gradients_match_eager(Family("t5-large-scores", build, kind="seq2seq", exact_eager=True))


def _assert_gradients_match_eager(family: Family) -> None:
    model = family.build()
    model64 = copy.deepcopy(model).double()
    inputs = _inputs(family, "left")
    golden = _golden_gradients(family, model64, _float64(inputs))
    ours64 = _gradients(model64, NAME, _float64(inputs))
    eager = _gradients(model, "eager", inputs)
    ours = _gradients(model, NAME, inputs)
    summed = linear_gradient_scales(model64, lambda: _gradients(model64, NAME, _float64(inputs)))

    assert ours.keys() == ours64.keys() == eager.keys() == golden.keys() and len(golden) > 10
    for parameter, want in golden.items():
        # the size of the terms the gradient sums: a key bias's gradient is 0 in exact arithmetic
        magnitude = max(want.abs().max().item(), summed.get(parameter, 0.0))
        if family.exact:
            atol = 1e-10 * max(1.0, magnitude)
            torch.testing.assert_close(ours64[parameter], want, rtol=0, atol=atol, msg=parameter)
        assert_by_ratio(ours[parameter], want, eager[parameter], k=4, what=parameter, magnitude=magnitude)


# generate(): greedy decoding with the KV cache -------------------------------------------------------------


def _prompts(family: Family, padded: bool) -> dict[str, torch.Tensor]:
    """Prompts of 8, 5 and 2 tokens (B, 8) if padded, else of 8 each: a decoder's padded on the left, so that
    each continues at the right end; an encoder-decoder's on the right. Whisper's prompt is its features
    (B, 8, F), never padded."""
    if family.kind == "speech":
        return dict(input_features=torch.randn(3, 8, FRAMES, generator=torch.Generator().manual_seed(3)))
    side = "left" if family.kind == "decoder" else "right"
    ids, mask = _padded([8, 5, 2] if padded else [8, 8, 8], total=8, side=side, seed=3)  # (B, 8)
    return dict(input_ids=ids, attention_mask=mask)


def _generate(model, implementation: str, prompts: dict[str, torch.Tensor], cache: str):
    """Greedy decoding of GENERATED tokens -> (sequences (B, N_out), scores (GENERATED, B, V))."""
    model.set_attn_implementation(implementation)
    done = model.generate(
        **prompts,
        max_new_tokens=GENERATED,
        do_sample=False,
        pad_token_id=0,
        cache_implementation=cache,
        output_scores=True,
        return_dict_in_generate=True,
    )
    return done.sequences, torch.stack(done.scores)


@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("name", [family.name for family in FAMILIES if family.kind != "encoder"])
def test_greedy_generation_matches_eager_and_sdpa(name, cache, padded):
    """A static cache prefills with empty slots after the prompt (Nk > Nq): the mask must say so, padded
    or not (sdpa's mask would leave an unpadded prompt to is_causal, aligned top-left)."""
    family = BY_NAME[name]
    if family.kind == "speech" and not padded:
        pytest.skip("Whisper's prompt is its features, which are never padded: the padded case runs it")
    model = family.build()
    prompts = _prompts(family, padded)
    implementations = ["eager", "sdpa", NAME] if family.sdpa else ["eager", NAME]
    with torch.no_grad():
        runs = {
            implementation: _generate(model, implementation, prompts, cache)
            for implementation in implementations
        }
        model64 = copy.deepcopy(model).double()
        if family.kind == "decoder":  # each prompt alone, unpadded, as in _golden_record
            alone = [_generate(model64, family.golden, _alone(prompts, b), "dynamic") for b in range(3)]
            golden_tokens = torch.cat([tokens[:, -GENERATED:] for tokens, _ in alone])  # (B, GENERATED)
            golden_scores = torch.cat([scores for _, scores in alone], dim=1)  # (GENERATED, B, V)
        else:
            golden_tokens, golden_scores = _generate(model64, family.golden, _float64(prompts), "dynamic")
            golden_tokens = golden_tokens[:, -GENERATED:]  # (B, GENERATED)

    sequences, scores = runs[NAME]  # (B, N_out), (GENERATED, B, V)
    for implementation in implementations:
        assert torch.equal(sequences, runs[implementation][0]), implementation
    assert torch.equal(sequences[:, -GENERATED:], golden_tokens)
    assert golden_tokens.unique().numel() >= 3  # the choices depend on the prompts and on the step
    magnitude = golden_scores.abs().max().item()
    assert_by_ratio(scores, golden_scores, runs["eager"][1], k=2, what="scores", magnitude=magnitude)


# torch.compile ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_llama_compiles_in_one_graph_and_matches_eager():
    """Dynamo traces the whole model under headwise (masks, GQA, the attention op) without a graph break, and
    the compiled model's logits and gradients (aot_eager: torch's autograd through the traced graph) hold to
    the ratio rule as eager's do."""
    family = BY_NAME["llama"]
    model = family.build()
    model64 = copy.deepcopy(model).double()
    inputs = _inputs(family, "left")
    model.set_attn_implementation(NAME)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(**inputs)
    assert explained.graph_break_count == 0, [str(reason.reason) for reason in explained.break_reasons]
    assert explained.graph_count == 1

    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        golden, _ = _golden_record(family, model64, family.golden, inputs)  # (R, V)
        _, eager = _output(model, "eager", inputs)
        _, ours = _output(compiled, NAME, inputs)
    assert_by_ratio(ours, golden, eager, k=2, what="logits", magnitude=golden.abs().max().item())
    golden_grads = _golden_gradients(family, model64, inputs)
    eager_grads = _gradients(model, "eager", inputs)
    ours_grads = {
        name.removeprefix("_orig_mod."): grad for name, grad in _gradients(compiled, NAME, inputs).items()
    }
    summed = linear_gradient_scales(model64, lambda: _gradients(model64, NAME, _float64(inputs)))
    assert ours_grads.keys() == golden_grads.keys()
    for name, want in golden_grads.items():
        magnitude = max(want.abs().max().item(), summed.get(name, 0.0))  # the size of the terms it sums
        assert_by_ratio(ours_grads[name], want, eager_grads[name], k=4, what=name, magnitude=magnitude)


@pytest.mark.slow
def test_llama_compiles_once_for_any_length():
    """dynamic=True: three prompt lengths compile once under fullgraph (a length was a float check on a
    symbolic scale before), and the compiled logits equal the same model's eager ones under headwise."""
    from torch._dynamo.testing import CompileCounterWithBackend

    model = BY_NAME["llama"].build()
    model.set_attn_implementation(NAME)
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend=counter)
    generator = torch.Generator().manual_seed(5)
    frames = []
    with torch.no_grad():
        for length in (7, 11, 13):
            ids = torch.randint(3, VOCAB, (2, length), generator=generator)
            torch.testing.assert_close(compiled(input_ids=ids).logits, model(input_ids=ids).logits)
            frames.append(counter.frame_count)
    assert frames[0] == frames[-1], f"frames compiled after each length: {frames}"  # no recompilation
