"""ScanSpec: validated once (library and CLI share it), defaults defined once, JSON round trip."""
from __future__ import annotations

import math

import pytest

import redaudit
from redaudit.cli.main import cli
from redaudit.core.spec import ScanSpec
from redaudit.errors import ConfigError


def test_defaults_follow_the_reference_code():
    spec = ScanSpec()
    assert (spec.level, spec.reduce, spec.cka_batch, spec.samples, spec.epsilon, spec.beta, spec.estimator) == \
        ("block", "pool", 256, 2560, 0.8, 100.0, "unbiased")


def test_json_round_trip_keeps_every_field():
    spec = ScanSpec(level="layer", taps=("a", "b"), inputs="x.npz", samples=512, seed=7, dims={"T": 12},
                    int_range=(0, 99), reduce="flatten", cka_batch=None, estimator="biased", aggregate="hsic",
                    epsilon=0.7, beta=10, device="cpu", backend="numpy", max_model_bytes=1000,
                    layouts={"t": "tokens"}, threads=2)
    assert ScanSpec.from_json(spec.to_json()) == spec
    assert ScanSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("options, message", [
    ({"beta": math.inf}, "--beta must be a finite number"),
    ({"beta": 0}, "--beta must be positive"),
    ({"epsilon": math.nan}, "--epsilon must be a finite number"),
    ({"epsilon": 1.5}, "--epsilon must lie in"),
    ({"seed": -5}, "--seed must be between"),
    ({"samples": 3_000_000_000}, "--samples must be between"),
    ({"samples": 0}, "--samples must be between"),
    ({"int_range": (0, 10**23)}, "--int-range HIGH must be between"),
    ({"int_range": (5, 5)}, "LOW < HIGH"),
    ({"cka_batch": 3}, "--cka-batch"),
    ({"cka_batch": 1, "estimator": "biased"}, "--cka-batch"),
    ({"level": "blocks"}, "unknown --level"),
    ({"dims": {"T": -1}}, "--dim T"),  # 0 is a past length's value; the probe refuses it elsewhere
    ({"layouts": {"t": "rows"}}, "--layout"),
    ({"max_model_bytes": 0}, "--max-model-size"),
    ({"threads": 0}, "--threads"),
    ({"level": "tap"}, "explicit taps"),
])
def test_invalid_options_are_refused_with_one_line(options, message):
    with pytest.raises(ConfigError, match=message) as raised:
        ScanSpec(**options)
    assert "\n" not in str(raised.value)


def test_unknown_keys_are_refused_unless_reading_newer_records():
    with pytest.raises(ConfigError, match="unknown scan option"):
        ScanSpec.from_dict({"epsilon": 0.8, "gamma": 1})
    assert ScanSpec.from_dict({"epsilon": 0.7, "gamma": 1}, ignore_unknown=True).epsilon == 0.7


def test_library_and_cli_refuse_the_same_value_before_any_work(runner, residual_model_path):
    with pytest.raises(ConfigError, match="--beta must be a finite number"):
        redaudit.scan(str(residual_model_path), beta=math.inf)
    result = runner.invoke(cli, ["scan", str(residual_model_path), "--beta", "inf"])
    assert result.exit_code == 2
    # The CLI refuses at option parsing (the option's own click type): one line
    # naming the option and the rule, before the model is even opened.
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("error: ")
    assert "'--beta'" in line and "finite number" in line and "got inf" in line
    assert "loading" not in result.output


def test_cli_defaults_are_the_spec_defaults(runner):
    help_text = runner.invoke(cli, ["scan", "--help"]).output
    spec = ScanSpec()
    for fragment in (f"[default: {spec.samples}]", f"[default: {spec.epsilon}]", f"[default: {spec.beta}]",
                     f"[default: {spec.cka_batch}]"):
        assert fragment in help_text


@pytest.mark.parametrize("size", ["inf", "nan", "-1G", "0"])
def test_max_model_size_that_is_not_a_size_is_one_line(runner, residual_model_path, size):
    result = runner.invoke(cli, ["scan", str(residual_model_path), "--max-model-size", size])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
