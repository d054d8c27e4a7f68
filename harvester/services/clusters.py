"""Near-duplicate clusters: a new signal joins the cluster of the nearest stored signal
whose simhash is within Hamming distance k (default 3), else starts its own.

The lookup goes through the four 16-bit band indexes of migrations 0005 and 0009 (each
band's index usable by that band's probes only). Pigeonhole: two 64-bit fingerprints at
distance <= k differ in at most k bits, spread over 4 bands, so some band differs in at most
``k // 4`` bits. Probing, for each band, every value within ``k // 4`` bits of the item's
band therefore finds every fingerprint within k: for k <= 3 that is the band itself (4 exact
probes per item), for 4 <= k <= 7 the band and its 16 one-bit neighbours (68 probes), for
8 <= k <= 11 also the 120 two-bit ones (548 probes).
Candidates are checked on the full distance in the same query; one query per batch, and
a second one for the copies of one text in it (:func:`_crowded`), whose candidates are
read once and compared in numpy.

Two near-duplicates of one batch end in one cluster: the batch is also compared with itself
(numpy), in id order, so a row can join the cluster of an earlier row of its batch.

The store plans the clusters of new signals before inserting them (:func:`plan_clusters`,
ids drawn beforehand) and writes each row once; :func:`assign_clusters_sync` does the same
for signals already stored and updates them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import pq

from harvester.services.simhash import signed

#: Hamming distance at or under which two fingerprints are near-duplicates (Manku et al.
#: 2007 use 3 for 64-bit simhashes). Scrapy setting ``HARVEST_CLUSTER_DISTANCE``.
DEFAULT_DISTANCE = 3
#: The probes grow as C(16, k // 4): above this they cost more than they find.
MAX_DISTANCE = 11
BANDS = 4
BAND_BITS = 16
_BAND_MASK = (1 << BAND_BITS) - 1
_BLOCK = 2048  # rows of a batch compared with each other at a time
#: Rows read per probed band value. Well-spread fingerprints put N / 65,536 rows there;
#: a crowded value means many copies of one text, and any of them is a fine match.
BUCKET_LIMIT = 100

Row = tuple[int, int | None]  # (signal id, simhash or None)
Match = tuple[int, int, int, int]  # (row id, id of its nearest match, that one's cluster, distance)
Stored = tuple[int, int | None, int]  # a row as stored: (signal id, simhash or None, cluster id)


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where one signal went: its cluster, and the signal it matched (None = new cluster)."""

    id: int
    cluster_id: int
    matched_id: int | None = None
    distance: int | None = None


def check_distance(distance: int) -> int:
    if not 0 <= distance <= MAX_DISTANCE:
        raise ValueError(
            f"HARVEST_CLUSTER_DISTANCE must be between 0 and {MAX_DISTANCE}, not {distance}."
        )
    return distance


def band_expression(band: int, column: str = "simhash") -> str:
    """The indexed expression of band ``band`` (must match migrations 0005 and 0009 exactly)."""
    return f"((({column} >> {BAND_BITS * band}) & {_BAND_MASK})::integer)"


def probe_masks(distance: int) -> list[int]:
    """XOR masks of every 16-bit value within ``distance // BANDS`` bits of a band."""
    radius = check_distance(distance) // BANDS
    masks = [0]
    for flips in range(1, radius + 1):
        masks += [sum(1 << b for b in bits) for bits in combinations(range(BAND_BITS), flips)]
    return masks


def _band_branch(band: int) -> str:
    # One index probe per (row, mask): the LIMIT keeps the LATERAL subquery from being
    # flattened into a hash join, which scans all of signals (measured: 5x slower at 100k
    # rows and growing with the table), and bounds the work on a crowded band value.
    return f"""
    SELECT p.id, p.simhash, s.id AS match_id, s.simhash AS match_hash, s.cluster_id
    FROM probe p CROSS JOIN LATERAL (
        SELECT id, simhash, cluster_id FROM signals
        WHERE {band_expression(band)} = ({band_expression(band, "p.simhash")} # p.mask)
          AND simhash IS NOT NULL LIMIT {BUCKET_LIMIT}) AS s
    """


# Arrays go in binary (``%b``, see store._LOOKUP), cast: binary picks smallint[] for
# small values, and an empty list has no type.
_NEAREST = f"""
WITH batch AS (
    SELECT * FROM unnest(%(ids)b::bigint[], %(hashes)b::bigint[]) AS b(id, simhash)
), probe AS MATERIALIZED (
    SELECT b.id, b.simhash, m.mask
    FROM batch b CROSS JOIN unnest(%(masks)b::integer[]) AS m(mask)
), hit AS ({" UNION ALL ".join(_band_branch(band) for band in range(BANDS))}
)
SELECT DISTINCT ON (id) id, match_id, COALESCE(cluster_id, match_id), distance
FROM (SELECT id, match_id, cluster_id,
             bit_count((simhash # match_hash)::bit(64)) AS distance
      FROM hit WHERE match_id <> ALL(%(exclude)b::bigint[])) AS near
WHERE distance <= %(distance)s
ORDER BY id, distance, match_id
"""


