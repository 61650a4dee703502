"""Tiny transformer language models built with transformers (random weights) and exported to ONNX.

Each export takes seconds: a few layers of width 32-64, ``torch.onnx.export(dynamo=False,
opset 17)``. ``kv_cache=True`` wraps the model so that the export has the optimum-onnx layout
(inputs ``input_ids``, ``attention_mask``, ``position_ids``, ``past_key_values.N.key/value``;
outputs ``logits``, ``present.N.key/value``; dims ``batch_size``, ``sequence_length``,
``past_sequence_length``, ``total_sequence_length``), as environment.md "Measured 2026-12-02"
describes: a ``DynamicCache`` filled per layer from the flat past inputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ARCHES = ("llama", "mistral", "qwen2", "gpt2", "gpt_neox", "phi", "opt", "cohere", "bert")
VOCAB = 97


@dataclass(frozen=True)
class TinyLM:
    """An exported model and the torch module it came from (to compare hidden states)."""

    path: Path
    model: object
    layers: int
    arch: str
    kv_cache: bool


def build(arch: str, layers: int = 3, hidden: int = 32, heads: int = 4, kv_heads: int | None = None,
          seed: int = 0):
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    common = {"vocab_size": VOCAB, "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
              "intermediate_size": 2 * hidden, "max_position_embeddings": 64}
    if arch == "llama":
        config = tf.LlamaConfig(**common, num_key_value_heads=kv_heads or heads)
        model = tf.LlamaForCausalLM(config)
    elif arch == "mistral":
        config = tf.MistralConfig(**common, num_key_value_heads=kv_heads or heads)
        model = tf.MistralForCausalLM(config)
    elif arch == "qwen2":
        config = tf.Qwen2Config(**common, num_key_value_heads=kv_heads or heads)
        model = tf.Qwen2ForCausalLM(config)
    elif arch == "gpt2":
        config = tf.GPT2Config(vocab_size=VOCAB, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=64,
                               resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        model = tf.GPT2LMHeadModel(config)
    elif arch == "gpt_neox":
        config = tf.GPTNeoXConfig(**common, use_parallel_residual=True, hidden_dropout=0.0, attention_dropout=0.0)
        model = tf.GPTNeoXForCausalLM(config)
    elif arch == "phi":
        config = tf.PhiConfig(**common, resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0)
        model = tf.PhiForCausalLM(config)
    elif arch == "opt":  # the MLP half runs on (batch·sequence, hidden): a Reshape before it, a view after
        config = tf.OPTConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, ffn_dim=2 * hidden,
                              num_attention_heads=heads, max_position_embeddings=64, word_embed_proj_dim=hidden,
                              dropout=0.0, attention_dropout=0.0, pad_token_id=1)
        model = tf.OPTForCausalLM(config)
    elif arch == "cohere":  # parallel attention + MLP summed as (x + attn) + mlp
        config = tf.CohereConfig(**common, num_key_value_heads=kv_heads or heads, pad_token_id=0)
        model = tf.CohereForCausalLM(config)
    elif arch == "bert":
        config = tf.BertConfig(**common, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        model = tf.BertModel(config, add_pooling_layer=False)
    else:
        raise ValueError(arch)
    config._attn_implementation = "eager"
    return model.eval()


class _CachedLM:
    """Wraps a causal LM so that its cache is flat tensors in and out (the optimum layout)."""

    def __new__(cls, model, layers: int):
        import torch
        from transformers import DynamicCache

        class Wrapper(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, position_ids, *past):
                cache = DynamicCache()
                for layer in range(layers):
                    cache.update(past[2 * layer], past[2 * layer + 1], layer)
                out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                 past_key_values=cache, use_cache=True)
                flat = []
                for layer in range(layers):
                    flat += [out.past_key_values.layers[layer].keys, out.past_key_values.layers[layer].values]
                return (out.logits, *flat)

        return Wrapper().eval()


def export(path: Path, arch: str = "llama", layers: int = 3, hidden: int = 32, heads: int = 4,
           kv_heads: int | None = None, kv_cache: bool = False, seed: int = 0) -> TinyLM:
    """Export a tiny ``arch`` model. Without a cache the inputs are ``input_ids`` and
    ``attention_mask`` (plus ``position_ids`` for decoders: the plain torch.onnx.export layout
    as a user writes it); BERT takes ``input_ids`` and ``attention_mask``."""
    import torch

    model = build(arch, layers, hidden, heads, kv_heads, seed)
    ids = torch.randint(0, VOCAB, (2, 5))
    mask = torch.ones(2, 5, dtype=torch.long)
    positions = torch.arange(5).unsqueeze(0).expand(2, 5)
    if arch == "bert":
        class Encoder(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask):
                return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

        torch.onnx.export(Encoder().eval(), (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                        "attention_mask": {0: "batch", 1: "sequence"},
                                        "last_hidden_state": {0: "batch", 1: "sequence"}})
        return TinyLM(path, model, layers, arch, False)
    if not kv_cache:
        class Plain(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, position_ids):
                return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                  use_cache=False).logits

        torch.onnx.export(Plain().eval(), (ids, mask, positions), str(path),
                          input_names=["input_ids", "attention_mask", "position_ids"], output_names=["logits"],
                          opset_version=17, dynamo=False,
                          dynamic_axes={name: {0: "batch_size", 1: "sequence_length"}
                                        for name in ("input_ids", "attention_mask", "position_ids", "logits")})
        return TinyLM(path, model, layers, arch, False)
    config = model.config
    kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = config.hidden_size // config.num_attention_heads
    past_len = 2
    past = []
    for _ in range(layers):
        past += [torch.randn(2, kv, past_len, head_dim), torch.randn(2, kv, past_len, head_dim)]
    full_mask = torch.ones(2, past_len + 5, dtype=torch.long)
    positions = (torch.arange(5) + past_len).unsqueeze(0).expand(2, 5)
    past_names = [f"past_key_values.{layer}.{kind}" for layer in range(layers) for kind in ("key", "value")]
    present_names = [f"present.{layer}.{kind}" for layer in range(layers) for kind in ("key", "value")]
    axes = {"input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
            "position_ids": {0: "batch_size", 1: "sequence_length"},
            "logits": {0: "batch_size", 1: "sequence_length"}}
    axes.update({name: {0: "batch_size", 2: "past_sequence_length"} for name in past_names})
    axes.update({name: {0: "batch_size", 2: "total_sequence_length"} for name in present_names})
    torch.onnx.export(_CachedLM(model, layers), (ids, full_mask, positions, *past), str(path),
                      input_names=["input_ids", "attention_mask", "position_ids", *past_names],
                      output_names=["logits", *present_names], opset_version=17, dynamo=False,
                      dynamic_axes=axes)
    return TinyLM(path, model, layers, arch, True)


def hidden_states(model, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> list[np.ndarray]:
    """torch's per-layer hidden states (embedding first), as numpy arrays (N, T, D)."""
    import torch

    ids = torch.from_numpy(np.asarray(input_ids, dtype=np.int64))
    mask = None if attention_mask is None else torch.from_numpy(np.asarray(attention_mask, dtype=np.int64))
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    return [state.numpy() for state in out.hidden_states]


