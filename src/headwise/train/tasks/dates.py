"""The dates task: translate a date as people write it ("23 Nov 2026", "Monday, November 23rd 2026",
"11/23/26", "2026.11.23", ...) into ISO 8601 ("2026-11-23") with an encoder-decoder Transformer.

The data is made on the fly: a step's batch is a function of (seed, step), so any batch can be made again.
Dates run from 1969-01-01 to 2068-12-31, so that a two-digit year is read as POSIX's strptime("%y") reads
it (69-99 -> 19xx, 00-68 -> 20xx). Numbers with slashes are US-style (month first: 11/23/26); with dots,
year first (2026.11.23) or day first (23.11.2026). About 2% of the dates (chosen by a hash of the date,
whatever the seed) are held out: no training batch ever contains them, and the evaluation set is made of
them only. Evaluation is the exact match of greedy generation (with the KV cache) against the ISO string.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable, Sequence
from functools import cache
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...nn.config import TransformerConfig
from ...nn.models import Transformer
from .base import CharVocab, Param, Task, derive_seed, model_device, model_of

FIRST_DATE = datetime.date(1969, 1, 1)
LAST_DATE = datetime.date(2068, 12, 31)
HELD_OUT_EVERY = 50  # one date in 50 is held out
ISO_LENGTH = 10  # "2026-11-23"
MAX_SOURCE_LENGTH = 40  # the longest source text the formats make ("Wednesday, September 23rd, 2026": 31)
PAD, START, STOP = "<pad>", "<s>", "</s>"
VOCAB = CharVocab.from_chars(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,./-", specials=(PAD, START, STOP)
)
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def ordinal(day: int) -> str:
    """1 -> "1st", 2 -> "2nd", 3 -> "3rd", 11 -> "11th", 23 -> "23rd"."""
    suffix = "th" if 11 <= day <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _day(date: datetime.date, rng: random.Random) -> str:
    return rng.choice((str(date.day), f"{date.day:02d}", ordinal(date.day)))


def _month(date: datetime.date, rng: random.Random) -> str:
    name = MONTHS[date.month - 1]
    short = name[:3]
    return rng.choice((name, short, short if name == short else short + "."))


def _weekday(date: datetime.date, rng: random.Random) -> str:
    name = WEEKDAYS[date.weekday()]
    return rng.choice((name, name[:3])) + rng.choice((",", ""))


def _numeric(value: int, rng: random.Random) -> str:
    return rng.choice((str(value), f"{value:02d}"))


Format = Callable[[datetime.date, random.Random], str]

FORMATS: dict[str, Format] = {
    # "23 Nov 2026", "23rd November 2026", "03 Nov. 2026"
    "day month year": lambda d, r: f"{_day(d, r)} {_month(d, r)} {d.year}",
    # "Monday, 23 November 2026", "Mon 23rd Nov 2026"
    "weekday day month year": lambda d, r: f"{_weekday(d, r)} {_day(d, r)} {_month(d, r)} {d.year}",
    # "November 23, 2026", "Nov. 23rd 2026"
    "month day, year": lambda d, r: f"{_month(d, r)} {_day(d, r)}{r.choice((',', ''))} {d.year}",
    # "Monday, November 23rd 2026", "Mon Nov 23, 2026"
    "weekday month day, year": lambda d, r: (
        f"{_weekday(d, r)} {_month(d, r)} {_day(d, r)}{r.choice((',', ''))} {d.year}"
    ),
    # "the 23rd of November, 2026", "23rd of Nov 2026"
    "the day of month year": lambda d, r: (
        f"{r.choice(('the ', ''))}{ordinal(d.day)} of {_month(d, r)}{r.choice((',', ''))} {d.year}"
    ),
    # "11/23/26", "01/05/26", "1/5/26" (US: month first; the year 69-99 -> 19xx, 00-68 -> 20xx)
    "month/day/yy": lambda d, r: f"{_numeric(d.month, r)}/{_numeric(d.day, r)}/{d.year % 100:02d}",
    # "11/23/2026"
    "month/day/year": lambda d, r: f"{_numeric(d.month, r)}/{_numeric(d.day, r)}/{d.year}",
    # "2026.11.23"
    "year.month.day": lambda d, r: f"{d.year}.{d.month:02d}.{d.day:02d}",
    # "23.11.2026", "3.1.2026"
    "day.month.year": lambda d, r: f"{_numeric(d.day, r)}.{_numeric(d.month, r)}.{d.year}",
    # "23-Nov-2026"
    "day-month-year": lambda d, r: f"{d.day:02d}-{MONTHS[d.month - 1][:3]}-{d.year}",
    # "2026-11-23", already ISO
    "iso": lambda d, r: d.isoformat(),
    # "20261123", ISO's basic format
    "iso basic": lambda d, r: d.strftime("%Y%m%d"),
}
CASES: tuple[Callable[[str], str], ...] = (str, str, str.lower, str.upper)  # as written, twice as likely


def human_date(date: datetime.date, format_name: str, rng: random.Random) -> str:
    """`date` written in the format `format_name` (a key of FORMATS), its variants and case drawn by `rng`."""
    if format_name not in FORMATS:
        raise ValueError(f"format_name must be one of {list(FORMATS)}, got {format_name!r}")
    return rng.choice(CASES)(FORMATS[format_name](date, rng))


def is_held_out(date: datetime.date) -> bool:
    """Whether `date` belongs to the held-out dates (a hash of the date, whatever the seed: about 2%)."""
    return derive_seed("dates/held-out", date.isoformat()) % HELD_OUT_EVERY == 0


@cache
def _ordinals() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The training dates and the held-out dates, as proleptic Gregorian ordinals."""
    days = range(FIRST_DATE.toordinal(), LAST_DATE.toordinal() + 1)
    held_out = tuple(day for day in days if is_held_out(datetime.date.fromordinal(day)))
    return tuple(sorted(set(days) - set(held_out))), held_out


