"""Tiny random-weight Hugging Face models of each family (BERT, GPT-2, Llama, BART, T5, ...), built from
configs and saved as model folders (config.json, model.safetensors, a word-level tokenizer.json made with
`tokenizers`), and their attention weights as transformers computes them (eager): what the tests of
`headwise explain --model`, headwise.inspection and headwise.show read. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")

SENTENCE = "the animal didn't cross the street because it was too tired ."
TARGET = "the cat sat on the mat ."  # an encoder-decoder's decoder reading a text of its own
WORDS = sorted(set(SENTENCE.replace("'", " ' ").split()) | {"cat", "sat", "on", "mat", ","})
WIDTH, LAYERS, HEADS = 16, 2, 2


def tiny_tokenizer(bert: bool) -> transformers.PreTrainedTokenizerFast:
    """A word-level tokenizer over WORDS: BERT's [CLS] text [SEP], or text </s> for the others."""
    pad, unk, start, end = ("[PAD]", "[UNK]", "[CLS]", "[SEP]") if bert else ("<pad>", "<unk>", "<s>", "</s>")
    vocabulary = {token: i for i, token in enumerate([pad, unk, start, end, *WORDS])}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocabulary, unk_token=unk))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    template = f"{start} $A {end}" if bert else f"$A {end}"
    special = [(start, 2), (end, 3)] if bert else [(end, 3)]
    tokenizer.post_processor = tokenizers.processors.TemplateProcessing(
        single=template, special_tokens=special
    )
    names = {"cls_token": start, "sep_token": end} if bert else {"bos_token": start, "eos_token": end}
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token=unk, pad_token=pad, **names
    )


VOCABULARY = len(WORDS) + 4
TINY = {  # name: (model class, config), every one 2 layers of width 16
    "bert": (
        transformers.BertModel,
        transformers.BertConfig(
            vocab_size=VOCABULARY,
            hidden_size=WIDTH,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=32,
            max_position_embeddings=64,
        ),
    ),
    "gpt2": (
        transformers.GPT2Model,
        transformers.GPT2Config(
            vocab_size=VOCABULARY,
            n_embd=WIDTH,
            n_layer=LAYERS,
            n_head=HEADS,
            n_positions=64,
            bos_token_id=2,
            eos_token_id=3,
        ),
    ),
    "llama": (  # grouped-query: 4 query heads share 2 key/value heads
        transformers.LlamaModel,
        transformers.LlamaConfig(
            vocab_size=VOCABULARY,
            hidden_size=WIDTH,
            intermediate_size=32,
            num_hidden_layers=LAYERS,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            bos_token_id=2,
            eos_token_id=3,
        ),
    ),
    "bart": (
        transformers.BartModel,
        transformers.BartConfig(
            vocab_size=VOCABULARY,
            d_model=WIDTH,
            encoder_layers=LAYERS,
            decoder_layers=LAYERS,
            encoder_attention_heads=HEADS,
            decoder_attention_heads=HEADS,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            max_position_embeddings=64,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            decoder_start_token_id=3,
        ),
    ),
    "t5": (
        transformers.T5Model,
        transformers.T5Config(
            vocab_size=VOCABULARY,
            d_model=WIDTH,
            d_kv=8,
            d_ff=32,
            num_layers=LAYERS,
            num_heads=HEADS,
            pad_token_id=0,
            eos_token_id=3,
            decoder_start_token_id=0,
        ),
    ),
}
DECODERS = {"gpt2", "llama"}
ENCODER_DECODERS = {"bart", "t5"}


def save_tiny(name: str, folder: Path) -> Path:
    """The tiny model `name` with random weights (seed 0) and its tokenizer, saved into folder/name."""
    model_class, config = TINY[name]
    torch.manual_seed(0)
    model = model_class(config)
    target = folder / name
    model.save_pretrained(target)
    tiny_tokenizer(bert=name == "bert").save_pretrained(target)
    return target


def reference_weights(
    name: str, folder: Path, target: str = SENTENCE
) -> dict[str, tuple[tuple[str, ...], tuple[str, ...], torch.Tensor]]:
    """The folder's weights from its own transformers class (not AutoModel, not headwise), eager attention,
    reading SENTENCE (an encoder-decoder's decoder teacher-forced on `target`):
    {kind: (query tokens, key tokens, weights (L, H, Nq, Nk) float64)}."""
    model = TINY[name][0].from_pretrained(folder, attn_implementation="eager").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    ids = tokenizer(SENTENCE, return_tensors="pt")["input_ids"]  # (1, N)
    tokens = tuple(tokenizer.convert_ids_to_tokens(ids[0]))

    def stacked(attentions: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.cat(attentions).double()  # L × (1, H, Nq, Nk) -> (L, H, Nq, Nk)

    with torch.no_grad():
        if name not in ENCODER_DECODERS:
            out = model(input_ids=ids, output_attentions=True)
            return {"self-attention": (tokens, tokens, stacked(out.attentions))}
        start = torch.tensor([[model.config.decoder_start_token_id]])
        labels = tokenizer(target, return_tensors="pt")["input_ids"]  # (1, Nt)
        decoder_ids = torch.cat([start, labels[:, :-1]], dim=1)  # (1, Nt): teacher-forced on the target
        out = model(input_ids=ids, decoder_input_ids=decoder_ids, output_attentions=True)
    decoder_tokens = tuple(tokenizer.convert_ids_to_tokens(decoder_ids[0]))
    return {
        "encoder self-attention": (tokens, tokens, stacked(out.encoder_attentions)),
        "decoder self-attention": (decoder_tokens, decoder_tokens, stacked(out.decoder_attentions)),
        "cross-attention": (decoder_tokens, tokens, stacked(out.cross_attentions)),
    }
