"""Units: what one IR stands for — a transformer layer, its residual halves, or a residual block.

Built on the one block detector (:mod:`redaudit.core.blocks`). A transformer layer is the run of
consecutive residual merges on the stream that it is made of: the attention merge
``h = x + attn(x)``, in an encoder-decoder's decoder (T5, BART, Whisper...) a cross-attention merge
``h' = h + xattn(h, memory)`` that starts from it, and the feed-forward merge
``y = h' + mlp(h')`` that ends it; its IR is the hidden state after the layer (ShortGPT's unit,
``output_hidden_states`` in Hugging Face terms). The halves are the ``sublayer`` granularity
(FinerCut's unit): two per layer, three in a decoder with cross-attention. Scan taps these units and prune removes them, under the same
names, so the layer a report calls redundant is the layer prune offers.

Layouts met on real exports, and how they are handled:

* **Pre-norm** (Llama, Mistral, Qwen, GPT-2): the residual stream is the raw Add output; the norm
  sits at the start of each branch. The last layer's IR is its Add, *before* the final norm, so
  that removing the last layer leaves the final norm in place. Exporters may put a
  value-preserving op on the stream (Llama's RMSNorm ``.to(float32)`` of a float32 tensor
  becomes a Cast that every later reader of the stream reads): entries are taken before such
  ops (:func:`stream_source`), so consecutive units chain (one's entry is the previous exit).
* **A half on a flattened view** (OPT's MLP runs on (batch·sequence, hidden)): the half spans the
  flattening Reshape and the one restoring the stream's shape (:mod:`redaudit.core.blocks`).
* **Parallel attention + MLP** (GPT-NeoX, Phi, Cohere): ``y = x + attn(ln(x)) + mlp(ln(x))`` is
  exported as two Adds, ``a = attn + mlp`` (no identity skip) and ``y = a + x``, or
  ``(x + attn) + mlp`` (:mod:`redaudit.core.parallel_layers`). The inner Add is part of
  the layer's branch: the layer is one merge, and its two halves cannot be separated as stream
  tensors, so at ``sublayer`` level such a layer is one IR (role ``attention+mlp``).
* **Post-norm** (BERT, ``nn.TransformerEncoderLayer``): each merge's IR is taken after its
  LayerNorm (:func:`~redaudit.core.blocks.chain_end`), which is the next half's input.
* **Cross-attention** (T5's ``layer.1``, BART's ``encoder_attn``): an attention half whose
  queries come from the stream and whose keys/values do not — they are projected from
  ``encoder_hidden_states`` or read from ``past_key_values.N.encoder.*``
  (:func:`~redaudit.core.cross_attention.attends_to_memory`). It joins the layer whose self-attention it follows, so the MLP
  after it ends that layer; one that follows a complete layer (Flamingo's gated cross-attention
  blocks) starts a layer of its own.

A layer is a *decoder* layer when the model's attention is causal (a causal mask built in the
graph, or a key/value cache among the inputs/outputs: :mod:`redaudit.core.causal_attention`),
an *encoder* layer otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx

from redaudit.core.blocks import ResidualMerge, find_residual_merges
from redaudit.core.causal_attention import is_causal
from redaudit.core.cross_attention import attends_to_memory, data_computed
from redaudit.core.graph import GraphIndex
from redaudit.core.kv_layout import STACKING_OPS
from redaudit.core.parallel_layers import absorb_parallel

#: What one IR is at each level (the report names it).
ROLE_ATTENTION, ROLE_MLP, ROLE_PARALLEL, ROLE_RESIDUAL = "attention", "mlp", "attention+mlp", "residual"
ROLE_CROSS = "cross-attention"
_ATTENDING = (ROLE_ATTENTION, ROLE_CROSS)


@dataclass(frozen=True)
class Sublayer:
    """One residual half: ``entry`` is the stream tensor it reads (before value-preserving ops),
    ``exit`` its IR; ``role`` is attention, cross-attention, mlp, attention+mlp (parallel layouts)
    or residual."""

    merge: ResidualMerge
    entry: str
    exit: str
    role: str

    @property
    def removable(self) -> bool:
        return self.merge.identity_skip


@dataclass(frozen=True)
class Unit:
    """One transformer layer (or one residual block in a network without attention):
    ``entry`` → ``exit`` is the span of its sublayers; ``exit`` is its IR and its name."""

    entry: str
    exit: str
    sublayers: tuple[Sublayer, ...]
    #: A key/value-cache export's graph inputs read only inside this layer (``past_key_values.N.*``,
    #: the legacy stacked ``past_N``) and graph outputs computed inside it (``present.N.*``,
    #: ``present_N``): they go when the layer goes.
    cache_inputs: tuple[str, ...] = ()
    cache_outputs: tuple[str, ...] = ()

    @property
    def anchor(self) -> int:
        """Graph position of the node whose output the unit ends at (for ordering)."""
        return self.sublayers[-1].merge.add_position

    @property
    def removable(self) -> bool:
        """Removing it leaves ``exit = entry``: every half has an identity skip."""
        return all(sublayer.removable for sublayer in self.sublayers)

    @property
    def is_transformer_layer(self) -> bool:
        return _is_layer(self.sublayers)


@dataclass(frozen=True)
class UnitLayout:
    """The units of a model. ``kind`` names a unit ("decoder layer", "encoder layer",
    "residual block"; "" when there is none); ``norm`` is "pre" or "post" for transformers;
    ``stem`` is the stream tensor before the first unit (the embedding, for a language model)."""

    kind: str
    norm: str | None
    parallel: bool
    stem: str | None
    units: tuple[Unit, ...]

    @property
    def sublayers(self) -> list[Sublayer]:
        return [sublayer for unit in self.units for sublayer in unit.sublayers]

    @property
    def transformer(self) -> bool:
        return self.kind in ("decoder layer", "encoder layer")


def _value_preserving(index: GraphIndex, node: onnx.NodeProto) -> bool:
    """Identity, a Cast to the type the input already has, or an inference Dropout."""
    data = [name for name in node.input if name and name not in index.constants]
    if len(data) != 1 or len([name for name in node.output if name]) != 1:
        return False
    if node.op_type in ("Identity", "Dropout"):
        return True
    if node.op_type == "Cast":
        source = index.types.get(data[0])
        target = next((attr.i for attr in node.attribute if attr.name == "to"), None)
        return source is not None and source.elem_type == target
    return False


def stream_source(index: GraphIndex, tensor: str) -> str:
    """``tensor`` traced back through value-preserving ops to the tensor that holds the same values."""
    seen = 0
    while seen < 8:
        node = index.node_of(tensor)
        if node is None or not _value_preserving(index, node):
            return tensor
        tensor = next(name for name in node.input if name and name not in index.constants)
        seen += 1
    return tensor


def _sublayers(index: GraphIndex, merges: list[ResidualMerge], parallel: set[str]) -> list[Sublayer]:
    found: list[Sublayer] = []
    computed: set[str] | None = None  # what graph inputs' data compute: built once, when first needed
    for merge in merges:
        attention = merge.has_attention(index)
        if merge.add in parallel and attention:
            role = ROLE_PARALLEL
        elif attention:
            computed = data_computed(index) if computed is None else computed
            role = ROLE_CROSS if attends_to_memory(index, merge, computed) else ROLE_ATTENTION
        elif found and found[-1].role in (*_ATTENDING, ROLE_MLP):
            role = ROLE_MLP
        else:
            role = ROLE_RESIDUAL
        found.append(Sublayer(merge, stream_source(index, merge.entry), merge.exit, role))
    return found


def _through_stream_only(index: GraphIndex, earlier: Sublayer, following: Sublayer) -> bool:
    """Whether ``following`` reads nothing the ``earlier`` half computed but its output: the halves
    of a layer talk through the residual stream alone. (A block that re-uses the attention
    probabilities of the block before it is a block of its own, not that layer's MLP.)"""
    inner = {name for position in earlier.merge.branch_nodes for name in index.nodes[position].output
             if name and (kind := index.types.get(name)) is not None and kind.is_float}
    inner -= {earlier.merge.add, earlier.exit}
    return not any(name in inner for position in following.merge.branch_nodes
                   for name in index.nodes[position].input)


def _joins(index: GraphIndex, layer: list[Sublayer], sublayer: Sublayer) -> bool:
    """Whether ``sublayer`` continues ``layer``: a layer is an attention half, then any
    cross-attention halves, then at most one feed-forward half, each starting from the previous
    one's IR and reading nothing the earlier halves computed but the stream."""
    if layer[-1].role not in _ATTENDING or layer[0].role not in _ATTENDING:
        return False  # the layer is complete (its MLP), or not a transformer layer
    if sublayer.role not in (ROLE_CROSS, ROLE_MLP) or sublayer.entry != layer[-1].exit:
        return False
    return all(_through_stream_only(index, earlier, sublayer) for earlier in layer)


def _group(index: GraphIndex, sublayers: list[Sublayer]) -> list[list[Sublayer]]:
    """A run of consecutive halves on the stream — attention, optional cross-attention, the
    feed-forward that starts from the last of them — is one layer; a parallel layer, or a
    residual block without attention, is one unit alone."""
    groups: list[list[Sublayer]] = []
    for sublayer in sublayers:
        if groups and _joins(index, groups[-1], sublayer):
            groups[-1].append(sublayer)
        else:
            groups.append([sublayer])
    return groups


def cache_tail(index: GraphIndex, inside: set[int] | frozenset[int], exclude: frozenset[str] = frozenset()) -> set[int]:
    """Nodes outside ``inside`` that only stack its tensors (not ``exclude``) into graph outputs:
    the legacy layout's ``present_N = Concat(Unsqueeze(key), Unsqueeze(value))``, which reads
    the layer's concatenated keys and values after its attention did and feeds nothing else.
    Such an output is the layer's, as ``present.N.key`` (the attention's own Concat) is."""
    produced = {name for position in inside for name in index.nodes[position].output if name} - exclude
    tail: set[int] = set()
    for position in range(min(inside, default=len(index.nodes)), len(index.nodes)):
        node = index.nodes[position]
        data = [name for name in node.input if name and name not in index.constants]
        if position not in inside and node.op_type in STACKING_OPS and data and all(name in produced for name in data):
            tail.add(position)
            produced.update(name for name in node.output if name)
    for position in sorted(tail, reverse=True):  # keep what reaches graph outputs only
        for name in (name for name in index.nodes[position].output if name):
            readers = set(index.consumers.get(name, ()))
            if not (readers <= tail and (readers or name in index.output_set)):
                tail.discard(position)
                break
    return tail


def _cache_io(index: GraphIndex, group: list[Sublayer]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(graph inputs whose whole computation stays inside the group's branches, graph outputs
    those branches compute), in graph order — a cached layer's past and present. An input
    shared with later layers is not the layer's: the mask, whose expansion the first layer's
    branch holds, and the first layer's past key, whose length sizes the causal mask of every
    layer (Hugging Face's ``get_seq_length``) — removing layer 0 keeps that input for its shape."""
    inside = frozenset().union(*(sublayer.merge.branch_nodes for sublayer in group))
    stacked = cache_tail(index, inside)  # a legacy layout's present_N (key and value stacked)
    allowed = inside | stacked | {sublayer.merge.add_position for sublayer in group}

    def owned(name: str) -> bool:
        frontier, seen = [name], set()
        while frontier:
            for position in index.consumers.get(frontier.pop(), []):
                if position not in allowed:
                    return False
                if position in seen or position not in inside:
                    continue
                seen.add(position)
                frontier.extend(out for out in index.nodes[position].output if out)
        return bool(seen)

    inputs = tuple(name for name in index.graph_inputs if owned(name))
    outputs = tuple(name for name in index.graph_outputs if index.producer.get(name) in inside | stacked)
    return inputs, outputs


def _is_layer(group: list[Sublayer] | tuple[Sublayer, ...]) -> bool:
    """Whether a group of halves is a transformer layer (it holds attention)."""
    return any(sub.role in (*_ATTENDING, ROLE_PARALLEL) for sub in group)


def find_units(index: GraphIndex) -> UnitLayout:
    """The units of the main graph, in graph order (cached on the read-only index)."""
    cached = index.__dict__.get("_units")
    if cached is None:
        cached = _find_units(index)
        index.__dict__["_units"] = cached
    return cached


def _find_units(index: GraphIndex) -> UnitLayout:
    kept, parallel = absorb_parallel(index, find_residual_merges(index))
    groups = _group(index, _sublayers(index, kept, parallel))
    transformer = any(_is_layer(group) for group in groups)
    norm = None
    if transformer:
        layers = [group for group in groups if _is_layer(group)]
        pre = any(group[-1].exit == group[-1].merge.add for group in layers[:-1]) if len(layers) > 1 else \
            bool(layers) and layers[-1][-1].exit == layers[-1][-1].merge.add
        norm = "pre" if pre else "post"
        if pre:  # the last layer ends at its Add, before the final norm (which stays when it is removed)
            groups = [[Sublayer(sub.merge, sub.entry, sub.merge.add, sub.role) for sub in group]
                      if _is_layer(group) else group for group in groups]
    units = tuple(Unit(group[0].entry, group[-1].exit, tuple(group), *_cache_io(index, group)) for group in groups)
    kind = ("decoder layer" if is_causal(index) else "encoder layer") if transformer else \
        "residual block" if units else ""
    stem = units[0].entry if units else None
    return UnitLayout(kind, norm, bool(parallel), stem, units)
