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
    def from_dict(cls, data: dict[str, Any]) -> "Architecture":
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
        unknown = [f for f in self.families if f not in FAMILIES]
        if not self.families or unknown:
            raise ConfigError(f"search space: families must be a non-empty subset of {list(FAMILIES)}, "
                              f"got {list(self.families)}")
        if not 1 <= self.stages <= 3:
            raise ConfigError(f"search space: stages must be 1..3 (8x8 inputs halve per stage), got {self.stages}")
        low, high = self.depth
        if not 1 <= low <= high <= 16:
            raise ConfigError(f"search space: depth must be [low, high] with 1 <= low <= high <= 16, got {list(self.depth)}")
        if not self.widths or any(w < 1 for w in self.widths):
            raise ConfigError(f"search space: widths must be positive integers, got {list(self.widths)}")
        if not self.kernels or any(k < 1 or k % 2 == 0 for k in self.kernels):
            raise ConfigError(f"search space: kernels must be odd positive integers, got {list(self.kernels)}")
        if not self.residual or any(not isinstance(r, bool) for r in self.residual):
            raise ConfigError("search space: residual must be a non-empty list of true/false")
        settings = self.train
        if settings.learning_rate <= 0 or settings.batch_size < 1 or settings.weight_decay < 0:
            raise ConfigError("search space: [train] needs learning_rate > 0, batch_size >= 1, weight_decay >= 0")

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
    def from_dict(cls, data: dict[str, Any]) -> "SearchSpace":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"search space: unknown keys {unknown}; allowed: {sorted(known)}")
        train_data = dict(data.get("train", {}))
        train_known = {f.name for f in fields(TrainSettings)}
        if set(train_data) - train_known:
            raise ConfigError(f"search space: unknown [train] keys {sorted(set(train_data) - train_known)}; "
                              f"allowed: {sorted(train_known)}")
        try:
            kwargs: dict[str, Any] = {}
            for key in ("families", "widths", "kernels", "residual"):
                if key in data:
                    kwargs[key] = tuple(data[key])
            if "depth" in data:
                low, high = data["depth"]
                kwargs["depth"] = (int(low), int(high))
            if "stages" in data:
                kwargs["stages"] = int(data["stages"])
            kwargs["train"] = TrainSettings(**{k: type(getattr(TrainSettings(), k))(v)
                                               for k, v in train_data.items()})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"search space: bad value ({exc})") from exc
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
