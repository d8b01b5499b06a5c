# mailintake — operator and developer targets. `make help` lists them.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
RUN := $(UV) run --frozen
# Tests run in parallel (pytest-xdist): one worker more than there are cores, since much of a
# test's time is spent waiting on the services; at most TEST_MAX_WORKERS. Each worker starts
# its own broker, PostgreSQL and mail servers. TEST_WORKERS=0: one process.
TEST_MAX_WORKERS ?= 6
TEST_WORKERS ?= $(shell n=$$(( $$(nproc) + 1 )); echo $$(( n < $(TEST_MAX_WORKERS) ? n : $(TEST_MAX_WORKERS) )))

.PHONY: help run test test-fast compat lint format screenshots bench soak bench-readme openapi contracts settings-table migrate keygen rotate-secrets topics deploy status logs replay backup restore token clean connections test-connection enable disable poll queue log log-messages

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

run: ## run the whole pipeline on this machine (SQLite, local broker) until Ctrl-C
	@scripts/bootstrap.sh
	$(RUN) mailintake-devstack up

test: ## install what the tests need, lint, then run the whole suite against real components
	@scripts/bootstrap.sh test
	@$(MAKE) --no-print-directory lint
	$(RUN) pytest -n $(TEST_WORKERS) --dist worksteal

test-fast: ## only the tests that need no broker, database or mail server
	$(RUN) pytest tests/unit

compat: ## the mail-server contract tests on Courier and GNU Mailutils (docs/compatibility.md)
	@scripts/bootstrap.sh compat
	MAILINTAKE_TEST_MAIL_SERVERS=courier,mailutils $(RUN) pytest -m contract

lint: ## ruff and mypy (strict)
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy shared/src services/*/src devstack/src cli/src tests scripts examples bench

format: ## apply ruff's formatting and safe fixes
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

screenshots: ## photograph each page of the web console into docs/console/ (the browser tests)
	@scripts/bootstrap.sh test
	MAILINTAKE_SCREENSHOTS=docs/console $(RUN) pytest tests/integration/test_console_browser.py -q

bench: ## benchmark against real Dovecot, PostgreSQL and the broker, beside mbsync (QUICK=1: a tenth)
	@scripts/bootstrap.sh bench
	$(RUN) python -m bench $${QUICK:+--quick}

soak: ## soak run: mail arriving at 200 mailboxes for 10 min under random faults (ARGS=--minutes 2 …)
	@scripts/bootstrap.sh test
	$(RUN) python -m bench.soak $(ARGS)

bench-readme: ## copy the last full benchmark table into the README
	$(RUN) python scripts/bench_table.py

openapi: ## regenerate services/config-api/openapi.json from the code
	$(RUN) mailintake-config-api openapi > services/config-api/openapi.json

contracts: ## regenerate docs/schemas/, docs/asyncapi.json and docs/topics.md's tables from the models
	$(RUN) python scripts/contracts.py --write

settings-table: ## rewrite the README's settings table from the Settings class
	$(RUN) python scripts/settings_table.py --write

migrate: ## bring the database at MAILINTAKE_DATABASE_URL to the latest schema
	$(RUN) mailintake-migrate

keygen: ## print a new encryption key for MAILINTAKE_ENCRYPTION_KEYS
	@$(RUN) mailintake-keygen

rotate-secrets: ## re-encrypt every stored secret with the first of MAILINTAKE_ENCRYPTION_KEYS
	$(RUN) mailintake-rotate-secrets

topics: ## create the missing topics, then check each one's partitions and configs
	$(RUN) mailintake-topics

deploy: ## migrate, then roll out to Kubernetes (kubectl's context); OVERLAY=dev|production
	scripts/deploy.sh $${OVERLAY:-dev}

status: ## each connection's health through the API; exit 1 when one is stalled or failing
	$(RUN) mailintake status $${PROBLEMS:+--problems}

logs: ## a service's logs; SERVICE=config-api|scheduler|fetcher|store (NAMESPACE= on Kubernetes)
	@if [ -n "$${NAMESPACE:-}" ]; then \
		kubectl -n "$$NAMESPACE" logs -l app.kubernetes.io/component=$${SERVICE:?SERVICE=…} --prefix --tail=200 -f; \
	else tail -n 200 -f .devstack/logs/$${SERVICE:?SERVICE=…}.log; fi

replay: ## announce stored mail again on mail.stored; CONNECTION= SINCE= [UNTIL=]
	$(RUN) mailintake replay "$${CONNECTION:?CONNECTION=name or id}" --since "$${SINCE:?SINCE=2026-11-01}" $${UNTIL:+--until "$$UNTIL"}

backup: ## write the configuration (connections, credentials, certificates) to FILE=backup.json
	$(RUN) mailintake-config-api backup $${ONLY:+--only $$ONLY} > $${FILE:-backup.json}

restore: ## restore FILE=backup.json (ONLY=connections,… to choose parts); safe to run twice
	$(RUN) mailintake-config-api restore $${FILE:-backup.json} $${ONLY:+--only $$ONLY}

token: ## make an API token; ROLE=admin|reader|viewer
	@$(RUN) mailintake-config-api hash-token --role $${ROLE:-admin}

# --- operating a running deployment (MAILINTAKE_API_URL, MAILINTAKE_API_TOKEN; or `make run`'s)
CLI := $(RUN) mailintake
C = $(error say which connection: C=<id or name>)

connections: ## list connections (Q=term searches)
	@$(CLI) connections list $${Q:+--search "$$Q"}

test-connection: ## test a connection step by step: C=<id or name>
	@$(CLI) connections test "$(C)"

enable: ## enable a connection, showing the estimate first: C=<id or name>
	@$(CLI) connections enable "$(C)"

disable: ## disable a connection: C=<id or name>
	@$(CLI) connections disable "$(C)"

poll: ## poll now and follow it to the end: C=<id or name>
	@$(CLI) connections poll "$(C)"

queue: ## the Incoming Mail Queue (STATE=awaiting_publish|smime_unopened|action_pending|failed)
	@$(CLI) queue $${STATE:+--state $$STATE}

log: ## the Incoming Mail Log of polls (C=<connection> narrows it)
	@$(CLI) log polls $${C:+-c "$$C"}

log-messages: ## the Incoming Mail Log of messages (C=<connection> narrows it)
	@$(CLI) log messages $${C:+-c "$$C"}

clean: ## remove the one-machine run's state (.devstack/)
	rm -rf .devstack
