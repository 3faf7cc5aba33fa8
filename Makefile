# Two commands do all set-up on a fresh machine:
#   make demo   runs the main job end to end on the bundled default (ShapesOVD + a small CLIP)
#   make test   runs the test suite
# Both create .venv/ on first use; afterwards the install is skipped unless a pin changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# detectron2 has no official PyPI release; sal-detectron2 is a cp310 wheel of upstream detectron2
# whose Python code runs on 3.11 (its compiled _C is never loaded). See README "Installation".
DETECTRON2_WHEEL := sal-detectron2==0.7.2

.PHONY: install demo test clean-venv

install: $(STAMP)

$(STAMP): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
		--python-version 3.10 --only-binary=:all: \
		--target "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
		$(DETECTRON2_WHEEL)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -c "import detectron2, clip, ezsd"
	touch $(STAMP)

# Demo scale: every stage sized for a 2-core CPU (27 to 44 minutes on the machines measured,
# docs/SHAPES_RESULTS.md): an RPN for the CLIP proposals, 200 training images, 600 iterations of 8
# (24 epochs), 200 validation images so that each novel class has 20+ boxes (tools/run_pipeline.py
# --help for the full-size run), the novel names taught as wrong answers on base objects (the
# pipeline's default, not the paper's). Then the detections on four val images.
demo: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) tools/run_pipeline.py --output-dir output/demo \
		--num-train 200 --num-val 200 --max-iter 600
	DETECTRON2_DATASETS=output/demo/datasets $(PY) tools/demo.py --cpu \
		--config-file output/demo/train/config.yaml --vocabulary shapes_ovd_val \
		--input 'output/demo/datasets/shapes_ovd/val/00000[4-7].jpg' --output output/demo/pictures

# Style first (ruff, pyproject.toml), then the tests, one pytest-xdist worker per core (most tests
# run one thread or one tool process at a time); --dist loadfile keeps a file's shared fixtures on
# one worker.
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -n auto --dist loadfile tests

clean-venv:
	rm -rf $(VENV)
