# The two commands of the README: `make demo` and `make test`. Both set everything up.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
SANDBOX ?= $(CURDIR)/.sandbox
# The local pipeline's ports are offsets from this (inventories/local/group_vars/all.yml).
PORT_BASE ?= 18400
PLAYBOOK = $(BIN)/ansible-playbook -i inventories/local -e zopeops_sandbox=$(SANDBOX) -e zopeops_port_base=$(PORT_BASE)
# java: the push engine's ansible-rulebook (its drools rules engine needs Java 17).
# PostgreSQL (Debian 12's 15) for the RelStorage stages (docs/relstorage.md): its server
# binaries are not on PATH, so the check names the file Debian installs.
PG_BIN ?= /usr/lib/postgresql/15/bin
SYSTEM_PACKAGES := haproxy:haproxy nginx:nginx rsync:rsync git:git chromium:chromium chromedriver:chromium-driver $(PG_BIN)/postgres:postgresql java:openjdk-17-jre-headless
# The multi-machine harness of the tests (tests/harness: root, network namespaces, machines
# booting systemd with systemd-nspawn from the root scripts/ensure-nspawn-rootfs builds).
HARNESS_PACKAGES := ip:iproute2 nsenter:util-linux ssh:openssh-client systemd-nspawn:systemd-container

.PHONY: help deps harness-deps test-multihost test-relstorage demo demo-plone status test test-unit check gates clean push-branding bench bench-cutover bench-deps

help:
	@echo "make demo   bring up the local four-stage pipeline, promote beta, test and prod, show each stage"
	@echo "make demo-plone  a Plone 6 site (examples/plone) on dev and beta: create it, add a page on dev, promote beta"
	@echo "make test   run the whole test suite"
	@echo "make check  the fast tier: unit tests and single-component integration tests"
	@echo "make test-relstorage  the RelStorage tests alone (make test runs them too)"
	@echo "make clean  stop every process of the sandboxes (demo and demo-plone) and remove them"
	@echo "make push-branding PARTNER=acme FROM=dev [TO=test]  push one partner's branding downstream"
	@echo "make bench  promote.yml against its bare baseline (BENCH_ARGS='--sizes demo,100M,1G --clients 1,2,4 --rounds 3')"

# The virtualenv also gets scripts/venv-site/zopeops_zipimport_cache.py, active in each of its
# Python processes (a .pth line): Ansible's module payloads are zips whose code Python
# compiles again on every task; this keeps the compiled code (docs/benchmarks.md).
# And scripts/venv-site/zopeops_warnings.py, which silences the one warning every playbook run
# began with (cryptography's DSA deprecation, at ansible-core's import).
ZIPIMPORT_CACHE := scripts/venv-site/zopeops_zipimport_cache.py
VENV_WARNINGS := scripts/venv-site/zopeops_warnings.py
$(VENV)/.installed: requirements.txt $(ZIPIMPORT_CACHE) $(VENV_WARNINGS)
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11 or newer is needed")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	site=$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') && \
	  cp $(ZIPIMPORT_CACHE) $(VENV_WARNINGS) "$$site/" && \
	  echo 'import zopeops_zipimport_cache' > "$$site/zopeops-zipimport-cache.pth" && \
	  echo 'import zopeops_warnings' > "$$site/zopeops-warnings.pth"
	touch $@

deps: $(VENV)/.installed
	@scripts/ensure-system-packages $(SYSTEM_PACKAGES)

