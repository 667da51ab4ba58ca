"""Uniform spatial grid for k-nearest-within-radius queries, all queries at once in numpy.

Cells are as wide as the query radius, so every point within the radius of a query lies in the
3x3 block of cells around it. Points are sorted by cell, so each row of a block is one run of
sorted points; the queries' candidates from their 3 runs form one flat list of pairs (no
padding, so one crowded cell costs only its own pairs), pairs beyond the radius are dropped,
and one sort by (query, distance, index) ranks the rest. Up to `DENSE_MAX_POINTS` points a
query compares against all of them instead (fewer numpy calls than bucketing). `knn_reference`
is the brute-force specification the tests compare against.
"""

from __future__ import annotations

import numpy as np


def grid_cells(pos: np.ndarray, cell: float, side: float) -> np.ndarray:
    """Cell id of each position in the grid `Grid(_, cell, side)` (interior cells), int64 [Q].

    Lets a caller compute the ids once and hand them to both `Grid(cells=...)` and
    `Grid.query(q_cells=...)`.
    """
    n = max(1, int(np.ceil(side / cell)))
    c = (pos * (1.0 / float(cell))).astype(np.int64)  # [Q, 2]
    np.maximum(c, 0, out=c)
    np.minimum(c, n - 1, out=c)
    # +1 on both axes skips the ring of empty cells: (cy + 1) * stride + (cx + 1).
    return c[:, 1] * (n + 2) + (c[:, 0] + (n + 3))


def as_complex(points: np.ndarray) -> np.ndarray:
    """float32 [P, 2] -> complex64 [P] holding x + iy (a view when points are contiguous)."""
    pts = np.ascontiguousarray(points, dtype=np.float32)
    return pts.view(np.complex64).reshape(pts.shape[0])


_OFFSETS: dict[int, np.ndarray] = {}


def _row_offsets(stride: int) -> np.ndarray:
    """Cell id offsets of the first cell of each row of the 3x3 block, int64 [3], cached."""
    if stride not in _OFFSETS:
        _OFFSETS[stride] = np.array([-stride - 1, -1, stride - 1], np.int64)
    return _OFFSETS[stride]


