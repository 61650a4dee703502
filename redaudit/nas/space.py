"""The NAS search space, declared in one place and editable as a small TOML file.

The axes are the ones that change how much structure a network repeats: depth (blocks per
stage), width, kernel size, and residual vs plain blocks, over a small CNN or MLP family.
A :class:`SearchSpace` is what a user edits; an :class:`Architecture` is one point in it,
the plain value that training, export and selection pass around.
"""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from redaudit.errors import ConfigError

FAMILIES = ("cnn", "mlp")
#: Most training epochs a trial (--budget) or a retraining (--retrain) may ask for: beyond it a
#: typo, not a plan, and a study whose trial would stay RUNNING for days.
MAX_EPOCHS = 1000


class ParamSuggester(Protocol):
    """The part of ``optuna.Trial`` the space needs; kept structural so tests need no study."""

    def suggest_int(self, name: str, low: int, high: int) -> int: ...
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class Architecture:
    """One candidate network.

    ``depths[s]`` blocks in stage ``s``; stage ``s`` has ``width * 2**s`` channels (CNN) or
    units (MLP) and, for the CNN, halves the spatial size after the first stage. ``kernel``
    is ignored by the MLP family.
    """

    family: str
    depths: tuple[int, ...]
    width: int
    kernel: int
    residual: bool

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["depths"] = list(self.depths)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Architecture:
        return cls(family=str(data["family"]), depths=tuple(int(d) for d in data["depths"]),
                   width=int(data["width"]), kernel=int(data["kernel"]),
                   residual=bool(data["residual"]))

    def describe(self) -> str:
        kind = "res" if self.residual else "plain"
        depth = "-".join(str(d) for d in self.depths)
        kernel = f" k{self.kernel}" if self.family == "cnn" else ""
        return f"{self.family} {kind} d{depth} w{self.width}{kernel}"


@dataclass(frozen=True)
class TrainSettings:
    """Optimiser settings shared by every candidate, so architectures are compared fairly."""

    learning_rate: float = 3e-3
    batch_size: int = 64
    weight_decay: float = 1e-4


