"""The documented import path of the pretrained encoder; the code lives in headwise.nn.pretrained."""

from .nn.pretrained import *  # noqa: F403
from .nn.pretrained import __all__  # noqa: F401 (the same names)
