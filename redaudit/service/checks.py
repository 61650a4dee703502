"""The untrusted-input checks of an upload, run in a small pool of child processes.

Parsing a protobuf, running the ONNX checker and walking an archive are CPU work that holds the
GIL. In the API's process, fifty concurrent uploads made every status poll wait for the
interpreter; in child processes they wait only for a core. The functions take and return plain
values, so a check means the same wherever it runs.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from redaudit.core.cores import usable_cores
from redaudit.service.archives import ArchiveLimits, check_npz_archive, extract_bundle
from redaudit.service.storage import UploadError


def without_server_paths(message: str, paths: dict[Path, str]) -> str:
    """``message`` with each server path in ``paths`` replaced by the name the client knows
    (longest first, so a file inside a folder keeps its relative name)."""
    for path, name in sorted(paths.items(), key=lambda item: -len(str(item[0]))):
        message = message.replace(f"{path}/", f"{name}/" if name else "").replace(str(path), name or "the upload")
    return message


def check_model(staged: Path, kind: str, filename: str, limits: ArchiveLimits) -> str:
    """Validate a staged model or bundle as the CLI validates a file; returns the history
    identity of the model (the sha256 of the .onnx file then its external-data files, which for
    a bundle is not the archive's); the weights are never loaded.
    A refusal names the file as the client sent it, never a path on this server."""
    from redaudit.errors import RedauditError

    with tempfile.TemporaryDirectory(prefix="redaudit-upload-") as folder:
        root = Path(folder)
        name = Path(filename).name or "model.onnx"
        try:
            return _check_model(staged, kind, name, limits, root)
        except UploadError as error:
            error.args = (without_server_paths(str(error), {root: "", staged: name}),)
            raise
        except RedauditError as error:
            raise UploadError(without_server_paths(str(error).splitlines()[0], {root: "", staged: name}), 400) from None


def _check_model(staged: Path, kind: str, name: str, limits: ArchiveLimits, root: Path) -> str:
    from redaudit.core.model import load_model

    if kind == "bundle":
        files = extract_bundle(staged, root, limits)
        models = [file for file in files if file.suffix == ".onnx"]
        if len(models) != 1:
            raise UploadError(f"a bundle must hold exactly one .onnx file (found {len(models)}); "
                              "pack one model with its external data")
        return load_model(models[0], max_bytes=limits.max_bytes, will_run=False).sha256
    single = root / name
    shutil.copyfile(staged, single)  # alone in a folder: external data must come as a bundle
    return load_model(single, max_bytes=limits.max_bytes, will_run=False).sha256


def check_inputs(staged: Path, limits: ArchiveLimits) -> None:
    """Validate staged probe inputs: archive sizes and ratios, every header, no pickle. A
    refusal says "the inputs archive", never the staging path."""
    from redaudit.core.npz import read_npz
    from redaudit.errors import RedauditError

    try:
        check_npz_archive(staged, limits)
        arrays = read_npz(staged, rows=1).arrays  # every header checked, one row decompressed
    except RedauditError as error:
        text = without_server_paths(str(error).splitlines()[0], {staged: "the inputs archive"})
        raise UploadError(text, getattr(error, "status", 400)) from None
    if not arrays:
        raise UploadError("the inputs archive holds no arrays; save one array per model input with numpy.savez")


#: Check processes run below the API's CPU priority, so fifty uploads being checked do not delay
#: status reads. (Single-threaded and short, unlike scans, which are not niced: see workers.py.)
CHECK_NICENESS = 5


def _exit_with(parent: int) -> None:
    """In a check process: lower its priority, and exit once ``serve`` is gone. uvicorn ends by re-raising the SIGTERM
    it handled, so the executor's exit hook never runs in the API process, and an orphaned check
    process would wait for work forever (holding the API's stdout open)."""
    import time

    os.nice(CHECK_NICENESS)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)
    threading.Thread(target=watch, name="redaudit-check-parent", daemon=True).start()


class CheckPool:
    """The check processes of one service (``ServiceState.checks``): started at the first
    upload, one per core, spawned (no thread of the API is copied into them), shut down with the
    app — before uvicorn re-raises its SIGTERM, so no semaphore or process is left behind."""

    def __init__(self) -> None:
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _get(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                import multiprocessing

                self._executor = ProcessPoolExecutor(max_workers=usable_cores(),
                                                     mp_context=multiprocessing.get_context("spawn"),
                                                     initializer=_exit_with, initargs=(os.getpid(),))
            return self._executor

    def _discard(self, executor: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is executor:
                self._executor = None
        executor.shutdown(wait=False, cancel_futures=True)

    async def run(self, function, *args):
        """``function(*args)`` in a check process, awaited without blocking the event loop.

        A check process that died (killed for memory by an archive that lied about its size)
        breaks the pool: it is replaced and the check runs once more in a fresh one; a second
        death is the upload's fault and refused.
        """
        for attempt in range(2):
            executor = self._get()
            try:
                return await asyncio.wrap_future(executor.submit(function, *args))
            except BrokenProcessPool:
                self._discard(executor)
                if attempt == 1:
                    raise UploadError("checking the upload killed its checker process (out of memory?); "
                                      "the file is refused", 400) from None
        raise AssertionError("unreachable")

    def shutdown(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
