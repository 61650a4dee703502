"""Residual merges that onnxruntime's transformer optimizer fused into one node.

``onnxruntime.transformers.optimizer.optimize_model`` (and optimum's -O2/-O3) fuse
``Add(residual, sublayer) + LayerNormalization`` into ``com.microsoft.SkipLayerNormalization``
(``SkipSimplifiedLayerNormalization`` for RMSNorm): inputs ``(input, skip, gamma, [beta],
[bias])``, outputs ``(LN(input + skip + bias), [mean], [inv_std_var], [input_skip_bias_sum])``.
The residual sum is the merge; which output is the residual *stream* depends on the layout:

* post-norm (BERT): the stream is output 0, the normalised sum — the same tensor an unfused
  BERT's LayerNorm produces, which is already what the block IR is there;
* pre-norm (GPT-2, Llama): the stream is output 3, ``input_skip_bias_sum``, which the optimizer
  names only where a later node reads it. The last layer's sum is fused with the *final* norm
  and read by nothing else, so the optimizer leaves output 3 unnamed: the hidden state after the
  last layer (its IR, taken before the final norm) does not exist as a tensor.

:func:`expose_residual_sums` names every missing output 3 (``<output 0>/input_skip_bias_sum``)
before the graph is indexed, so that the sum is an ordinary tensor that taps, augmentation and
onnxruntime see; the op computes it anyway, and an output nothing reads changes no other value.
Without that step the detector still names the sum by the same rule, and a tap or prune of a
name the graph lacks is skipped or refused, never redirected to output 0 (a different tensor).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import onnx

from redaudit.core.graph import node_bodies

#: Fused ``Add + (RMS)LayerNormalization`` ops of the com.microsoft domain, all with the same
#: input and output positions.
FUSED_SKIP_NORMS = frozenset({"SkipLayerNormalization", "SkipSimplifiedLayerNormalization"})
_DOMAINS = ("com.microsoft",)
#: Positions of the two residual operands and of the un-normalised sum.
OPERANDS, SUM_OUTPUT = (0, 1), 3
SUM_SUFFIX = "/input_skip_bias_sum"
#: onnxruntime's own ops that its optimizer writes in the *ONNX* domain (contrib ops registered
#: under kOnnxDomain): an RMSNorm that reads no residual sum — a LLaMA's first norm — fuses into
#: ``SimplifiedLayerNormalization``, for which onnx's checker has no schema ("No Op registered
#: for SimplifiedLayerNormalization with domain_version of 17"), so it refused every optimized
#: RMSNorm model that onnxruntime runs.
ORT_ONNX_DOMAIN_OPS = frozenset({"SimplifiedLayerNormalization"})


def is_fused_skip_norm(node: onnx.NodeProto) -> bool:
    return node.op_type in FUSED_SKIP_NORMS and node.domain in _DOMAINS


def residual_sum(node: onnx.NodeProto) -> str:
    """Name of the fused node's ``input + skip + bias``: its output 3, or the name
    :func:`expose_residual_sums` gives it (unique by the name of output 0)."""
    if len(node.output) > SUM_OUTPUT and node.output[SUM_OUTPUT]:
        return node.output[SUM_OUTPUT]
    return f"{node.output[0]}{SUM_SUFFIX}"


def hides_sum(node: onnx.NodeProto) -> bool:
    return is_fused_skip_norm(node) and not (len(node.output) > SUM_OUTPUT and node.output[SUM_OUTPUT])


def expose_residual_sums(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every fused skip-norm's sum as a named output 3 (a copy; ``model`` itself
    when none is missing). A name already taken elsewhere in the graph is refused rather than
    shadowed: the graph would be invalid."""
    missing = [position for position, node in enumerate(model.graph.node) if hides_sum(node)]
    if not missing:
        return model
    taken = {name for node in model.graph.node for name in node.output if name}
    taken |= {value.name for value in [*model.graph.input, *model.graph.initializer]}
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    for position in missing:
        node = exposed.graph.node[position]
        name = residual_sum(node)
        if name in taken:
            continue  # the detector's name then names no sum: taps and prune skip that IR
        while len(node.output) <= SUM_OUTPUT:
            node.output.append("")
        node.output[SUM_OUTPUT] = name
        taken.add(name)
    return exposed


@contextmanager
def checkable(model: onnx.ModelProto) -> Iterator[onnx.ModelProto]:
    """``model`` as onnx's checker can check it, for the ``with`` block: each op of
    :data:`ORT_ONNX_DOMAIN_OPS` in the ONNX domain, at the top level or inside an If/Loop/Scan
    body (an optimized merged decoder is checked before its If is inlined), is put in
    ``com.microsoft``, whose ops the checker does not look up (as for
    SkipSimplifiedLayerNormalization). Only those ops' schema check is skipped; every other rule
    is checked. A copy when there are such ops (rare: an onnxruntime-optimized RMSNorm model), so
    the caller's model — its bytes, its hash — never changes, even for a moment another thread
    could see; ``model`` itself otherwise."""
    if not has_ort_onnx_domain_ops(model):
        yield model
        return
    shown = onnx.ModelProto()
    shown.CopyFrom(model)
    for node in _all_nodes(shown.graph):
        if _ort_onnx_domain_op(node):
            node.domain = _DOMAINS[0]
    if not any(entry.domain == _DOMAINS[0] for entry in shown.opset_import):
        shown.opset_import.append(onnx.helper.make_opsetid(_DOMAINS[0], 1))
    yield shown


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of the bodies of its If/Loop/Scan nodes, nested ones included."""
    for node in graph.node:
        yield node
        for body in node_bodies(node):
            yield from _all_nodes(body)


def _ort_onnx_domain_op(node: onnx.NodeProto) -> bool:
    return node.op_type in ORT_ONNX_DOMAIN_OPS and node.domain in ("", "ai.onnx")


def has_ort_onnx_domain_ops(model: onnx.ModelProto) -> bool:
    """Whether ``model`` holds an op :func:`checkable` moves for the checker, anywhere."""
    return any(_ort_onnx_domain_op(node) for node in _all_nodes(model.graph))
