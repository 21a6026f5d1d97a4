# omnirtp: the two newcomer commands.
#
#   make run    install what omnirtp needs, then run it in the foreground
#               (ng control on 127.0.0.1:22222, config etc/omnirtp.conf)
#   make test   the same set-up plus the test peers, then the whole test suite
#               (venv + current PyPI packages) and the unit tests again under
#               Debian 12's own python3-twisted & co.
#   make deb    build/deb/omnirtp_*.deb with dpkg-buildpackage and Debian's
#               python3, checked by lintian (make deb-test: build, install,
#               run; also part of make test)
#   make fuzz   every fuzz target for 1,000,000 cases (hours; see
#               bench/README.md); FUZZ_ARGS="--seconds 60 ng" for less
#   make soak   1000 calls through the daemon for 10 minutes, num-threads
#               0 and 2 (bench/soak.py); SOAK_ARGS="--calls 100 --minutes 1"
#   make bench-idle  100k idle answered calls on one daemon (24 media
#               workers: each process may have its own 20k open files),
#               memory per call, CPU while idle, then deleted (minutes,
#               about 2.5 GB; not part of make test); IDLE_ARGS to change
#
# Needs Debian 12; runs apt-get as root (through sudo when not root).  Every
# step is idempotent: a second run only checks and goes straight to work.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# The Python that builds the venv: whichever python3 is on PATH (CI may use a
# pyenv 3.11).  The Debian-package test run always uses /usr/bin/python3.
PYTHON ?= python3
DEBIAN_PYTHON ?= /usr/bin/python3
VENV ?= .venv
CONFIG ?= etc/omnirtp.conf

RUN_PACKAGES := python3 python3-venv python3-dev gcc libssl-dev libsrtp2-dev libopus0 libspandsp2 libsoxr0 libnftables1
TEST_PACKAGES := rtpengine-daemon rtpengine-utils kamailio sip-tester tshark openssl iproute2 chromium nftables \
	python3-twisted python3-openssl python3-pylibsrtp python3-aioice \
	python3-zope.interface python3-prometheus-client python3-hypothesis redis-server docker-compose
# what `make deb` needs (the package's Build-Depends, lintian); make test
# builds the package too (omnirtp.test.integration.test_deb)
DEB_PACKAGES := debhelper dh-python pybuild-plugin-pyproject python3-all python3-all-dev python3-setuptools \
	libssl-dev python3-service-identity dpkg-dev fakeroot lintian
# the unit tests run in the build in `make deb DEB_BUILD_OPTIONS=`; make test
# runs them under Debian's python3 anyway
DEB_BUILD_OPTIONS ?= nocheck

VENV_STAMP := $(VENV)/.omnirtp-installed

.PHONY: help run test fuzz soak bench-idle deb deb-test system-deps test-deps deb-deps venv ext clean-venv

help:
	@echo "make run    install dependencies and run omnirtp (ng on 127.0.0.1:22222)"
	@echo "make test   install dependencies and test peers, run the whole test suite"
	@echo "make deb    build build/deb/omnirtp_*.deb (dpkg-buildpackage, lintian); make deb-test: install and run it"
	@echo "make fuzz   fuzz every parser for 1M cases each (FUZZ_ARGS='--seconds 60' for less)"
	@echo "make soak   1000 calls for 10 min, num-threads 0 and 2 (SOAK_ARGS='--calls 100 --minutes 1')"
	@echo "make bench-idle  100k idle calls on one daemon: KB per call, CPU while idle (IDLE_ARGS)"
	@echo "one module: .venv/bin/python -m twisted.trial omnirtp.test.test_bencode"

# PYTHONPATH: twistd finds the dropin twisted/plugins/omnirtp_plugin.py on
# sys.path entries; the editable install alone does not expose it.
run: system-deps venv ext
	PYTHONPATH=$(CURDIR) exec $(VENV)/bin/twistd -n --pidfile= omnirtp --config-file $(CONFIG)

test: system-deps test-deps deb-deps venv
	$(DEBIAN_PYTHON) scripts/run-tests --venv-python $(VENV)/bin/python \
		--debian-python $(DEBIAN_PYTHON)

FUZZ_ARGS ?=
fuzz: system-deps venv
	$(VENV)/bin/python scripts/fuzz $(FUZZ_ARGS)

deb: system-deps deb-deps
	DEB_BUILD_OPTIONS="$(DEB_BUILD_OPTIONS)" scripts/build-deb build/deb

deb-test: system-deps test-deps deb-deps venv
	$(VENV)/bin/python -m twisted.trial omnirtp.test.integration.test_deb

SOAK_ARGS ?=
soak: system-deps venv
	$(VENV)/bin/python bench/soak.py $(SOAK_ARGS)

IDLE_ARGS ?= --idle-only 100000 --kinds omnirtp24 --call plain
bench-idle: system-deps test-deps venv ext
	$(VENV)/bin/python bench/setup.py $(IDLE_ARGS)

system-deps:
	scripts/apt-ensure $(RUN_PACKAGES)

test-deps:
	scripts/apt-ensure --no-services $(TEST_PACKAGES)

deb-deps:
	scripts/apt-ensure $(DEB_PACKAGES)

venv: $(VENV_STAMP)

# the C extensions omnirtp.media._fastsrtp (SRTP, libssl-dev) and
# omnirtp.control._fastbencode (ng bencode), omnirtp.media._fastrelay
# (MediaPoller's wait and inline relay), omnirtp.sdp._fastsdp (the SDP
# parse, inspect and rewrite), omnirtp.control._fasttree (a call's statistics
# tree), omnirtp.media._fastpark (a parked call's entries' test) and
# omnirtp._fastlog (the log lines) built next to their sources, where
# PYTHONPATH=$(CURDIR) finds them (scripts/run-tests builds them the same way
# before the tests); without them SRTP runs on pylibsrtp, bencode in Python
ext:
	$(VENV)/bin/python setup.py -q build_ext --inplace --build-temp build/temp-inplace

# Rebuilt when the package metadata changes; `pip install -e` keeps the
# checkout live, so code edits need no reinstall.
$(VENV_STAMP): setup.cfg setup.py pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q --upgrade -e '.[opus,test]'
	touch $@

clean-venv:
	rm -rf $(VENV)
