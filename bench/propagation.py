"""LightGCN propagation: the old PyG gather-scatter path vs the sparse CSR product.

On synthetic bipartite graphs (users = edges / 7, items = edges / 14, power-law degrees,
three relations, random decayed weights) this times, for each path, a training step's
propagation (``forward`` over every row, then ``backward`` of a fixed projection) and a read
(``embed``, no gradient). The old path is the encoder's previous ``forward`` (``gcn_norm``
+ ``LGConv``), kept here as :class:`PygLightGCN`; the new one is
:class:`models.lightgcn.LightGCNEncoder` itself (CSR, int32 indices, symmetric backward).
:class:`CooLightGCN`, a COO ``torch.sparse.mm`` with autograd's own backward, is the
alternative it was chosen over. All include building the normalised adjacency, which
happens once per call.

    .venv/bin/python -m bench.propagation                    # 70k, 1M, 10M edges on the CPU
    .venv/bin/python -m bench.propagation --device cuda      # on a GPU machine

Writes bench/results/propagation.json (``--out``): the device, and per size and path
``seconds`` (median call), ``seconds_min``, ``seconds_per_layer`` (median / layers) and
``edges_per_s`` (edges / seconds_per_layer), for ``forward_backward`` and ``embed``, plus
the speedups (old seconds / new seconds, of the medians and of the minima). The two paths'
calls alternate, so that load from other processes falls on both alike; ``seconds_min`` is
the least disturbed call. A path whose estimated peak memory does not fit in 70% of the
free memory is recorded as skipped, with the reason; a mode stops repeating
once it has used ``--budget-s`` (``calls`` says how many calls were timed).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import LGConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from models.base import BipartiteGraph
from models.lightgcn import LightGCNEncoder

RESULTS = Path(__file__).parent / "results" / "propagation.json"
NUM_RELATIONS = 3
PATHS = ("sparse_csr", "pyg", "sparse_coo")
MODES = ("forward_backward", "embed")


class PygLightGCN(LightGCNEncoder):
    """The encoder with its previous forward: ``gcn_norm`` then one ``LGConv`` per layer."""

    def forward(self, graph: BipartiteGraph, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        n_users = self.num_users
        x = torch.cat([self.user_emb, self.item_emb])
        out = x
        if self.num_layers and graph.num_edges:
            weight = graph.weights.to(x.dtype)
            if self.relation_log_scale is not None:
                weight = weight * self.relation_log_scale.exp()[graph.relations]
            src, dst = graph.users, graph.items + n_users
            edge_index = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])
            edge_index, norm = gcn_norm(
                edge_index, torch.cat([weight, weight]), x.shape[0], add_self_loops=False
            )
            conv, total = LGConv(normalize=False), x
            for _ in range(self.num_layers):
                x = conv(x, edge_index, norm)
                total = total + x
            out = total / (self.num_layers + 1)
        out = F.normalize(out.float(), dim=-1)
        return out[users], out[items + n_users]


class CooLightGCN(LightGCNEncoder):
    """The encoder with a COO ``torch.sparse.mm`` per layer and autograd's own backward."""

    def forward(self, graph: BipartiteGraph, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        n_users = self.num_users
        x = torch.cat([self.user_emb, self.item_emb])
        out = x
        if self.num_layers and graph.num_edges:
            weight = graph.weights.to(x.dtype)
            if self.relation_log_scale is not None:
                weight = weight * self.relation_log_scale.exp()[graph.relations]
            rows = torch.cat([graph.users, graph.items + n_users])
            cols = torch.cat([graph.items + n_users, graph.users])
            weight = torch.cat([weight, weight])
            degree = weight.new_zeros(x.shape[0]).index_add(0, rows, weight)
            inv = degree.pow(-0.5).masked_fill(degree == 0, 0.0)
            values = inv[rows] * weight * inv[cols]
            indices = torch.stack([rows, cols])
            adjacency = torch.sparse_coo_tensor(indices, values, (x.shape[0],) * 2).coalesce()
            total = x
            for _ in range(self.num_layers):
                x = torch.sparse.mm(adjacency, x)
                total = total + x
            out = total / (self.num_layers + 1)
        out = F.normalize(out.float(), dim=-1)
        return out[users], out[items + n_users]


def synthetic_graph(num_edges: int, device: str, seed: int = 0) -> BipartiteGraph:
    """Power-law user and item degrees (row ``floor(n * u^2)`` for uniform ``u``), each
    (user, item, relation) at most once, as in the store: parallel edges only across
    relations."""
    gen = torch.Generator().manual_seed(seed)
    num_users, num_items = max(num_edges // 7, 1), max(num_edges // 14, 1)
    keys = torch.zeros(0, dtype=torch.long)
    while keys.numel() < num_edges:
        draws = 2 * num_edges
        users = (torch.rand(draws, generator=gen).pow(2) * num_users).long()
        items = (torch.rand(draws, generator=gen).pow(2) * num_items).long()
        relations = torch.randint(0, NUM_RELATIONS, (draws,), generator=gen)
        fresh = (users * num_items + items) * NUM_RELATIONS + relations
        keys = torch.unique(torch.cat([keys, fresh]))
    keys = keys[torch.randperm(keys.numel(), generator=gen)[:num_edges]]
    pairs, relations = keys.div(NUM_RELATIONS, rounding_mode="floor"), keys % NUM_RELATIONS
    users, items = pairs.div(num_items, rounding_mode="floor"), pairs % num_items
    weights = torch.rand(num_edges, generator=gen) + 0.01
    times = torch.zeros(num_edges, dtype=torch.long)
    graph = BipartiteGraph(num_users, num_items, users, items, relations, weights, times, 0)
    return graph.to(device)


def distinct_pairs(graph: BipartiteGraph) -> int:
    """(user, item) pairs with at least one edge: half the stored entries of the CSR."""
    return int(torch.unique(graph.users * graph.num_items + graph.items).numel())


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _estimated_peak_bytes(path: str, num_edges: int, num_nodes: int, dim: int, layers: int) -> int:
    """Rough peak of forward + backward: the PyG path keeps an [2E, dim] message per layer."""
    dense = num_nodes * dim * 4 * (4 * layers + 6)
    if path == "pyg":
        return dense + 2 * num_edges * dim * 4 * (layers + 2) + 2 * num_edges * 40
    return dense + 2 * num_edges * (60 if path == "sparse_csr" else 120)


def _free_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    return int(psutil.virtual_memory().available)


def _calls(
    path: str, graph: BipartiteGraph, args: argparse.Namespace
) -> dict[str, Callable[[], None]] | str:
    """The timed calls of one path on one graph by mode, or why the path does not fit."""
    encoder_type = {"pyg": PygLightGCN, "sparse_coo": CooLightGCN}.get(path, LightGCNEncoder)
    enc = encoder_type(
        NUM_RELATIONS, dim=args.dim, num_layers=args.layers, relation_scale=args.relation_scale
    )
    enc.grow(graph.num_users, graph.num_items)
    enc.to(args.device)
    num_nodes = enc.num_users + enc.num_items
    need = _estimated_peak_bytes(path, graph.num_edges, num_nodes, args.dim, args.layers)
    free = _free_bytes(args.device)
    if need > 0.7 * free:
        return f"estimated peak {need / 2**30:.1f} GiB > 70% of {free / 2**30:.1f} GiB free"
    users = torch.arange(enc.num_users, device=args.device)
    items = torch.arange(enc.num_items, device=args.device)
    probe = torch.randn(num_nodes, args.dim, generator=torch.Generator().manual_seed(1))
    probe = probe.to(args.device)

    def forward_backward() -> None:
        enc.zero_grad(set_to_none=True)
        u, i = enc(graph, users, items)
        (torch.cat([u, i]) * probe).sum().backward()

    def embed() -> None:
        enc.embed(graph, users, items)

    return {"forward_backward": forward_backward, "embed": embed}


def _seconds(call: Callable[[], None], device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    call()
    _sync(device)
    return time.perf_counter() - start


def measure(graph: BipartiteGraph, args: argparse.Namespace) -> dict[str, Any]:
    """Both paths on one graph, their calls interleaved so that both see the same load."""
    calls = {path: _calls(path, graph, args) for path in PATHS}
    result: dict[str, Any] = {
        path: {"skipped": c} for path, c in calls.items() if isinstance(c, str)
    }
    runnable = {path: c for path, c in calls.items() if not isinstance(c, str)}
    for mode in MODES:
        times: dict[str, list[float]] = {path: [] for path in runnable}
        started = time.perf_counter()
        for by_mode in runnable.values():  # warm-up
            by_mode[mode]()
        while len(times[PATHS[0]]) < args.repeats:
            for path, by_mode in runnable.items():
                times[path].append(_seconds(by_mode[mode], args.device))
            if time.perf_counter() - started > args.budget_s:
                break
        for path, seconds in times.items():
            median = statistics.median(seconds)
            result.setdefault(path, {})[mode] = {
                "seconds": round(median, 5),
                "seconds_min": round(min(seconds), 5),
                "calls": len(seconds),
                "seconds_per_layer": round(median / args.layers, 5),
                "edges_per_s": round(graph.num_edges * args.layers / median),
            }
    if "pyg" in runnable:
        result["speedup"] = {
            f"{mode}_{stat}": round(result["pyg"][mode][stat] / result["sparse_csr"][mode][stat], 2)
            for mode in MODES
            for stat in ("seconds", "seconds_min")
        }
    return result


def device_info(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": device,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    if device.startswith("cuda"):
        info["cuda_device_name"] = torch.cuda.get_device_name(torch.device(device))
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--sizes", default="70000,1000000,10000000", help="edge counts")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed calls per path and mode, after a warm-up"
    )
    parser.add_argument(
        "--budget-s", type=float, default=60.0, help="fewer repeats once a mode took this long"
    )
    parser.add_argument(
        "--relation-scale",
        action="store_true",
        help="learnt per-relation scales (off in the worker)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device")
    document: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        **device_info(args.device),
        "dim": args.dim,
        "layers": args.layers,
        "relation_scale": args.relation_scale,
        "edges_per_s": "graph edges / seconds_per_layer (a layer visits each edge both ways)",
        "sizes": [],
    }
    for num_edges in (int(s) for s in args.sizes.split(",")):
        graph = synthetic_graph(num_edges, args.device)
        entry: dict[str, Any] = {
            "edges": num_edges,
            "users": graph.num_users,
            "items": graph.num_items,
            "distinct_pairs": distinct_pairs(graph),
        }
        started = time.perf_counter()
        entry.update(measure(graph, args))
        print(
            f"{num_edges:>11,} edges ({time.perf_counter() - started:.0f} s): "
            f"{json.dumps({k: v for k, v in entry.items() if k in (*PATHS, 'speedup')})}",
            flush=True,
        )
        document["sizes"].append(entry)
        del graph
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
