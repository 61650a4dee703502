"""`redaudit doctor`: what this machine can run (onnxruntime providers, CUDA libraries, CuPy)."""
from __future__ import annotations

import click

from redaudit.cli.common import user_errors


@click.command("doctor")
@user_errors
def doctor_command() -> None:
    """Check which onnxruntime distribution is installed (exactly one should be), its CUDA provider's libraries and CuPy; name what is missing and how
    to install it. Exit 0 always: the scan falls back to the CPU and NumPy where it can."""
    from redaudit.core.doctor import diagnose

    report = diagnose()
    for check in report.checks:
        mark = "ok  " if check.ok else "MISS"
        line = f"{mark} {check.name}: {check.detail}"
        if check.hint and not check.ok:
            line += f" — {check.hint}"
        click.echo(line)
    click.echo("GPU scans: ready" if report.cuda_ready and all(c.ok for c in report.checks if c.name == "cupy")
               else "GPU scans: not available here (scans run on the CPU with NumPy)")
