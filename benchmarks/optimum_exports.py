"""Real optimum-onnx exports of tiny random-weight models, scanned, compared with a plain float64
per-pair reference (benchmarks/reference.py) and pruned.

Two halves in two virtual environments (optimum-onnx 0.1.0 pins transformers<4.58, redaudit's own
venv has transformers 5): ``export`` runs in the exporter's venv, ``compare`` in redaudit's.
Nothing is downloaded: each model is built from a transformers config with random weights
(seed 0), saved with ``save_pretrained`` and exported from that folder.

    python3.11 -m venv /tmp/optvenv
    /tmp/optvenv/bin/pip install torch==2.13.0      # the CPU wheel; a looser pin pulls CUDA
    /tmp/optvenv/bin/pip install 'transformers<4.58' 'optimum-onnx[onnxruntime]'
    # measured with: optimum-onnx 0.1.0, optimum 2.1.0, transformers 4.57.6, torch 2.13.0+cpu,
    # onnx 1.23.2, onnxruntime 1.32.0 (the exporter: torch.onnx's TorchScript path, opset 18)
    PYTHONPATH=. /tmp/optvenv/bin/python -m benchmarks.optimum_exports export --out /tmp/opt-exports
    PYTHONPATH=.:tests .venv/bin/python -m benchmarks.optimum_exports compare --out /tmp/opt-exports

Layouts per decoder (Llama, Qwen2, Mistral, Phi-3, GPT-2; 3 layers, hidden 64, vocab 128):

- ``single/model.onnx``: ``main_export(task="text-generation-with-past")``, optimum-onnx's only
  decoder layout (one file, past inputs, present outputs);
- ``nopast/model.onnx``: ``main_export(task="text-generation")`` (no cache in or out);
- ``split/decoder_model.onnx`` + ``split/decoder_with_past_model.onnx``: the legacy split pair,
  which optimum-onnx 0.1.0 no longer offers for decoder-only models (no ``legacy`` option):
  exported here with optimum's own ``export_models`` and the architecture's own ONNX config at
  ``use_past=True, use_past_in_inputs=False`` / ``True``, as optimum 1.x's ``legacy=True`` did;
- ``split/decoder_model_merged.onnx``: ``optimum.onnx.merge_decoders`` on that pair (what the
  exporter itself still does for encoder-decoder models, and what Hub/transformers.js files are).

More decoders, ``single/model.onnx`` only (``MORE_DECODERS``: OPT, BLOOM, Falcon, GPT-J, GPT-NeoX,
GPT-Neo, CodeGen, GPT-BigCode, Phi, Gemma, Gemma 2, Gemma 3 text, StableLM, Granite, OLMo, OLMo 2,
SmolLM3, Qwen3, MPT, Cohere, Helium, Nemotron, GLM; 3 layers, hidden 64, vocab 128): scanned at
both levels and pruned by one layer. Measured: all export; embedding + 3 layers at ``block``;
7 IRs at ``sublayer`` (4 for the parallel Falcon, GPT-J, GPT-NeoX, CodeGen, Phi and Cohere);
largest |scan − reference| 7.8e-16; every pruned file loads with its pasts/presents renumbered
0-1. OPT (MLP on a flattened view of the stream) and Cohere (``(x + attn) + mlp``) found 6
layers before the fixes in ``redaudit.core.blocks`` / ``redaudit.core.parallel_layers``.

Also: T5 (``text2text-generation-with-past``: the exporter merges its decoder by itself),
BERT (``feature-extraction``) and BERT through ``ORTOptimizer`` at ``OptimizationConfig(2)``.

``compare`` prints one JSON line per (export, level): layers, |scan − reference| (reference: the
raw IRs of a plain onnxruntime session of the export itself, or for a merged decoder of its
with-past twin ``decoder_with_past_model.onnx``, whose tensor names the branch keeps), MSRS, and
for a merged decoder the largest difference from the single and with-past exports' matrices;
then one line per pruned export (one block removed by Block Influence, ``force``): whether the
file loads, the logits' largest difference from the unpruned model, and for the merged decoder
the difference from the pruned with-past twin (the same block removed: expected equal).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

DECODERS = ("llama", "qwen2", "mistral", "phi3", "gpt2")
# exported in the one layout optimum-onnx 0.1.0 offers (single/model.onnx, text-generation-with-past)
MORE_DECODERS = ("opt", "bloom", "falcon", "gptj", "gpt_neox", "gpt_neo", "codegen", "gpt_bigcode", "phi",
                 "gemma", "gemma2", "gemma3_text", "stablelm", "granite", "olmo", "olmo2", "smollm3", "qwen3",
                 "mpt", "cohere", "helium", "nemotron", "glm")
SEQUENCE = 16


# --------------------------------------------------------------------------- export (optimum venv)

def _configs():
    import transformers as T

    common = {"vocab_size": 128, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
              "num_attention_heads": 4, "max_position_embeddings": 256}
    return {
        "llama": (T.LlamaConfig(num_key_value_heads=2, **common), T.AutoModelForCausalLM),
        "qwen2": (T.Qwen2Config(num_key_value_heads=2, **common), T.AutoModelForCausalLM),
        "mistral": (T.MistralConfig(num_key_value_heads=2, sliding_window=None, **common), T.AutoModelForCausalLM),
        "phi3": (T.Phi3Config(num_key_value_heads=4, pad_token_id=0, **common), T.AutoModelForCausalLM),
        "gpt2": (T.GPT2Config(vocab_size=128, n_embd=64, n_layer=3, n_head=4, n_positions=256),
                 T.AutoModelForCausalLM),
        **_more_configs(T, common),
        "t5": (T.T5Config(vocab_size=128, d_model=64, d_kv=16, d_ff=128, num_layers=3, num_heads=4,
                          decoder_start_token_id=0), T.AutoModelForSeq2SeqLM),
        "bert": (T.BertConfig(vocab_size=128, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                              intermediate_size=128, max_position_embeddings=128), T.AutoModel),
    }


def _more_configs(T, common: dict) -> dict:
    """The single-layout decoders: 3 layers, hidden 64, vocab 128, token ids inside the vocabulary."""
    tokens = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    gqa = {**common, **tokens, "num_key_value_heads": 2}
    gpt = {"vocab_size": 128, "n_embd": 64, "n_layer": 3, "n_head": 4, "n_positions": 256, "bos_token_id": 1,
           "eos_token_id": 2}
    configs = {
        "opt": T.OPTConfig(vocab_size=128, hidden_size=64, num_hidden_layers=3, ffn_dim=128, num_attention_heads=4,
                           max_position_embeddings=256, word_embed_proj_dim=64, **tokens),
        "bloom": T.BloomConfig(vocab_size=128, hidden_size=64, n_layer=3, n_head=4, **tokens),
        "falcon": T.FalconConfig(vocab_size=128, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                 parallel_attn=True, multi_query=True, new_decoder_architecture=False, alibi=False,
                                 bias=False, bos_token_id=1, eos_token_id=2),
        "gptj": T.GPTJConfig(rotary_dim=8, **gpt),
        "gpt_neox": T.GPTNeoXConfig(**common, **tokens, use_parallel_residual=True),
        "gpt_neo": T.GPTNeoConfig(vocab_size=128, hidden_size=64, num_layers=3, num_heads=4, intermediate_size=128,
                                  attention_types=[[["global", "local"], 1], [["global"], 1]], window_size=8,
                                  max_position_embeddings=256, bos_token_id=1, eos_token_id=2),
        "codegen": T.CodeGenConfig(rotary_dim=8, n_ctx=256, **gpt),
        "gpt_bigcode": T.GPTBigCodeConfig(multi_query=True, **gpt),
        "phi": T.PhiConfig(**common, **tokens),
        "gemma": T.GemmaConfig(head_dim=16, **gqa),
        "gemma2": T.Gemma2Config(head_dim=16, sliding_window=8, **gqa),
        "gemma3_text": T.Gemma3TextConfig(head_dim=16, sliding_window=8, sliding_window_pattern=2, **gqa),
        "stablelm": T.StableLmConfig(**gqa),
        "granite": T.GraniteConfig(**gqa),
        "olmo": T.OlmoConfig(**common, **tokens),
        "olmo2": T.Olmo2Config(**gqa),
        "smollm3": T.SmolLM3Config(**gqa),
        "qwen3": T.Qwen3Config(head_dim=16, **gqa),
        "mpt": T.MptConfig(d_model=64, n_heads=4, n_layers=3, vocab_size=128, max_seq_len=256, **tokens),
        "cohere": T.CohereConfig(**gqa),
        "helium": T.HeliumConfig(head_dim=16, **gqa),
        "nemotron": T.NemotronConfig(head_dim=16, **gqa),
        "glm": T.GlmConfig(head_dim=16, **gqa),
    }
    return {arch: (config, T.AutoModelForCausalLM) for arch, config in configs.items()}


def export(out: Path, only: list[str] | None) -> None:
    import torch
    from optimum.exporters.onnx import main_export
    from optimum.exporters.onnx.convert import export_models
    from optimum.exporters.tasks import TasksManager
    from optimum.onnx import merge_decoders

    for arch, (config, auto) in _configs().items():
        if only and arch not in only:
            continue
        if arch in MORE_DECODERS:
            try:
                _export_one(out, arch, config, auto, torch, main_export)
            except Exception as error:  # noqa: BLE001 - one failed architecture is a result, not the end
                print(f"{arch}: export failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            continue
        torch.manual_seed(0)
        folder = out / "models" / arch
        model = auto.from_config(config).eval()
        model.save_pretrained(folder)
        if arch == "bert":
            main_export(model_name_or_path=str(folder), output=out / arch / "single", task="feature-extraction")
            from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTOptimizer
            from optimum.onnxruntime.configuration import OptimizationConfig

            optimizer = ORTOptimizer.from_pretrained(ORTModelForFeatureExtraction.from_pretrained(out / arch / "single"))
            optimizer.optimize(OptimizationConfig(optimization_level=2), save_dir=out / arch / "o2")
            continue
        if arch == "t5":
            main_export(model_name_or_path=str(folder), output=out / arch / "merged",
                        task="text2text-generation-with-past")
            continue
        main_export(model_name_or_path=str(folder), output=out / arch / "single", task="text-generation-with-past")
        if arch in MORE_DECODERS:
            continue
        main_export(model_name_or_path=str(folder), output=out / arch / "nopast", task="text-generation")
        split = out / arch / "split"
        split.mkdir(parents=True, exist_ok=True)
        constructor = TasksManager.get_exporter_config_constructor(
            exporter="onnx", model=model, task="text-generation-with-past", library_name="transformers")
        export_models({"decoder_model": (model, constructor(model.config, task="text-generation", use_past=True,
                                                              use_past_in_inputs=False)),
                       "decoder_with_past_model": (model, constructor(model.config, task="text-generation",
                                                                       use_past=True, use_past_in_inputs=True))},
                      split, output_names=["decoder_model.onnx", "decoder_with_past_model.onnx"])
        merge_decoders(split / "decoder_model.onnx", split / "decoder_with_past_model.onnx",
                       save_path=split / "decoder_model_merged.onnx", strict=False)


def _export_one(out: Path, arch: str, config, auto, torch, main_export) -> None:
    torch.manual_seed(0)
    folder = out / "models" / arch
    auto.from_config(config).eval().save_pretrained(folder)
    main_export(model_name_or_path=str(folder), output=out / arch / "single", task="text-generation-with-past")


# --------------------------------------------------------------------------- compare (redaudit venv)

def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _feed(path: Path, ids: np.ndarray, use_cache_branch: bool = True,
          extra: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Every input of ``path``: ``ids``, a full mask, positions 0..T-1, an empty past, ``extra``."""
    count, length = ids.shape
    feed = {}
    for item in _session(path).get_inputs():
        if extra and item.name in extra:
            feed[item.name] = extra[item.name][:count]
        elif item.name == "input_ids":
            feed[item.name] = ids
        elif item.name == "attention_mask":
            feed[item.name] = np.ones_like(ids)
        elif item.name == "position_ids":
            feed[item.name] = np.broadcast_to(np.arange(length, dtype=np.int64), ids.shape).copy()
        elif item.name == "token_type_ids":
            feed[item.name] = np.zeros_like(ids)
        elif item.name == "use_cache_branch":
            feed[item.name] = np.array([use_cache_branch])
        elif item.name.startswith("past_key_values"):
            dims = [count if position == 0 else 0 if isinstance(d, str) else d for position, d in enumerate(item.shape)]
            feed[item.name] = np.zeros(dims, np.float32)
        else:
            raise ValueError(f"{path}: no rule for input {item.name!r} {item.shape}")
    return feed