class _LegacyCachedGPT2:
    """Wraps a GPT-2 LM in the legacy cache layout of onnxruntime's own GPT-2 exporter
    (``onnxruntime/transformers/models/gpt2/gpt2_helper.py``) and older exports: inputs
    ``input_ids, position_ids, attention_mask, past_0 … past_{L−1}`` with each past
    (2, batch, heads, past_seq_len, head_dim) — key and value stacked on axis 0 — and outputs
    ``logits, present_0 …`` in the same layout."""

    def __new__(cls, model, layers: int):
        import torch
        from transformers import DynamicCache

        class Wrapper(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids, position_ids, attention_mask, *past):
                cache = DynamicCache()
                for layer in range(layers):
                    cache.update(past[layer][0], past[layer][1], layer)
                out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                 past_key_values=cache, use_cache=True)
                present = [torch.stack((out.past_key_values.layers[layer].keys,
                                        out.past_key_values.layers[layer].values)) for layer in range(layers)]
                return (out.logits, *present)

        return Wrapper().eval()


def export_gpt2_legacy(folder: Path, layers: int = 3, hidden: int = 32, heads: int = 4, seed: int = 0,
                       id_dtype=None) -> tuple[TinyLM, TinyLM]:
    """(no-cache export, legacy 5-D cache export) of one random-weight tiny GPT-2, with
    gpt2_helper's names and dims (``batch_size``, ``seq_len``, ``past_seq_len``,
    ``total_seq_len``) and its int32 ids/positions/mask by default."""
    import torch

    id_dtype = id_dtype or torch.int32
    model = build("gpt2", layers, hidden, heads, seed=seed)
    head_dim, past_len = hidden // heads, 2
    ids = torch.randint(0, VOCAB, (2, 5), dtype=id_dtype)
    folder.mkdir(parents=True, exist_ok=True)

    class Plain(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, position_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=False).logits

    plain_path = folder / "gpt2-plain.onnx"
    torch.onnx.export(Plain().eval(), (ids, torch.arange(5, dtype=id_dtype).expand(2, 5),
                                       torch.ones(2, 5, dtype=id_dtype)), str(plain_path),
                      input_names=["input_ids", "position_ids", "attention_mask"], output_names=["logits"],
                      opset_version=17, dynamo=False,
                      dynamic_axes={"input_ids": {0: "batch_size", 1: "seq_len"},
                                    "position_ids": {0: "batch_size", 1: "seq_len"},
                                    "attention_mask": {0: "batch_size", 1: "seq_len"},
                                    "logits": {0: "batch_size", 1: "seq_len"}})
    past = [torch.randn(2, 2, heads, past_len, head_dim) for _ in range(layers)]
    past_names, present_names = [f"past_{n}" for n in range(layers)], [f"present_{n}" for n in range(layers)]
    axes = {"input_ids": {0: "batch_size", 1: "seq_len"}, "position_ids": {0: "batch_size", 1: "seq_len"},
            "attention_mask": {0: "batch_size", 1: "total_seq_len"}, "logits": {0: "batch_size", 1: "seq_len"}}
    axes.update({name: {1: "batch_size", 3: "past_seq_len"} for name in past_names})
    axes.update({name: {1: "batch_size", 3: "total_seq_len"} for name in present_names})
    cached_path = folder / "gpt2-legacy-past.onnx"
    torch.onnx.export(_LegacyCachedGPT2(model, layers),
                      (ids, (torch.arange(5, dtype=id_dtype) + past_len).expand(2, 5),
                       torch.ones(2, past_len + 5, dtype=id_dtype), *past), str(cached_path),
                      input_names=["input_ids", "position_ids", "attention_mask", *past_names],
                      output_names=["logits", *present_names], opset_version=17, dynamo=False, dynamic_axes=axes)
    return (TinyLM(plain_path, model, layers, "gpt2", False), TinyLM(cached_path, model, layers, "gpt2", True))


