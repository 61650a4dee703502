"""redaudit vs the `torch-cka` package (PyPI), side by side in one run, at L = 15 and L = 45.

Same residual CNN (CIFAR-style: 3 stages of L/3 basic blocks, widths 16/32/64, 32×32 inputs,
random weights with BN statistics), same inputs (n = 1,024, seeded normal), same minibatches
(64, in order), flattened residual-block outputs, unbiased HSIC averaged over the batches and
then normalised (torch-cka's aggregation; redaudit's ``aggregate="hsic"``).

1. Values: each side against a float64 reference computed here from the same IRs it used
   (onnxruntime's for redaudit, torch's for torch-cka): features centred in float64, U-centred
   Grams, pair by pair. redaudit must be within 1e-6.
2. Library: ``redaudit.scan`` (explicit taps, reduce=flatten, cka_batch=64; load, tap and session
   creation included) vs ``CKA(model, model, …).compare(loader)`` (hook set-up included), in this
   process; medians of interleaved repeats.
3. CLI end to end at L = 15: ``redaudit scan … --quiet`` vs a fresh Python process that loads the
   same weights and inputs and runs torch-cka; process start included on both sides.

Usage: python benchmarks/vs_torchcka.py [--sizes 15 45] [--repeats 3] [--cli-repeats 3] [--torch-threads N]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redaudit  # noqa: E402

CACHE = ROOT / ".bench-cache" / "vs_torchcka"
SAMPLES, BATCH, IMAGE = 1024, 64, 32

MODEL_CODE = '''
import torch
from torch import nn

class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + self.shortcut(x))

class ResidualCNN(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        layers, cin = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for index in range(blocks // 3):
                layers.append(Block(cin, width, stride if index == 0 else 1))
                cin = width
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))

def build(blocks, weights=None):
    torch.manual_seed(blocks)
    model = ResidualCNN(blocks).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    if weights is not None:
        model.load_state_dict(torch.load(weights))
    return model

def block_names(blocks):
    return [f"blocks.{i}" for i in range(blocks)]

def loader(inputs):
    from torch.utils.data import DataLoader, TensorDataset
    return DataLoader(TensorDataset(torch.from_numpy(inputs)), batch_size=%d, shuffle=False)

def torch_cka(model, blocks, inputs):
    import warnings
    from torch_cka import CKA
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "identical names", "same dataloader"
        cka = CKA(model, model, model1_layers=block_names(blocks), model2_layers=block_names(blocks),
                  device="cpu")
        with torch.no_grad():
            cka.compare(loader(inputs))
    return cka.export()["CKA"].double().numpy()
''' % BATCH

_namespace: dict = {}
exec(MODEL_CODE, _namespace)  # noqa: S102 - the same code the torch-cka subprocess runs


def prepare(blocks: int) -> tuple[Path, Path, Path, list[str]]:
    """Export the model, save its weights and the inputs; return the block-output tensor names."""
    import torch

    CACHE.mkdir(parents=True, exist_ok=True)
    onnx_path, weights, inputs_path = (CACHE / f"cnn{blocks}.onnx", CACHE / f"cnn{blocks}.pt", CACHE / "inputs.npz")
    model = _namespace["build"](blocks)
    if not onnx_path.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, torch.zeros(1, 3, IMAGE, IMAGE), str(onnx_path), input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                              opset_version=17, dynamo=False)
        torch.save(model.state_dict(), weights)
    if not inputs_path.exists():
        np.savez(inputs_path, input=np.random.default_rng(0).standard_normal((SAMPLES, 3, IMAGE, IMAGE),
                                                                             dtype=np.float32))
    graph = onnx.load(str(onnx_path)).graph
    consumers = {name: node for node in graph.node for name in node.input}
    taps = [consumers[node.output[0]].output[0] for node in graph.node
            if node.op_type == "Add" and consumers.get(node.output[0]) is not None
            and consumers[node.output[0]].op_type == "Relu"]
    assert len(taps) == blocks, (len(taps), blocks)
    return onnx_path, weights, inputs_path, taps


def _u_centred_gram(x: np.ndarray) -> np.ndarray:
    x = x.reshape(len(x), -1).astype(np.float64)
    x -= x.mean(axis=0)
    gram = x @ x.T
    n = len(gram)
    np.fill_diagonal(gram, 0.0)
    rows = gram.sum(axis=1) / (n - 2)
    gram = gram - rows[:, None] - rows[None, :] + gram.sum() / ((n - 1) * (n - 2))
    np.fill_diagonal(gram, 0.0)
    return gram


def reference(batches_of_features) -> np.ndarray:
    """Float64 CKA of batch-averaged unbiased HSIC, pair by pair (HSIC_u = ⟨K̃, L̃⟩ / (n(n−3)))."""
    total = None
    for features in batches_of_features:
        grams = [_u_centred_gram(f) for f in features]
        n = len(grams[0])
        hsic = np.array([[(a * b).sum() / (n * (n - 3)) for b in grams] for a in grams])
        total = hsic if total is None else total + hsic
    diag = np.sqrt(np.diag(total))
    return total / np.outer(diag, diag)


def ort_features(onnx_path: Path, taps: list[str], inputs: np.ndarray):
    model = onnx.load(str(onnx_path))
    for name in taps:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for start in range(0, SAMPLES, BATCH):
        yield session.run(taps, {"input": inputs[start:start + BATCH]})


def torch_features(model, blocks: int, inputs: np.ndarray):
    import torch

    captured: dict[int, np.ndarray] = {}
    hooks = [model.blocks[i].register_forward_hook(
        lambda _m, _i, out, i=i: captured.__setitem__(i, out.detach().numpy().copy())) for i in range(blocks)]
    with torch.no_grad():
        for start in range(0, SAMPLES, BATCH):
            model(torch.from_numpy(inputs[start:start + BATCH]))
            yield [captured[i] for i in range(blocks)]
    for hook in hooks:
        hook.remove()


def library_scan(onnx_path: Path, taps: list[str], inputs: np.ndarray):
    return redaudit.scan(str(onnx_path), taps=taps, reduce="flatten", cka_batch=BATCH, aggregate="hsic",
                         inputs={"input": inputs}, samples=SAMPLES, device="cpu", backend="numpy")


def compare_in_process(blocks: int, repeats: int) -> dict:
    onnx_path, weights, inputs_path, taps = prepare(blocks)
    inputs = np.load(inputs_path)["input"]
    model = _namespace["build"](blocks, weights)
    ours_s, theirs_s = [], []
    ours = theirs = None
    for _ in range(repeats):  # interleaved: drift in machine load hits both alike
        begin = time.perf_counter()
        ours = library_scan(onnx_path, taps, inputs).similarity
        ours_s.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        theirs = _namespace["torch_cka"](model, blocks, inputs)
        theirs_s.append(time.perf_counter() - begin)
    ref_ort = reference(ort_features(onnx_path, taps, inputs))
    ref_torch = reference(torch_features(model, blocks, inputs))
    return {"L": blocks, "redaudit_s": statistics.median(ours_s), "torchcka_s": statistics.median(theirs_s),
            "redaudit_runs": ours_s, "torchcka_runs": theirs_s,
            "redaudit_err": float(np.abs(ours - ref_ort).max()), "torchcka_err": float(np.abs(theirs - ref_torch).max()),
            "ort_vs_torch_ref": float(np.abs(ref_ort - ref_torch).max())}


def compare_cli(blocks: int, repeats: int, torch_threads: int) -> dict:
    onnx_path, weights, inputs_path, taps = prepare(blocks)
    ours_cmd = [str(Path(sys.executable).parent / "redaudit"), "scan", str(onnx_path), "--inputs", str(inputs_path),
                "--samples", str(SAMPLES), "--cka-batch", str(BATCH), "--reduce", "flatten", "--aggregate", "hsic",
                "--device", "cpu", "--backend", "numpy", "--quiet", *[arg for tap in taps for arg in ("--tap", tap)]]
    threads = f"torch.set_num_threads({torch_threads})\n" if torch_threads else ""
    script = MODEL_CODE + threads + (f"\nimport numpy as np\nmodel = build({blocks}, {str(weights)!r})\n"
                           f"print(torch_cka(model, {blocks}, np.load({str(inputs_path)!r})['input'])[0, 1])\n")
    theirs_cmd = [sys.executable, "-c", script]
    ours_s, theirs_s = [], []
    for _ in range(repeats):
        for command, times in ((ours_cmd, ours_s), (theirs_cmd, theirs_s)):
            begin = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, text=True)
            times.append(time.perf_counter() - begin)
    return {"L": blocks, "redaudit_cli_s": statistics.median(ours_s), "torchcka_process_s": statistics.median(theirs_s),
            "redaudit_runs": ours_s, "torchcka_runs": theirs_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[15, 45])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cli-repeats", type=int, default=3)
    parser.add_argument("--cli-size", type=int, default=15)
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="torch intra-op threads for torch-cka (0: torch's default). On an oversubscribed "
                             "machine 1 is much faster: OpenMP threads wait for each other at every barrier")
    args = parser.parse_args()
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    print(f"n = {SAMPLES}, batch {BATCH}, {IMAGE}x{IMAGE} inputs, flattened block outputs, unbiased HSIC; "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {ort.__version__}")
    rows = [compare_in_process(blocks, args.repeats) for blocks in args.sizes]
    print("| L | redaudit.scan | torch-cka compare() | speed-up | redaudit err vs f64 | torch-cka err vs f64 |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['L']} | {row['redaudit_s']:.2f} s | {row['torchcka_s']:.2f} s | "
              f"{row['torchcka_s'] / row['redaudit_s']:.1f}x | {row['redaudit_err']:.1e} | {row['torchcka_err']:.1e} |")
    print("(float64 references on onnxruntime's vs torch's IRs differ by up to "
          + ", ".join(f"{row['ort_vs_torch_ref']:.1e} at L = {row['L']}" for row in rows) + ")")
    cli = compare_cli(args.cli_size, args.cli_repeats, args.torch_threads) if args.cli_repeats else None
    if cli:
        print(f"CLI end to end, L = {cli['L']}: redaudit scan {cli['redaudit_cli_s']:.2f} s vs torch-cka process "
              f"{cli['torchcka_process_s']:.2f} s: {cli['torchcka_process_s'] / cli['redaudit_cli_s']:.1f}x")
    print(json.dumps({"in_process": rows, "cli": cli}))


if __name__ == "__main__":
    main()
