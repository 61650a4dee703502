"""``redaudit push MODEL --server URL --name NAME``: the CI client of ``redaudit serve``.

Uploads the model (and probe inputs), queues a scan — or a check when a bound is given — waits,
prints one line, and exits like ``redaudit check``: 0 pass, 1 fail, 2 user error (bad file,
refused request, server unreachable, job failed). The token comes from ``$REDAUDIT_TOKEN`` only,
never from the command line (where it would land in shell history and CI logs).
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path

import click

from redaudit.cli.common import user_errors
from redaudit.cli.params import InputPath, number
from redaudit.cli.scan_options import scan_options, scan_spec
from redaudit.core.spec import ScanSpec
from redaudit.errors import ConfigError, RedauditError

TOKEN_ENV = "REDAUDIT_TOKEN"
PARENT = re.compile(r"[^@]+@[^@]+")
BUNDLE_TYPES = {".zip": "application/zip", ".tar": "application/x-tar", ".tgz": "application/gzip",
                ".gz": "application/gzip"}


class PushError(RedauditError):
    """The server refused a request, could not be reached, or the job did not succeed."""


class _Api:
    def __init__(self, server: str, token: str) -> None:
        import httpx

        self.httpx = httpx
        self.client = httpx.Client(base_url=server.rstrip("/") + "/api/v1", timeout=120.0,
                                   headers={"Authorization": f"Bearer {token}"})
        self.server = server

    def call(self, method: str, path: str, **kwargs):
        try:
            response = self.client.request(method, path, **kwargs)
        except self.httpx.HTTPError as error:
            raise PushError(f"cannot reach {self.server}: {type(error).__name__}; is `redaudit serve` running?") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text[:200]
            if isinstance(detail, list):  # a request validation error: the first field's message
                detail = "; ".join(str(item.get("msg")) for item in detail[:1])
            raise PushError(f"server refused {path.split('?')[0]} (HTTP {response.status_code}): {detail}")
        return response.json()

    def upload(self, path: Path, kind: str) -> str:
        content_type = BUNDLE_TYPES.get(path.suffix.lower(), "application/octet-stream")
        with open(path, "rb") as handle:
            return self.call("POST", f"/uploads/{kind}", content=handle, params={"filename": path.name},
                             headers={"content-type": content_type})["sha256"]


def _bundle_if_external(model: Path, folder: Path, max_bytes: int) -> Path:
    """What to upload for ``model``: itself, or — for an .onnx whose weights live in external
    data files beside it — a .tar of the model and exactly the files it references, checked by
    the server's own policy first (relative, inside the model's folder, present, in range)."""
    if model.suffix.lower() != ".onnx":
        return model  # a .zip/.tar bundle already, or a file the server will judge
    from redaudit.core.model import external_data_files
    from redaudit.service.archives import pack_bundle

    files = external_data_files(model, max_bytes)
    if not files:
        return model
    bundle = folder / f"{model.stem}.tar"
    pack_bundle(model, files, bundle)
    click.echo(f"{model.name} keeps its weights in {len(files)} external data file(s); uploading them "
               f"together as a bundle", err=True)
    return bundle


def _spec_fields(spec: ScanSpec) -> dict:
    """The options that differ from the defaults, as the request's ``spec`` (inputs travel apart)."""
    data = spec.with_options(inputs=None).to_dict()
    data.pop("inputs")
    return {key: value for key, value in data.items() if value != ScanSpec().to_dict().get(key)}


@click.command("push")
@click.argument("model", type=InputPath(exists=True, dir_okay=False, path_type=Path))
@click.option("--server", required=True, metavar="URL", help="The service, e.g. http://127.0.0.1:8000")
@click.option("--name", required=True, metavar="NAME", help="Model name in the history.")
@click.option("--label", default=None, metavar="LABEL", help="Version label, e.g. a git tag.")
@click.option("--parent", metavar="NAME@LABEL", default=None,
              help="The recorded version this model was derived from (e.g. the model it was pruned from).")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the result.")