class Grid:
    """Points bucketed by cell, with a ring of empty cells around so neighbours are never out of range.

    Args:
        points: float32 [P, 2].
        cell: cell width (the query radius).
        side: arena side; cells cover [0, side)^2 and points outside are clamped in.
        cells: the points' `grid_cells(points, cell, side)` when the caller has them already.
    """

    def __init__(self, points: np.ndarray, cell: float, side: float,
                 cells: np.ndarray | None = None):
        self.cell = float(cell)
        self.side = float(side)
        self.n = max(1, int(np.ceil(side / cell)))
        self.stride = self.n + 2
        self.points = points
        # Few points: queries compare against all of them (`_query_dense`), no buckets needed.
        self.dense = points.shape[0] <= DENSE_MAX_POINTS
        if self.dense:
            return
        cid = grid_cells(points, cell, side) if cells is None else cells  # [P]
        # Cell ids fit in 16 bits up to ~60k cells, where numpy's stable sort is a radix sort.
        key = cid.astype(np.uint16) if self.stride * self.stride <= 1 << 16 else cid
        order = key.argsort(kind="stable")  # [P]
        self.order = order
        # Sorted by cell, x + iy as complex64: one 8-byte gather fetches both coordinates.
        self.pxy = as_complex(points)[order]  # [P]
        self._rank_of = None
        self.counts = np.bincount(cid, minlength=self.stride * self.stride)  # [G]
        # first[c]: sorted slot where cell c starts (first[G] = P), so the points of cells
        # c .. c + 2 of one row are the slots first[c] .. first[c + 3].
        self.first = np.zeros(self.counts.shape[0] + 1, np.int64)  # [G + 1]
        self.counts.cumsum(out=self.first[1:])
        self.max_count = int(self.counts.max()) if points.shape[0] else 0
        self.row_offsets = _row_offsets(self.stride)  # [3]

    @property
    def rank_of(self) -> np.ndarray:
        """Point index -> slot in the cell-sorted order, int64 [P] (built on first use)."""
        if self._rank_of is None:
            self._rank_of = np.empty(self.order.shape[0], np.int64)
            self._rank_of[self.order] = np.arange(self.order.shape[0])
        return self._rank_of

    def cell_of(self, pos: np.ndarray) -> np.ndarray:
        """Cell id of each position (interior cells only), int64 [Q]."""
        return grid_cells(pos, self.cell, self.side)

    def query(self, q: np.ndarray, k: int, radius: float, exclude: np.ndarray | None = None,
              q_cells: np.ndarray | None = None, point_mask: np.ndarray | None = None,
              need_d2: bool = True):
        """The k nearest points within `radius` of each query, nearest first.

        Args:
            q: float32 [Q, 2] query positions.
            k: neighbours per query.
            radius: at most the cell width.
            exclude: int64 [Q], a point index each query must skip (itself), or -1.
            q_cells: the queries' `grid_cells` when the caller has them already.
            point_mask: bool [P], points to consider (the same answer as a grid of only those
                points, in the original point indices).
            need_d2: False skips the distances (d2 is then None).

        Returns:
            idx: int64 [Q, k] point indices, -1 where fewer than k points are in range.
            d2: float32 [Q, k] squared distances, inf where idx is -1.
        """
        if self.dense:
            return self._query_dense(q, k, radius, exclude, point_mask, need_d2)
        nq = q.shape[0]
        idx = np.empty((nq, k), np.int64)
        idx.fill(-1)
        d2 = None
        if need_d2:
            d2 = np.empty((nq, k), np.float32)
            d2.fill(np.inf)
        if k == 0 or nq == 0 or self.max_count == 0:
            return idx, d2
        # Candidate pairs as one flat list (no padding to the fullest cell): for every query,
        # the points of its 3x3 block of cells, as slots of the cell-sorted points. The three
        # cells of a block row are consecutive ids, so each row is one run of slots.
        qc = self.cell_of(q) if q_cells is None else q_cells
        row = (qc[:, None] + self.row_offsets).ravel()  # [Q*3] first cell of each row
        lo = self.first[row]  # [Q*3]
        count = self.first[row + 3] - lo  # [Q*3]
        ends = count.cumsum()  # [Q*3]
        total = int(ends[-1])
        if total == 0:
            return idx, d2
        # Slot of pair c = start of its run + its position within the run.
        slot = (lo - (ends - count)).repeat(count)  # [C]
        slot += np.arange(total)
        per_query = ends[2::3].copy()  # [Q] pairs up to and including each query
        per_query[1:] -= ends[2:-3:3]  # [Q] pairs of each query
        qid = np.arange(nq).repeat(per_query)  # [C], non-decreasing
        delta = self.pxy[slot] - as_complex(q)[qid]  # [C] complex64, exact float32 dx + i dy
        dx, dy = delta.real, delta.imag
        dist2 = dx * dx + dy * dy  # [C]
        keep = dist2 <= radius * radius
        if exclude is not None:
            own = np.where(exclude >= 0, self.rank_of[np.maximum(exclude, 0)], -1)  # [Q]
            keep &= slot != own[qid]
        if point_mask is not None:
            keep &= point_mask[self.order][slot]
        sel = keep.nonzero()[0]
        if sel.shape[0] == 0:
            return idx, d2
        slot, qid, dist2 = slot[sel], qid[sel], dist2[sel]
        # Rank by query, then distance: dist2 / r^2 <= 1 / 1.0001, so qid + that is one
        # float64 key; its stable argsort is fast because pairs are already grouped by query.
        key = qid + dist2 * (1.0 / (radius * radius * 1.0001))
        order = key.argsort(kind="stable")
        slot, qid = slot[order], qid[order]
        per_query = np.bincount(qid, minlength=nq)
        rank = np.arange(qid.shape[0]) - (per_query.cumsum() - per_query)[qid]
        top = rank < k
        flat = (qid * k + rank)[top]
        idx.ravel()[flat] = self.order[slot[top]]
        if need_d2:
            d2.ravel()[flat] = dist2[order][top]
        return idx, d2


    def _query_dense(self, q, k, radius, exclude, point_mask, need_d2):
        """`query` against every point: a [Q, P] distance table, ranked per row by distance then
        point index (`knn_reference`'s order), for the few points where buckets cost more."""
        nq, npts = q.shape[0], self.points.shape[0]
        if k == 0 or nq == 0 or npts == 0:
            idx = np.full((nq, k), -1, np.int64)
            return idx, (np.full((nq, k), np.inf, np.float32) if need_d2 else None)
        delta = as_complex(self.points)[None, :] - as_complex(q)[:, None]  # [Q, P], as in `query`
        dist2 = delta.real * delta.real + delta.imag * delta.imag
        key = np.where(dist2 <= radius * radius, dist2, np.float32(np.inf))
        if exclude is not None:
            rows = np.flatnonzero(exclude >= 0)
            key[rows, exclude[rows]] = np.inf
        if point_mask is not None:
            key[:, ~point_mask] = np.inf
        m = min(k, npts)
        order = key.argsort(axis=1, kind="stable")[:, :m]  # [Q, m]
        near = key[np.arange(nq)[:, None], order]
        idx = np.full((nq, k), -1, np.int64)
        idx[:, :m] = np.where(near < np.inf, order, -1)
        if not need_d2:
            return idx, None
        d2 = np.full((nq, k), np.inf, np.float32)
        d2[:, :m] = near
        return idx, d2


DENSE_MAX_POINTS = 32  # at most this many points: `Grid.query` compares against all of them


def knn_reference(points, q, k, radius, exclude=None):
    """Brute-force specification of `Grid.query`: a Python loop over queries."""
    nq = q.shape[0]
    idx = np.full((nq, k), -1, np.int64)
    d2 = np.full((nq, k), np.inf, np.float32)
    for i in range(nq):
        delta = points - q[i]
        dist2 = (delta * delta).sum(axis=1)
        order = [j for j in np.argsort(dist2, kind="stable") if dist2[j] <= radius * radius]
        if exclude is not None:
            order = [j for j in order if j != exclude[i]]
        for c, j in enumerate(order[:k]):
            idx[i, c] = j
            d2[i, c] = dist2[j]
    return idx, d2