@dataclass(frozen=True)
class SearchSpace:
    """Ranges the sampler explores. ``depth`` is an inclusive (low, high) per stage."""

    families: tuple[str, ...] = ("cnn",)
    stages: int = 2
    depth: tuple[int, int] = (1, 4)
    widths: tuple[int, ...] = (8, 16, 32)
    kernels: tuple[int, ...] = (3, 5)  # 1×1 kernels before global pooling cannot see shapes
    residual: tuple[bool, ...] = (True, False)
    train: TrainSettings = field(default_factory=TrainSettings)

    def __post_init__(self) -> None:
        _check_space(self)

    def suggest(self, trial: ParamSuggester) -> Architecture:
        """Draw one architecture through the sampler; parameter names are stable study keys."""
        family = trial.suggest_categorical("family", list(self.families))
        depths = tuple(trial.suggest_int(f"depth_{s}", self.depth[0], self.depth[1])
                       for s in range(self.stages))
        width = trial.suggest_categorical("width", list(self.widths))
        # Kernel is drawn for every family so the parameter set stays fixed (samplers such as
        # NSGA-II and multivariate TPE prefer a static space); the MLP ignores it.
        kernel = trial.suggest_categorical("kernel", list(self.kernels))
        residual = trial.suggest_categorical("residual", list(self.residual))
        return Architecture(family=family, depths=depths, width=int(width), kernel=int(kernel),
                            residual=bool(residual))

    def architecture_from_params(self, params: dict[str, Any]) -> Architecture:
        """Rebuild a trial's architecture from its stored Optuna parameters."""
        return Architecture(family=str(params["family"]),
                            depths=tuple(int(params[f"depth_{s}"]) for s in range(self.stages)),
                            width=int(params["width"]), kernel=int(params["kernel"]),
                            residual=bool(params["residual"]))

    def to_dict(self) -> dict[str, Any]:
        return {"families": list(self.families), "stages": self.stages, "depth": list(self.depth),
                "widths": list(self.widths), "kernels": list(self.kernels),
                "residual": list(self.residual), "train": asdict(self.train)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        """The space a TOML table declares, every key checked against :data:`SCHEMA` (type and
        range) before anything is built: one line naming the key and what it must be."""
        if not isinstance(data, dict):
            raise ConfigError("search space: expected a table of keys (families, stages, depth, ...)")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"search space: unknown keys {unknown}; allowed: {sorted(known)}")
        train_data = data.get("train", {})
        if not isinstance(train_data, dict):
            raise ConfigError(f"search space: train must be a [train] table (learning_rate, batch_size, "
                              f"weight_decay), got {train_data!r}")
        train_known = {f.name for f in fields(TrainSettings)}
        if set(train_data) - train_known:
            raise ConfigError(f"search space: unknown [train] keys {sorted(set(train_data) - train_known)}; "
                              f"allowed: {sorted(train_known)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key != "train":
                kwargs[key] = _checked(key, value)
        kwargs["train"] = TrainSettings(**{key: _checked(f"train.{key}", value) for key, value in train_data.items()})
        return cls(**kwargs)


def load_space(path: str | Path | None) -> SearchSpace:
    """The default space, or the one declared in a TOML file (keys as in :class:`SearchSpace`)."""
    if path is None:
        return SearchSpace()
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"search space file not found: {file}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"search space file {file} is not valid TOML: {exc}") from None
    return SearchSpace.from_dict(data.get("space", data))


#: What each key of a space file must be: (kind, low, high); lists are non-empty. Checked before
#: anything is built, so a wrong type is one line, not a TypeError deep in training.
SCHEMA: dict[str, tuple[str, float, float]] = {
    "families": ("list[family]", 0, 0),
    "stages": ("int", 1, 3),                      # 8x8 inputs halve per stage
    "depth": ("pair[int]", 1, 16),
    "widths": ("list[int]", 1, 1024),
    "kernels": ("list[odd int]", 1, 7),           # larger than the 8x8 input is meaningless
    "residual": ("list[bool]", 0, 0),
    "train.learning_rate": ("float", 1e-8, 10.0),
    "train.batch_size": ("int", 1, 65536),
    "train.weight_decay": ("float", 0.0, 1.0),
}

#: Largest candidate the search may build: parameters (float32 weights, gradients and two Adam
#: moments are 16 bytes each). A space whose largest member is beyond this is refused up front
#: instead of failing to allocate terabytes in the middle of a study.
MAX_CANDIDATE_PARAMETERS = 50_000_000


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked(key: str, value: Any) -> Any:
    """``value`` if it is what :data:`SCHEMA` says ``key`` must be (converted to the field's
    type); ConfigError naming the key otherwise."""
    import math

    kind, low, high = SCHEMA[key]

    def fail(what: str) -> ConfigError:
        return ConfigError(f"search space: {key} must be {what}, got {value!r}")

    def in_range(number: Any) -> bool:
        return _is_int(number) and low <= number <= high

    if kind == "int":
        if not in_range(value):
            raise fail(f"an integer in [{low:g}, {high:g}]")
        return value
    if kind == "float":
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                and low <= value <= high):
            raise fail(f"a finite number in [{low:g}, {high:g}]")
        return float(value)
    if kind == "pair[int]":
        if not (isinstance(value, list) and len(value) == 2 and all(in_range(v) for v in value)
                and value[0] <= value[1]):
            raise fail(f"[low, high], integers with {low:g} <= low <= high <= {high:g}")
        return (value[0], value[1])
    if not isinstance(value, list) or not value:
        raise fail("a non-empty list")
    if kind == "list[family]" and not all(item in FAMILIES for item in value):
        raise fail(f"a list of {list(FAMILIES)}")
    if kind == "list[int]" and not all(in_range(item) for item in value):
        raise fail(f"a list of integers in [{low:g}, {high:g}]")
    if kind == "list[odd int]" and not all(in_range(item) and item % 2 == 1 for item in value):
        raise fail(f"a list of odd integers in [{low:g}, {high:g}]")
    if kind == "list[bool]" and not all(isinstance(item, bool) for item in value):
        raise fail("a list of true/false")
    return tuple(value)


def _check_space(space: SearchSpace) -> None:
    """The schema applied to a space built in code, then the size of its largest candidate."""
    _checked("families", list(space.families))
    _checked("stages", space.stages)
    _checked("depth", list(space.depth))
    for key in ("widths", "kernels", "residual"):
        _checked(key, list(getattr(space, key)))
    for key in ("learning_rate", "batch_size", "weight_decay"):
        _checked(f"train.{key}", getattr(space.train, key))
    largest = largest_candidate_parameters(space)
    if largest > MAX_CANDIDATE_PARAMETERS:
        raise ConfigError(f"search space: its largest candidate has about {largest:,} parameters, above the "
                          f"{MAX_CANDIDATE_PARAMETERS:,} a search may train; lower widths, depth or stages")
    from redaudit.core.memory import available_bytes, format_bytes

    available = available_bytes()
    if available is not None and 16 * largest > available:
        raise ConfigError(f"search space: training its largest candidate needs about {format_bytes(16 * largest)} "
                          f"(weights, gradients, optimizer state), more than the {format_bytes(available)} "
                          "available; lower widths, depth or stages")


def largest_candidate_parameters(space: SearchSpace) -> int:
    """An upper estimate of the parameters of the space's largest member: every stage at the
    deepest depth, the widest width and the largest kernel (two convolutions per block, as
    :class:`redaudit.nas.models.ConvBlock`), or dense layers for the MLP family."""
    width, depth, kernel = max(space.widths), space.depth[1], max(space.kernels)
    total = 0
    for stage in range(space.stages):
        channels = width * 2 ** stage
        per_layer = channels * channels * (kernel * kernel if "cnn" in space.families else 1)
        total += depth * 2 * per_layer + channels * (channels // 2 if stage else 64)
    return total