@click.option("--max-increase", type=number(0, 1e9), default=None, metavar="PCT",
              help="Fail if MSRS rose more than PCT % over the latest comparable recorded scan.")
@click.option("--max-msrs", type=number(0, 1e12), default=None, metavar="X", help="Fail if MSRS exceeds X.")
@click.option("--significant", is_flag=True,
              help="With --max-increase: fail only when the increase is beyond batch noise (as `redaudit check`).")
@click.option("--any-probe", is_flag=True,
              help="With --max-increase: compare even with a baseline scanned on other probe inputs or samples.")
@click.option("--no-record", is_flag=True, help="Do not record the scan in the history.")
@click.option("--timeout", type=number(1, 1e7), default=3600, show_default=True, help="Seconds to wait.")
@scan_options
@user_errors
def push_command(model, server, name, label, parent, wait, max_increase, max_msrs, significant, any_probe, no_record,
                 timeout, **options) -> None:
    """Upload MODEL (.onnx, or a .zip/.tar bundle with external data) to a redaudit service and
    scan it there; with --max-increase/--max-msrs, gate it like `redaudit check`. An .onnx whose
    weights are in external data files beside it is sent as a .tar of it and those files."""
    if significant and max_increase is None:
        raise ConfigError("--significant qualifies an increase: use it with --max-increase PCT")
    if any_probe and max_increase is None:
        raise ConfigError("--any-probe qualifies the baseline of an increase: use it with --max-increase PCT")
    if parent is not None and not PARENT.fullmatch(parent):
        raise ConfigError(f"--parent takes NAME@LABEL (a recorded model and one of its labels), not {parent!r}")
    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise PushError(f"set ${TOKEN_ENV} to an API token with the write scope (`redaudit token create`)")
    inputs = options.get("inputs")
    scan = scan_spec(options)  # validated here, before any upload
    spec = _spec_fields(scan)
    api = _Api(server, token)
    with tempfile.TemporaryDirectory(prefix="redaudit-push-") as folder:
        upload = _bundle_if_external(model, Path(folder), scan.max_model_bytes)
        blob = api.upload(upload, "model")
    body = {"model": name, "label": label, "blob": blob, "spec": spec, "record": not no_record}
    if parent is not None:  # only when given: a server from before the option still takes the rest
        body["parent"] = parent
    if inputs:
        body["inputs"] = api.upload(Path(inputs), "inputs")
    gated = max_increase is not None or max_msrs is not None
    if gated:
        body.update(max_increase=max_increase, max_msrs=max_msrs)
        if significant:  # only when asked: a server from before the option still takes the rest
            body["significant"] = True
        if any_probe:
            body["any_probe"] = True
    job = api.call("POST", "/checks" if gated else "/scans", json=body)
    if not wait:
        click.echo(f"queued job {job['id']} ({server.rstrip('/')}/api/v1/jobs/{job['id']})")
        return
    deadline = time.monotonic() + timeout
    while job["state"] in ("queued", "running"):
        if time.monotonic() > deadline:
            raise PushError(f"job {job['id']} still {job['state']} after {timeout:g} s; it keeps running on the server")
        time.sleep(0.5)
        job = api.call("GET", f"/jobs/{job['id']}")
    if job["state"] != "succeeded":  # the server words errors for API clients: here, the flags
        error = str(job["error"]).replace("any_probe=true", "--any-probe").replace("significant=true", "--significant")
        raise PushError(f"job {job['id']} {job['state']}: {error}")
    report = api.call("GET", f"/jobs/{job['id']}/result")
    msrs = report.get("msrs")
    where = f"scan {job['scan_id']}" if job["scan_id"] else f"job {job['id']}"
    line = f"{name} {label or report['model']['sha256'][:12]}: MSRS {msrs:.4g} ({where})" if msrs is not None \
        else f"{name}: MSRS undefined ({where})"
    if not gated:
        click.echo(line)
        return
    outcome = job["outcome"]
    click.echo(f"{line}; {'PASS' if outcome['passed'] else 'FAIL'}: {outcome['reason']}")
    sys.exit(0 if outcome["passed"] else 1)
