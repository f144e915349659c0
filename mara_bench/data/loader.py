"""``load_dataset(name, split, data_dir, test)``, the on-disk graph cache ``graphs_for(dataset, split, r_max)`` and
its PyG view ``pyg_data_for(dataset, split, r_max)`` (one ``torch_geometric.data.Data`` per frame)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import UserError
from .frames import Dataset, Frames

GRAPH_CACHE_VERSION = "1"
_MEMORY: OrderedDict[str, list] = OrderedDict()
_MEMORY_SLOTS = 8


def parse_name(name: str) -> tuple[str, str | None, dict]:
    """'rmd17:aspirin' -> ('rmd17', 'aspirin', {}); a user file -> ('file', path, options)."""
    from .userfile import looks_like_path, split_options

    name = str(name).strip()
    if not name:
        raise UserError("empty dataset name; use 'default', 'family:member' (e.g. rmd17:aspirin) or a file path")
    if looks_like_path(name):
        base, opts = split_options(name)
        return "file", base, opts
    if "?" in name:
        raise UserError(f"dataset '{name}': '?key=value' options apply only to user files (.xyz/.extxyz/.npz)")
    family, _, member = name.partition(":")
    return family, member or None, {}


def load_dataset(name: str, split: int = 1, data_dir=None, test: str | None = None) -> Dataset:
    """Load ``name`` ('default' | 'family:member' | 'family' | path to an extxyz/npz file) in eV/Å.

    ``split``: official split where the family has several (rMD17 1..5), else the seed of the validation
    choice; ``data_dir``: offline data folder (default $MARA_BENCH_DATA, then the download cache);
    ``test``: a separate test file (user files; for built-in families it replaces the 'test' split).
    """
    family, member, opts = parse_name(name)
    if family == "file":
        from .userfile import load_user_dataset

        return load_user_dataset(str(name), split=split, test=test)
    from ..registry import get_dataset_family

    fam = get_dataset_family(family)()
    ds = fam.load(member, split=split, data_dir=data_dir, test=test, options=opts)
    ds.meta.setdefault("split", split)
    return ds


# ---------------------------------------------------------------------------------------------- graphs
def graph_cache_key(frames: Frames, split_name: str, r_max: float) -> str:
    blob = f"{frames.content_hash()}|{split_name}|{float(r_max)!r}|v{GRAPH_CACHE_VERSION}".encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def graph_cache_path(key: str) -> Path:
    from .locate import cache_dir

    return cache_dir() / "graphs" / f"{key}.npz"


def _dense_edges(pos: np.ndarray, r_max: float) -> list[np.ndarray]:
    """Edge lists of equal-size non-periodic frames [B, n, 3], identical (values and order) to
    :func:`mara_bench.graph.neighbor_list`'s all-pairs branch, computed for the whole batch at once."""
    d = np.linalg.norm(pos[:, None, :, :] - pos[:, :, None, :], axis=-1)
    idx = np.arange(pos.shape[1])
    d[:, idx, idx] = np.inf
    b, i, j = np.nonzero(d < r_max)
    bounds = np.searchsorted(b, np.arange(pos.shape[0] + 1))
    pairs = np.stack([i, j]).astype(np.int64)
    return [pairs[:, bounds[k]:bounds[k + 1]] for k in range(pos.shape[0])]


