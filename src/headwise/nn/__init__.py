"""The models around the attention: positions, layers, stacks, language models, generation, pretrained.

    config.py      TransformerConfig: the shape of a model, checked, from a dict strictly
    positions.py   sinusoidal, learned, rotary (RoPE) and ALiBi positions
    layers.py      Embeddings, FeedForward, the residual blocks, EncoderLayer and DecoderLayer
    models.py      Encoder, Decoder, EncoderDecoder; Transformer (encoder-decoder), LanguageModel (GPT)
    conversion.py  from torch.nn.Transformer: its config and its parameter names
    generation.py  greedy / temperature / top-k decoding with the KV cache
    pretrained/    all-MiniLM-L6-v2 on headwise's encoder

This package imports nothing itself: headwise.modules (the core) uses nn.positions, and the models use
headwise.modules, so importing the models here would make a cycle. The documented paths headwise.transformer,
headwise.positions and headwise.pretrained re-export these modules.
"""