def _candidate_branch(band: int) -> str:
    # Each probed band value once, with its stored rows: their fingerprints and clusters.
    return f"""
    SELECT {band} AS band, k.v, s.id, s.simhash, COALESCE(s.cluster_id, s.id)
    FROM unnest(%(values{band})b::integer[]) AS k(v) CROSS JOIN LATERAL (
        SELECT id, simhash, cluster_id FROM signals
        WHERE {band_expression(band)} = k.v AND simhash IS NOT NULL
        LIMIT {BUCKET_LIMIT}) AS s
    """


# The other way to the same result, for a batch whose rows share their band values (copies
# of one text, near-copies differing in a word): :data:`_NEAREST` would compute and sort
# every (row, stored row) pair, ≈ 39,000 for 500 copies of one text with 20,000 stored, most
# of them within the distance; this reads each probed band value's stored rows once and
# the nearest per row is worked out in numpy (:func:`_nearest_candidates`). The same index
# reads in the same order, so the same rows are candidates; chosen by :func:`_crowded`.
_CANDIDATES = " UNION ALL ".join(_candidate_branch(band) for band in range(BANDS))

# A bitmap scan reads every entry of a band value before the LIMIT applies (10,000 a probe
# with 20,000 copies of one text stored, measured, and growing with the copies); an index
# scan stops at BUCKET_LIMIT. The planner takes the bitmap on a young table, so it is turned
# off for this query only: the rest of the store's transaction (corroboration) needs it.
_INDEX_SCANS = "SET LOCAL enable_bitmapscan = off"
_ANY_SCANS = "SET LOCAL enable_bitmapscan TO DEFAULT"

_UPDATE = """
UPDATE signals AS s SET simhash = u.simhash, cluster_id = u.cluster_id
FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS u(id, simhash, cluster_id)
WHERE s.id = u.id
  AND (s.simhash IS DISTINCT FROM u.simhash OR s.cluster_id IS DISTINCT FROM u.cluster_id)
"""


def _signed(rows: Sequence[Row]) -> list[Row]:
    return [(i, None if h is None else signed(h)) for i, h in rows]


@dataclass(frozen=True, slots=True)
class _Probe:
    """What one lookup asks: the first row of each distinct fingerprint, the ids that must
    not match, the probe masks and the distance."""

    first: dict[int, int]  # fingerprint -> id of its first row
    exclude: list[int]
    masks: list[int]
    distance: int


def _probe(rows: Sequence[Row], distance: int, stored: bool) -> _Probe:
    """One lookup per distinct fingerprint (its first row): an identical later row of the
    batch joins that row's cluster anyway, and a flood of copies of one text (boilerplate,
    a syndicated wire story) must not turn into a flood of index probes. Rows already
    ``stored`` must not match themselves; rows not inserted yet exclude nothing."""
    hashed = sorted((i, h) for i, h in rows if h is not None)
    first: dict[int, int] = {}
    for i, h in hashed:
        first.setdefault(h, i)
    return _Probe(first, [i for i, _ in hashed] if stored else [], probe_masks(distance),
                  distance)


def _params(rows: Sequence[Row], distance: int, stored: bool = True) -> dict[str, Any]:
    """The parameters of :data:`_NEAREST`."""
    return _pair_params(_probe(rows, distance, stored))


def _pair_params(probe: _Probe) -> dict[str, Any]:
    return {"ids": list(probe.first.values()), "hashes": list(probe.first),
            "exclude": probe.exclude, "masks": probe.masks, "distance": probe.distance}


def _band(value: int, band: int) -> int:
    return (value >> (BAND_BITS * band)) & _BAND_MASK  # two's complement, as in SQL


def _values(probe: _Probe) -> dict[str, list[int]]:
    """The parameters of :data:`_CANDIDATES`: each band's probed values, each once."""
    return {f"values{band}": sorted({_band(h, band) ^ mask for h in probe.first
                                     for mask in probe.masks})
            for band in range(BANDS)}


#: Fingerprints that must be crowded together for :data:`_CANDIDATES` to be worth its
#: own statement: below this the pairs they add to :data:`_NEAREST` cost less than it.
MIN_CROWDED = 8


