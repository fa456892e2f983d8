# GPT-2 tweet bot. `make run-local` serves locally on SQLite (dry run); `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.DEFAULT_GOAL := help

# ---- virtualenv: each requirements file is installed once, again when it changes ----
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.api: requirements.txt requirements-core.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.api
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

$(VENV)/.ml: requirements-ml.txt requirements-core.txt $(VENV)/.api
	$(BIN)/pip install -q -r requirements-ml.txt
	touch $@

$(VENV)/.scrape: requirements-scrape.txt requirements-core.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-scrape.txt
	touch $@

.PHONY: help venv run-local migrate test
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 30

venv: $(VENV)/.api ## create .venv with the API's dependencies

migrate: $(VENV)/.api ## upgrade the database (DATABASE_URL / DB_HOST / CONNECTION_NAME / SQLite) to the latest schema
	$(BIN)/alembic upgrade head

run-local: $(VENV)/.api ## serve on http://127.0.0.1:$(PORT) with SQLite and dry-run posting (makes .env if needed)
	$(BIN)/python scripts/init_local_env.py .env
	$(BIN)/alembic upgrade head
	$(BIN)/uvicorn api.main:app --host 127.0.0.1 --port $(PORT)

test: $(VENV)/.dev $(VENV)/.ml $(VENV)/.scrape ## run the test suite (Postgres tests need TEST_POSTGRES_URL)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

.PHONY: download-tweets
download-tweets: $(VENV)/.scrape ## collect tweets into USERNAME_tweets.csv: USERNAME=karpathy [LIMIT=6000] [SOURCE=api|archive|twint] [ARCHIVE=x.zip]
	$(BIN)/python scripts/download_tweets.py $(if $(USERNAME),--username=$(call q,$(USERNAME))) $(if $(LIMIT),--limit=$(call q,$(LIMIT))) \
		$(if $(SOURCE),--source=$(call q,$(SOURCE))) $(if $(ARCHIVE),--archive=$(call q,$(ARCHIVE))) $(DOWNLOAD_ARGS)

.PHONY: train demo
train: $(VENV)/.ml ## fine-tune and write candidates: FILENAME=karpathy_tweets.csv [RUN_NAME=run1] [STEPS=1000] [MODEL_NAME=124M] [TRAIN_ARGS=...]
	$(BIN)/python -m ml.model $(if $(FILENAME),--filename=$(call q,$(FILENAME))) $(if $(RUN_NAME),--run_name=$(call q,$(RUN_NAME))) \
		$(if $(STEPS),--steps=$(call q,$(STEPS))) $(if $(MODEL_NAME),--model_name=$(call q,$(MODEL_NAME))) $(TRAIN_ARGS)

demo: $(VENV)/.ml ## offline end to end: sample tweets -> tiny model -> candidates -> local store -> one dry-run post
	$(BIN)/python -m ml.demo $(DEMO_ARGS)

.PHONY: serve-generation
GENERATION_PORT ?= 8001
serve-generation: $(VENV)/.ml ## serve the generation service on http://127.0.0.1:$(GENERATION_PORT) (GENERATION_* settings, .env_reference)
	$(BIN)/uvicorn ml.serve:app --host 127.0.0.1 --port $(GENERATION_PORT)

# ---- mutation testing: on demand, never in CI (it runs the tests once per mutant) ----
# mutmut reads its settings from setup.cfg in the folder it runs in: .mutation/ gets one made from
# MODULES and TESTS, and links to the code; it is a git repository of its own, so that tests asking
# git what it ignores see the copied .gitignore, not the rule that ignores .mutation/. The ml and
# browser tests are left out (slow, and not made to run in the process mutmut forks per mutant).
# Each run starts from no mutants/: mutmut keeps a mutant's verdict until its function changes, so a
# rerun after new tests would list the old survivors again, and another MODULES' results would stay.
# Survivors again: `cd .mutation && mutmut results`; one in full: `mutmut show NAME`.
# MUTANTS limits the run to mutants whose names match (globs: MUTANTS="posting.job.x__claim__*");
# SINCE=<commit> sets it to the functions of MODULES changed since that commit.
.PHONY: mutation
MUTATION_DIR ?= .mutation
since_quoted := '$(subst ','\'',$(SINCE))'
ifdef SINCE
MUTANTS := $(strip $(shell python3 scripts/changed_functions.py $(since_quoted) $(MODULES) || echo FAILED))
endif
MUTANTS ?=
MUTATION_COPY := core api posting bench db ml scripts migrations alembic.ini pytest.ini .gitignore Makefile deploy.mk
mutation: $(VENV)/.dev ## mutation-test MODULES="api/x.py ..." with their TESTS="tests/test_x.py ..."; lists the survivors
	@test -n "$(MODULES)" -a -n "$(TESTS)" || { echo 'usage: make mutation MODULES="ml/filters.py" TESTS="tests/test_ml_candidates.py"' >&2; exit 2; }
	@case "$(MUTANTS)" in *FAILED*) echo 'SINCE='$(since_quoted)': no list of changed functions (see above)' >&2; exit 2;; esac
	@test -z $(since_quoted) -o -n "$(MUTANTS)" || { echo 'no function of $(MODULES) changed since '$(since_quoted)': nothing to run' >&2; exit 2; }
	git init -q $(MUTATION_DIR)
	rm -rf $(MUTATION_DIR)/mutants
	for path in tests $(MUTATION_COPY); do ln -sfn ../$$path $(MUTATION_DIR)/$$path; done
	{ echo '[mutmut]'; \
	  echo 'source_paths ='; for path in $(MODULES); do echo "    $$path"; done; \
	  echo 'also_copy ='; for path in $(MUTATION_COPY); do echo "    $$path"; done; \
	  echo 'pytest_add_cli_args_test_selection ='; for path in $(TESTS); do echo "    $$path"; done; \
	  printf 'pytest_add_cli_args =\n    -m\n    not ml and not browser\n'; \
	} > $(MUTATION_DIR)/setup.cfg
	cd $(MUTATION_DIR) && $(CURDIR)/$(BIN)/mutmut run $(foreach mutant,$(MUTANTS),'$(mutant)') && $(CURDIR)/$(BIN)/mutmut results

# Docker, docker compose and Google Cloud targets (docker-compose, docker-cloud-run, add-scheduler, ...).
include deploy.mk
# The local targets' values are taken literally too (take_literally and q are defined in deploy.mk).
$(call take_literally,FILENAME STEPS MODEL_NAME USERNAME LIMIT SOURCE ARCHIVE)

.PHONY: image-test
# The generator part makes its tiny run with .venv's TensorFlow.
image-test: $(if $(filter generator,$(or $(IMAGE_TEST_PARTS),generator)),$(VENV)/.ml) ## build and run the images for real (podman, or IMAGE_TEST_ENGINE=docker): IMAGE_TEST_PARTS="api compose py313 generator" (or startup: the start-up bench in the API image)
	bash scripts/image_test.sh