def _build_edges(frames: Frames, r_max: float, progress: bool):
    """Neighbour lists of every frame. Periodic frames and frames above 3,000 atoms go through
    :func:`mara_bench.graph.build_graph`; equal-size molecules are batched (same result, much faster)."""
    from tqdm import tqdm

    from ..graph import build_graph

    n_frames = len(frames)
    per_frame: list = [None] * n_frames
    counts = frames.n_atoms
    batched = ~frames.pbc.any(axis=1) & (counts <= 3000)
    for n in np.unique(counts[batched]):
        idx = np.nonzero(batched & (counts == n))[0]
        for chunk in np.array_split(idx, len(idx) * int(n) * int(n) // 1_000_000 + 1):
            if len(chunk):
                pos = np.stack([frames.positions[frames.ptr[i]:frames.ptr[i + 1]] for i in chunk])
                for k, e in zip(chunk, _dense_edges(pos, r_max), strict=True):
                    per_frame[k] = (e, np.zeros((e.shape[1], 3)), np.zeros((e.shape[1], 3), np.int64))
    rest = np.nonzero(~batched)[0]
    for i in tqdm(rest, desc=f"neighbour lists (r_max={r_max})", disable=not progress or len(rest) < 500,
                  leave=False):
        f = frames.frame(int(i))
        g = build_graph(f["numbers"], f["positions"], r_max, f["cell"], f["pbc"])
        per_frame[i] = (g.edge_index, g.shifts, g.unit_shifts)
    sizes = np.array([p[0].shape[1] for p in per_frame], dtype=np.int64)
    return {"edge_ptr": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            "edge_index": np.concatenate([p[0] for p in per_frame], axis=1) if n_frames else np.zeros((2, 0), np.int64),
            "shifts": np.concatenate([p[1] for p in per_frame]) if n_frames else np.zeros((0, 3)),
            "unit_shifts": np.concatenate([p[2] for p in per_frame]) if n_frames else np.zeros((0, 3), np.int64)}


def _save_npz(path: Path, arrays: dict) -> None:
    import io

    from ..atomic import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _load_npz(path: Path) -> dict | None:
    try:
        with np.load(path) as z:
            return {k: z[k] for k in ("edge_ptr", "edge_index", "shifts", "unit_shifts")}
    except Exception:  # a damaged cache entry is rebuilt, never trusted
        return None


def graphs_for(dataset: Dataset, split_name: str, r_max: float, progress: bool = True, use_disk: bool = True):
    """FrameGraphs of one split, neighbour lists cached in memory and on disk (npz, atomic) by
    (content hash of the split, split name, r_max)."""
    from ..graph import FrameGraph

    frames = dataset[split_name]
    if not (isinstance(r_max, (int, float)) and r_max > 0):
        raise UserError(f"r_max must be a positive number of Å, got {r_max!r}")
    key = graph_cache_key(frames, split_name, r_max)
    if key in _MEMORY:
        _MEMORY.move_to_end(key)
        return _MEMORY[key]
    path = graph_cache_path(key)
    edges = _load_npz(path) if use_disk and path.is_file() else None
    if edges is None or len(edges["edge_ptr"]) != len(frames) + 1:
        edges = _build_edges(frames, float(r_max), progress)
        if use_disk:
            try:
                _save_npz(path, edges)
            except OSError:  # a read-only cache only costs time
                pass
    ep = edges["edge_ptr"]
    graphs = []
    for i in range(len(frames)):
        a, b = int(frames.ptr[i]), int(frames.ptr[i + 1])
        e0, e1 = int(ep[i]), int(ep[i + 1])
        graphs.append(FrameGraph(
            numbers=frames.numbers[a:b], positions=frames.positions[a:b],
            edge_index=edges["edge_index"][:, e0:e1], shifts=edges["shifts"][e0:e1],
            unit_shifts=edges["unit_shifts"][e0:e1], cell=frames.cell[i], pbc=frames.pbc[i],
            energy=None if frames.energy is None else float(frames.energy[i]),
            forces=None if frames.forces is None else frames.forces[a:b], index=i))
    _MEMORY[key] = graphs
    while len(_MEMORY) > _MEMORY_SLOTS:
        _MEMORY.popitem(last=False)
    return graphs


def pyg_data_for(dataset: Dataset, split_name: str, r_max: float, progress: bool = True) -> list:
    """The frames of one split as ``torch_geometric.data.Data`` (:class:`mara_bench.graph.MaraData`, float64, own
    memory), neighbour lists from :func:`graphs_for`'s cache. Batch them with ``torch_geometric.loader.DataLoader``
    or :func:`mara_bench.graph.collate`'s PyG collation; either gives a :data:`mara_bench.graph.GraphBatch`."""
    return [g.to_data().clone() for g in graphs_for(dataset, split_name, r_max, progress=progress)]


def clear_memory_cache() -> None:
    _MEMORY.clear()


