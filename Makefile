# Set-up and everyday commands. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8042
DATA_DIR ?= ./var
HOST ?= 127.0.0.1

.PHONY: run run-moto test lint format bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.installed  ## DICOMweb server at http://localhost:$(PORT)/dicom-web/, data in $(DATA_DIR)
	DATA_DIR=$(DATA_DIR) $(PY) -m chalicelib.server.localserver --host $(HOST) --port $(PORT)

run-moto: $(VENV)/.installed  ## the same server on the AWS adapters, against moto in-process
	$(PY) -m chalicelib.server.motoserver --host $(HOST) --port $(PORT)

test: $(VENV)/.installed  ## every test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(VENV)/.installed
	$(PY) -m ruff format .

bench: $(VENV)/.installed  ## side by side with Orthanc (Debian's orthanc + orthanc-dicomweb)
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
