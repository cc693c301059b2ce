"""The encoder contract every streamgnn model follows.

Graph data travels in *row space*: external user and item ids are mapped to dense rows by
:class:`models.ids.IdRegistry` (users and items have separate row spaces). An encoder
sees two things:

- :class:`EdgeBatch`: the new edges of one micro-batch (who did what to which item, when,
  and the decayed weight of that edge after the event);
- :class:`BipartiteGraph`: a snapshot of the decayed user-item graph, relation-typed.

The verbs (after River's online contract and PyG's streaming models):

- ``forward(graph, users, items)``: L2-normalised vectors for the given rows,
  differentiable; the trainer calls it to compute a loss.
- ``embed(graph, users, items)``: the same vectors with no gradient and no side effect
  (a read never creates a node and never moves streaming state).
- ``observe(batch)``: absorb new edges into streaming state that is not learnt by
  gradient (a TGN memory, a neighbour cache). Gradient steps are the trainer's job.
- ``grow(num_users, num_items)``: make room for rows the id registry has handed out.
- ``reset_rows(users, items)``: re-initialise rows the registry evicted and will hand to
  new ids, parameters and streaming state alike (a new id never inherits a stranger's).
- ``reset_parameters()`` / ``reset_state()``: re-initialise weights / streaming state.

A step's cost can follow its batch: an encoder whose ``local_step`` is true computes, with
``forward_local(neighbourhood, users, items)``, the seeds' vectors from a sampled L-hop
:class:`~models.neighbourhood.Neighbourhood` (exactly ``forward``'s with no fan-out cap), and
its ``row_parameters()`` (the id tables) get row-sparse gradients, so an optimiser moves
only the rows the neighbourhood holds. LightGCN has one (without learnt relation scales).
With ``keep_layer_history()`` every embedding of every row also keeps each row's deeper
layers, and ``forward_historical(neighbourhood, users, items)`` computes the seeds' vectors
from a *one-hop* neighbourhood, reading the neighbours' deeper layers from what was kept
(historical embeddings): a step and a re-embedding cost the seeds' edges, not their trees.

The others (sage, pinsage, tgn, mbgat) train on the full graph, for a reason of substance:
they have dense weights shared by every node (SAGE/PinSage layer matrices, TGN's memory
updater and attention, MBGAT's relation attention), so each optimiser step moves every
node's vector and the rows "within L hops of what moved" are all rows; a local step would
publish stale vectors or re-embed everything anyway. (They already compute a batch's
vectors on sampled neighbourhoods inside ``forward``.)

A node's vector can also follow from its own edges alone: ``embed_with_partial`` returns,
beside ``embed``'s vectors, the :class:`PartialSums` of one full propagation, from which
``embed_one_hop(partial, neighbourhood, users, items, stale)`` computes the vectors of
rows whose edges changed since, reading their neighbours' sums as of that propagation (a
worker publishes what a user just did before the next gradient step; see
:mod:`stream.learn.reflect`). LightGCN has it; the others return no sums.

Everything needed to resume lives in ``state_dict()`` (registered parameters and buffers);
no per-node Python dict lives outside it. Tables grow geometrically, in chunks, so the
registry can hand out rows without a reallocation per new id or per chunk of new ids.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from models.errors import ModelConfigError

if TYPE_CHECKING:
    from models.neighbourhood import Neighbourhood

GROW_CHUNK = 1024


@dataclass(frozen=True)
class PartialSums:
    """What one full propagation leaves for :meth:`Encoder.embed_one_hop`, by kind: each
    row's own row then (``own_*``) and what it passes on to a neighbour's vector
    (``passed_*``; LightGCN: the sum of its layers ``0 .. L-1``)."""

    own_users: Tensor
    own_items: Tensor
    passed_users: Tensor
    passed_items: Tensor


@dataclass(frozen=True)
class EdgeBatch:
    """New edges of one micro-batch, all tensors of length ``E`` on one device."""

    users: Tensor  # int64 user rows
    items: Tensor  # int64 item rows
    relations: Tensor  # int64 relation index: the event type's position in sorted(behaviours)
    weights: Tensor  # float32 decayed weight of the edge right after the event
    times: Tensor  # int64 event time, ms since the epoch

    def __len__(self) -> int:
        return int(self.users.numel())

    def to(self, device: torch.device | str) -> EdgeBatch:
        return EdgeBatch(*(t.to(device) for t in self._tensors()))

    @staticmethod
    def concat(batches: Sequence[EdgeBatch]) -> EdgeBatch:
        """These batches' edges, one after another."""
        return EdgeBatch(
            *(torch.cat(parts) for parts in zip(*(b._tensors() for b in batches), strict=True))
        )

    def _tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return (self.users, self.items, self.relations, self.weights, self.times)


