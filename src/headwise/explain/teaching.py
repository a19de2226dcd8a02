"""What a teacher starts from and what an exercise must keep: the sample exercises shipped with headwise
(package data in explain/exercises/), for --by-hand --example NAME and to copy and edit:

    6-3  the lecture page's exercise: 4 tokens x1..x4 of 6 features through one head of width 3
    6-6  the same tokens through two 6-3 heads side by side (the page's head, then a second one of ours)

each as NAME.json and NAME.csv (the two formats read_exercise takes), with the rules spelt out; and the
rule that refuses pencil rules which destroy an exercise (refusal):

    power_base^floor(x/divide_by) stands for e^(x/√d_k). For every score x = Kᵀ·Q of every head, the two
    must stay within a factor of RULE_FACTOR (10) of each other; beyond that the pencil numbers no longer
    approximate the softmax's (divide_by 1 on the page's 6-3 head turns a score of 6 into 3^6 = 729 for
    e^3.46 = 32), and the weights A by hand stop teaching what attention computes.
"""

from __future__ import annotations

import importlib.resources
import math
from contextlib import AbstractContextManager
from pathlib import Path

import torch

from .exercise import Exercise, read_exercise

RULE_FACTOR = 10  # power_base^floor(x/divide_by) and e^(x/√d_k) at most this many times apart

SAMPLES = {
    "6-3": "the lecture page's 6-3 head: 4 tokens of 6 features, one head of width 3",
    "6-6": "two 6-3 heads side by side make 6-6: the page's head, then a second one",
}
FORMATS = ("json", "csv")


def sample_file(name: str, kind: str = "json") -> AbstractContextManager[Path]:
    """A context manager giving the sample `name` in format `kind` as a file path (a temporary copy when
    the package is zipped); a ValueError naming the samples for another name."""
    if name not in SAMPLES or kind not in FORMATS:
        raise ValueError(
            f"expected a sample exercise {', '.join(SAMPLES)} as {' or '.join(FORMATS)}, got {name!r} as "
            f"{kind!r}"
        )
    resource = importlib.resources.files("headwise.explain") / "exercises" / f"{name}.{kind}"
    return importlib.resources.as_file(resource)


def read_sample(name: str, kind: str = "json") -> tuple[Exercise, str]:
    """The sample exercise `name` read from its `kind` file, and where that file is (to copy)."""
    with sample_file(name, kind) as path:
        return read_exercise(path), str(path)


def refusal(exercise: Exercise) -> str | None:
    """Why the exercise's rules destroy it (the module's rule: for some score the hand-made power and
    e^(x/√d_k) are more than RULE_FACTOR times apart), naming the worst score; None when they do not."""
    rules, d_k = exercise.rules, exercise.head_width
    worst: tuple[float, int] | None = None
    for head in exercise.heads:
        scores = (head.w_key @ exercise.features).T @ (head.w_query @ exercise.features)  # Kᵀ·Q (n, n)
        for score in torch.unique(scores).tolist():
            # |log(hand / exact)|: the powers stay below 10^6, so the logarithms are exact enough
            apart = abs((score // rules.divide_by) * math.log(rules.power_base) - score / math.sqrt(d_k))
            if worst is None or apart > worst[0]:
                worst = (apart, score)
    if worst is None or worst[0] <= math.log(RULE_FACTOR):
        return None
    score = worst[1]
    hand = rules.power_base ** (score // rules.divide_by)
    exact = math.exp(score / math.sqrt(d_k))
    ratio = max(hand / exact, exact / hand)
    return (
        f"rules: divide_by {rules.divide_by} and power_base {rules.power_base} do not approximate the "
        f"softmax here: the score {score} becomes {rules.power_base}^floor({score}/{rules.divide_by}) = "
        f"{hand} by hand for e^({score}/√{d_k}) = {exact:.3g}, {ratio:.0f} times "
        f"{'more' if hand > exact else 'less'}; an exercise is refused when, for some score, the two are "
        f"more than {RULE_FACTOR} times apart (a divide_by near √d_k = {math.sqrt(d_k):.2f} and a "
        "power_base of 3, near e, keep them close)"
    )
