"""The validation study's building blocks: data, probe tiers, the ResNet family as redaudit sees it,
block removal, and the ε/β grid recomputed from per-batch matrices."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.paper_report import spearman
from benchmarks.paper_resnet import FAR_SHIFTS, SHIFTS, load_digits_8, probe_set, shift


def test_shift_moves_without_wrapping():
    image = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    moved = shift(image, 1, 0, fill=-1.0)
    assert (moved[0, :, 0] == -1).all()
    np.testing.assert_array_equal(moved[0, :, 1:], image[0, :, :3])
    moved = shift(image, 0, -2, fill=-1.0)
    np.testing.assert_array_equal(moved[0, :2], image[0, 2:])
    assert (moved[0, 2:] == -1).all()


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    return load_digits_8()


def test_digits_split_is_fixed_and_standardised(digits):
    assert digits.train_x.shape == (1297, 1, 8, 8) and digits.test_x.shape == (500, 1, 8, 8)
    assert abs(float(digits.train_x.mean())) < 1e-5 and abs(float(digits.train_x.std()) - 1) < 1e-4
    assert np.bincount(digits.test_y).min() >= 45  # stratified
    np.testing.assert_array_equal(load_digits_8().test_y, digits.test_y)


def test_probe_tiers(digits):
    assert len(SHIFTS) == 9 and len(FAR_SHIFTS) == 16
    small, large = probe_set(digits, 4500), probe_set(digits, 12500)
    np.testing.assert_array_equal(large[:4500], small)  # a larger probe extends a smaller one
    fill = float(digits.test_x.min())
    near = {shift(digits.test_x[:1], dx, dy, fill).tobytes() for dx, dy in SHIFTS}
    assert {row[None].tobytes() for row in small} >= near  # first tier: ±1 px shifts only...
    far = {shift(digits.test_x[:1], dx, dy, fill).tobytes() for dx, dy in FAR_SHIFTS}
    assert not far & {row[None].tobytes() for row in small}
    assert far <= {row[None].tobytes() for row in large}  # ...the second brings the 2 px ones
    with pytest.raises(ValueError):
        probe_set(digits, 12501)


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 25, 100]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


@pytest.mark.torch
def test_resnet_family_as_redaudit_sees_it(tmp_path, digits):
    pytest.importorskip("torch")
    import redaudit
    from benchmarks.paper_resnet import build_resnet, export, without_blocks
    from benchmarks.validate_paper import msrs_grid, similarity_order
    from redaudit.core.msrs import msrs_of_matrix

    n = 2
    model = build_resnet(n, seed=0).eval()
    path = export(model, tmp_path / "resnet14.onnx")
    probe = probe_set(digits, 512)
    result = redaudit.scan(str(path), inputs={"input": probe}, samples=512, device="cpu")
    assert result.config.level == "block" and len(result.layers) == 3 * n + 1  # stem + every block
    # The ε/β grid is MSRS of the mean matrix; a single-batch scan makes it the scan's own MSRS.
    grid = msrs_grid(result.similarity)
    assert grid["0.7/100"] >= grid["0.8/100"] >= grid["0.9/100"]
    assert grid["0.8/10"] == pytest.approx(msrs_of_matrix(result.similarity, 0.8, 10.0))
    single = redaudit.scan(str(path), inputs={"input": probe[:256]}, samples=256, device="cpu")
    assert msrs_grid(single.similarity)["0.8/100"] == pytest.approx(single.msrs, abs=1e-9)
    # Prune candidates are exactly the identity-shortcut blocks, mapped back to torch indices.
    ranked, similarity = similarity_order(path, probe)
    removable = [i for i, block in enumerate(model.blocks) if block.removable]
    assert sorted(ranked) == removable == [0, 1, 3, 5]  # stage 1 has no projection
    assert similarity == sorted(similarity, reverse=True)
    # Removing a block in torch removes one block IR from the exported model.
    pruned = export(without_blocks(model, [ranked[0]]), tmp_path / "pruned.onnx")
    after = redaudit.scan(str(pruned), inputs={"input": probe}, samples=512, device="cpu")
    assert len(after.layers) == 3 * n
    with pytest.raises(AssertionError):
        without_blocks(model, [2])  # a projection block cannot go
