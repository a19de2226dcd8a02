"""The models around the attention: positions, layers, stacks, language models, generation, pretrained.

    config.py      TransformerConfig: the shape of a model, checked, from a dict strictly
    positions.py   the documented path of headwise.positions (sinusoidal, learned, rotary, ALiBi), re-exported
    layers.py      Embeddings, FeedForward, the residual blocks, EncoderLayer and DecoderLayer
    models.py      Encoder, Decoder, EncoderDecoder; Transformer (encoder-decoder), LanguageModel (GPT)
    conversion.py  from torch.nn.Transformer: its config and its parameter names
    generation.py  greedy / temperature / top-k decoding with the KV cache
    pretrained/    all-MiniLM-L6-v2 on headwise's encoder

The positions live in the core (headwise.positions): MultiHeadAttention applies rotary positions, and the
core imports nothing from nn, which builds on it. This package imports nothing itself, so that importing
one of its modules loads only what that module needs. The documented paths headwise.transformer and
headwise.pretrained re-export these modules.
"""
