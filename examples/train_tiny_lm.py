"""A small decoder language model trained here on real English, exported to ONNX with and without
a KV cache: the real subject of LM depth pruning (benchmarks/prune_compare.py --subject lm).

Llama layout (transformers ``LlamaForCausalLM``): 8 layers, hidden 256, 4 heads, SwiGLU MLP of
688, RoPE, RMSNorm, tied embeddings; a byte-level BPE tokenizer of 2,048 tokens trained with
``tokenizers`` on the training split only. Text: examples/lm_corpus.py (the installed packages'
READMEs and docstrings, split by package into train / calibration / evaluation).

Fixed seed, ``torch.set_num_threads(2)`` with ``OMP_WAIT_POLICY=PASSIVE`` (set before torch loads):
on shared cores, OpenMP threads that spin while waiting for each other made the first attempt
over 10× slower under a load average near 20. The schedule is 240 steps of 16 × 128 tokens (about
490 k tokens, roughly one pass over the training split). Measured 2026-12-03: 983 s of training
(1,010 s in all) on the project's two cores shared with seven other sessions (load average
18-20), about 4.5 CPU-minutes; final training loss 5.49 nats (from 7.69). A small, briefly
trained LM: meta.json keeps its loss curve. Everything lands in ``.bench-cache/tiny-lm/`` (ignored by git, never
committed) and is reused when the settings and the corpus are unchanged:

* ``tokenizer.json``, ``model.pt`` (state dict), ``meta.json`` (settings, losses, timings);
* ``corpus.json``: the gathered text per split (reused by later runs with other settings);
* ``lm.onnx`` (inputs ``input_ids``, ``attention_mask``, ``position_ids`` → ``logits``);
* ``lm-kv.onnx`` (plus ``past_key_values.N.key/value`` → ``logits``, ``present.N.key/value``:
  the optimum-onnx layout);
* ``calibration.npz`` / ``evaluation.npz``: windows of real token ids (``input_ids``,
  ``attention_mask``, ``position_ids``) from the calibration and evaluation packages;
* ``calibration.txt`` / ``evaluation.txt``: the raw text, for ``--text FILE --tokenizer DIR``.

Usage: ``python -m examples.train_tiny_lm [--steps N] [--out DIR]``
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Before torch (imported lazily below) loads OpenMP: spinning waits waste shared cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

CACHE = Path(__file__).resolve().parent.parent / ".bench-cache" / "tiny-lm"


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides the trained weights; its hash names the cached result."""

    layers: int = 8
    hidden: int = 256
    heads: int = 4
    intermediate: int = 688
    vocab: int = 2048
    context: int = 128
    batch: int = 16
    steps: int = 240
    learning_rate: float = 2e-3
    warmup: int = 20
    seed: int = 0
    probe_windows: int = 64

    def key(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def train_tokenizer(text: str, vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<pad>"], show_progress=False)
    tokenizer.train_from_iterator(text.splitlines(), trainer=trainer)
    return tokenizer


def windows(ids: np.ndarray, count: int, context: int) -> dict[str, np.ndarray]:
    """``count`` non-overlapping windows spread evenly over the token stream: full-length, so the
    mask is all ones and position ids are 0..T-1 (an LM probe with no padding)."""
    starts = np.linspace(0, len(ids) - context, count).astype(np.int64)
    input_ids = np.stack([ids[s:s + context] for s in starts]).astype(np.int64)
    return {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids),
            "position_ids": np.broadcast_to(np.arange(context, dtype=np.int64), input_ids.shape).copy()}


def build_model(settings: TrainSettings):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=settings.vocab, hidden_size=settings.hidden,
                         intermediate_size=settings.intermediate, num_hidden_layers=settings.layers,
                         num_attention_heads=settings.heads, num_key_value_heads=settings.heads,
                         max_position_embeddings=2 * settings.context, tie_word_embeddings=True,
                         attn_implementation="eager")
    return LlamaForCausalLM(config)


def train(model, stream: np.ndarray, settings: TrainSettings, log: list[dict]) -> None:
    import torch

    rng = np.random.default_rng(settings.seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.1,
                                  betas=(0.9, 0.95))

    def rate(step: int) -> float:
        if step < settings.warmup:
            return (step + 1) / settings.warmup
        progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, rate)
    model.train()
    for step in range(settings.steps):
        starts = rng.integers(0, len(stream) - settings.context - 1, settings.batch)
        batch = torch.from_numpy(np.stack([stream[s:s + settings.context] for s in starts]).astype(np.int64))
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        schedule.step()
        if step % 20 == 0 or step == settings.steps - 1:
            log.append({"step": step, "loss": round(loss.item(), 4), "time_s": round(time.time() - log[0]["t0"], 1)})
    model.eval()