def build_t5(layers: int = 3, hidden: int = 32, heads: int = 4, seed: int = 0):
    """A tiny random-weight ``T5ForConditionalGeneration`` (``layers`` encoder and decoder layers)."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    config = tf.T5Config(vocab_size=VOCAB, d_model=hidden, d_kv=hidden // heads, d_ff=2 * hidden, num_layers=layers,
                         num_decoder_layers=layers, num_heads=heads, relative_attention_num_buckets=8,
                         relative_attention_max_distance=16, dropout_rate=0.0, decoder_start_token_id=0)
    config._attn_implementation = "eager"
    return tf.T5ForConditionalGeneration(config).eval()


def export_t5_decoder(path: Path, layers: int = 3, hidden: int = 32, heads: int = 4, seed: int = 0) -> TinyLM:
    """A T5 decoder in optimum-onnx's ``decoder_model.onnx`` layout (its without-past decoder):
    inputs ``encoder_attention_mask``, ``input_ids``, ``encoder_hidden_states`` (batch,
    encoder_sequence_length, d_model); outputs ``logits`` and ``present.N.decoder.key/value``
    (self-attention) and ``present.N.encoder.key/value`` (cross-attention). Each decoder layer is
    three residual merges: ``layer.0`` self-attention, ``layer.1`` cross-attention (its keys and
    values projected from ``encoder_hidden_states``), ``layer.2`` the feed-forward."""
    import torch

    model = build_t5(layers, hidden, heads, seed)

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, encoder_attention_mask, input_ids, encoder_hidden_states):
            out = self.model(decoder_input_ids=input_ids, encoder_outputs=(encoder_hidden_states,),
                             attention_mask=encoder_attention_mask, use_cache=True)
            cache = out.past_key_values
            flat = []
            for layer in range(layers):
                flat += [cache.self_attention_cache.layers[layer].keys, cache.self_attention_cache.layers[layer].values,
                         cache.cross_attention_cache.layers[layer].keys, cache.cross_attention_cache.layers[layer].values]
            return (out.logits, *flat)

    presents = [f"present.{layer}.{side}.{kind}" for layer in range(layers)
                for side in ("decoder", "encoder") for kind in ("key", "value")]
    axes = {"encoder_attention_mask": {0: "batch_size", 1: "encoder_sequence_length"},
            "input_ids": {0: "batch_size", 1: "decoder_sequence_length"},
            "encoder_hidden_states": {0: "batch_size", 1: "encoder_sequence_length"},
            "logits": {0: "batch_size", 1: "decoder_sequence_length"}}
    axes.update({name: {0: "batch_size", 2: "decoder_sequence_length" if ".decoder." in name
                        else "encoder_sequence_length"} for name in presents})
    args = (torch.ones(2, 6, dtype=torch.long), torch.randint(0, VOCAB, (2, 5)), torch.randn(2, 6, hidden))
    torch.onnx.export(Decoder().eval(), args, str(path),
                      input_names=["encoder_attention_mask", "input_ids", "encoder_hidden_states"],
                      output_names=["logits", *presents], opset_version=17, dynamo=False, dynamic_axes=axes)
    return TinyLM(path, model, layers, "t5", True)


def train_tokenizer(folder: Path):
    """A BPE ``tokenizer.json`` trained in code (the ``tokenizers`` package) and saved in
    ``folder``, its vocabulary within the tiny models' :data:`VOCAB`; returns the tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=90, special_tokens=["[UNK]"])
    sentences = ["the layer repeats what the layer before it computed",
                 "a redundant layer can be removed and the model still predicts the next token",
                 "perplexity measures how surprised a language model is by held out text"]
    tokenizer.train_from_iterator(sentences * 4, trainer)
    folder.mkdir()
    tokenizer.save(str(folder / "tokenizer.json"))
    assert tokenizer.get_vocab_size() <= VOCAB
    return tokenizer
