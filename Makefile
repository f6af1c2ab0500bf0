# Set-up and everyday commands. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8042
DATA_DIR ?= ./var
HOST ?= 127.0.0.1
# pytest-xdist workers for `make test`, one a core. worksteal gives each worker a contiguous share
# of the tests (a module's shared corpus or server is built again only where a share is cut) and
# lets an idle worker take tests from the end of another's, so no long module is left for last.
TEST_WORKERS ?= auto

# Deployment: its own venv on Python 3.12, Lambda's runtime (the package holds cp312 wheels).
PYTHON312 ?= $(lastword $(sort $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python)))
INFRA_VENV := .venv-infra
INFRA_PY := $(INFRA_VENV)/bin/python
STAGE ?= dev
# One package a stage: sam.json holds the stage's settings.
LAMBDA_PACKAGE := build/lambda/$(STAGE)/deployment.zip
CDK_CLI := npx --yes aws-cdk@2.1149.0
# jsii runs the CDK in node; Debian's node 20 works, its end-of-life banner is noise here.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
# What the Lambda package is made of: a change to any of these rebuilds it.
APP_SOURCES := app.py requirements.txt .chalice/config.json infra/packaging.py \
	$(shell find chalicelib -type f -not -path '*/__pycache__/*')
# What a stage's build reads from the environment: a change to one rewrites the stage's stamp
# (build/settings/$(STAGE).synth or .package), which builds it again; unchanged, the stamp and
# the build stay. The stack reads these (infra/stack.py); the package, the app as `chalice
# package` loads it, with the stage's DICOMWEB_CONFIG over the one given.
SYNTH_SETTINGS := AUTHORIZER DICOMWEB_CONFIG VIEWER_URLS COGNITO_DOMAIN_PREFIX
PACKAGE_SETTINGS := AUTHORIZER COGNITO_USER_POOL_ARN

.PHONY: FORCE run run-moto test test-infra lint format bench bench-scale clean package synth deploy destroy

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.installed  ## DICOMweb server at http://localhost:$(PORT)/dicom-web/, data in $(DATA_DIR)
	DATA_DIR=$(DATA_DIR) $(PY) -m chalicelib.server.localserver --host $(HOST) --port $(PORT)

run-moto: $(VENV)/.installed  ## the same server on the AWS adapters, against moto in-process
	$(PY) -m chalicelib.server.motoserver --host $(HOST) --port $(PORT)

test: $(VENV)/.installed  ## every test: the app's (Python 3.11), then the deployment's (3.12)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal
	$(MAKE) test-infra

test-infra: $(LAMBDA_PACKAGE) build/cdk.out/$(STAGE).template.json  ## the stack and the built package, offline
	STAGE=$(STAGE) $(INFRA_VENV)/bin/pytest -p no:cacheprovider infra/tests

$(INFRA_VENV)/.installed: infra/requirements.txt requirements.txt
	@test -x "$(PYTHON312)" || { echo "Python 3.12 is needed (Lambda's runtime): set PYTHON312"; exit 1; }
	$(PYTHON312) -m venv $(INFRA_VENV)
	$(INFRA_PY) -m pip install --quiet "pip<26.3"  # chalice 1.34 packages with pip < 26.3
	$(INFRA_PY) -m pip install --quiet -r infra/requirements.txt
	touch $@

package: $(LAMBDA_PACKAGE)  ## the stage's Lambda package (deployment.zip + sam.json) in build/lambda/$(STAGE)/

$(LAMBDA_PACKAGE): $(INFRA_VENV)/.installed $(APP_SOURCES) build/settings/$(STAGE).package
	$(INFRA_PY) -m infra.packaging --stage $(STAGE) --out $(@D)

synth: build/cdk.out/$(STAGE).template.json  ## the CDK stack in build/cdk.out/ (no AWS account)

build/cdk.out/$(STAGE).template.json: $(INFRA_VENV)/.installed $(APP_SOURCES) $(wildcard infra/*.py infra/*.json) \
		build/settings/$(STAGE).synth
	STAGE=$(STAGE) $(INFRA_PY) -m infra.app

# `+`: written under `make -q` too, so that it tells whether a setting changed (`make -n` lists
# every target with a FORCE prerequisite as remade, changed or not).
build/settings/$(STAGE).synth build/settings/$(STAGE).package: build/settings/$(STAGE).%: FORCE
	+@mkdir -p $(@D) && for name in $(if $(filter synth,$*),$(SYNTH_SETTINGS),$(PACKAGE_SETTINGS)); do \
		printf '%s=%s\n' "$$name" "$$(printenv $$name)"; done > $@.new
	+@if cmp -s $@.new $@; then rm $@.new; else mv $@.new $@; fi

FORCE:

deploy: synth  ## the stack on the account of the environment (credentials, AWS_REGION)
	$(CDK_CLI) bootstrap --app build/cdk.out
	$(CDK_CLI) deploy --app build/cdk.out --require-approval never $(STAGE)

destroy: synth  ## delete the stack (aws and prod keep their bucket and table)
	$(CDK_CLI) destroy --app build/cdk.out --force $(STAGE)

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(VENV)/.installed
	$(PY) -m ruff format .

bench: $(VENV)/.installed  ## side by side with Orthanc (Debian's orthanc + orthanc-dicomweb)
	$(PY) -m bench.run

bench-scale: $(VENV)/.installed  ## index cost from 1,000 to 100,000 studies (SQLite, DynamoDB on moto); SIZES=1000,10000 for a quick run
	$(PY) -m bench.scale $(if $(SIZES),--sizes $(SIZES)) $(if $(MOTO_SIZES),--moto-sizes $(MOTO_SIZES))

clean:
	rm -rf $(VENV) $(INFRA_VENV) build .pytest_cache .ruff_cache