def training_dates() -> tuple[int, ...]:
    """The ordinals of the dates the training batches draw from."""
    return _ordinals()[0]


def held_out_dates() -> tuple[int, ...]:
    """The ordinals of the held-out dates, never in a training batch."""
    return _ordinals()[1]


def encode_sources(texts: Sequence[str], vocab: CharVocab = VOCAB) -> tuple[torch.Tensor, torch.Tensor]:
    """Source texts -> ids (B, Ns) padded with the pad token, and the padding mask (B, Ns), True = a real
    character (Ns: the longest text)."""
    encoded = [vocab.encode(text) for text in texts]
    too_long = [text for text, ids in zip(texts, encoded, strict=True) if len(ids) > MAX_SOURCE_LENGTH]
    if too_long or not all(encoded):
        raise ValueError(
            f"each source text must have 1 to {MAX_SOURCE_LENGTH} characters, got {(too_long or [''])[0]!r}"
        )
    width = max(len(ids) for ids in encoded)
    ids = torch.full((len(texts), width), vocab.id(PAD), dtype=torch.long)  # (B, Ns)
    for row, row_ids in enumerate(encoded):
        ids[row, : len(row_ids)] = torch.tensor(row_ids)
    return ids, ids != vocab.id(PAD)  # (B, Ns), (B, Ns)


def encode_targets(isos: Sequence[str], vocab: CharVocab = VOCAB) -> tuple[torch.Tensor, torch.Tensor]:
    """ISO strings -> the decoder's input (B, 11) (start, then the characters) and the tokens it must
    predict (B, 11) (the characters, then stop)."""
    chars = torch.tensor([vocab.encode(iso) for iso in isos], dtype=torch.long)  # (B, 10)
    start = torch.full((len(isos), 1), vocab.id(START), dtype=torch.long)  # (B, 1)
    stop = torch.full((len(isos), 1), vocab.id(STOP), dtype=torch.long)  # (B, 1)
    return torch.cat([start, chars], dim=1), torch.cat([chars, stop], dim=1)  # (B, 11), (B, 11)


@torch.no_grad()
def translate(model: Transformer, texts: Sequence[str], vocab: CharVocab = VOCAB) -> list[str]:
    """Greedy translation (with the KV cache) of each text; the model is put in eval mode."""
    model.eval()
    source, mask = encode_sources(texts, vocab)  # (B, Ns), (B, Ns)
    device = model_device(model)
    out = model.generate(
        source.to(device),
        start_token=vocab.id(START),
        max_new_tokens=ISO_LENGTH + 1,
        stop_token=vocab.id(STOP),
        source_padding_mask=mask.to(device),
    )  # (B, n ≤ 11)
    return [vocab.decode(row.tolist(), stop=vocab.id(STOP)) for row in out.cpu()]


@torch.no_grad()
def cross_attention(model: Transformer, text: str, vocab: CharVocab = VOCAB) -> tuple[str, torch.Tensor]:
    """Translate `text` and return the translation and the decoder's cross-attention weights while it was
    written, (L, Hq, Nt, Ns): layer, head, output position (the start token, then each character: Nt =
    len(translation) + 1), source character (Ns = len(text)). Row t shows where the model looked to write
    character t of the translation (or the stop token, for the last row)."""
    translation = translate(model, [text], vocab)[0]
    source, mask = encode_sources([text], vocab)  # (1, Ns), (1, Ns)
    target_in = torch.tensor([[vocab.id(START), *vocab.encode(translation)]])  # (1, Nt)
    device = model_device(model)
    output = model(
        source.to(device), target_in.to(device), source_padding_mask=mask.to(device), output_attentions=True
    )
    weights = torch.stack(output.decoder.cross_attentions)  # (L, 1, Hq, Nt, Ns)
    return translation, weights[:, 0].cpu()  # (L, Hq, Nt, Ns)


