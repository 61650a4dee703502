"""The upload-check processes: a refusal keeps its HTTP status across the process boundary, and
a check process that dies (killed for memory) is replaced instead of breaking every later upload."""
from __future__ import annotations

import asyncio
import os

import pytest

from redaudit.service.checks import CheckPool
from redaudit.service.storage import UploadError


def _die() -> None:
    os._exit(3)  # what the kernel's OOM killer leaves behind: no exception, no cleanup


def _refuse() -> None:
    raise UploadError("bundle unpacks to more than the server's limit", 413)


def test_refusal_keeps_its_status_and_a_dead_checker_is_replaced():
    pool = CheckPool()
    try:
        with pytest.raises(UploadError) as refused:
            asyncio.run(pool.run(_refuse))
        assert refused.value.status == 413 and "limit" in str(refused.value)
        with pytest.raises(UploadError) as killed:
            asyncio.run(pool.run(_die))  # dies, is replaced, dies again: the upload is refused
        assert killed.value.status == 400 and "killed its checker" in str(killed.value)
        checker = asyncio.run(pool.run(os.getpid))  # the next upload is checked by a fresh process
        assert checker != os.getpid()
    finally:
        pool.shutdown()
