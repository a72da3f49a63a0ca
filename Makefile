# posthog-plugins: `make start` runs the worker on its defaults, `make test` runs every test.
# Node: NODE_LINE=24 or 26 picks the line (default: the system Node's when it is 24 or 26, else 24); a line the
# system Node is not is fetched once, pinned and verified (.ci/node-versions), into .node/LINE.
NODE_LINE ?=
# `make test` runs the suite on every supported line in turn, or on NODE_LINE alone when it is given.
TEST_LINES := $(or $(NODE_LINE),$(shell awk 'NF == 3 && $$1 ~ /^[0-9]+$$/ { print $$1 }' .ci/node-versions))
WITH_NODE := bash .ci/with-node.sh
NODE := node --no-node-snapshot

.PHONY: deps services build start test test-unit lint bench fixtures clean

deps:
	@$(WITH_NODE) "$(NODE_LINE)" bash .ci/ensure-deps.sh

services:
	@bash .ci/ensure-services.sh

# tsc, then the sandbox's guest script, bundled by esbuild (scripts/build-guest.mjs). Starts from an empty dist/,
# so a renamed or deleted file (a test above all) never runs from a stale .js.
# Also records the Node it built with in .node/node: bin/posthog-plugins runs on it.
build: deps
	rm -rf dist
	$(WITH_NODE) "$(NODE_LINE)" npx tsc -p tsconfig.json
	$(WITH_NODE) "$(NODE_LINE)" node scripts/build-guest.mjs
	@mkdir -p .node && $(WITH_NODE) "$(NODE_LINE)" sh -c 'ln -sfn "$$POSTHOG_PLUGINS_NODE" .node/node && echo "posthog-plugins runs on Node $$(node --version) ($$POSTHOG_PLUGINS_NODE)"'

start: build
	./bin/posthog-plugins start

# Every test: unit tests of protocol/ and the worker, integration tests against the real Redis,
# RabbitMQ, PostgreSQL and Python Celery of this machine, once per Node line; after each, a check that the
# tests left nothing behind. First, lint.
test: build services lint
	@set -e; for line in $(TEST_LINES); do \
	  echo "== make test: Node $$line"; \
	  PP_TEST_STARTED=$$(date +%s) $(WITH_NODE) $$line sh -c 'node --version && $(NODE) --test --test-concurrency=2 $$(find dist/test -name "*.test.js" | sort) && $(NODE) dist/test/helpers/leftovers.js'; \
	done

# Every test file that needs no service (picked by test/helpers/unit-files.ts), once per Node line. TEST_NO_SERVICES
# makes the service helpers throw, so a file picked by mistake fails instead of quietly using the services.
test-unit: build
	@set -e; for line in $(TEST_LINES); do \
	  echo "== make test-unit: Node $$line"; \
	  $(WITH_NODE) $$line sh -c 'node --version && files=$$($(NODE) dist/test/helpers/unit-files.js) && TEST_NO_SERVICES=1 $(NODE) --test $$files'; \
	done

# ESLint (typescript-eslint's recommended rules), Prettier's format (120 columns; `npx prettier --write` fixes it)
# and no import cycles (madge names each loop; type-only imports count).
lint: deps
	$(WITH_NODE) "$(NODE_LINE)" npx eslint src protocol test scripts
	$(WITH_NODE) "$(NODE_LINE)" npx prettier --check --log-level warn "src/**/*.ts" "protocol/**/*.ts" "test/**/*.ts" "scripts/**/*.mjs"
	$(WITH_NODE) "$(NODE_LINE)" npx madge --circular --no-spinner --extensions ts src protocol test

bench: build services
	@set -e; for line in $(TEST_LINES); do echo "== make bench: Node $$line"; $(WITH_NODE) $$line $(NODE) dist/test/bench/run.js; done

fixtures: services
	/usr/bin/python3 fixtures/capture/capture.py --redis redis://127.0.0.1:6379/15 --amqp amqp://guest:guest@127.0.0.1:5672/posthog-plugins-capture --out fixtures/messages

clean:
	rm -rf dist
