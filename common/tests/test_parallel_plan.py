"""The parallel plan (rosetta_common.parallel): the logical axes of every canonical tensor, each strategy's layout,
and the clear errors for plans that do not fit."""

from __future__ import annotations

import pytest

from rosetta_common import EncoderConfig, expected_shapes
from rosetta_common.name_tables import FLAX_ENCODER, TORCH_ENCODER
from rosetta_common.parallel import (
    STRATEGIES,
    Mesh,
    PlanError,
    check_batch,
    check_device_count,
    logical_axes,
    native_plan,
    plan,
)

PAPER = EncoderConfig(vocab_size=32, d_model=16, n_heads=4, n_layers=2, d_ff=32, max_len=10, padding_idx=0)
BERT_LIKE = PAPER.replace(
    positions="learned", type_vocab_size=2, embedding_norm=True, pooler=True, norm_first=True, final_norm=True
)
MODERN = PAPER.replace(
    norm_first=True, positions="rotary", scale_embedding=False, embedding_norm=True, feed_forward="glu",
    attention_bias=False, mlp_bias=False, norm_bias=False, local_window=4, global_every=2, first_attention_norm=False,
)  # fmt: skip
MESHES = {"dp": Mesh(4), "fsdp": Mesh(4), "tp": Mesh(model=4), "fsdp+tp": Mesh(2, 2), "dp+tp": Mesh(2, 2)}


@pytest.mark.parametrize("config", [PAPER, BERT_LIKE, MODERN], ids=["paper", "bert_like", "modern"])
def test_every_tensor_has_one_logical_axis_per_dimension(config: EncoderConfig) -> None:
    for name, shape in expected_shapes(config).items():
        assert len(logical_axes(name)) == len(shape), name


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("config", [PAPER, BERT_LIKE, MODERN], ids=["paper", "bert_like", "modern"])
def test_each_mesh_axis_splits_a_tensor_at_most_once(config: EncoderConfig, strategy: str) -> None:
    resolved = plan(config, strategy, MESHES[strategy])
    assert set(resolved) == set(expected_shapes(config))
    for name, axes in resolved.items():
        used = [axis for axis in axes if axis is not None]
        assert len(used) == len(set(used)), name


def test_tensor_parallel_is_megatrons_split() -> None:
    resolved = plan(PAPER, "tp", Mesh(model=4))
    for i in range(PAPER.n_layers):
        for projection in ("q", "k", "v"):
            assert resolved[f"layers.{i}.attn.{projection}.kernel"] == (None, "model")  # by columns: whole heads
            assert resolved[f"layers.{i}.attn.{projection}.bias"] == ("model",)
        assert resolved[f"layers.{i}.ffn.in.kernel"] == (None, "model")
        assert resolved[f"layers.{i}.attn.out.kernel"] == resolved[f"layers.{i}.ffn.out.kernel"] == ("model", None)
        assert resolved[f"layers.{i}.attn.out.bias"] == resolved[f"layers.{i}.ffn.out.bias"] == (None,)
    assert resolved["embedding.weight"] == (None, None)


def test_fsdp_splits_every_tensor_over_data_and_dp_none() -> None:
    assert all("data" in axes for axes in plan(BERT_LIKE, "fsdp", Mesh(4)).values())
    assert all(set(axes) == {None} for axes in plan(BERT_LIKE, "dp", Mesh(4)).values())
    assert plan(PAPER, "fsdp", Mesh(4))["layers.0.attn.q.kernel"] == ("data", None)  # along embed
    assert plan(PAPER, "fsdp", Mesh(4))["layers.0.attn.q.bias"] == ("data",)  # no embed: along its columns


def test_fsdp_plus_tp_combines_both() -> None:
    resolved = plan(PAPER, "fsdp+tp", Mesh(2, 2))
    assert resolved["layers.0.attn.q.kernel"] == ("data", "model")
    assert resolved["layers.0.ffn.out.kernel"] == ("model", "data")
    assert resolved["layers.0.norm1.scale"] == ("data",)


def test_native_plans_follow_each_layout() -> None:
    resolved = plan(PAPER, "fsdp+tp", Mesh(2, 2))
    torch_plan, flax_plan = native_plan(TORCH_ENCODER, PAPER, resolved), native_plan(FLAX_ENCODER, PAPER, resolved)
    assert torch_plan["layers.0.attn.q.weight"] == ("model", "data")  # nn.Linear.weight is the kernel transposed
    assert flax_plan["layers.0.attn.q.kernel"] == ("data", "model")
    assert torch_plan["layers.0.ffn.up.weight"] == ("model", "data")
    assert flax_plan["layers.0.ffn.up.kernel"] == ("data", "model")


@pytest.mark.parametrize(
    ("strategy", "mesh", "config", "message"),
    [
        ("pipeline", Mesh(2), PAPER, "unknown parallel strategy 'pipeline'"),
        ("tp", Mesh(model=3), PAPER, "n_heads (4) is not divisible by mesh axis 'model' (3)"),
        ("tp", Mesh(model=4), PAPER.replace(d_ff=30), "d_ff (30) is not divisible by mesh axis 'model' (4)"),
        ("tp", Mesh(data=2, model=2), PAPER, "strategy 'tp' does not use mesh axis 'data'"),
        ("dp", Mesh(data=2, model=2), PAPER, "strategy 'dp' does not use mesh axis 'model'"),
        ("fsdp", Mesh(data=3), PAPER, "d_model (16) is not divisible by mesh axis 'data' (3)"),
    ],
)
def test_plans_that_do_not_fit(strategy: str, mesh: Mesh, config: EncoderConfig, message: str) -> None:
    with pytest.raises(PlanError) as error:
        plan(config, strategy, mesh)
    assert message in str(error.value)


def test_mesh_batch_and_device_checks() -> None:
    assert Mesh.parse("data=2,model=2") == Mesh(2, 2)
    assert Mesh.parse("model=4") == Mesh(1, 4)
    for text, message in [
        ("data=2,seq=2", "unknown axis 'seq'"),
        ("data", "is not AXIS=SIZE"),
        ("data=0", "needs a size >= 1"),
        ("", "no axis given"),
        ("model=1,model=2", "given twice"),
    ]:
        with pytest.raises(PlanError, match=message):
            Mesh.parse(text)
    with pytest.raises(PlanError, match="batch size 10 is not divisible by mesh axis 'data' \\(4\\)"):
        check_batch(10, Mesh(4))
    with pytest.raises(PlanError, match="needs 4 processes, but there are 2"):
        check_device_count(Mesh(2, 2), 2, "processes")
    check_batch(8, Mesh(4))
    check_device_count(Mesh(2, 2), 4, "devices")


def test_a_glu_gate_splits_with_its_input_columns() -> None:
    """Under tp a rank holds the same d_ff columns of ffn.in and ffn.gate (its units with their own gates) and
    whole heads of q, k, v; bias-less layers have no bias entries to place."""
    resolved = plan(MODERN, "tp", MESHES["tp"])
    for i in range(MODERN.n_layers):
        assert resolved[f"layers.{i}.ffn.gate.kernel"] == resolved[f"layers.{i}.ffn.in.kernel"] == (None, "model")
        assert resolved[f"layers.{i}.attn.q.kernel"] == (None, "model")
        assert f"layers.{i}.attn.q.bias" not in resolved and f"layers.{i}.ffn.gate.bias" not in resolved
    assert "layers.0.norm1.scale" not in resolved and resolved["layers.1.norm1.scale"] == (None,)