# The main job on the embedded pipeline: bring up every stage, then carry dev's revision and
# data through beta, test and prod, one promotion at a time, showing what each stage serves.
# The steps callback prints a page (each play and promotion step, the timelines, the status
# tables); the full Ansible output goes to $(DEMO_LOG).
DEMO_LOG := $(SANDBOX)/demo.log
STEPS := ANSIBLE_STDOUT_CALLBACK=zopeops.stages.steps ZOPEOPS_STEPS_LOG=$(DEMO_LOG)
demo: deps
	@mkdir -p $(SANDBOX) && : > $(DEMO_LOG) && start=$$(date +%s) && \
	$(STEPS) $(PLAYBOOK) playbooks/site.yml && \
	echo && $(STEPS) $(PLAYBOOK) playbooks/status.yml -e status_heading=Before && \
	for stage in beta test prod; do \
	  echo; echo "=== Promoting $$stage to what its predecessor runs ==="; \
	  $(STEPS) $(PLAYBOOK) playbooks/promote.yml -e stage=$$stage || exit 1; \
	done && \
	echo && $(STEPS) $(PLAYBOOK) playbooks/status.yml -e status_heading=After && \
	echo && echo "=== Pushing acme's branding from dev to beta, without a promotion ===" && \
	stamp="acme, edited on dev at $$(date +%H:%M:%S)" && \
	$(SANDBOX)/dev/current/venv/bin/zconsole run $(SANDBOX)/dev/etc/zope-console.conf \
	  scripts/demo-edit-branding.py acme "$$stamp" && \
	$(STEPS) $(PLAYBOOK) playbooks/push_branding.yml -e partner=acme -e from_stage=dev && \
	echo "beta's /partners/acme now says: $$(curl -s http://127.0.0.1:$$(( $(PORT_BASE) + 1 ))/partners/acme/ | sed 's/<[^>]*>//g')" && \
	echo && echo "make demo took $$(( ($$(date +%s) - start) / 60 )) min $$(( ($$(date +%s) - start) % 60 )) s." && \
	echo "Status page: $(SANDBOX)/lb/status/status.html (and status.json); full output: $(DEMO_LOG)"

# The Plone example (examples/plone, inventories/plone) on a sandbox of its own: dev and beta.
# site.yml builds both releases (Plone 6.2 from the shared wheel cache) and creates the site on
# dev (its init script); a page is added on dev as an editor would, then beta is promoted and
# shows dev's page, banner and revision.
PLONE_SANDBOX ?= $(CURDIR)/.sandbox-plone
PLONE_PORT_BASE ?= 18500
PLONE_PLAYBOOK = $(BIN)/ansible-playbook -i inventories/plone -e zopeops_sandbox=$(PLONE_SANDBOX) -e zopeops_port_base=$(PLONE_PORT_BASE)
PLONE_LOG := $(PLONE_SANDBOX)/demo.log
PLONE_STEPS := ANSIBLE_STDOUT_CALLBACK=zopeops.stages.steps ZOPEOPS_STEPS_LOG=$(PLONE_LOG)
PLONE_BETA := http://127.0.0.1:$$(( $(PLONE_PORT_BASE) + 1 ))
demo-plone: deps
	@mkdir -p $(PLONE_SANDBOX) && : > $(PLONE_LOG) && start=$$(date +%s) && \
	$(BIN)/python examples/zopeapp/build_demo_repo.py --source examples/plone $(PLONE_SANDBOX)/plone.git >/dev/null && \
	$(PLONE_STEPS) $(PLONE_PLAYBOOK) playbooks/site.yml && \
	echo && $(PLONE_STEPS) $(PLONE_PLAYBOOK) playbooks/status.yml -e status_heading=Before && \
	echo && echo "=== Adding a page on dev, as an editor would ===" && \
	{ $(PLONE_SANDBOX)/dev/current/venv/bin/zconsole run $(PLONE_SANDBOX)/dev/etc/zope-console.conf \
	  $(PLONE_SANDBOX)/dev/current/src/add_page.py news "News from dev" \
	  "Written on dev at $$(date +%H:%M:%S), promoted to beta." 2>$(PLONE_SANDBOX)/add_page.log || \
	  { tail -20 $(PLONE_SANDBOX)/add_page.log; exit 1; }; } && \
	echo && echo "=== Promoting beta to what dev runs ===" && \
	$(PLONE_STEPS) $(PLONE_PLAYBOOK) playbooks/promote.yml -e stage=beta && \
	echo && $(PLONE_STEPS) $(PLONE_PLAYBOOK) playbooks/status.yml -e status_heading=After && \
	echo && echo "beta's /Plone/news: $$(curl -s $(PLONE_BETA)/Plone/news | grep -o '<h1[^>]*>[^<]*</h1>' | sed 's/<[^>]*>//g')" && \
	echo "beta's banner: $$(curl -s $(PLONE_BETA)/Plone | grep -o '<div id="zopeops-banner"[^>]*>[^<]*' | sed 's/<[^>]*>//g')" && \
	echo "beta runs $$(cat $(PLONE_SANDBOX)/beta/current/REVISION), dev runs $$(cat $(PLONE_SANDBOX)/dev/current/REVISION)" && \
	echo && echo "make demo-plone took $$(( ($$(date +%s) - start) / 60 )) min $$(( ($$(date +%s) - start) % 60 )) s." && \
	echo "Plone on dev: http://127.0.0.1:$(PLONE_PORT_BASE)/Plone, on beta: $(PLONE_BETA)/Plone (admin password: $(PLONE_SANDBOX)/secrets/zope-admin-password); full output: $(PLONE_LOG)"

