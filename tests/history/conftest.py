"""Fixtures for the history tests: a database URL per backend, and hand-built scan results.

``db_url`` runs every test on SQLite (a fresh file) and on the real PostgreSQL server
(a fresh schema, dropped afterwards). PostgreSQL is skipped, with the reason, only when no server
answers; set ``REDAUDIT_REQUIRE_POSTGRES=1`` (CI does) to make that a failure instead.
"""
from __future__ import annotations

import hashlib
import os
import uuid

import numpy as np
import pytest

from redaudit.core.msrs import msrs_of_matrix
from redaudit.core.result import LayerInfo, ModelInfo, ScanConfig, ScanResult

PG_DSN = os.environ.get("REDAUDIT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_unavailable_reason() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_DSN, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except Exception as exc:  # any failure to answer means "no server here"
        return f"no PostgreSQL server answers at {PG_DSN}: {str(exc).splitlines()[0] if str(exc) else exc!r}"
    return None


_PG_REASON: list[str | None] = []


def pg_reason() -> str | None:
    if not _PG_REASON:
        _PG_REASON.append(_pg_unavailable_reason())
    return _PG_REASON[0]


@pytest.fixture
def pg_schema_url():
    """A URL whose search_path is a fresh schema on the test server, dropped afterwards."""
    reason = pg_reason()
    if reason:
        if os.environ.get("REDAUDIT_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    import psycopg

    schema = f"redaudit_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_DSN}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'history.db'}"
    else:
        yield request.getfixturevalue("pg_schema_url")


def similarity_with_copies(layer_count: int, copies: list[tuple[int, int]], seed: int = 0,
                           background: float = 0.3) -> np.ndarray:
    """A symmetric similarity matrix: ``background`` noise, 1 on the diagonal, ~0.99 for copies."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0.0, background, size=(layer_count, layer_count))
    matrix = (noise + noise.T) / 2
    for i, j in copies:
        matrix[i, j] = matrix[j, i] = 0.99
    np.fill_diagonal(matrix, 1.0)
    return matrix


def make_result(layer_count: int = 6, copies: list[tuple[int, int]] | None = None, *,
                file_tag: str = "v1", names: list[str] | None = None, seed: int = 0,
                **config_overrides) -> ScanResult:
    """A hand-built ScanResult whose MSRS is the real MSRS of its matrix.

    ``file_tag`` stands for the ONNX file's content: same tag, same sha256.
    """
    config = ScanConfig(samples=512, **config_overrides)
    names = names or [f"/block{i}/Relu_output_0" for i in range(layer_count)]
    matrix = similarity_with_copies(len(names), copies or [], seed=seed)
    msrs = msrs_of_matrix(matrix, config.epsilon, config.beta)
    sha = hashlib.sha256(file_tag.encode()).hexdigest()
    return ScanResult(
        model=ModelInfo(path=f"/models/{file_tag}.onnx", sha256=sha, size_bytes=1000 + len(names),
                        parameter_count=100 * len(names), opset=17, producer="pytest",
                        inputs=(("x", "float32", ("N", 3, 8, 8)),)),
        layers=[LayerInfo(name=n, op="Relu", shape=("N", 8, 8, 8), node=n.rsplit("/", 1)[0])
                for n in names],
        similarity=matrix, msrs=msrs, msrs_std=0.01 * msrs,
        msrs_batches=np.array([msrs, msrs, float("nan")]), config=config, samples=512, batches=2,
        dropped_samples=0, nan_batches=1, inputs_real=False, input_hash="ab" * 32,
        provider="CPUExecutionProvider", backend="numpy", redaudit_version="0.1.0",
        timings={"load_s": 0.01, "tap_s": 0.02, "run_s": 0.5, "similarity_s": 0.1, "total_s": 0.63},
        layer_issues={names[0]: "constant output"} if names else {}, warnings=["synthetic inputs"])