@dataclass(frozen=True)
class BipartiteGraph:
    """Decayed, relation-typed user-item graph in row space (one entry per stored edge).

    ``weights`` are the decayed weights at the snapshot's ``now`` (the store watermark);
    ``times`` are each edge's last event time.
    """

    num_users: int
    num_items: int
    users: Tensor  # int64 [E]
    items: Tensor  # int64 [E]
    relations: Tensor  # int64 [E]
    weights: Tensor  # float32 [E]
    times: Tensor  # int64 [E]
    now: int

    def __post_init__(self) -> None:
        sizes = {t.numel() for t in (self.users, self.items, self.relations, self.weights)}
        if len(sizes) > 1:
            raise ValueError(f"graph edge tensors differ in length: {sorted(sizes)}")

    @property
    def num_edges(self) -> int:
        return int(self.users.numel())

    def to(self, device: torch.device | str) -> BipartiteGraph:
        return BipartiteGraph(
            self.num_users,
            self.num_items,
            self.users.to(device),
            self.items.to(device),
            self.relations.to(device),
            self.weights.to(device),
            self.times.to(device),
            self.now,
        )


class Encoder(torch.nn.Module, abc.ABC):
    """Base class of every encoder; see the module docstring for the contract.

    Args:
        num_relations: number of relation (event) types; relation ``r`` is the ``r``-th
            configured behaviour.
        dim: embedding dimension.
    """

    name: ClassVar[str]
    # Bumped when the same parameters compute other vectors (a change of the forward), so
    # a checkpoint of an older revision is refused rather than published as if it fitted.
    revision: ClassVar[int] = 1

    def __init__(self, num_relations: int, dim: int = 64) -> None:
        super().__init__()
        if num_relations <= 0:
            raise ModelConfigError(f"num_relations must be > 0, got {num_relations!r}")
        if dim <= 0:
            raise ModelConfigError(f"embedding dim must be > 0, got {dim!r}")
        self.num_relations = num_relations
        self.dim = dim

    @property
    @abc.abstractmethod
    def num_users(self) -> int:
        """User rows the tables currently hold (capacity, not live users)."""

    @property
    @abc.abstractmethod
    def num_items(self) -> int:
        """Item rows the tables currently hold."""

    @abc.abstractmethod
    def grow(self, num_users: int, num_items: int) -> None:
        """Ensure room for at least these many rows; new rows are freshly initialised.

        Grow to :func:`grown_size` (multiples of :data:`GROW_CHUNK`, geometric); never
        shrink; keep existing rows intact.
        """

    @abc.abstractmethod
    def reset_rows(self, users: Tensor, items: Tensor) -> None:
        """Re-initialise these user and item rows (parameters and streaming state)."""

    @abc.abstractmethod
    def forward(self, graph: BipartiteGraph, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """L2-normalised ``(user_vectors [U, dim], item_vectors [I, dim])`` for these rows."""

    @property
    def local_step(self) -> bool:
        """Whether :meth:`forward_local` can stand in for :meth:`forward` in a step."""
        return False

    def forward_local(
        self, neighbourhood: Neighbourhood, users: Tensor, items: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``forward``'s vectors of these rows computed on their sampled neighbourhood
        (which holds them), the id tables getting row-sparse gradients."""
        raise NotImplementedError(f"encoder {self.name!r} has no local step")

    def keep_layer_history(self) -> None:
        """From the next embedding of every row on, keep what :meth:`forward_historical`
        reads of a neighbour."""
        raise NotImplementedError(f"encoder {self.name!r} keeps no layer history")

    @property
    def has_layer_history(self) -> bool:
        """Whether an embedding of every row has filled the kept layers since they were
        asked for (:meth:`keep_layer_history`) or the parameters were reset."""
        return False

    def forward_historical(
        self, neighbourhood: Neighbourhood, users: Tensor, items: Tensor
    ) -> tuple[Tensor, Tensor]:
        """:meth:`forward_local`'s vectors from a *one-hop* neighbourhood, the neighbours'
        deeper layers read from what their last embedding kept (row-sparse gradients)."""
        raise NotImplementedError(f"encoder {self.name!r} keeps no layer history")

    def negative_vectors(self, items: Tensor) -> Tensor:
        """A local step's vectors of negative items: from their own rows (row-sparse
        gradients) and what their last embedding kept, with no neighbourhood sampled."""
        raise NotImplementedError(f"encoder {self.name!r} has no local step")

    def row_parameters(self) -> tuple[torch.nn.Parameter, ...]:
        """Parameters with one row per node, moved row by row (see :meth:`forward_local`)."""
        return ()

    def observe(self, batch: EdgeBatch) -> None:
        """Absorb new edges into non-gradient streaming state; stateless encoders ignore it."""
        del batch

    @abc.abstractmethod
    def reset_parameters(self) -> None:
        """Re-initialise every learnt parameter."""

    def reset_state(self) -> None:
        """Forget streaming state (memories, caches); stateless encoders have none."""

    def embed_with_partial(
        self, graph: BipartiteGraph, users: Tensor, items: Tensor
    ) -> tuple[Tensor, Tensor, PartialSums | None]:
        """:meth:`embed`'s vectors, and the partial sums :meth:`embed_one_hop` reads
        (None: the encoder has no one-hop re-embedding)."""
        user_vectors, item_vectors = self.embed(graph, users, items)
        return user_vectors, item_vectors, None

    def embed_one_hop(
        self,
        partial: PartialSums,
        neighbourhood: Neighbourhood,
        users: Tensor,
        items: Tensor,
        stale: tuple[Tensor, Tensor],
    ) -> tuple[Tensor, Tensor]:
        """Vectors of these rows from their own edges (``neighbourhood``: their one-hop
        neighbourhood, every edge) and, for them and their neighbours, the rows as of the
        ``partial`` sums' propagation, not the parameters now (a step may be running); a
        row newer than ``partial``, or one of the ``stale`` ``(user rows, item rows)``
        (reset since), has its initial row and passes it on. No gradient, no side
        effect."""
        raise NotImplementedError(f"encoder {self.name!r} has no one-hop re-embedding")

    @torch.no_grad()
    def embed(self, graph: BipartiteGraph, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """``forward`` without gradient, in eval mode; restores the mode. Its only side
        effect is what an encoder keeps for :meth:`negative_vectors` (LightGCN: the items'
        layers 1..L)."""
        was_training = self.training
        self.eval()
        try:
            user_vectors, item_vectors = self(graph, users, items)
        finally:
            self.train(was_training)
        return user_vectors, item_vectors


def grown_size(needed: int, current: int) -> int:
    """Capacity to grow to: at least ``needed`` and, when growing, at least 1.5x
    ``current``, rounded up to a :data:`GROW_CHUNK` multiple. Geometric, so a table (and
    its optimiser state) is copied O(log rows) times as ids arrive, not once per chunk of
    new ids; from 0 it is ``needed`` rounded up, so a checkpoint's capacity regrows exactly.

    >>> grown_size(1, 0), grown_size(1025, 1024), grown_size(10, 2048), grown_size(4097, 4096)
    (1024, 2048, 2048, 6144)
    """
    if needed <= current:
        return current
    target = max(needed, current + current // 2)
    return -(-target // GROW_CHUNK) * GROW_CHUNK
