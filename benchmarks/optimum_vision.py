"""Real optimum-onnx exports of tiny random-weight vision backbones and encoder-decoders, scanned
at ``block`` and ``sublayer``, compared with the plain float64 per-pair reference
(benchmarks/reference.py) and pruned by one unit. The sibling of benchmarks/optimum_exports.py
(decoder-only LMs, T5, BERT), with the same two halves in two venvs:

    PYTHONPATH=. /tmp/optvenv/bin/python -m benchmarks.optimum_vision export --out /tmp/opt-vision
    PYTHONPATH=.:tests .venv/bin/python -m benchmarks.optimum_vision compare --out /tmp/opt-vision

Vision (``image-classification``, 32 px, 64 for MobileViT; ``pixel_values`` uniform in [-1, 1]):
ViT, DeiT, DINOv2 (layer scale 0.1): 3 layers, hidden 64; Swin (patch 2, embed 16, depths 2+2,
window 4); ConvNeXt (2 stages of 2, layer scale 0.1); HF ResNet basic and bottleneck (2 stages of
2); RegNet; MobileViT (3 conv residual blocks, 9 transformer layers); EfficientNet (width/depth
0.25: every stage one block that changes width, so no residual block: ``layer`` fallback is right).
Optimum 0.1.0 loads a preprocessor for DINOv2/DeiT sizes (needs PIL): bypassed, the config's
image size is used. Encoder-decoders (``text2text-generation-with-past`` /
``automatic-speech-recognition-with-past``; 2+2 layers, d_model 64): BART, mBART, Marian, Whisper
(16 mel bins, 3000 frames: optimum's dummy input length), each as encoder_model, decoder_model,
decoder_with_past_model and decoder_model_merged (scanned against decoder_model's tensors).

Measured (64 samples, CKA batch 16, CPU; optimum-onnx 0.1.0, transformers 4.57.6, torch 2.13):
every scan within 1.1e-15 of the reference; IRs = stem + one per residual block / transformer
layer at ``block`` (two per layer in encoders, three in decoders at ``sublayer``) for all; see
docs/taps.md for the table. MobileViT used to keep 4 of 13 (transformer layers run on
(N·P, tokens, C) were dropped as having no batch axis; tests/test_folded_batch.py).
The random-init MobileViT and EfficientNet give all-zero logits, so their prune output check is
vacuous (0.0).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

SAMPLES, CKA_BATCH = 64, 16


def _configs():
    import transformers as T

    img = {"image_size": 32, "num_channels": 3, "num_labels": 10}
    vit = {"patch_size": 8, "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4, **img}
    seq = {"vocab_size": 128, "d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
           "decoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128}
    cls, s2s = T.AutoModelForImageClassification, T.AutoModelForSeq2SeqLM
    images, text = "image-classification", "text2text-generation-with-past"
    return {
        "vit": (T.ViTConfig(intermediate_size=128, **vit), cls, images),
        "deit": (T.DeiTConfig(intermediate_size=128, **vit), T.DeiTForImageClassification, images),
        "dinov2": (T.Dinov2Config(mlp_ratio=2, layerscale_value=0.1, **vit), cls, images),
        "swin": (T.SwinConfig(patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4, **img),
                 cls, images),
        "convnext": (T.ConvNextConfig(num_stages=2, hidden_sizes=[16, 32], depths=[2, 2], layer_scale_init_value=0.1,
                                      num_labels=10, image_size=32), cls, images),
        "resnet": (T.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[2, 2], layer_type="basic",
                                  num_labels=10), cls, images),
        "resnet_bottleneck": (T.ResNetConfig(embedding_size=16, hidden_sizes=[32, 64], depths=[2, 2],
                                             layer_type="bottleneck", num_labels=10), cls, images),
        "regnet": (T.RegNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[2, 2], groups_width=8,
                                  num_labels=10), cls, images),
        "mobilevit": (T.MobileViTConfig(image_size=64, hidden_sizes=[32, 48, 64],
                                        neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64], num_labels=10), cls, images),
        "efficientnet": (T.EfficientNetConfig(image_size=32, width_coefficient=0.25, depth_coefficient=0.25,
                                              hidden_dim=320, num_labels=10), cls, images),
        "bart": (T.BartConfig(max_position_embeddings=64, **seq), s2s, text),
        "mbart": (T.MBartConfig(max_position_embeddings=64, **seq), s2s, text),
        "marian": (T.MarianConfig(max_position_embeddings=64, pad_token_id=127, decoder_start_token_id=127, **seq),
                   s2s, text),
        "whisper": (T.WhisperConfig(num_mel_bins=16, max_source_positions=1500, max_target_positions=64,
                                    pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                                    begin_suppress_tokens=None, suppress_tokens=None, **seq),
                    T.AutoModelForSpeechSeq2Seq, "automatic-speech-recognition-with-past"),
    }


def export(out: Path, only: list[str] | None) -> None:
    import optimum.exporters.onnx.convert as convert
    import optimum.utils.save_utils as save_utils
    import torch
    from optimum.exporters.onnx import main_export

    save_utils.maybe_load_preprocessors = lambda *args, **kwargs: [None]  # no PIL: the config's image size
    convert.maybe_save_preprocessors = lambda *args, **kwargs: None
    for arch, (config, auto, task) in _configs().items():
        if only and arch not in only:
            continue
        torch.manual_seed(0)
        folder = out / "models" / arch
        model = (auto(config) if arch == "deit" else auto.from_config(config)).eval()
        model.save_pretrained(folder)
        main_export(model_name_or_path=str(folder), output=out / arch, task=task)


def _inputs(arch: str, name: str) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(0).integers(3, 128, (SAMPLES, 12)).astype(np.int64)
    if name == "model.onnx":
        size = 64 if arch == "mobilevit" else 32
        return {"pixel_values": np.random.default_rng(0).uniform(-1, 1, (SAMPLES, 3, size, size)).astype(np.float32)}
    if name == "encoder_model.onnx":
        if arch == "whisper":
            return {"input_features": np.random.default_rng(0).standard_normal((SAMPLES, 16, 3000)).astype(np.float32)}
        return {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    inputs = {"input_ids": ids,
              "encoder_hidden_states": np.random.default_rng(1).standard_normal((SAMPLES, 12, 64)).astype(np.float32)}
    if arch != "whisper":
        inputs["encoder_attention_mask"] = np.ones((SAMPLES, 12), np.int64)
    return inputs


def _full(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from benchmarks.optimum_exports import _feed

    return _feed(path, inputs.get("input_ids", np.zeros((len(next(iter(inputs.values()))), 1), np.int64)),
                 extra=inputs)


def scan_row(name: str, path: Path, inputs: dict[str, np.ndarray], level: str, reference: Path | None = None) -> dict:
    import onnx

    import redaudit
    from benchmarks.real_models import reference_features
    from benchmarks.reference import reference_matrix

    result = redaudit.scan(str(path), inputs=inputs, samples=SAMPLES, cka_batch=CKA_BATCH, level=level,
                           device="cpu", backend="numpy")
    source = reference or path
    model = onnx.load(str(source))
    row = {"export": name, "level": result.config.level, "layers": len(result.layers),
           "units": [layer.unit for layer in result.layers], "msrs": result.msrs, "warnings": list(result.warnings)}
    features = reference_features(model, result, _full(source, inputs), 64)
    matrix = reference_matrix(features, CKA_BATCH)
    both_nan = np.isnan(matrix) & np.isnan(result.similarity)
    row["max_abs_diff"] = float(np.nanmax(np.where(both_nan, 0.0, np.abs(result.similarity - matrix))))
    return row


def prune_row(name: str, path: Path, inputs: dict[str, np.ndarray], out: Path) -> dict:
    from benchmarks.optimum_exports import _session
    from redaudit.prune import prune_model

    target = out / "pruned" / (name.replace("/", "_") + ".onnx")
    target.parent.mkdir(parents=True, exist_ok=True)
    pruned = prune_model(str(path), remove=1, output=str(target), force=True, inputs=inputs, samples=SAMPLES,
                         latency=False, measure_msrs=False, device="cpu")

    def first_output(file: Path) -> np.ndarray:
        session = _session(file)
        return session.run([session.get_outputs()[0].name], _full(file, {k: v[:8] for k, v in inputs.items()}))[0]

    return {"export": name, "prune": pruned.removed,
            "max_output_change": float(np.abs(first_output(path) - first_output(target)).max())}


def compare(out: Path, only: list[str] | None) -> None:
    rows = []
    for arch in _configs_names():
        if only and arch not in only:
            continue
        for path in sorted((out / arch).glob("*.onnx")):
            inputs = _inputs(arch, path.name)
            twin = out / arch / "decoder_model.onnx" if path.name == "decoder_model_merged.onnx" else None
            for level in ("block", "sublayer"):
                rows.append(scan_row(f"{arch}/{path.name}", path, inputs, level, twin))
                print(json.dumps(rows[-1], default=str), flush=True)
            if path.name != "decoder_with_past_model.onnx":  # its past inputs: see optimum_exports
                print(json.dumps(prune_row(f"{arch}/{path.name}", path, inputs, out), default=str), flush=True)
    worst = max((row["max_abs_diff"] for row in rows), default=float("nan"))
    print(f"{len(rows)} scans; largest |scan - reference| = {worst:.2e}")


def _configs_names() -> list[str]:
    return ["vit", "deit", "dinov2", "swin", "convnext", "resnet", "resnet_bottleneck", "regnet", "mobilevit",
            "efficientnet", "bart", "mbart", "marian", "whisper"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("export", "compare"))
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "opt-vision")
    parser.add_argument("--only", nargs="*", default=None, help="architectures (default: all)")
    args = parser.parse_args()
    if args.step == "export":
        export(args.out, args.only)
    else:
        compare(args.out, args.only)


if __name__ == "__main__":
    sys.exit(main())
