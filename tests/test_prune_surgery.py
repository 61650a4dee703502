"""Candidate discovery and graph surgery on generated models with known structure."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import prune_models as pm
from redaudit.prune import PruneError, find_candidates, remove_blocks
from redaudit.core.graph import parameter_count


def run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


def features(count: int = 64, width: int = 8, seed: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).normal(size=(count, width)).astype(np.float32)}


def test_residual_blocks_found_in_order():
    blocks = find_candidates(pm.residual_mlp(4))
    assert [b.name for b in blocks] == [f"block{i}.out" for i in range(4)]
    assert [b.entry for b in blocks] == ["stem.act", "block0.out", "block1.out", "block2.out"]
    assert all(b.kind == "residual" for b in blocks)
    assert blocks[0].node_names == ("block0.fc1", "block0.relu", "block0.fc2", "block0.add")


def test_zero_branch_block_removed_exactly():
    model = pm.residual_mlp(4, branch_scale={2: 0.0})
    block = next(b for b in find_candidates(model) if b.name == "block2.out")
    pruned = remove_blocks(model, [block])
    feed = features()
    np.testing.assert_array_equal(run(model, feed)[0], run(pruned, feed)[0])
    assert not any(node.name.startswith("block2.") for node in pruned.graph.node)


def test_tiny_branch_block_agrees_within_bound():
    model = pm.residual_mlp(4, branch_scale={1: 1e-4})
    pruned = remove_blocks(model, [b for b in find_candidates(model) if b.name == "block1.out"])
    feed = features()
    reference, result = run(model, feed)[0], run(pruned, feed)[0]
    assert np.abs(reference - result).max() < 1e-3 * np.abs(reference).max()
    # …and removing a block that does real work changes the output: the test above can fail.
    other = remove_blocks(model, [b for b in find_candidates(model) if b.name == "block0.out"])
    assert np.abs(reference - run(other, feed)[0]).max() > 1e-2


def test_shape_changing_block_never_offered():
    model = pm.residual_mlp(3, downsample_after=1)
    names = [b.name for b in find_candidates(model)]
    assert "down.out" not in names
    assert not any(b.entry.startswith("down.") and b.name.startswith("down.") for b in find_candidates(model))
    assert names == ["block0.out", "block1.out", "block2.out"]


@pytest.mark.parametrize("remove", [1, 2, 3])
def test_removing_n_of_m_leaves_m_minus_n(remove):
    model = pm.residual_mlp(5)
    blocks = find_candidates(model)
    pruned = remove_blocks(model, blocks[:remove])
    assert len(find_candidates(pruned)) == 5 - remove
    assert run(pruned, features())[0].shape == (64, 5)


def test_names_initializers_and_model_fields_preserved():
    model = pm.residual_mlp(4)
    blocks = find_candidates(model)
    pruned = remove_blocks(model, [blocks[1], blocks[3]])
    dead = set(blocks[1].node_names) | set(blocks[3].node_names)
    kept_nodes = [(n.name, list(n.output)) for n in model.graph.node if n.name not in dead]
    assert [(n.name, list(n.output)) for n in pruned.graph.node] == kept_nodes
    kept_inits = {i.name for i in model.graph.initializer if not i.name.startswith(("block1.", "block3."))}
    assert {i.name for i in pruned.graph.initializer} == kept_inits
    for init in pruned.graph.initializer:
        original = next(i for i in model.graph.initializer if i.name == init.name)
        assert init.SerializeToString() == original.SerializeToString()
    assert pruned.graph.input == model.graph.input and pruned.graph.output == model.graph.output
    assert pruned.opset_import == model.opset_import
    assert pruned.metadata_props == model.metadata_props
    assert pruned.producer_name == model.producer_name
    assert parameter_count(pruned) == parameter_count(model) - 2 * 2 * 16 * 16
    onnx.checker.check_model(pruned, full_check=True)
    assert model.graph.node[0].name == "stem"  # the original is untouched
    assert len(find_candidates(model)) == 4


def test_consumers_of_removed_block_read_its_input():
    model = pm.residual_mlp(3)
    pruned = remove_blocks(model, [b for b in find_candidates(model) if b.name == "block1.out"])
    add2 = next(n for n in pruned.graph.node if n.name == "block2.add")
    fc1 = next(n for n in pruned.graph.node if n.name == "block2.fc1")
    assert add2.input[0] == "block0.out" and fc1.input[0] == "block0.out"


def test_adjacent_blocks_removed_together():
    model = pm.residual_mlp(4, branch_scale={1: 0.0, 2: 0.0})
    blocks = [b for b in find_candidates(model) if b.name in ("block1.out", "block2.out")]
    pruned = remove_blocks(model, blocks)
    feed = features()
    np.testing.assert_array_equal(run(model, feed)[0], run(pruned, feed)[0])
    assert [b.name for b in find_candidates(pruned)] == ["block0.out", "block3.out"]


def test_cnn_residual_blocks_with_trailing_relu():
    model = pm.residual_cnn(3, zero_block=1)
    blocks = find_candidates(model)
    assert [(b.entry, b.name) for b in blocks] == [
        ("stem.r", "layer0.out"), ("layer0.out", "layer1.out"), ("layer1.out", "layer2.out")]
    pruned = remove_blocks(model, [blocks[1]])
    feed = {"img": np.random.default_rng(0).normal(size=(8, 3, 8, 8)).astype(np.float32)}
    # the branch is zero and its input is already ReLU'd, so relu(x + 0) = x: exact
    np.testing.assert_allclose(run(model, feed)[0], run(pruned, feed)[0], rtol=0, atol=1e-6)


def test_plain_chain_spans_and_graph_output_kept_by_identity():
    model = pm.plain_chain((16, 16, 32, 16, 16))
    blocks = find_candidates(model)
    assert [(b.entry, b.name, b.kind) for b in blocks] == [
        ("x", "fc0.out", "chain"), ("fc0.out", "fc2.out", "chain"), ("fc2.out", "y", "chain")]
    pruned = remove_blocks(model, [blocks[2]])
    assert [o.name for o in pruned.graph.output] == ["y"]
    identity = pruned.graph.node[-1]
    assert identity.op_type == "Identity" and list(identity.input) == ["fc2.out"]
    feed = {"x": np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32)}
    out = ort.InferenceSession(pruned.SerializeToString()).run(None, feed)[0]
    assert out.shape == (4, 16)
    pruned_two = remove_blocks(model, [blocks[1], blocks[2]])
    assert {n.name for n in pruned_two.graph.node} == {"fc0", "fc0.bias", "fc0.relu", "y/pruned_identity"}


def test_model_without_removable_block():
    assert find_candidates(pm.no_removable_block()) == []


def test_overlapping_request_is_refused():
    model = pm.residual_mlp(3)
    block = find_candidates(model)[0]
    with pytest.raises(PruneError):
        remove_blocks(model, [block, block])
    with pytest.raises(PruneError):
        remove_blocks(model, [])


def test_preexisting_dead_code_is_left_alone():
    model = pm.residual_mlp(3)
    extra = onnx.helper.make_node("Relu", ["stem.act"], ["unused.out"], name="unused")
    model.graph.node.insert(3, extra)
    pruned = remove_blocks(model, [find_candidates(model)[1]])
    assert any(node.name == "unused" for node in pruned.graph.node)
