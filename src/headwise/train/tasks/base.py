"""What every training task shares: a character vocabulary, the task interface, and seeds derived from
(seed, step) so that any step's batch (and dropout) can be made again without carried-over RNG state."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

import torch
from torch import nn

from ...checks import fits_in_memory, known_keys, non_negative_int, non_negative_number
from ...nn.config import TransformerConfig
from ...nn.models import LanguageModel, Transformer

MODEL_CLASSES: dict[str, type[nn.Module]] = {"Transformer": Transformer, "LanguageModel": LanguageModel}
TRAINING_COPIES = 4  # of each weight while training: the weight, its gradient and AdamW's two moments
Param = int | float | str  # a task parameter's value (a bool is an int)
ModelT = TypeVar("ModelT", bound=nn.Module)


def build_model(model_class: str, config: TransformerConfig) -> nn.Module:
    """A freshly initialised `model_class` (a key of MODEL_CLASSES) with `config`, after checking that this
    machine can train it: TRAINING_COPIES float32 copies of its weights, and its position table, must fit
    in its memory (activations come on top). Else a ValueError gives both sizes, before any allocation."""
    parameters = config.parameter_count(encoder=model_class == "Transformer")
    fits_in_memory(
        4 * (TRAINING_COPIES * parameters + config.buffer_count()),
        f"training a {model_class} of {parameters:,} parameters (float32 weights, gradients and AdamW's two "
        "moments)",
    )
    return MODEL_CLASSES[model_class](config)


MAX_SEED = 2**63 - 1  # derive_seed's results, and what torch.manual_seed takes as an int64


def check_seed(seed: object, name: str = "seed") -> int:
    """`seed` as an int in [0, MAX_SEED], or a ValueError."""
    value = non_negative_int(seed, name)
    if value > MAX_SEED:
        raise ValueError(f"{name} must be an integer in [0, 2**63), got {seed!r}")
    return value


def derive_seed(*parts: object) -> int:
    """A 63-bit seed made from `parts` (e.g. the run's seed, a purpose and the step), the same on every
    machine and in every process (unlike hash(), which Python salts per process)."""
    text = "/".join(str(part) for part in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


@dataclass(frozen=True)
class CharVocab:
    """One token per character, after `specials` reserved tokens (e.g. pad, start, stop) at ids 0, 1, ...

    tokens: the special tokens' names, then one character per token.
    """

    tokens: tuple[str, ...]
    num_specials: int = 0
    _ids: dict[str, int] = field(init=False, repr=False, compare=False)  # a character's id, set below

    def __post_init__(self) -> None:
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError(f"vocabulary tokens must be distinct, got {list(self.tokens)}")
        if not 0 <= self.num_specials <= len(self.tokens):
            raise ValueError(f"num_specials must be in [0, {len(self.tokens)}], got {self.num_specials}")
        chars = self.tokens[self.num_specials :]
        if any(len(char) != 1 for char in chars):
            raise ValueError(f"after the specials, each token must be one character, got {list(chars)}")
        object.__setattr__(self, "_ids", {char: i + self.num_specials for i, char in enumerate(chars)})

    @classmethod
    def from_chars(cls, chars: Iterable[str], specials: Sequence[str] = ()) -> CharVocab:
        """The specials, then the distinct characters of `chars`, sorted."""
        return cls((*specials, *sorted(set(chars))), num_specials=len(specials))

    def __len__(self) -> int:
        return len(self.tokens)

    def id(self, token: str) -> int:
        """The id of a token (a character or a special's name)."""
        if token in self.tokens[: self.num_specials]:
            return self.tokens.index(token)
        if token not in self._ids:
            raise KeyError(f"{token!r} is not in the vocabulary of {len(self)} tokens")
        return self._ids[token]

    def encode(self, text: str) -> list[int]:
        """One id per character of `text`; characters outside the vocabulary are an error that lists them."""
        unknown = sorted(set(text) - set(self._ids))
        if unknown:
            raise ValueError(
                f"text has characters outside the vocabulary: {''.join(unknown)!r}; the vocabulary has "
                f"{''.join(self._ids)!r}"
            )
        return [self._ids[char] for char in text]

    def decode(self, ids: Iterable[int], *, stop: int | None = None) -> str:
        """The characters of `ids`, up to the first `stop` id (if given); other special tokens are dropped."""
        chars = []
        for i in ids:
            i = int(i)
            if i == stop:
                break
            if self.num_specials <= i < len(self.tokens):
                chars.append(self.tokens[i])
        return "".join(chars)

    def to_dict(self) -> dict[str, object]:
        return {"tokens": list(self.tokens), "num_specials": self.num_specials}

    @classmethod
    def from_dict(cls, data: object) -> CharVocab:
        """The vocabulary of to_dict()'s dict; an unknown key, or tokens that are not a list of strings, is
        an error."""
        fields = known_keys(data, ("tokens", "num_specials"), "vocabulary key")
        tokens = fields.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(token, str) for token in tokens):
            raise ValueError(f"vocabulary tokens must be a list of strings, got {tokens!r:.200}")
        return cls(tuple(tokens), non_negative_int(fields.get("num_specials", 0), "num_specials"))


class Task(ABC):
    """A training task: its data (batches from (seed, step)), its loss, its evaluation, its default model.

    A task is made from keyword parameters (its `params`, saved in checkpoints); unknown ones are errors.
    """

    name: ClassVar[str]
    model_class: ClassVar[str]  # a key of MODEL_CLASSES
    metric: ClassVar[str]  # the key of evaluate()'s result that measures the model
    higher_is_better: ClassVar[bool]
    defaults: ClassVar[dict[str, Param]]  # the parameters and their default values

    def __init__(self, **params: object) -> None:
        self.params = self.check_params(params)

    @classmethod
    def check_params(cls, params: object) -> dict[str, Param]:
        """The task's parameters: its defaults with `params` in their place, after checking that each key is
        known and each value of its default's kind (an int >= 1, a finite float >= 0, a bool, a string)."""
        given = known_keys(params, sorted(cls.defaults), f"{cls.name} task parameter")
        for key, value in given.items():
            kind = type(cls.defaults[key])
            fits = isinstance(value, kind) or (kind is float and isinstance(value, int))
            if isinstance(value, bool) != (kind is bool) or not fits or (kind is int and value < 1):
                wanted = "a positive int" if kind is int else f"a {kind.__name__}"
                raise ValueError(f"the {cls.name!r} task's parameter {key} must be {wanted}, got {value!r}")
            if kind is float:
                non_negative_number(value, f"the {cls.name!r} task's parameter {key}")
        return {**cls.defaults, **given}

    @property
    @abstractmethod
    def vocab(self) -> CharVocab:
        """The task's vocabulary."""

    @abstractmethod
    def default_config(self) -> TransformerConfig:
        """The model the default run trains."""

    @abstractmethod
    def default_options(self) -> dict[str, object]:
        """The training options (see headwise.train.loop.TrainOptions) of the default run."""

    @abstractmethod
    def batch(self, seed: int, step: int, batch_size: int) -> dict[str, torch.Tensor]:
        """The training batch of `step`: a function of (seed, step, batch_size) only."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The mean cross-entropy (nats per predicted token) of `model` on `batch`: a scalar tensor."""

    @abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """The model's metrics on the held-out data (the model is put in eval mode and left in it)."""

    def report(self, model: nn.Module, metrics: dict[str, float], *, seed: int = 0) -> str:
        """A few lines of text that show the result (the metric; a sample)."""
        return f"{self.metric}: {metrics[self.metric]:.4g}"

    def build_model(self, config: TransformerConfig) -> nn.Module:
        """A freshly initialised model of this task's class; config.vocab_size must match the vocabulary."""
        if config.vocab_size != len(self.vocab):
            raise ValueError(
                f"config.vocab_size must be the {self.name!r} task's vocabulary size {len(self.vocab)}, "
                f"got {config.vocab_size}"
            )
        return build_model(self.model_class, config)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Every tensor of `batch` on `device`."""
    return {key: value.to(device) for key, value in batch.items()}


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's (first) parameters."""
    return next(model.parameters()).device


def model_of(model: nn.Module, kind: type[ModelT], task: str) -> ModelT:
    """`model` if it is a `kind` (the model class the `task` reads), else a TypeError."""
    if not isinstance(model, kind):
        raise TypeError(f"the {task!r} task reads a {kind.__name__}, got {type(model).__name__}")
    return model