class _Flat:
    """Wraps the HF model so torch.onnx.export sees flat tensors (and flat past/present)."""

    @staticmethod
    def make(model, with_cache: bool):
        import torch
        from transformers import DynamicCache

        layers = model.config.num_hidden_layers

        class Flat(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, position_ids, *past):
                if not with_cache:
                    return self.model(input_ids=input_ids, attention_mask=attention_mask,
                                      position_ids=position_ids, use_cache=False).logits
                cache = DynamicCache(config=self.model.config)
                for i in range(layers):
                    cache.update(past[2 * i], past[2 * i + 1], i)
                out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                 past_key_values=cache, use_cache=True)
                present = []
                for layer in out.past_key_values.layers:
                    present += [layer.keys, layer.values]
                return (out.logits, *present)

        return Flat()


def export(model, path: Path, with_cache: bool) -> None:
    import torch

    config = model.config
    layers, heads = config.num_hidden_layers, config.num_key_value_heads
    head_dim = config.hidden_size // config.num_attention_heads
    batch, seq, past_len = 2, 5, 3 if with_cache else 0
    input_ids = torch.randint(0, config.vocab_size, (batch, seq))
    mask = torch.ones(batch, past_len + seq, dtype=torch.int64)
    positions = torch.arange(past_len, past_len + seq).expand(batch, seq)
    names = ["input_ids", "attention_mask", "position_ids"]
    dynamic = {"input_ids": {0: "batch_size", 1: "sequence_length"},
               "attention_mask": {0: "batch_size", 1: "total_sequence_length" if with_cache else "sequence_length"},
               "position_ids": {0: "batch_size", 1: "sequence_length"},
               "logits": {0: "batch_size", 1: "sequence_length"}}
    args = [input_ids, mask, positions]
    outputs = ["logits"]
    if with_cache:
        for i in range(layers):
            for part in ("key", "value"):
                args.append(torch.randn(batch, heads, past_len, head_dim))
                names.append(f"past_key_values.{i}.{part}")
                dynamic[names[-1]] = {0: "batch_size", 2: "past_sequence_length"}
                outputs.append(f"present.{i}.{part}")
                dynamic[outputs[-1]] = {0: "batch_size", 2: "total_sequence_length"}
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(_Flat.make(model, with_cache), tuple(args), str(tmp), input_names=names,
                          output_names=outputs, dynamic_axes=dynamic, opset_version=17, dynamo=False)
    os.replace(tmp, path)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def build(settings: TrainSettings = TrainSettings(), out: Path = CACHE) -> Path:
    """Train (or reuse) the tiny LM; returns the folder with the files listed in the module doc."""
    import torch

    from examples.lm_corpus import gather

    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("key") == settings.key():
        return out
    torch.set_num_threads(2)
    torch.manual_seed(settings.seed)
    started = time.time()
    corpus_path = out / "corpus.json"
    if corpus_path.is_file():
        saved = json.loads(corpus_path.read_text(encoding="utf-8"))
        texts, packages = saved["texts"], saved["packages"]
    else:
        corpus = gather()
        texts = {split: corpus.text(split) for split in ("train", "calibration", "evaluation")}
        packages = {split: corpus.packages(split) for split in texts}
        tmp = corpus_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"texts": texts, "packages": packages}), encoding="utf-8")
        os.replace(tmp, corpus_path)
    tokenizer = train_tokenizer(texts["train"], settings.vocab)
    streams = {split: np.array(tokenizer.encode(text).ids, dtype=np.int32) for split, text in texts.items()}
    log: list[dict] = [{"t0": time.time()}]
    model = build_model(settings)
    train(model, streams["train"], settings, log)
    trained_s = time.time() - log[0]["t0"]
    tokenizer.save(str(out / "tokenizer.json"))
    torch.save(model.state_dict(), out / "model.pt")
    for split in ("calibration", "evaluation"):
        (out / f"{split}.txt").write_text(texts[split], encoding="utf-8")
        _write_npz(out / f"{split}.npz", windows(streams[split], settings.probe_windows, settings.context))
    export(model, out / "lm.onnx", with_cache=False)
    export(model, out / "lm-kv.onnx", with_cache=True)
    meta = {"key": settings.key(), "settings": dataclasses.asdict(settings), "log": log[1:],
            "train_s": round(trained_s, 1), "total_s": round(time.time() - started, 1),
            "tokens": {split: len(stream) for split, stream in streams.items()},
            "packages": packages,
            "load_average": os.getloadavg()}
    meta_path.write_text(json.dumps(meta, indent=1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=TrainSettings.steps)
    parser.add_argument("--out", type=Path, default=CACHE)
    args = parser.parse_args()
    folder = build(dataclasses.replace(TrainSettings(), steps=args.steps), args.out)
    meta = json.loads((folder / "meta.json").read_text())
    print(f"{folder}: trained {meta['settings']['steps']} steps in {meta['train_s']} s, "
          f"final loss {meta['log'][-1]['loss']}")


if __name__ == "__main__":
    main()
