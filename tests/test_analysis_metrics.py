"""The analyses' math as properties: rollout, distance, collapse, entropy, head permutation, weights."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from vitlab.analysis import (TokenLayout, attention_entropy, attention_rollout, cross_layer_similarity, head_similarity,
                             mean_attention_distance, neighbour_similarity, patch_embedding_components,
                             position_embedding_similarity, query_maps, rollout_saliency, similar_blocks,
                             similar_head_ratio)
from vitlab.analysis.rollout import discard_lowest
from vitlab.errors import ConfigError
from vitlab.api import create_model

LAYOUT = TokenLayout(num_prefix=1, grid=(3, 4), patch_size=8)  # T = 13


def random_maps(*shape: int, seed: int = 0, sharp: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (sharp * torch.randn(*shape, generator=g, dtype=torch.float64)).softmax(dim=-1)


def uniform_over_patches(layout: TokenLayout, B: int = 2, H: int = 3) -> torch.Tensor:
    T, p = layout.num_tokens, layout.num_prefix
    a = torch.zeros(B, H, T, T, dtype=torch.float64)
    a[..., p:] = 1.0 / layout.num_patches
    return a


# ----------------------------------------------------------------------------- rollout
@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("discard", [0.0, 0.5, 0.9])
def test_rollout_rows_sum_to_one(fusion: str, discard: float) -> None:
    maps = [random_maps(2, 4, 13, 13, seed=s) for s in range(5)]
    roll = attention_rollout(maps, fusion, discard)
    torch.testing.assert_close(roll.sum(-1), torch.ones(2, 13, dtype=torch.float64))
    assert (roll >= 0).all()


def test_rollout_of_one_layer_is_half_attention_half_identity() -> None:
    a = random_maps(1, 4, 13, 13)
    expect = 0.5 * a.mean(1) + 0.5 * torch.eye(13, dtype=torch.float64)
    torch.testing.assert_close(attention_rollout([a]), expect)
    eye = torch.eye(13, dtype=torch.float64).expand(1, 4, 13, 13)
    torch.testing.assert_close(attention_rollout([eye, eye, eye]), eye[:, 0])


def test_rollout_multiplies_later_layers_on_the_left() -> None:
    a, b = random_maps(1, 2, 13, 13, seed=1), random_maps(1, 2, 13, 13, seed=2)
    half = lambda m: 0.5 * m.mean(1) + 0.5 * torch.eye(13, dtype=torch.float64)  # noqa: E731
    torch.testing.assert_close(attention_rollout([a, b]), half(b) @ half(a))


def test_discard_keeps_the_class_token_self_attention() -> None:
    fused = torch.ones(1, 4, 4, dtype=torch.float64)
    fused[0, 0, 0] = 0.5  # the smallest entry, yet kept
    fused[0, 1, 2] = 6.0
    out = discard_lowest(fused, 0.75)  # 12 of 16 entries are candidates; [0, 0] is spared
    assert out[0, 0, 0] == 0.5 and out[0, 1, 2] == 6.0 and int((out == 0).sum()) == 11
    with pytest.raises(ConfigError):
        discard_lowest(fused, 1.0)


def test_rollout_saliency_is_the_class_row_over_the_grid() -> None:
    roll = random_maps(2, 13, 13)
    torch.testing.assert_close(rollout_saliency(roll, LAYOUT), roll[:, 0, 1:].reshape(2, 3, 4))


# ----------------------------------------------------------------------------- distance
@pytest.mark.parametrize("prefix", ["renormalize", "zero"])
def test_identity_attention_has_mean_distance_zero(prefix: str) -> None:
    eye = torch.eye(13, dtype=torch.float64).expand(2, 3, 13, 13)
    assert mean_attention_distance(eye, LAYOUT, prefix).abs().max() == 0


def test_uniform_attention_on_a_2x2_grid_has_the_analytic_distance() -> None:
    layout = TokenLayout(1, (2, 2), patch_size=16)
    # From any patch of a 2x2 grid: itself (0), two neighbours (P) and the diagonal (P * sqrt 2).
    expect = 16 * (2 + math.sqrt(2)) / 4
    got = mean_attention_distance(uniform_over_patches(layout), layout)
    torch.testing.assert_close(got, torch.full((2, 3), expect, dtype=torch.float64))


@pytest.mark.parametrize("grid", [(3, 4), (5, 5), (1, 7)])
def test_uniform_attention_gives_the_mean_pairwise_distance_of_the_grid(grid: tuple[int, int]) -> None:
    layout = TokenLayout(1, grid, patch_size=8)
    cells = list(itertools.product(range(grid[0]), range(grid[1])))
    expect = sum(8 * math.dist(a, b) for a in cells for b in cells) / len(cells) ** 2
    got = mean_attention_distance(uniform_over_patches(layout), layout)
    torch.testing.assert_close(got, torch.full((2, 3), expect, dtype=torch.float64))


def test_distance_prefix_conventions() -> None:
    a = uniform_over_patches(LAYOUT) * 0.5
    a[..., 0] = 0.5  # half of every row on the class token
    full = mean_attention_distance(a, LAYOUT, "renormalize")
    torch.testing.assert_close(mean_attention_distance(a, LAYOUT, "zero"), full / 2)
    torch.testing.assert_close(full, mean_attention_distance(uniform_over_patches(LAYOUT), LAYOUT))


def test_distance_without_prefix_tokens_and_bad_shapes() -> None:
    layout = TokenLayout(0, (2, 2), patch_size=1)
    a = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    a[0, 0, :, 3] = 1.0  # everyone looks at the bottom-right patch
    torch.testing.assert_close(mean_attention_distance(a, layout), torch.tensor([[(0 + 1 + 1 + math.sqrt(2)) / 4]],
                                                                                  dtype=torch.float64))
    with pytest.raises(ConfigError, match="does not fit"):
        mean_attention_distance(torch.ones(1, 1, 5, 5), layout)


# ----------------------------------------------------------------------------- collapse
def test_a_block_compared_with_itself_has_similarity_one() -> None:
    maps = [random_maps(2, 4, 13, 13, seed=s) for s in range(4)]
    sim = cross_layer_similarity(maps)
    assert sim.shape == (2, 4, 4)
    torch.testing.assert_close(torch.diagonal(sim, dim1=1, dim2=2), torch.ones(2, 4, dtype=torch.float64))
    torch.testing.assert_close(sim, sim.transpose(1, 2))
    assert (sim <= 1 + 1e-12).all() and (sim > 0).all()
    torch.testing.assert_close(cross_layer_similarity([maps[0], maps[0]]), torch.ones(2, 2, 2, dtype=torch.float64))


def test_cross_layer_similarity_is_the_papers_column_cosine() -> None:
    a, b = random_maps(1, 2, 5, 5, seed=3), random_maps(1, 2, 5, 5, seed=4)
    expect = sum(torch.nn.functional.cosine_similarity(a[0, h, :, t], b[0, h, :, t], dim=0)
                 for h in range(2) for t in range(5)) / 10
    torch.testing.assert_close(cross_layer_similarity([a, b])[0, 0, 1], expect)


def test_neighbours_and_similar_blocks() -> None:
    sim = torch.tensor([[1.0, 0.9, 0.2, 0.1], [0.9, 1.0, 0.5, 0.3], [0.2, 0.5, 1.0, 0.85], [0.1, 0.3, 0.85, 1.0]])
    torch.testing.assert_close(neighbour_similarity(sim, 1), torch.tensor([0.9, 0.5, 0.85]))
    torch.testing.assert_close(neighbour_similarity(sim, 3), torch.tensor([0.1]))
    assert similar_blocks(sim, 0.8) == [0, 1, 2, 3]
    assert similar_blocks(sim, 0.88) == [0, 1]
    assert similar_blocks(sim, 0.95) == []


def test_head_similarity_and_ratio() -> None:
    a = random_maps(2, 3, 13, 13)
    a[:, 2] = a[:, 0]  # heads 0 and 2 identical
    hs = head_similarity(a)
    torch.testing.assert_close(torch.diagonal(hs, dim1=1, dim2=2), torch.ones(2, 3, dtype=torch.float64))
    torch.testing.assert_close(hs[:, 0, 2], torch.ones(2, dtype=torch.float64))
    ratio = similar_head_ratio(torch.tensor([[1.0, 0.6, 0.1], [0.6, 1.0, 0.4], [0.1, 0.4, 1.0]]), 0.5)
    assert float(ratio) == pytest.approx(2 / 6)


# ----------------------------------------------------------------------------- entropy
def test_entropy_bounds() -> None:
    T = 13
    uniform = torch.full((1, 2, T, T), 1.0 / T, dtype=torch.float64)
    torch.testing.assert_close(attention_entropy(uniform), torch.full((1, 2), math.log(T), dtype=torch.float64))
    eye = torch.eye(T, dtype=torch.float64).expand(1, 2, T, T)
    assert attention_entropy(eye).abs().max() == 0


# ----------------------------------------------------------------------------- heads permuted
def test_permuting_heads_permutes_per_head_results() -> None:
    maps = [random_maps(2, 4, 13, 13, seed=s) for s in range(3)]
    perm = torch.tensor([2, 0, 3, 1])
    permuted = [m[:, perm] for m in maps]
    for a, b in zip(maps, permuted):
        torch.testing.assert_close(mean_attention_distance(b, LAYOUT), mean_attention_distance(a, LAYOUT)[:, perm])
        torch.testing.assert_close(attention_entropy(b), attention_entropy(a)[:, perm])
        torch.testing.assert_close(query_maps(b, LAYOUT), query_maps(a, LAYOUT)[:, perm])
        torch.testing.assert_close(head_similarity(b), head_similarity(a)[:, perm][:, :, perm])
    # Head-averaged results do not change when every layer's heads are permuted alike.
    torch.testing.assert_close(cross_layer_similarity(permuted), cross_layer_similarity(maps))
    for fusion in ("mean", "max", "min"):
        torch.testing.assert_close(attention_rollout(permuted, fusion), attention_rollout(maps, fusion))


# ----------------------------------------------------------------------------- weights
def test_position_embedding_similarity() -> None:
    model = create_model("vit_pico_patch7_28", depth=1)
    sim = position_embedding_similarity(model)
    assert sim.shape == (4, 4, 4, 4)
    idx = torch.arange(4)
    torch.testing.assert_close(sim[idx[:, None], idx[None, :], idx[:, None], idx[None, :]], torch.ones(4, 4))
    torch.testing.assert_close(sim.reshape(16, 16), sim.reshape(16, 16).T)
    sincos = position_embedding_similarity(create_model("vit_pico_patch7_28", depth=1, pos_embed="sincos"))
    assert sincos[0, 0, 0, 1] > sincos[0, 0, 0, 3]  # fixed 2-D embeddings are local
    with pytest.raises(ConfigError, match="no position embedding"):
        position_embedding_similarity(create_model("vit_pico_patch7_28", depth=1, pos_embed="none",
                                                   global_pool="avg"))


def test_patch_embedding_components_are_orthonormal() -> None:
    model = create_model("vit_pico_patch4_32", depth=1)
    comps, explained = patch_embedding_components(model, k=10)
    assert comps.shape == (10, 3, 4, 4)
    flat = comps.reshape(10, -1).double()
    torch.testing.assert_close(flat @ flat.T, torch.eye(10, dtype=torch.float64), atol=1e-5, rtol=0)
    assert (explained[:-1] >= explained[1:]).all() and 0 < float(explained.sum()) <= 1
    with pytest.raises(ConfigError, match="linear patch projection"):
        patch_embedding_components(create_model("vit_pico_convstem_patch4_28", depth=1))
