"""``redaudit serve`` (the API, with embedded workers by default) and ``redaudit worker``
(a Celery worker for scale-out). Thin: build settings, hand them to ``redaudit.service``."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from redaudit.cli.common import parse_size, user_errors
from redaudit.cli.history import db_option
from redaudit.core.spec import DEFAULT_MAX_UPLOAD_BYTES

TOKEN_ENV = "REDAUDIT_TOKEN"


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@db_option
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where uploaded blobs are stored (default: the user data directory).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(0, 64),
              help="Embedded worker processes (ignored with --broker); each job gets (cores-1)/N threads "
                   "unless its spec sets threads.")
@click.option("--broker", metavar="URL", default=None,
              help="Celery broker (redis://... or amqp://...): queue jobs for `redaudit worker` processes.")
@click.option("--public-read", is_flag=True, help="Allow reads without a token (writes always need one).")
@click.option("--lease", "lease_s", default=60.0, show_default=True, type=click.FloatRange(1, 86400),
              help="Seconds without a heartbeat after which a running job's worker is presumed dead.")
@click.option("--max-attempts", default=2, show_default=True, type=click.IntRange(1, 100))
@click.option("--max-upload-size", default=str(DEFAULT_MAX_UPLOAD_BYTES), show_default=True,
              help="Largest upload (model, bundle, or inputs), e.g. 500M or 2G.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@user_errors
def serve_command(host, port, db, data_dir, workers, broker, public_read, lease_s, max_attempts,
                  max_upload_size, log_level) -> None:
    """Run the auditing service: HTTP API under /api/v1 (OpenAPI at /api/v1/openapi.json)."""
    import uvicorn

    from redaudit.service.app import create_app
    from redaudit.service.settings import ServiceSettings, default_data_dir
    from redaudit.service.state import ServiceState

    settings = ServiceSettings(db=db, data_dir=data_dir or default_data_dir(), workers=workers,
                               broker=broker, public_read=public_read, lease_s=lease_s,
                               max_attempts=max_attempts, max_upload_bytes=parse_size(max_upload_size))
    state = ServiceState.open(settings)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    mode = f"broker {broker.split('@')[-1]}" if broker else f"{workers} embedded worker(s)"
    click.echo(f"redaudit serve on http://{host}:{port}/api/v1 ({mode}); Ctrl-C stops", err=True)
    uvicorn.run(create_app(state), host=host, port=port, log_level=log_level)


@click.command("worker")
@click.option("--broker", metavar="URL", required=True, help="Celery broker URL (redis://... or amqp://...).")
@db_option
@click.option("--server", metavar="URL", required=True,
              help="The API's base URL (models are fetched from it by sha256); token from $REDAUDIT_TOKEN.")
@click.option("--queue", "queues", multiple=True, type=click.Choice(["cpu", "gpu"]), default=("cpu",),
              show_default=True, help="Queue(s) to take jobs from; run GPU machines with --queue gpu.")
@click.option("--concurrency", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Jobs at once; each gets (cores-1)/N onnxruntime threads (at least 1) unless its spec sets threads.")
@click.option("--lease", "lease_s", default=60.0, show_default=True, type=click.FloatRange(1, 86400))
@click.option("--max-attempts", default=2, show_default=True, type=click.IntRange(1, 100))
@click.option("--max-upload-size", default=str(DEFAULT_MAX_UPLOAD_BYTES), show_default=True)
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@user_errors
def worker_command(broker, db, server, queues, concurrency, lease_s, max_attempts, max_upload_size,
                   log_level) -> None:
    """Run a Celery worker that executes queued scan/check/prune jobs."""
    from redaudit.service.archives import ArchiveLimits
    from redaudit.service.celery_app import worker_app
    from redaudit.service.workers import default_threads

    limits = ArchiveLimits(parse_size(max_upload_size), 1000, 200.0)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = worker_app(broker, db, server, os.environ.get(TOKEN_ENV), lease_s, max_attempts, limits,
                     threads=default_threads(concurrency))
    app.worker_main(["worker", "--pool", "threads", "--concurrency", str(concurrency),
                     "--hostname", f"redaudit-{os.getpid()}@%h",  # unique: several workers per machine
                     "--queues", ",".join(queues), "--loglevel", log_level.upper(), "--without-gossip",
                     "--without-mingle", "--without-heartbeat"])
