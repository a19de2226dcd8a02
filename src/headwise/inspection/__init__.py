"""Inspecting a model's heads, in a notebook or from the command line, in data-flow order:

folder     which model: "minilm" or a Hugging Face model folder on disk, loaded (load_model)
reading    the model reading a text: every kind of attention it has, as HeadMaps (read)
words      sub-word tokens shown as words (Ġ, ▁, ##), or a word's pieces merged into one (as_pieces)
maps       attention weights as models return them, L × (B, H, Nq, Nk), as HeadMaps (head_maps)
show       headwise.show: the head view and model view inline in Jupyter, or saved as a page;
           side_by_side: one head reading two texts
analysis   per-head statistics over texts, heads named by what they do (analyse, heads_linking)
rollout    attention rollout and attention flow through the layers (rollout, flow)
neurons    each layer's queries and keys (queries_and_keys); the neuron view: one head's query for one
           token against every key, element by element
reports    `headwise explain --model/--checkpoint`: a model's maps as a Report; the query --token names

The views are headwise.pages Reports (the page model that headwise.explain's pages share); nothing here
imports headwise.explain.
"""

from .analysis import HeadStats, HeadTable, PairWeight, analyse, heads_linking
from .folder import MINILM, load_model, model_source
from .maps import head_maps
from .neurons import QueriesAndKeys, neuron_view, queries_and_keys
from .reading import read
from .rollout import flow, rollout
from .show import Shown, SideBySide, show, side_by_side
from .words import PIECES, as_pieces, split_words

__all__ = [
    "MINILM",
    "PIECES",
    "HeadStats",
    "HeadTable",
    "PairWeight",
    "QueriesAndKeys",
    "Shown",
    "SideBySide",
    "analyse",
    "as_pieces",
    "flow",
    "head_maps",
    "heads_linking",
    "load_model",
    "model_source",
    "neuron_view",
    "queries_and_keys",
    "read",
    "rollout",
    "show",
    "side_by_side",
    "split_words",
]