status: deps
	@ANSIBLE_STDOUT_CALLBACK=zopeops.stages.steps ZOPEOPS_STEPS_LOG=$(SANDBOX)/status.log \
	  $(PLAYBOOK) playbooks/status.yml

# One partner's branding from a stage to the next (or to TO), without a promotion.
push-branding: deps
	@test -n "$(PARTNER)" -a -n "$(FROM)" || { echo "usage: make push-branding PARTNER=acme FROM=dev [TO=test]"; exit 2; }
	$(PLAYBOOK) playbooks/push_branding.yml -e partner=$(PARTNER) -e from_stage=$(FROM) $(if $(TO),-e to_stage=$(TO))

# Two workers (--dist loadgroup): each xdist group (a whole-pipeline sandbox, the
# multi-machine harness; long waits on real services) runs on one worker, in order, everything
# else spreads over both; the long groups are handed out first, longest first, the single
# tests fill in after them (tests/support/scheduling.py, through tests/conftest.py).
# The multi-machine suite's short scope runs here (tests/integration/multihost, marker
# multihost and not multihost_full: the harness, site.yml twice, both balancers, the service
# user, a machine unreachable at preflight, backup.yml, its drill and a scheduled backup, prod's
# promotion losing a client machine after the switch to the twin, then resumed, status.yml;
# root: harness-deps installs iproute2, systemd-container and builds the machines' Debian
# root). The rest of it (a rolling restart of prod, a balancer refusing the switch, the
# promotions of beta and test)
# is left to `make test-multihost`, for make test's time budget (README, Development).
# Then the Ansible ecosystem's gates: ansible-test sanity, ansible-lint (production profile),
# Galaxy build + install + FQCN runs, ansible-builder, changelog lint, Molecule scenarios
# (their unit gate is the pytest run above).
test: deps harness-deps
	$(BIN)/pytest -n 2 --dist loadgroup -m "not multihost_full" tests
	ZOPEOPS_GATES_SKIP=units scripts/ecosystem-gates

# The RelStorage tests alone (make test runs them too): a Zope on RelStorage, and the RelStorage
# pipeline brought up twice and promoted under load (docs/relstorage.md).
test-relstorage: deps
	$(BIN)/pytest tests/integration/relstorage

# The pipeline on ten systemd machines over real SSH, the full scope (root; installs
# iproute2 and systemd-container and builds the machines' root first).
test-multihost: deps harness-deps
	$(BIN)/pytest -m multihost tests/integration/multihost

# Without root the packages cannot be installed, and the multihost tests skip and say why.
# The systemd machines' root (systemd-nspawn) is built here once, as root.
harness-deps:
	@scripts/ensure-system-packages $(HARNESS_PACKAGES) || \
	  echo "The multi-machine tests (tests/integration/multihost) will be skipped."
	@scripts/ensure-nspawn-rootfs

gates: deps
	scripts/ecosystem-gates

test-unit: deps
	$(BIN)/pytest tests/unit

# The fast tier while working: unit tests and the quick integration tests of single
# components (real ZEO, Zope, HAProxy, nginx), without the whole-pipeline tests and without
# the tests marked slow (several services, a role run, a release built; pytest.ini).
# make test runs them all.
check: deps
	$(BIN)/pytest -n 2 -m "not pipeline and not slow" tests

# Benchmarks of the promotion on a pipeline of their own (.sandbox-bench, a free port block
# from 50000), stopped at the end. Quick by default (demo and 100 MB data, 1 and 2 clients);
# bigger cases with BENCH_ARGS. The plots need matplotlib (requirements-dev.txt, pinned).
BENCH_ARGS ?=
bench-deps: deps
	@$(BIN)/python -c 'import matplotlib' 2>/dev/null || \
	  $(BIN)/pip install -q "$$(grep -i '^matplotlib==' requirements-dev.txt)"

bench: bench-deps
	$(BIN)/python bench/promotion_bench.py $(BENCH_ARGS)

bench-cutover: bench-deps
	$(BIN)/python bench/cutover_bench.py $(BENCH_ARGS)

clean:
	@if [ -x $(BIN)/python ]; then for sandbox in $(SANDBOX) $(PLONE_SANDBOX); do \
	  $(BIN)/python scripts/sandbox-stop $$sandbox; done; fi
	rm -rf $(SANDBOX) $(PLONE_SANDBOX)