def _crowded(probe: _Probe) -> set[int]:
    """The fingerprints of the batch that share their exact value in two bands or more with
    other fingerprints of the batch: copies of one text, near-copies differing in a word,
    when there are :data:`MIN_CROWDED` of them. :data:`_NEAREST` would compute the pairs of
    each of them with the same stored rows over and over (a text copied in the batch is
    usually copied in the table too, its band values holding up to BUCKET_LIMIT rows);
    :data:`_CANDIDATES` reads those rows once. The other fingerprints, all of a batch of
    distinct texts, are better looked up by :data:`_NEAREST`: their candidates are mostly
    far, the server filters them and returns nothing, where :data:`_CANDIDATES` would send
    them all (≈ 1.5 a band value at 60,000 stored rows, 15 at a million). Distinct texts
    share a band value by chance (20–46 of 500 on the bench's texts), two bands hardly
    ever (0–2). In numpy: every batch asks, and a loop over its bands in Python took
    1.3 ms a batch of 500 (this, 0.23)."""
    hashes = np.fromiter(probe.first, dtype=np.int64, count=len(probe.first))
    shared = np.zeros(len(hashes), dtype=np.int8)  # bands whose value another one holds
    for band in range(BANDS):
        values = (hashes >> (BAND_BITS * band)) & _BAND_MASK  # as _band: two's complement
        _, holder, holders = np.unique(values, return_inverse=True, return_counts=True)
        shared += holders[holder] > 1
    crowded = hashes[shared >= 2]
    return set(crowded.tolist()) if len(crowded) >= MIN_CROWDED else set()


def _part(probe: _Probe, fingerprints: set[int]) -> _Probe:
    return _Probe({h: i for h, i in probe.first.items() if h in fingerprints}, probe.exclude,
                  probe.masks, probe.distance)


def _nearest_candidates(probe: _Probe, candidates: Sequence[tuple[int, int, int, int, int]],
                        ) -> list[Match]:
    """What :data:`_NEAREST` returns, from the rows of :data:`_CANDIDATES` (``(band, value,
    id, simhash, cluster)``): each probed row's nearest candidate within the distance, the
    smallest id of equals. All rows at once: every (row, candidate of one of its probed
    band values) pair, then the best pair per row."""
    exclude = set(probe.exclude)
    found = [c for c in candidates if c[2] not in exclude]
    if not found or not probe.first:
        return []
    band_of, value_of, match_id, match_hash, cluster = (
        np.array(column, dtype=np.int64) for column in zip(*found, strict=True))
    hashes = np.array(list(probe.first), dtype=np.int64)
    row_ids = np.array(list(probe.first.values()), dtype=np.int64)
    pair_rows: list[npt.NDArray[np.int64]] = []
    pair_candidates: list[npt.NDArray[np.int64]] = []
    for band in range(BANDS):
        mine = np.flatnonzero(band_of == band)
        mine = mine[np.argsort(value_of[mine], kind="stable")]
        values = value_of[mine]
        own = (hashes >> (BAND_BITS * band)) & _BAND_MASK  # two's complement, as in SQL
        for mask in probe.masks:
            wanted = own ^ mask
            low = np.searchsorted(values, wanted, "left")
            counts = np.searchsorted(values, wanted, "right") - low
            total = int(counts.sum())
            if not total:
                continue
            offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
            pair_rows.append(np.repeat(np.arange(len(hashes)), counts))
            pair_candidates.append(mine[np.repeat(low, counts) + offsets])
    if not pair_rows:
        return []
    rows, cands = np.concatenate(pair_rows), np.concatenate(pair_candidates)
    dist = np.bitwise_count(hashes.view(np.uint64)[rows] ^ match_hash.view(np.uint64)[cands])
    near = dist <= probe.distance
    rows, cands, dist = rows[near], cands[near], dist[near]
    order = np.lexsort((match_id[cands], dist, rows))  # per row: nearest, then smallest id
    rows, cands, dist = rows[order], cands[order], dist[order]
    first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if len(rows) else rows
    return list(zip(row_ids[rows[first]].tolist(), match_id[cands[first]].tolist(),
                    cluster[cands[first]].tolist(), dist[first].tolist(), strict=True))


