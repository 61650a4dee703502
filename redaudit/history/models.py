"""The history schema as SQLAlchemy 2.x ORM tables, and nothing else.

A *model* is a name the user chooses (``resnet-prod``). Each distinct ONNX file recorded under it
is a *version*, identified by the file's sha256, so re-scanning an unchanged file adds a *scan* to
the same version. A scan keeps every setting that shaped its numbers as columns (so they can be
queried and compared), its per-layer rows, and the similarity matrix as float32 ``.npy`` bytes.

Schema changes happen only through Alembic revisions in ``migrations/``; a test compares these
tables with the migrations so the two cannot drift. The tables are declared on the database's one
registry (:mod:`redaudit.orm`), which the service's tables share.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer,
                        LargeBinary, String, Text, UniqueConstraint)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from redaudit.orm import NAMING, Base  # noqa: F401 - the shared registry, re-exported for history's readers


class Model(Base):
    """A user-named line of model versions (``resnet-prod``)."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    versions: Mapped[list[ModelVersion]] = relationship(back_populates="model",
                                                        cascade="all, delete-orphan",
                                                        passive_deletes=True)


class ModelVersion(Base):
    """One ONNX file under a model, keyed by its sha256.

    ``label`` (a git tag, say) is unique within a model when given; several unlabelled versions
    are allowed (NULLs never collide). ``parent_id`` links a pruned model to the version it was
    pruned from, possibly under another model name, hence a plain self-reference.
    """

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "sha256"), UniqueConstraint("model_id", "label"),
                      Index(None, "sha256"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(String(64))
    label: Mapped[str | None] = mapped_column(String(200))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    parameter_count: Mapped[int] = mapped_column(BigInteger)
    opset: Mapped[int] = mapped_column(Integer)
    producer: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)  # where the file was when first recorded
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"))

    model: Mapped[Model] = relationship(back_populates="versions")
    scans: Mapped[list[Scan]] = relationship(back_populates="version", cascade="all, delete-orphan",
                                             passive_deletes=True)


