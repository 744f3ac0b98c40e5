# EarthGPT-X platform. `make demo` runs the main job, `make test` the tests; both work on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

EGX_CACHE ?= $(HOME)/.cache/earthgptx
VENV ?= $(EGX_CACHE)/venv
PY := $(VENV)/bin/python
STACK := deploy/local/stack.sh
PYTEST_ARGS ?=

export EGX_CACHE
export EGX_VENV := $(VENV)

.PHONY: help env up down status demo test test-unit lint proto proto-check lock bench train eval compose-check clean-state model web

WEB_SOURCES := $(wildcard web/src/*) web/index.html web/package.json web/package-lock.json web/vite.config.js

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s "$$(printf '\t')"

web: web/dist/index.html ## build the web map (npm ci + vite) into web/dist when missing or stale; the API serves it at /

web/dist/index.html: $(WEB_SOURCES)
	@cd web && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build

env: ## build the Python environment (virtualenv in $(VENV) from requirements.lock)
	@deploy/local/python.sh install

up: web ## start the local stack (PostGIS, Kafka, MinIO, Triton); installs what is missing; waits until ready
	@$(STACK) up

down: ## stop the local stack (data stays in .stack/)
	@$(STACK) down

status: ## print each service as up or down, with its address
	@$(STACK) status

demo: up ## the main job: bring the stack up and send events through the pipeline into PostGIS
	@$(PY) -m tools.demo

test: up ## bring the stack up and run the whole test suite against it
	@$(PY) -m pytest $(PYTEST_ARGS)

test-unit: env ## tests that need no running service
	@$(PY) -m pytest -m "not kafka and not postgis and not minio and not triton" $(PYTEST_ARGS)

lint: env ## ruff + mypy over the library, services, tests and benchmarks
	@$(PY) -m ruff check earthgptx services tools tests bench deploy
	@$(PY) -m mypy earthgptx services tools

proto: env ## regenerate the Python code of proto/ (never edit the generated files by hand)
	@deploy/gen_proto.sh

proto-check: env ## check the generated code and the field-number lock are current
	@$(PY) proto/fields_lock.py check && $(PY) -m pytest -q tests/test_events.py

lock: ## re-resolve requirements.in into the pinned requirements.lock
	@python3 -m venv /tmp/egx-lock && /tmp/egx-lock/bin/pip install -q -r requirements.in \
	  && /tmp/egx-lock/bin/pip freeze --exclude-editable | grep -v '^earthgptx' > requirements.lock

bench: up ## run every benchmark; results land in bench/results/; exit 1 if any missed its targets or failed
	@missed=""; for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || missed="$$missed $$b"; done; \
	if [ -n "$$missed" ]; then echo "targets missed or run failed:$$missed"; exit 1; fi

train: env ## reproduce the shipped tiny model: data, stage 1 (vision pre-training + training), stages 2-16 and 18 (17 and 19 were trials)
	@$(PY) -m earthgptx.training.train --config configs/tiny-stage1.yaml
	@$(PY) -m earthgptx.training.train --config configs/tiny-stage2.yaml
	@$(PY) -m earthgptx.training.train --config configs/tiny-stage3.yaml
	@$(PY) -m earthgptx.training.train --config configs/tiny-stage4.yaml
	@$(PY) -m earthgptx.training.train --config configs/tiny-stage5.yaml
	@$(PY) -m earthgptx.training.train --config configs/tiny-stage6.yaml
	@$(PY) -m earthgptx.training.train --config configs/tiny-stage7.yaml
	@$(PY) -m earthgptx.training.train --config configs/tiny-stage8.yaml
	@$(PY) -m earthgptx.training.train --config configs/tiny-stage9.yaml
	@$(PY) -m earthgptx.training.train --config configs/tiny-stage10.yaml
	@$(PY) -m earthgptx.training.train --config configs/tiny-stage11.yaml
	@$(PY) -m earthgptx.training.train --config configs/tiny-stage12.yaml
	@$(PY) -m earthgptx.training.train --config configs/tiny-stage13.yaml
	@$(PY) -m earthgptx.training.train --config configs/tiny-stage14.yaml
	@$(PY) -m earthgptx.training.train --config configs/tiny-stage15.yaml
	@$(PY) -m earthgptx.training.train --config configs/tiny-stage16.yaml
	@$(PY) -m earthgptx.training.train --config configs/tiny.yaml

model: env ## build the Triton model repository of models/earthgptx-tiny (ONNX vision graph, llm, entry model)
	@$(PY) -m earthgptx.serving.build --model models/earthgptx-tiny --out model_repository

eval: env ## evaluate the shipped model: held-out (ID) targets, OOD, abstention and area-description figures; exit 1 iff an ID target is missed
	@$(PY) -m earthgptx.training.evaluate --config configs/tiny.yaml --ood --abstention --areas

clean-state: down ## delete the local stack's data and logs
	@rm -rf .stack