def _queries(rows: Sequence[Row], distance: int, stored: bool, crowded: bool | None = None,
             ) -> list[tuple[str, dict[str, Any], Any]]:
    """The lookup of ``rows``: each statement, its parameters, and what turns its rows into
    :data:`Match` es (none when no row has a fingerprint). The crowded fingerprints
    (:func:`_crowded`) go to :data:`_CANDIDATES`, the others to :data:`_NEAREST`;
    ``crowded`` sends them all one way (tests hold both ways to the same result)."""
    probe = _probe(rows, distance, stored)
    if not probe.first:
        return []
    many = set(probe.first) if crowded else set() if crowded is False else _crowded(probe)
    queries: list[tuple[str, dict[str, Any], Any]] = []
    if many:
        part = _part(probe, many)
        queries.append((_CANDIDATES, _values(part),
                        lambda found: _nearest_candidates(part, found)))
    if len(many) < len(probe.first):
        queries.append((_NEAREST, _pair_params(_part(probe, set(probe.first) - many)), list))
    return queries


def _within_batch(rows: Sequence[Row], distance: int) -> dict[int, tuple[int, int]]:
    """For each hashed row, the nearest earlier row of the batch within ``distance``:
    ``{id: (earlier id, distance)}``."""
    hashed = sorted((i, h) for i, h in rows if h is not None)
    if len(hashed) < 2:
        return {}
    ids = np.array([i for i, _ in hashed], dtype=np.int64)
    fps = np.array([h for _, h in hashed], dtype=np.int64).view(np.uint64)
    found: dict[int, tuple[int, int]] = {}
    for start in range(1, len(fps), _BLOCK):
        stop = min(start + _BLOCK, len(fps))
        dist = np.bitwise_count(fps[start:stop, None] ^ fps[None, :stop]).astype(np.int16)
        earlier = np.arange(stop)[None, :] < np.arange(start, stop)[:, None]
        dist[~earlier] = 64
        for row, col, d in _within(dist, distance):
            found[int(ids[start + row])] = (int(ids[col]), d)
    return found


def _within(dist: npt.NDArray[Any], distance: int) -> list[tuple[int, int, int]]:
    """``(row, column, distance)`` of each row's nearest column (the first of equals) in a
    matrix of distances, for the rows whose nearest is within ``distance``."""
    nearest = dist.argmin(axis=1)
    least = dist[np.arange(len(nearest)), nearest]
    rows = np.flatnonzero(least <= distance)
    return list(zip(rows.tolist(), nearest[rows].tolist(), least[rows].tolist(), strict=True))


def _resolve(rows: Sequence[Row], stored: Sequence[Match],
             distance: int) -> list[Assignment]:
    """Clusters in id order: the nearest match wins, a stored one on a tie."""
    outside = {row_id: (match, cluster, dist) for row_id, match, cluster, dist in stored}
    inside = _within_batch(rows, distance)
    done: dict[int, Assignment] = {}
    for row_id, _ in sorted(rows):
        out, ins = outside.get(row_id), inside.get(row_id)
        if out is not None and (ins is None or out[2] <= ins[1]):
            done[row_id] = Assignment(row_id, out[1], out[0], out[2])
        elif ins is not None:
            done[row_id] = Assignment(row_id, done[ins[0]].cluster_id, ins[0], ins[1])
        else:
            done[row_id] = Assignment(row_id, row_id)
    return list(done.values())


def _update_params(rows: Sequence[Row], assigned: Sequence[Assignment]) -> tuple[Any, ...]:
    hashes = dict(rows)
    return ([a.id for a in assigned], [hashes[a.id] for a in assigned],
            [a.cluster_id for a in assigned])


def _in_transaction(cur_or_conn: Any) -> bool:
    """Whether the next statement runs in a transaction: SET LOCAL means nothing outside
    one (an autocommit connection outside ``transaction()``)."""
    conn = getattr(cur_or_conn, "connection", cur_or_conn)
    return not conn.autocommit or conn.info.transaction_status == pq.TransactionStatus.INTRANS


async def _nearest(cur_or_conn: psycopg.AsyncCursor[Any] | psycopg.AsyncConnection[Any],
                   rows: Sequence[Row], distance: int, stored: bool) -> list[Match]:
    queries = _queries(rows, distance, stored)
    if not queries:
        return []
    bounded = _in_transaction(cur_or_conn)
    if bounded:
        await cur_or_conn.execute(_INDEX_SCANS)
    found: list[Match] = []
    for statement, params, matches in queries:
        cur = await cur_or_conn.execute(statement, params)
        found += matches(await cur.fetchall())
    if bounded:
        await cur_or_conn.execute(_ANY_SCANS)
    return found


