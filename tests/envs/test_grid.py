import numpy as np
import pytest

from worldssm.envs.swarm.grid import Grid, knn_reference


@pytest.mark.parametrize("n_points,n_queries,k", [(0, 5, 3), (7, 0, 3), (3, 40, 5), (32, 300, 5), (33, 300, 5),
                                                  (400, 300, 5), (3000, 200, 8)])
def test_grid_query_matches_brute_force(n_points, n_queries, k):
    rng = np.random.default_rng(n_points + n_queries)
    pts = rng.uniform(0, 60, (n_points, 2)).astype(np.float32)
    q = rng.uniform(-2, 62, (n_queries, 2)).astype(np.float32)
    exclude = rng.integers(-1, max(n_points, 1), n_queries)
    idx, d2 = Grid(pts, 6.0, 60.0).query(q, k, 6.0, exclude)
    ref_idx, ref_d2 = knn_reference(pts, q, k, 6.0, exclude)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(d2, ref_d2, rtol=1e-6)


def test_grid_clusters_and_excludes_self():
    # Everything in one cell: the padded-free pair list must still rank exactly.
    rng = np.random.default_rng(1)
    pts = rng.uniform(10, 12, (200, 2)).astype(np.float32)
    idx, d2 = Grid(pts, 6.0, 60.0).query(pts, 4, 6.0, np.arange(200))
    assert (idx != np.arange(200)[:, None]).all()
    ref_idx, _ = knn_reference(pts, pts, 4, 6.0, np.arange(200))
    np.testing.assert_array_equal(idx, ref_idx)
    assert (np.diff(d2, axis=1) >= 0).all()


@pytest.mark.parametrize("side", [30.0, 1500.0, 1600.0])
def test_grid_query_on_both_sides_of_the_16_bit_cell_sort(side):
    # Up to 2^16 cells the cell ids are sorted as uint16 (a radix sort), above as int64.
    rng = np.random.default_rng(int(side))
    pts = np.concatenate([rng.uniform(0, side, (3000, 2)), rng.uniform(0, 20, (300, 2))])
    pts = pts.astype(np.float32)
    q = pts[rng.integers(0, len(pts), 400)] + rng.normal(0, 2, (400, 2)).astype(np.float32)
    idx, _ = Grid(pts, 6.0, side).query(q, 6, 6.0)
    ref_idx, _ = knn_reference(pts, q, 6, 6.0)
    np.testing.assert_array_equal(idx, ref_idx)


@pytest.mark.parametrize("n_points", [20, 200])  # the dense path and the buckets
def test_grid_point_mask_and_d2(n_points):
    rng = np.random.default_rng(n_points)
    pts = rng.uniform(0, 30, (n_points, 2)).astype(np.float32)
    q = rng.uniform(0, 30, (50, 2)).astype(np.float32)
    mask = rng.random(n_points) < 0.6
    idx, d2 = Grid(pts, 6.0, 30.0).query(q, 4, 6.0, point_mask=mask)
    sub = np.flatnonzero(mask)
    ref_idx, ref_d2 = knn_reference(pts[sub], q, 4, 6.0)
    np.testing.assert_array_equal(idx, np.where(ref_idx >= 0, sub[np.maximum(ref_idx, 0)], -1))
    np.testing.assert_allclose(d2, ref_d2, rtol=1e-6)
    assert Grid(pts, 6.0, 30.0).query(q, 4, 6.0, need_d2=False)[1] is None
