"""Raschka's "Build a Large Language Model from Scratch", chapter 3, sections 3.3 to 3.6, by headwise.

Every value the chapter prints, with the book's seeds, shapes and order of initialisation: the book's
weights are drawn exactly as its code draws them (torch.rand or torch.nn.Linear after torch.manual_seed),
then loaded into headwise.MultiHeadAttention or passed to headwise.attention, which compute everything
else in float64 under headwise.trace(). The book's classes map onto headwise's one module:

    SelfAttention_v1, _v2, CausalAttention   MultiHeadAttention(d_in, 1, head_dim=d_out): its context step
    MultiHeadAttentionWrapper (2 heads)      MultiHeadAttention(d_in, 2, head_dim=d_out): its context step
    MultiHeadAttention (weight splits)       MultiHeadAttention(d_in, 2, head_dim=d_out // 2, out_dim=d_out,
                                                 qkv_bias=False): its output

The book's own classes (without an output projection) end at headwise's context step, before out_proj.

    weights.py     the book's weights, drawn in its order after its seeds, in a float64 MultiHeadAttention
    printout.py    Printout: one value the book prints; the book's inputs; BOOK, SECTIONS
    simplified.py  3.3 (no trainable weights)     trainable.py   3.4 (SelfAttention_v1, _v2)
    causal.py      3.5 (the mask and dropout)     multi_head.py  3.6 (the wrapper, weight splits)
    chapter.py     chapter(): every value in the book's order; book_report(): them as a Report

This package's __init__ imports nothing, so that explain/example.py can take the book's weights
(weights.py) without loading the chapter, which reads example.py's embeddings.
"""