def nearest_sync(cur_or_conn: psycopg.Cursor[Any] | psycopg.Connection[Any],
                 rows: Sequence[Row], distance: int, stored: bool,
                 crowded: bool | None = None) -> list[Match]:
    """:func:`_nearest` for synchronous connections (``crowded``: see :func:`_queries`)."""
    queries = _queries(rows, distance, stored, crowded)
    if not queries:
        return []
    bounded = _in_transaction(cur_or_conn)
    if bounded:
        cur_or_conn.execute(_INDEX_SCANS)
    found: list[Match] = []
    for statement, params, matches in queries:
        found += matches(cur_or_conn.execute(statement, params).fetchall())
    if bounded:
        cur_or_conn.execute(_ANY_SCANS)
    return found


def _plan_sync(cur_or_conn: psycopg.Cursor[Any] | psycopg.Connection[Any],
               rows: Sequence[Row], distance: int, stored: bool) -> list[Assignment]:
    """:func:`nearest_sync` then :func:`_resolve`."""
    return _resolve(rows, nearest_sync(cur_or_conn, rows, distance, stored), distance)


async def plan_clusters(
    cur_or_conn: psycopg.AsyncCursor[Any] | psycopg.AsyncConnection[Any],
    rows: Sequence[Row], distance: int = DEFAULT_DISTANCE,
) -> list[Assignment]:
    """The clusters of signals about to be inserted, ``(id drawn for it, simhash)`` in
    insertion order: one query, nothing written. Every stored signal is a candidate."""
    if not rows:
        return []
    rows = _signed(rows)  # once: nearest_stored and resolve would each sign them again
    return _resolve(rows, await _nearest(cur_or_conn, rows, distance, False), distance)


async def nearest_stored(
    cur_or_conn: psycopg.AsyncCursor[Any] | psycopg.AsyncConnection[Any],
    rows: Sequence[Row], distance: int = DEFAULT_DISTANCE,
) -> list[Match]:
    """The lookup half of :func:`plan_clusters`: the nearest stored signal of each row
    about to be inserted, for :func:`resolve`."""
    return await _nearest(cur_or_conn, _signed(rows), distance, False) if rows else []


def resolve(rows: Sequence[Row], found: Sequence[Match], distance: int = DEFAULT_DISTANCE,
            recent: Sequence[Stored] = ()) -> list[Assignment]:
    """The second half: clusters of ``rows`` from their stored matches ``found``, and from
    ``recent`` rows ``(id, simhash, cluster id)`` stored after that lookup (which it did not
    see), compared here in numpy as if the lookup had found them."""
    if not rows:
        return []
    rows = _signed(rows)
    if recent:
        found = _nearer(found, _nearest_among(rows, _signed_recent(recent), distance))
    return _resolve(rows, found, distance)


def _signed_recent(recent: Sequence[Stored]) -> list[tuple[int, int, int]]:
    return sorted((i, signed(h), c) for i, h, c in recent if h is not None)


def _nearest_among(rows: Sequence[Row], others: Sequence[tuple[int, int, int]],
                   distance: int) -> list[Match]:
    """For each hashed row, the nearest of ``others`` (sorted by id: the smallest id wins a
    tie, as in the lookup) within ``distance``."""
    hashed = [(i, h) for i, h in rows if h is not None]
    if not hashed or not others:
        return []
    fps = np.array([h for _, h in hashed], dtype=np.int64).view(np.uint64)
    theirs = np.array([h for _, h, _ in others], dtype=np.int64).view(np.uint64)
    found: list[Match] = []
    for start in range(0, len(fps), _BLOCK):
        dist = np.bitwise_count(fps[start:start + _BLOCK, None] ^ theirs[None, :])
        found += [(hashed[start + row][0], others[col][0], others[col][2], d)
                  for row, col, d in _within(dist, distance)]
    return found


def _nearer(found: Sequence[Match], more: Sequence[Match]) -> list[Match]:
    """One match per row: the nearer, then the older (smaller id), of the two."""
    best = {match[0]: match for match in found}
    for match in more:
        held = best.get(match[0])
        if held is None or (match[3], match[1]) < (held[3], held[1]):
            best[match[0]] = match
    return list(best.values())


def assign_clusters_sync(
    cur_or_conn: psycopg.Cursor[Any] | psycopg.Connection[Any],
    rows: Sequence[Row], distance: int = DEFAULT_DISTANCE,
) -> list[Assignment]:
    """Set ``simhash`` and ``cluster_id`` of already stored signals ``(id, simhash)``, in
    the caller's transaction: one lookup and one update, whatever the number of rows. Rows
    already holding both values are not rewritten. The store does not need it (it plans
    before inserting); it is the entry point for re-clustering stored rows by hand and
    for the tests of the lookup."""
    if not rows:
        return []
    rows = _signed(rows)
    assigned = _plan_sync(cur_or_conn, rows, distance, True)
    cur_or_conn.execute(_UPDATE, _update_params(rows, assigned))
    return assigned
