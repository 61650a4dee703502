"""``PreparedModel``: a model loaded, checked and indexed once, reused by every scan of it.

Loading (the untrusted-input checks), shape inference and tap selection cost as much as the
inference itself on small models, and prune/nas/the service scan the same model repeatedly
(different taps, before/after). A PreparedModel keeps what does not change between those
scans: the proto, its identity (path, sha256, size), its graph index, its input specs, the
session factory (the device, and the folder of the external weights), and caches of tap
selections, augmented graphs and sessions.

The proto is the file's graph after :func:`~redaudit.core.load_passes.graph_as_scanned` (a merged
decoder's If replaced by the branch it runs, :attr:`PreparedModel.notes` says so; the residual
sums onnxruntime's fused SkipLayerNormalization keeps internal named, so that a pre-norm model's
last layer has an IR); identity and size are the file's.

The proto is the graph, not the weights: tensors kept in external data stay references into
files of :attr:`PreparedModel.folder`, which every session made by :attr:`sessions` reads from.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from redaudit.core.augment import AugmentedModel, augment
from redaudit.core.branches import Inlined, check_condition_inputs
from redaudit.core.external import FilesDigest, check_external, external_bytes, external_tensors, weight_bytes
from redaudit.core.graph import GraphIndex, parameter_count
from redaudit.core.load_passes import graph_as_scanned
from redaudit.core.model import check_model, load_model, model_sha256_of_proto
from redaudit.core.probe import InputSpec, input_specs
from redaudit.core.result import ModelInfo
from redaudit.core.run import SessionFactory
from redaudit.core.tap import TapSelection, select_taps
from redaudit.errors import ModelLoadError


@dataclass
class PreparedModel:
    proto: onnx.ModelProto
    path: str
    identity: str | FilesDigest  # the sha256, or its hash still running (see FilesDigest)
    size_bytes: int
    sessions: SessionFactory = field(default_factory=SessionFactory)
    _index: GraphIndex | None = field(default=None, repr=False)
    _selections: dict[tuple[str, tuple[str, ...]], TapSelection] = field(default_factory=dict, repr=False)
    _augmented: dict[tuple[Any, ...], AugmentedModel] = field(default_factory=dict, repr=False)
    _sessions: dict[tuple[Any, ...], tuple[Any, str]] = field(default_factory=dict, repr=False)
    inlined: tuple[Inlined, ...] = ()  #: the Ifs replaced by a branch at load (see core/branches.py)

    @classmethod
    def load(cls, model: "str | os.PathLike[str] | onnx.ModelProto | PreparedModel", *,
             max_model_bytes: int | None = None, device: str = "auto",
             folder: str | os.PathLike[str] | None = None) -> "PreparedModel":
        """From a path (untrusted: size bound, external-data policy, checker) or a proto;
        ``folder``: where an in-memory proto's external tensors live (a pruned copy of a loaded
        model: the original's :attr:`folder`). ``max_model_bytes`` None: only a model whose
        weights cannot fit in memory is refused."""
        if isinstance(model, PreparedModel):
            return model
        if isinstance(model, onnx.ModelProto):
            sessions = SessionFactory(device, folder=None if folder is None else os.fspath(folder))
            sessions.providers()  # an unusable --device fails here, before any work
            if external_tensors(model):
                if folder is None:
                    raise ModelLoadError(f"the in-memory model keeps tensor {external_tensors(model)[0].name!r} in "
                                         "external data but no folder was given; pass folder= (where its data files are)")
                check_external(model, Path(folder))  # the same rules as a model read from a path
            check_model(model, "in-memory model")
            scanned, inlined = graph_as_scanned(model)
            return cls(scanned, "<in-memory>", model_sha256_of_proto(model),
                       model.ByteSize() + external_bytes(model), sessions, inlined=inlined)
        SessionFactory(device).providers()
        loaded = load_model(model, max_bytes=max_model_bytes)
        scanned, inlined = graph_as_scanned(loaded.proto)
        return cls(scanned, loaded.path, loaded.digest, loaded.size_bytes,
                   SessionFactory(device, folder=loaded.folder), inlined=inlined)

    @property
    def sha256(self) -> str:
        """The model's identity: the sha256 of its file, then its external-data files."""
        return self.identity if isinstance(self.identity, str) else self.identity.value

    @property
    def notes(self) -> tuple[str, ...]:
        """What loading changed in the graph, one line each (the scan's and prune's warnings)."""
        return tuple(item.note for item in self.inlined)

    def probe_source(self, spec: Any, inputs: Any = None) -> Any:
        """What this model's probe is built from (:func:`redaudit.core.text.probe_source`), an
        inlined condition given in the inputs checked (:func:`~redaudit.core.branches.check_condition_inputs`)."""
        from redaudit.core.text import probe_source

        return check_condition_inputs(self.inlined, probe_source(spec, self.input_specs, inputs))

    @property
    def folder(self) -> str | None:
        """Where the external tensors of :attr:`proto` live (None: all in the proto)."""
        return self.sessions.folder

    @property
    def weight_bytes(self) -> int:
        """Bytes of the model's tensors, external ones included: what onnxruntime holds."""
        return weight_bytes(self.proto)

    def derived(self, proto: onnx.ModelProto) -> "PreparedModel":
        """A model made from this one by a graph edit (pruned, healed — checked by the surgery —
        or given extra outputs): its external tensors are still this model's files, so its
        sessions are made as this model's are (device, threads, weights folder)."""
        return PreparedModel(proto, "<in-memory>", model_sha256_of_proto(proto), proto.ByteSize() + external_bytes(proto),
                             self.sessions)

    def forget_sessions(self) -> None:
        """Drop the cached onnxruntime sessions (graphs and taps stay cached): each holds a copy of
        the weights, so a caller that moves on to another model of the same weights (prune's
        verification, the pruned model's scan) frees them first."""
        self._sessions.clear()

    def on_device(self, device: str, threads: int | None = None) -> "PreparedModel":
        """This model with sessions made for ``device`` and ``threads`` (graph caches shared)."""
        factory = SessionFactory(device, threads if threads is not None else self.sessions.threads, self.folder)
        if factory == self.sessions:
            return self
        factory.providers()
        return PreparedModel(self.proto, self.path, self.identity, self.size_bytes, factory,
                             self._index, self._selections, self._augmented, {}, self.inlined)

    @property
    def index(self) -> GraphIndex:
        if self._index is None:
            self._index = GraphIndex.build(self.proto, folder=self.folder)
        return self._index

    @property
    def input_specs(self) -> list[InputSpec]:
        return input_specs(self.proto)

    @property
    def info(self) -> ModelInfo:
        opset = next((int(o.version) for o in self.proto.opset_import if o.domain in ("", "ai.onnx")), 0)
        inputs = tuple((spec.name, str(spec.dtype), tuple("?" if d is None else d for d in spec.graph_shape))
                       for spec in self.input_specs)
        return ModelInfo(path=self.path, sha256=self.sha256, size_bytes=self.size_bytes,
                         parameter_count=parameter_count(self.proto), opset=opset,
                         producer=f"{self.proto.producer_name} {self.proto.producer_version}".strip(),
                         inputs=inputs)

    def taps(self, level: str = "block", taps: tuple[str, ...] = ()) -> TapSelection:
        key = (level, tuple(taps))
        if key not in self._selections:
            self._selections[key] = select_taps(self.index, level, tuple(taps))
        return self._selections[key]

    def augmented(self, selection: TapSelection, reduce: str,
                  layouts: tuple[tuple[str, str], ...] = (),
                  ranks: tuple[tuple[str, int], ...] = ()) -> AugmentedModel:
        """The graph with ``selection`` exposed; ``ranks`` are probed ranks of taps typing left
        unknown (see :mod:`redaudit.core.shapes`)."""
        key = (tuple(p.tensor for p in selection.points), reduce, layouts, ranks)
        if key not in self._augmented:
            self._augmented[key] = augment(self.proto, self.index, selection.points, reduce, dict(layouts),
                                           dict(ranks))
        return self._augmented[key]

    def session(self, augmented: AugmentedModel) -> tuple[Any, str]:
        """(onnxruntime session, provider) for an augmented graph, made once."""
        key = (tuple(augmented.fetch_names), id(augmented))
        if key not in self._sessions:
            self._sessions[key] = self.sessions.create(augmented.proto)
        return self._sessions[key]