def _logits(path: Path, ids: np.ndarray) -> np.ndarray:
    session = _session(path)
    feed = _feed(path, ids)
    return session.run([session.get_outputs()[0].name], feed)[0]


def scan_row(name: str, path: Path, ids: np.ndarray, level: str, args, reference_path: Path | None = None,
             extra: dict[str, np.ndarray] | None = None):
    """The scan of ``path`` against the float64 reference of ``reference_path`` (default: itself)."""
    import onnx

    import redaudit
    from benchmarks.real_models import reference_features
    from benchmarks.reference import reference_matrix

    result = redaudit.scan(str(path), inputs={"input_ids": ids, **(extra or {})}, samples=len(ids), cka_batch=args.cka_batch,
                           level=level, device="cpu", backend="numpy")
    source = reference_path or path
    model = onnx.load(str(source))
    missing = [layer for layer in result.layer_names if layer not in
               {o for node in model.graph.node for o in node.output} | {i.name for i in model.graph.input}]
    row = {"export": name, "level": result.config.level, "layers": len(result.layers),
           "units": sorted({layer.unit for layer in result.layers if getattr(layer, "unit", None)}),
           "msrs": result.msrs, "warnings": list(result.warnings)}
    if missing:
        row["reference"] = f"tap names missing from {source.name}: {missing}"
        return row, result
    features = reference_features(model, result, _feed(source, ids, extra=extra), 64)
    reference = reference_matrix(features, args.cka_batch)
    both_nan = np.isnan(reference) & np.isnan(result.similarity)
    row["max_abs_diff"] = float(np.nanmax(np.where(both_nan, 0.0, np.abs(result.similarity - reference))))
    if reference_path is not None:
        row["reference"] = source.name
    return row, result