class VersionLabel(Base):
    """Every label of a version: the one it was first recorded under and its aliases.

    A CI pipeline that labels every commit records the same bytes under many labels; each extra
    label becomes an alias of the one version (never a second version of the same file). A
    label names exactly one version within a model, whether it is the version's name or an
    alias: a table of its own lets one unique constraint enforce that across both, even between
    concurrent writers, which a column plus a check in code could not.
    ``ModelVersion.label`` stays the version's display name (its first label).
    """

    __tablename__ = "version_labels"
    __table_args__ = (UniqueConstraint("model_id", "label"), Index(None, "version_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Scan(Base):
    """One measurement of a version, with every value that shaped it.

    The columns listed in ``ScanConfig.RESULT_KEYS`` decide comparability; ``config`` keeps the
    full ``ScanConfig.to_dict()`` as well, so a future config key is never lost. NaN is stored as
    NULL (SQLite cannot store NaN, and JSON has no NaN).
    """

    __tablename__ = "scans"
    __table_args__ = (Index(None, "version_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    redaudit_version: Mapped[str] = mapped_column(String(40))
    # settings that change the numbers (ScanConfig.RESULT_KEYS) ...
    level: Mapped[str] = mapped_column(String(20))
    reduce: Mapped[str] = mapped_column(String(20))
    cka_batch: Mapped[int | None] = mapped_column(Integer)
    estimator: Mapped[str] = mapped_column(String(20))
    aggregate: Mapped[str] = mapped_column(String(20))
    epsilon: Mapped[float] = mapped_column(Float)
    beta: Mapped[float] = mapped_column(Float)
    taps: Mapped[list] = mapped_column(JSON)
    # ... and the ones that shape the probe data and the run
    samples_requested: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    inputs_real: Mapped[bool] = mapped_column(Boolean)
    input_hash: Mapped[str] = mapped_column(String(64))
    device: Mapped[str] = mapped_column(String(20))
    backend: Mapped[str] = mapped_column(String(20))
    provider: Mapped[str] = mapped_column(String(80))
    config: Mapped[dict] = mapped_column(JSON)
    # what was measured
    samples: Mapped[int] = mapped_column(Integer)
    batches: Mapped[int] = mapped_column(Integer)
    dropped_samples: Mapped[int] = mapped_column(Integer)
    nan_batches: Mapped[int] = mapped_column(Integer)
    layer_count: Mapped[int] = mapped_column(Integer)
    msrs: Mapped[float | None] = mapped_column(Float)
    msrs_std: Mapped[float | None] = mapped_column(Float)
    msrs_batches: Mapped[list] = mapped_column(JSON)
    warnings: Mapped[list] = mapped_column(JSON)
    # how it was run (revision 0005; NULL on older rows): samples per onnxruntime run, chosen from
    # the memory budget, and what one IR is ("decoder layer", "residual block"; docs/taps.md)
    micro_batch: Mapped[int | None] = mapped_column(Integer)
    unit: Mapped[str | None] = mapped_column(String(80))  # longest today: 39 characters
    # durations in seconds (ScanResult.timings)
    load_s: Mapped[float | None] = mapped_column(Float)
    tap_s: Mapped[float | None] = mapped_column(Float)
    run_s: Mapped[float | None] = mapped_column(Float)
    similarity_s: Mapped[float | None] = mapped_column(Float)
    total_s: Mapped[float | None] = mapped_column(Float)

    version: Mapped[ModelVersion] = relationship(back_populates="scans")
    layers: Mapped[list[ScanLayer]] = relationship(back_populates="scan", order_by="ScanLayer.position",
                                                   cascade="all, delete-orphan", passive_deletes=True)
    matrix: Mapped[SimilarityMatrix | None] = relationship(back_populates="scan",
                                                           cascade="all, delete-orphan",
                                                           passive_deletes=True)


class ScanLayer(Base):
    """One tapped IR of a scan, in the similarity matrix's order (``position``)."""

    __tablename__ = "scan_layers"
    __table_args__ = (UniqueConstraint("scan_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(Text)
    op: Mapped[str] = mapped_column(String(80))
    shape: Mapped[list] = mapped_column(JSON)
    node: Mapped[str] = mapped_column(Text)
    redundancy: Mapped[float | None] = mapped_column(Float)
    most_similar: Mapped[str | None] = mapped_column(Text)
    most_similar_cka: Mapped[float | None] = mapped_column(Float)
    issue: Mapped[str | None] = mapped_column(Text)

    scan: Mapped[Scan] = relationship(back_populates="layers")


class SimilarityMatrix(Base):
    """The L × L similarity matrix as float32 ``.npy`` bytes, with its layer order.

    A blob rather than L² rows: 200 layers are 160 KB in one row instead of 40,000 rows, and the
    matrix is only ever read whole (heatmaps, diffs).
    """

    __tablename__ = "similarity_matrices"

    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), primary_key=True)
    layer_order: Mapped[list] = mapped_column(JSON)
    npy: Mapped[bytes] = mapped_column(LargeBinary)

    scan: Mapped[Scan] = relationship(back_populates="matrix")


class PruneVerification(Base):
    """How a pruned version compares with its parent, as ``prune --record`` verified it: one row per
    recorded prune, beside the pruned model's scan (``scan_id``). Columns, not JSON, so that a
    query can rank prunes by what a reader asks of them (top-1 agreement, KL, perplexity growth).
    ``top1_agreement`` is a classifier's per sample or a causal LM's per next token; the KL and
    perplexity columns are a causal LM's (NULL otherwise, and perplexity NULL on synthetic ids).
    """

    __tablename__ = "prune_verifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    policy: Mapped[str] = mapped_column(String(40))
    heal: Mapped[str] = mapped_column(String(20))
    removed: Mapped[list] = mapped_column(JSON)
    probe_real: Mapped[bool] = mapped_column(Boolean)
    drift: Mapped[float | None] = mapped_column(Float)
    top1_agreement: Mapped[float | None] = mapped_column(Float)
    kl_mean: Mapped[float | None] = mapped_column(Float)
    perplexity_original: Mapped[float | None] = mapped_column(Float)
    perplexity_pruned: Mapped[float | None] = mapped_column(Float)
