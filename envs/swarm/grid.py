"""Uniform spatial grid for k-nearest-within-radius queries, all queries at once in numpy.

Cells are as wide as the query radius, so every point within the radius of a query lies in the
3x3 block of cells around it. Points are sorted by cell; the queries' candidates from their 9
cells form one flat list of pairs (no padding, so one crowded cell costs only its own pairs),
pairs beyond the radius are dropped, and one sort by (query, distance, index) ranks the rest.
`knn_reference` is the brute-force specification the tests compare against.
"""

from __future__ import annotations

import numpy as np


class Grid:
    """Points bucketed by cell, with a ring of empty cells around so neighbours are never out of range.

    Args:
        points: float32 [P, 2].
        cell: cell width (the query radius).
        side: arena side; cells cover [0, side)^2 and points outside are clamped in.
    """

    def __init__(self, points: np.ndarray, cell: float, side: float):
        self.cell = float(cell)
        self.n = max(1, int(np.ceil(side / cell)))
        self.stride = self.n + 2
        cid = self.cell_of(points)  # [P]
        order = np.argsort(cid, kind="stable")  # [P]
        self.order = order
        self.px = points[order, 0]  # [P] sorted by cell
        self.py = points[order, 1]
        self.rank_of = np.empty(points.shape[0], np.int64)  # point index -> sorted slot
        self.rank_of[order] = np.arange(points.shape[0])
        self.counts = np.bincount(cid, minlength=self.stride * self.stride)  # [G]
        self.starts = np.cumsum(self.counts) - self.counts  # [G]
        self.max_count = int(self.counts.max()) if points.shape[0] else 0
        st = self.stride
        self.neighbour_offsets = np.array(
            [dy * st + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)], np.int64
        )  # [9]

    def cell_of(self, pos: np.ndarray) -> np.ndarray:
        """Cell id of each position (interior cells only), int64 [Q]."""
        inv = 1.0 / self.cell
        cx = np.clip((pos[:, 0] * inv).astype(np.int64), 0, self.n - 1) + 1
        cy = np.clip((pos[:, 1] * inv).astype(np.int64), 0, self.n - 1) + 1
        return cy * self.stride + cx

    def query(self, q: np.ndarray, k: int, radius: float, exclude: np.ndarray | None = None):
        """The k nearest points within `radius` of each query, nearest first.

        Args:
            q: float32 [Q, 2] query positions.
            k: neighbours per query.
            radius: at most the cell width.
            exclude: int64 [Q], a point index each query must skip (itself), or -1.

        Returns:
            idx: int64 [Q, k] point indices, -1 where fewer than k points are in range.
            d2: float32 [Q, k] squared distances, inf where idx is -1.
        """
        nq = q.shape[0]
        idx = np.full((nq, k), -1, np.int64)
        d2 = np.full((nq, k), np.inf, np.float32)
        if k == 0 or nq == 0 or self.max_count == 0:
            return idx, d2
        # Candidate pairs as one flat list (no padding to the fullest cell): for every query
        # and each of its 9 cells, the points of that cell, as slots of the cell-sorted points.
        ncell = (self.cell_of(q)[:, None] + self.neighbour_offsets).ravel()  # [Q*9]
        count = self.counts[ncell]  # [Q*9]
        total = int(count.sum())
        if total == 0:
            return idx, d2
        ends = np.cumsum(count)  # [Q*9]
        pair_cell = np.repeat(np.arange(ncell.shape[0]), count)  # [C]
        slot = (self.starts[ncell] - (ends - count))[pair_cell] + np.arange(total)  # [C]
        q_end = ends[8::9]  # [Q] pairs up to and including each query
        qid = np.repeat(np.arange(nq), np.diff(q_end, prepend=0))  # [C], non-decreasing
        dx = self.px[slot] - np.ascontiguousarray(q[:, 0])[qid]
        dy = self.py[slot] - np.ascontiguousarray(q[:, 1])[qid]
        dist2 = dx * dx + dy * dy  # [C]
        keep = dist2 <= radius * radius
        if exclude is not None:
            own = np.where(exclude >= 0, self.rank_of[np.maximum(exclude, 0)], -1)  # [Q]
            keep &= slot != own[qid]
        sel = np.flatnonzero(keep)
        if sel.shape[0] == 0:
            return idx, d2
        slot, qid, dist2 = slot[sel], qid[sel], dist2[sel]
        # Rank by query, then distance: dist2 / r^2 <= 1 / 1.0001, so qid + that is one
        # float64 key; its stable argsort is fast because pairs are already grouped by query.
        key = qid + dist2 * (1.0 / (radius * radius * 1.0001))
        order = np.argsort(key, kind="stable")
        slot, qid, dist2 = slot[order], qid[order], dist2[order]
        per_query = np.bincount(qid, minlength=nq)
        rank = np.arange(qid.shape[0]) - (np.cumsum(per_query) - per_query)[qid]
        top = rank < k
        flat = (qid * k + rank)[top]
        idx.ravel()[flat] = self.order[slot[top]]
        d2.ravel()[flat] = dist2[top]
        return idx, d2


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
