# streamgnn — `make help` lists the targets.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help test lint demo bench-ingest bench-freshness bench-freshness-split bench-soak bench-soak-steady bench-soak-closed bench-encoding bench-retrain bench-seed-spread bench-step-cost bench-heap-growth bench-store-apply bench-id-memory bench-gil-share bench-gil-switch bench-faults bench-changelog bench-hostile bench-engines bench-scale bench-rebalance gpu-check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP) ## ruff (lint + format check) and mypy strict on stream/, models/ and tests/harness/
	$(VENV)/bin/ruff check stream models tests bench
	$(VENV)/bin/ruff format --check stream models tests bench
	$(VENV)/bin/mypy

test: lint ## set up everything (venv, package, Kafka jars, Prometheus) and run the whole suite
	bash .ci/ensure_prometheus.sh
	$(PY) -c 'from stream.local_broker.jars import ensure_kafka_jars; print(ensure_kafka_jars())'
	$(PY) -m pytest -q -p no:cacheprovider

demo: $(STAMP) ## broker, worker and producer on this machine with a live summary (see README)
	$(VENV)/bin/streamgnn demo

bench-ingest: $(STAMP) ## measure consume vs ingest rate; writes bench/results/ingest.json
	$(PY) -m bench.ingest

bench-freshness: $(STAMP) ## end-to-end freshness at 2,000 and 10,000 events/s, default settings (10k: graph seeded to 250k edges); writes bench/results/freshness.json
	$(PY) -m bench.freshness

bench-freshness-split: $(STAMP) ## the same loads offered to one streamgnn ingest plus one streamgnn train (the split deployment); writes bench/results/freshness-split.json
	$(PY) -m bench.freshness --deployment split --json bench/results/freshness-split.json

bench-soak: $(STAMP) ## 10 minutes at 10,000 events/s: the worker's RSS slope over the last half; writes bench/results/freshness-soak.json
	$(PY) -m bench.freshness --soak-s 600 --rate 10000

bench-soak-steady: $(STAMP) ## the soak with every half-life 10 s, so the graph stops growing: is RSS flat then? writes bench/results/freshness-soak-steady.json
	$(PY) -m bench.freshness --soak-s 600 --rate 10000 --soak-half-life-ms 10000 --json bench/results/freshness-soak-steady.json

bench-soak-closed: $(STAMP) ## the steady soak with no brand-new users: edges and ids flat, so an RSS slope is memory not given back; writes bench/results/freshness-soak-closed.json
	$(PY) -m bench.freshness --soak-s 600 --rate 10000 --soak-half-life-ms 10000 --soak-new-user-share 0 --json bench/results/freshness-soak-closed.json

bench-encoding: $(STAMP) ## embedding records encoded per second (dim 64), JSON vs base64 vs the previous JSON; writes bench/results/encoding.json
	$(PY) -m bench.encoding

bench-faults: $(STAMP) ## worker/broker kills, 30 s network cut, checkpoint kills, id flood; writes bench/results/faults.json
	$(PY) -m bench.faults

bench-changelog: $(STAMP) ## ingest events/s with and without --changelog, restore seconds per partition; writes bench/results/changelog.json
	$(PY) -m bench.changelog

bench-hostile: $(STAMP) ## a live worker against every hostile-record class, SIGTERMs and DLQ faults; writes bench/results/hostile.json
	$(PY) -m bench.hostile

bench-retrain: $(STAMP) ## incremental update vs full retrain, per 1,000 events; writes bench/results/incremental_vs_retrain.json
	$(PY) -m bench.incremental_vs_retrain

# The engines compared run in their own environments: Quix Streams pins confluent-kafka < 2.13.
ENGINES := var/engines
$(ENGINES)/quix/bin/python:
	python3 -m venv $(ENGINES)/quix
	$(ENGINES)/quix/bin/pip install -q 'quixstreams==3.28.1'
$(ENGINES)/faust/bin/python:
	python3 -m venv $(ENGINES)/faust
	$(ENGINES)/faust/bin/pip install -q 'faust-streaming==0.15.3' 'rocksdict>=0.3.25,<0.4'

bench-engines: $(STAMP) $(ENGINES)/quix/bin/python $(ENGINES)/faust/bin/python ## streamgnn vs Quix Streams vs Faust: SIGKILLs, a rebalance, events/s; writes bench/results/engines.json
	$(PY) -m bench.engines

bench-scale: $(STAMP) ## ingest events/s with 1 and 2 processes, trainer events/s with 1 and 2 gloo ranks, restore seconds of a 1M-edge partition; writes bench/results/scale.json
	$(PY) -m bench.scale

bench-rebalance: $(STAMP) ## how long a reading worker stops while a second joins and leaves, with and without --changelog; writes bench/results/rebalance.json
	$(PY) -m bench.rebalance

# No venv on a bare GPU machine: its python3 (torch, PyG, numpy there), plus the wheels that
# bench/gpu_wheels.sh put in .whl/ (carry it), which the script installs itself, offline.
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
gpu-check: ## on an NVIDIA GPU (< 8 min): CUDA tests, propagation at 1M-100M edges, step time, freshness; writes bench/results/gpu.json
	PYTHONUNBUFFERED=1 $(GPU_PY) -m bench.gpu_check

bench-id-memory: $(STAMP) ## the trainer's memory per live id, and the bound it puts under the default id caps; writes bench/results/id_memory.json
	$(PY) -m bench.id_memory

bench-seed-spread: $(STAMP) ## the default incremental method on ML-100K and RetailRocket under 5 training seeds: mean, sd, range, ratio to the best baseline; writes bench/results/seed_spread.json
	OMP_NUM_THREADS=1 $(PY) -m bench.seed_spread

bench-step-cost: $(STAMP) ## seconds per learn step at 100k, 1M, 10M edges, full vs local step; writes bench/results/step_cost.json
	OMP_NUM_THREADS=1 $(PY) -m bench.step_cost

bench-heap-growth: $(STAMP) ## a trainer's first learn calls from empty (heap growing) and first-touch GB/s, by heap option set; writes bench/results/heap_growth.json
	$(PY) -m bench.heap_growth

bench-store-apply: $(STAMP) ## microseconds per event of the graph store's apply at 100k and 1M edges, bloom filters on and off; writes bench/results/store_apply.json
	$(PY) -m bench.store_apply

bench-gil-share: $(STAMP) ## who holds the worker's GIL at 10,000 events/s (py-spy --gil samples by thread); writes bench/results/gil_share.json
	$(PY) -m bench.gil_share

bench-gil-switch: $(STAMP) ## a learn call alone and beside a busy Python thread, by GIL switch interval; writes bench/results/gil_switch.json
	OMP_NUM_THREADS=1 $(PY) -m bench.gil_switch

clean: ## remove the virtual environment and local state
	rm -rf $(VENV) var
