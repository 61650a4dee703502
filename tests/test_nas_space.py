from __future__ import annotations

import optuna
import pytest

from redaudit.errors import ConfigError
from redaudit.nas.space import Architecture, SearchSpace, load_space


def test_default_space_suggests_architecture_inside_its_ranges():
    space = SearchSpace()
    trial = optuna.trial.FixedTrial({"family": "cnn", "depth_0": 3, "depth_1": 1, "width": 16,
                                     "kernel": 5, "residual": False})
    arch = space.suggest(trial)
    assert arch == Architecture("cnn", (3, 1), 16, 5, False)
    assert Architecture.from_dict(arch.to_dict()) == arch
    assert space.architecture_from_params(trial.params) == arch
    assert arch.describe() == "cnn plain d3-1 w16 k5"


def test_space_round_trips_through_dict():
    space = SearchSpace(families=("mlp",), stages=3, depth=(2, 5), widths=(7,), kernels=(3,), residual=(True,))
    assert SearchSpace.from_dict(space.to_dict()) == space


def test_toml_file_declares_the_space(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text("""
[space]
families = ["cnn", "mlp"]
depth = [1, 2]
widths = [8, 16]
kernels = [3]
residual = [true]

[space.train]
learning_rate = 0.01
batch_size = 32
""")
    space = load_space(path)
    assert space.families == ("cnn", "mlp") and space.depth == (1, 2) and space.kernels == (3,)
    assert space.train.learning_rate == 0.01 and space.train.batch_size == 32
    assert space.stages == 2  # untouched keys keep their defaults


@pytest.mark.parametrize("text, fragment", [
    ("depth = [3, 1]", "depth"),
    ("kernels = [2]", "odd"),
    ("families = ['transformer']", "families"),
    ("widthz = [8]", "unknown keys"),
    ("depth = 3", "depth must be [low, high]"),
    ("[train]\nlr = 1", "unknown [train] keys"),
    ("this is not toml", "not valid TOML"),
])
def test_bad_space_files_give_one_line_errors(tmp_path, text, fragment):
    path = tmp_path / "space.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=None) as info:
        load_space(path)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_missing_space_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_space(tmp_path / "nope.toml")