def prune_row(name: str, path: Path, ids: np.ndarray, out: Path, args, blocks=None) -> dict:
    from redaudit.prune import prune_model

    target = out / "pruned" / (name.replace("/", "_") + ".onnx")
    target.parent.mkdir(parents=True, exist_ok=True)
    pruned = prune_model(str(path), remove=None if blocks else 1, blocks=blocks, output=str(target), force=True,
                         inputs={"input_ids": ids}, samples=len(ids), latency=False, measure_msrs=False,
                         device="cpu")
    row = {"export": name, "prune": pruned.removed,
           "cosine": {a.name: round(a.cosine_mean, 6) for a in pruned.agreement if a.name == "logits"}}
    before, after = _logits(path, ids[:8]), _logits(target, ids[:8])
    row["loads"] = True
    row["inputs_after"] = [item.name for item in _session(target).get_inputs()]
    row["max_logit_change"] = float(np.abs(before - after).max())
    row["outputs_after"] = [item.name for item in _session(target).get_outputs()]
    return row


def compare(out: Path, only: list[str] | None, args) -> None:
    ids = np.random.default_rng(0).integers(0, 128, (args.samples, SEQUENCE)).astype(np.int64)
    rows = []

    def emit(row):
        rows.append(row)
        print(json.dumps(row, default=str), flush=True)

    for arch in DECODERS:
        if only and arch not in only:
            continue
        base = out / arch
        files = {"single": base / "single/model.onnx", "nopast": base / "nopast/model.onnx",
                 "decoder": base / "split/decoder_model.onnx",
                 "with_past": base / "split/decoder_with_past_model.onnx",
                 "merged": base / "split/decoder_model_merged.onnx"}
        for level in ("block", "sublayer"):
            matrices = {}
            for key, path in files.items():
                row, result = scan_row(f"{arch}/{key}", path, ids, level, args,
                                       files["with_past"] if key == "merged" else None)
                matrices[key] = result.similarity
                if key == "merged":
                    for other in ("single", "with_past", "nopast"):
                        if matrices[other].shape == result.similarity.shape:
                            row[f"vs_{other}"] = float(np.nanmax(np.abs(result.similarity - matrices[other])))
                emit(row)
        merged = files["merged"]
        with_cache = _session(merged).run(["logits"], _feed(merged, ids[:8], True))[0]
        without = _session(merged).run(["logits"], _feed(merged, ids[:8], False))[0]
        emit({"export": f"{arch}/merged", "logits_then_vs_else_branch": float(np.abs(with_cache - without).max()),
              "logits_merged_vs_single": float(np.abs(with_cache - _logits(files["single"], ids[:8])).max())})
        twin = prune_row(f"{arch}/with_past", files["with_past"], ids, out, args)
        emit(twin)
        row = prune_row(f"{arch}/merged", merged, ids, out, args, blocks=twin["prune"])
        row["vs_pruned_with_past"] = float(np.abs(_logits(out / "pruned" / f"{arch}_merged.onnx", ids[:8])
                                                  - _logits(out / "pruned" / f"{arch}_with_past.onnx", ids[:8])).max())
        emit(row)
        emit(prune_row(f"{arch}/single", files["single"], ids, out, args))
    for arch in MORE_DECODERS:
        if only and arch not in only:
            continue
        single = out / arch / "single/model.onnx"
        for level in ("block", "sublayer"):
            try:
                emit(scan_row(f"{arch}/single", single, ids, level, args)[0])
            except Exception as error:  # noqa: BLE001 - a refused model is a result
                emit({"export": f"{arch}/single", "level": level, "error": f"{type(error).__name__}: {error}"})
        try:
            emit(prune_row(f"{arch}/single", single, ids, out, args))
        except Exception as error:  # noqa: BLE001
            emit({"export": f"{arch}/single", "prune_error": f"{type(error).__name__}: {error}"})
    if not only or "t5" in only:
        t5 = out / "t5" / "merged"
        rng = np.random.default_rng(1)
        extra = {"encoder_hidden_states": rng.standard_normal((args.samples, 12, 64)).astype(np.float32),
                 "encoder_attention_mask": np.ones((args.samples, 12), np.int64)}
        for level in ("block", "sublayer"):
            row, _ = scan_row("t5/encoder", t5 / "encoder_model.onnx", ids, level, args)
            emit(row)
            row, plain = scan_row("t5/decoder", t5 / "decoder_model.onnx", ids, level, args, extra=extra)
            emit(row)
            row, merged = scan_row("t5/merged", t5 / "decoder_model_merged.onnx", ids, level, args,
                                   t5 / "decoder_model.onnx", extra=extra)
            row["vs_decoder"] = float(np.nanmax(np.abs(merged.similarity - plain.similarity)))
            emit(row)
    for key, path in (("bert/single", out / "bert/single/model.onnx"), ("bert/o2", out / "bert/o2/model_optimized.onnx")):
        if only and "bert" not in only:
            continue
        for level in ("block", "sublayer"):
            emit(scan_row(key, path, ids, level, args)[0])
        emit(prune_row(key, path, ids, out, args))
    worst = max((row.get("max_abs_diff", 0.0) for row in rows), default=float("nan"))
    print(f"{sum('max_abs_diff' in row for row in rows)} scans; largest |scan - reference| = {worst:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("export", "compare"))
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "opt-exports")
    parser.add_argument("--only", nargs="*", default=None, help="architectures (default: all)")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--cka-batch", type=int, default=16)
    args = parser.parse_args()
    if args.step == "export":
        export(args.out, args.only)
    else:
        compare(args.out, args.only, args)


if __name__ == "__main__":
    sys.exit(main())
