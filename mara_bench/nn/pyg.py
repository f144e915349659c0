"""MARA for any torch-geometric ``MessagePassing`` layer, attached through PyG's own message hooks.

::

    from mara_bench.nn.pyg import attach_mara

    edges = attach_mara(model, layers=CFConv, message_dim=lambda conv: conv.lin1.out_features,
                        variant="paper", r_max=5.0)
    with edges(-batch.edge_vectors(pos), batch.edge_index):   # d_e = p_sender - p_receiver, per edge
        energy = model(batch.z, pos, batch.batch)

How it works. For every chosen layer, :func:`attach_mara` adds a ``MARA`` module as the layer's submodule
``mara`` (so it is in ``model.parameters()``, ``state_dict()``, ``.to(dtype)`` and ``EnergyModel.mara_modules()``)
and registers two hooks on the layer, both PyG's documented seams:

* ``register_propagate_forward_pre_hook``: checks that the layer propagates over exactly the edge list whose
  vectors were given (so gate e belongs to message e), and that PyG will call ``message`` (a sparse adjacency or a
  sorted ``EdgeIndex`` makes PyG fuse message and aggregation, skipping message hooks; ``decomposed_layers > 1``
  splits messages into feature chunks): otherwise a ``RuntimeError`` says why;
* ``register_message_forward_hook``: replaces the messages [E, F] (or [E, ...], flattened for MARA) returned by
  ``message`` with ``m + α·m``, before PyG's ``aggregate``.

The edge vectors come from the caller (``with edges(vectors, edge_index): ...``), normally the batch's
``-edge_vectors(pos)`` of the positions tensor that forces differentiate, so forces include the gate. For a layer
with ``flow="target_to_source"`` messages go from ``edge_index[1]`` to ``edge_index[0]``; the vectors are negated
for it so MARA still sees p_sender - p_receiver.

The hooks are plain functions that find the MARA module and the edge context on the layer itself, so
``copy.deepcopy(model)`` (EMA, checkpoints) copies a working model. No PyG code is copied.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from .. import graph as _graph  # noqa: F401  (imports torch-geometric once, without its import-time warnings)
from .mara import MARA

__all__ = ["MaraEdges", "attach_mara", "detach_mara", "gated_layers"]


class MaraEdges:
    """The per-forward edge list and vectors shared by the MARA hooks of one model (a plain object, not a Module,
    so ``copy.deepcopy`` of the model copies it once, together with the layers that use it).

    ``vectors`` [E, 3] = p_sender - p_receiver (periodic shifts included), ``edge_index`` [2, E] (sender,
    receiver). Set them for one forward with ``with edges(vectors, edge_index): ...``.
    """

    def __init__(self) -> None:
        self.vectors: torch.Tensor | None = None
        self.edge_index: torch.Tensor | None = None

    @contextlib.contextmanager
    def __call__(self, vectors: torch.Tensor, edge_index: torch.Tensor):
        if vectors.ndim != 2 or vectors.shape[1] != 3 or edge_index.ndim != 2 or edge_index.shape[0] != 2 \
                or edge_index.shape[1] != vectors.shape[0]:
            raise ValueError(f"edge vectors [E, 3] and edge_index [2, E] expected, got {tuple(vectors.shape)} "
                             f"and {tuple(edge_index.shape)}")
        previous = self.vectors, self.edge_index
        self.vectors, self.edge_index = vectors, edge_index
        try:
            yield self
        finally:
            self.vectors, self.edge_index = previous

    @staticmethod
    def of(model: torch.nn.Module) -> MaraEdges | None:
        """The edge context the MARA hooks of ``model`` read (e.g. of a deep copy), or None."""
        for m in model.modules():
            ctx = m.__dict__.get("_mara_edges")
            if ctx is not None:
                return ctx
        return None


def _layer_name(module: torch.nn.Module) -> str:
    return type(module).__name__


def _check_edges(module, inputs) -> None:
    """propagate pre-hook: the layer must propagate over the edges whose vectors were given, unfused."""
    from torch_geometric import EdgeIndex
    from torch_geometric.utils import is_sparse

    edge_index = inputs[0]
    ctx: MaraEdges = module._mara_edges
    name = _layer_name(module)
    if ctx.vectors is None or ctx.edge_index is None:
        raise RuntimeError(f"MARA on {name}: no edge vectors for this forward; call the model inside "
                           "`with edges(vectors, edge_index):` (edges = attach_mara(...))")
    if is_sparse(edge_index) or (isinstance(edge_index, EdgeIndex) and module.fuse):
        raise RuntimeError(f"MARA on {name}: pass edge_index as a plain [2, E] tensor; with a sparse adjacency or "
                           "a sorted EdgeIndex PyG fuses message and aggregation and never calls message hooks")
    if module.decomposed_layers != 1:
        raise RuntimeError(f"MARA on {name}: decomposed_layers={module.decomposed_layers} splits each message into "
                           "feature chunks; MARA gates whole messages (use decomposed_layers=1)")
    if edge_index is not ctx.edge_index and not (edge_index.shape == ctx.edge_index.shape
                                                 and torch.equal(edge_index, ctx.edge_index)):
        raise RuntimeError(f"MARA on {name}: the layer propagates over {edge_index.shape[-1]} edges that are not the "
                           f"{ctx.edge_index.shape[1]} edges whose vectors were given (same edges, same order); "
                           "MARA's gates must line up with the layer's messages")


def _gate_messages(module, inputs, messages: torch.Tensor) -> torch.Tensor:
    """message forward hook: m -> m + alpha * m, per edge, before aggregation."""
    ctx: MaraEdges = module._mara_edges
    d = ctx.vectors
    if messages.shape[0] != d.shape[0]:
        raise RuntimeError(f"MARA on {_layer_name(module)}: {messages.shape[0]} messages for {d.shape[0]} edges")
    if module.flow == "target_to_source":  # messages go edge_index[1] -> edge_index[0]
        d = -d
    flat = messages.reshape(messages.shape[0], -1)
    gated, _ = module.mara(flat, d.to(flat.dtype))
    return gated.view_as(messages)


def _select(model: torch.nn.Module, layers) -> list[tuple[str, torch.nn.Module]]:
    from torch_geometric.nn import MessagePassing

    named = list(model.named_modules())
    if isinstance(layers, type):
        chosen = [(n, m) for n, m in named if isinstance(m, layers)]
        what = f"no {layers.__name__} layer in the model"
    else:
        if isinstance(layers, (str, torch.nn.Module)):
            layers = [layers]
        by_name, by_id = dict(named), {id(m): n for n, m in named}
        chosen = []
        for item in layers:
            if isinstance(item, str):
                if item not in by_name:
                    raise ValueError(f"attach_mara: the model has no submodule named '{item}'")
                chosen.append((item, by_name[item]))
            elif isinstance(item, torch.nn.Module):
                if id(item) not in by_id:
                    raise ValueError(f"attach_mara: {type(item).__name__} is not a submodule of the model")
                chosen.append((by_id[id(item)], item))
            else:
                raise TypeError(f"attach_mara: layers must be MessagePassing modules, their names or a class, got {item!r}")
        what = "layers is empty"
    if not chosen:
        raise ValueError(f"attach_mara: nothing to attach to ({what})")
    for n, m in chosen:
        if not isinstance(m, MessagePassing):
            raise TypeError(f"attach_mara: '{n}' is a {type(m).__name__}, not a torch_geometric MessagePassing layer")
        if "mara" in m._modules or "_mara_edges" in m.__dict__:
            raise ValueError(f"attach_mara: '{n}' already has MARA attached")
    return chosen


def attach_mara(model: torch.nn.Module, layers, message_dim: int | Callable[[torch.nn.Module], int],
                variant: str = "paper", *, r_max: float, hidden: int = 32, grid: tuple[int, int] = (4, 8),
                heads: int = 1, scalar_slice: Any = None, edges: MaraEdges | None = None,
                dtype: torch.dtype | None = None) -> MaraEdges:
    """Gate the messages of the chosen ``MessagePassing`` layers of ``model`` with one MARA module per layer.

    ``layers``: a ``MessagePassing`` subclass (every instance in ``model``), or modules / submodule names.
    ``message_dim``: the width F of one message (of its flattened trailing dims), or a function of the layer.
    ``variant``/``hidden``/``grid``/``heads``/``scalar_slice``/``r_max``: passed to :class:`mara_bench.nn.mara.MARA`
    (``scalar_slice=None``: every channel is invariant, as in SchNet). ``variant='off'`` attaches nothing.
    ``edges``: an existing :class:`MaraEdges` to share (else a new one). ``dtype``: of the new MARA modules
    (default: that of the model's first floating parameter).

    Returns the :class:`MaraEdges` to fill per forward: ``with edges(vectors, edge_index): model(...)``.
    """
    edges = edges if edges is not None else MaraEdges()
    if variant == "off":
        return edges
    chosen = _select(model, layers)
    if dtype is None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.get_default_dtype())
    device = next((p.device for p in model.parameters()), None)
    for _, layer in chosen:
        dim = int(message_dim(layer) if callable(message_dim) else message_dim)
        layer.mara = MARA(dim, variant=variant, hidden=hidden, grid=tuple(grid), heads=heads,
                          scalar_slice=scalar_slice, r_max=r_max).to(device=device, dtype=dtype)
        layer._mara_edges = edges
        layer.register_propagate_forward_pre_hook(_check_edges)
        layer.register_message_forward_hook(_gate_messages)
    return edges


def gated_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, layer) of every layer of ``model`` whose messages MARA gates, in module order."""
    return [(n, m) for n, m in model.named_modules() if "_mara_edges" in m.__dict__]


def detach_mara(model: torch.nn.Module) -> int:
    """Remove every MARA attached by :func:`attach_mara` (hooks and modules); returns how many."""
    n = 0
    for _, layer in gated_layers(model):
        for hooks, fn in ((layer._propagate_forward_pre_hooks, _check_edges),
                          (layer._message_forward_hooks, _gate_messages)):
            for key in [k for k, h in hooks.items() if h is fn]:
                del hooks[key]
        del layer._modules["mara"]
        del layer.__dict__["_mara_edges"]
        n += 1
    return n
