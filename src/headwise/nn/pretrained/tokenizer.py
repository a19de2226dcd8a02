"""The checkpoint's WordPiece tokenizer (tokenizer.json, read with the `tokenizers` library), for batches:
sentences -> input_ids, attention_mask and token_type_ids (B, N), padded to the longest sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch

from ...checks import boolean, positive_int
from ...optional import require
from .bert import INSTALL_EXTRA


def _tokenizers() -> ModuleType:
    """The `tokenizers` library, or an ImportError with the install command."""
    return require("tokenizers", purpose="headwise.nn.pretrained (the tokenizer)", install=INSTALL_EXTRA)


class Tokenizer:
    """The checkpoint's WordPiece tokenizer (tokenizer.json, with the `tokenizers` library), for batches.

    `tokenizer(sentences)` returns {"input_ids", "attention_mask", "token_type_ids"}, each a torch.long
    tensor (B, N) padded on the right to the longest sentence (not to tokenizer.json's fixed 128). Nothing
    is truncated unless asked: a sentence longer than `max_length` tokens (with [CLS] and [SEP]) is a
    ValueError, or, with truncation=True, is cut to max_length tokens (ending in [SEP])."""

    def __init__(self, tokenizer: object, *, max_length: int = 512) -> None:
        tokenizers = _tokenizers()
        if not isinstance(tokenizer, tokenizers.Tokenizer):
            raise TypeError(f"tokenizer must be a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
        self.max_length = positive_int(max_length, "max_length")
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2 (room for [CLS] and [SEP]), got {max_length!r}")
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
        tokenizers = _tokenizers()
        return cls(tokenizers.Tokenizer.from_file(str(path)), max_length=max_length)

    @property
    def vocab_size(self) -> int:
        return self._exact.get_vocab_size()

    def encode(self, sentences: str | Sequence[str], *, truncation: bool = False) -> list:
        """The tokenizers.Encoding of each sentence (ids, tokens, offsets ...), unpadded."""
        sentences = as_sentences(sentences)
        boolean(truncation, "truncation")
        encodings = (self._truncating if truncation else self._exact).encode_batch(sentences)
        for index, (sentence, encoding) in enumerate(zip(sentences, encodings, strict=True)):
            if len(encoding.ids) > self.max_length:
                raise ValueError(
                    f"sentence {index} ({shorten(sentence)!r}) has {len(encoding.ids)} tokens but the model "
                    f"reads at most {self.max_length} (its positions, [CLS] and [SEP] included): shorten it "
                    f"or keep its first {self.max_length} tokens (truncation=True here, --truncate in "
                    "`headwise embed`)"
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


def as_sentences(sentences: object) -> list[str]:
    """One string or a sequence of strings -> a non-empty list of strings."""
    if isinstance(sentences, str):
        return [sentences]
    if not isinstance(sentences, Sequence) or not sentences:
        raise ValueError(f"sentences must be a string or a non-empty list of strings, got {sentences!r}")
    for index, sentence in enumerate(sentences):
        if not isinstance(sentence, str):
            raise TypeError(f"sentences[{index}] must be a string, got {type(sentence).__name__}")
    return list(sentences)


def shorten(text: str, width: int = 40) -> str:
    """`text` on one line, cut to `width` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