class DatesTask(Task):
    """Human-written dates -> ISO 8601, with an encoder-decoder; metric: held-out exact match (0 to 1).

    Parameters: eval_examples (held-out examples in the evaluation set), eval_batch (examples per
    generation batch).
    """

    name = "dates"
    model_class = "Transformer"
    metric = "exact_match"
    higher_is_better = True
    defaults: ClassVar[dict[str, Param]] = {"eval_examples": 2000, "eval_batch": 1000}

    @property
    def vocab(self) -> CharVocab:
        return VOCAB

    def default_config(self) -> TransformerConfig:
        return TransformerConfig(
            vocab_size=len(VOCAB),
            d_model=64,
            num_heads=4,
            d_ff=256,
            num_encoder_layers=2,
            num_decoder_layers=2,
            dropout=0.0,
            norm_first=True,
            max_positions=MAX_SOURCE_LENGTH + 8,
        )

    def default_options(self) -> dict[str, object]:
        return {
            "steps": 2000,
            "batch_size": 128,
            "learning_rate": 2e-3,
            "warmup_steps": 100,
            "eval_every": 250,
            "checkpoint_every": 500,
        }

    def examples(self, seed: int, step: int, batch_size: int) -> list[tuple[str, str]]:
        """The (source text, ISO date) pairs of a training step: a function of (seed, step, batch_size)."""
        rng = random.Random(derive_seed(seed, "dates/batch", step))
        names = list(FORMATS)
        days = training_dates()
        pairs = []
        for _ in range(batch_size):
            date = datetime.date.fromordinal(rng.choice(days))
            pairs.append((human_date(date, rng.choice(names), rng), date.isoformat()))
        return pairs

    def eval_examples(self) -> list[tuple[str, str]]:
        """The fixed evaluation set: held-out dates only, every format in turn (the same for every seed)."""
        rng = random.Random(derive_seed("dates/eval"))
        names = list(FORMATS)
        days = held_out_dates()
        pairs = []
        for i in range(int(self.params["eval_examples"])):
            date = datetime.date.fromordinal(rng.choice(days))
            pairs.append((human_date(date, names[i % len(names)], rng), date.isoformat()))
        return pairs

    def batch(self, seed: int, step: int, batch_size: int) -> dict[str, torch.Tensor]:
        """source (B, Ns), source_mask (B, Ns) (True = a character), target_in (B, 11), target_out (B, 11)."""
        texts, isos = zip(*self.examples(seed, step, batch_size), strict=True)
        source, source_mask = encode_sources(texts)  # (B, Ns), (B, Ns)
        target_in, target_out = encode_targets(isos)  # (B, 11), (B, 11)
        return {
            "source": source,
            "source_mask": source_mask,
            "target_in": target_in,
            "target_out": target_out,
        }

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(
            batch["source"], batch["target_in"], source_padding_mask=batch["source_mask"]
        ).logits  # (B, 11, V)
        return F.cross_entropy(logits.flatten(0, 1), batch["target_out"].flatten())  # teacher forcing

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """exact_match: the fraction of held-out examples translated exactly right; loss: the teacher-forced
        cross-entropy on them (nats per character)."""
        model.eval()
        pairs = self.eval_examples()
        size = int(self.params["eval_batch"])
        right, loss_sum = 0, 0.0
        device = model_device(model)
        for begin in range(0, len(pairs), size):
            texts, isos = zip(*pairs[begin : begin + size], strict=True)
            translated = translate(model_of(model, Transformer, self.name), texts)
            right += sum(got == iso for got, iso in zip(translated, isos, strict=True))
            source, mask = encode_sources(texts)  # (b, Ns), (b, Ns)
            target_in, target_out = encode_targets(isos)  # (b, 11), (b, 11)
            batch = {"source": source, "source_mask": mask, "target_in": target_in, "target_out": target_out}
            loss_sum += float(self.loss(model, {k: v.to(device) for k, v in batch.items()})) * len(texts)
        return {"exact_match": right / len(pairs), "loss": loss_sum / len(pairs)}

    def report(self, model: nn.Module, metrics: dict[str, float], *, seed: int = 0) -> str:
        examples = ["23 Nov 2026", "Monday, November 23rd 2026", "11/23/26", "the 1st of april, 1999"]
        lines = [
            f"held-out exact match: {100 * metrics['exact_match']:.2f}% "
            f"({round(metrics['exact_match'] * int(self.params['eval_examples']))}"
            f"/{self.params['eval_examples']} dates never seen in training)"
        ]
        translated = translate(model_of(model, Transformer, self.name), examples)
        lines += [f"  {text!r:32} -> {iso}" for text, iso in zip(examples, translated, strict=True)]
        return "\n".join(lines)
