# posthog-plugins: `make start` runs the worker on its defaults, `make test` runs every test.
NODE := node --no-node-snapshot

.PHONY: deps services build start test test-unit bench fixtures clean

deps:
	@bash .ci/ensure-deps.sh

services:
	@bash .ci/ensure-services.sh

build: deps
	npx tsc -p tsconfig.json

start: build
	./bin/posthog-plugins start

# Every test: unit tests of protocol/ and the worker, integration tests against the real Redis,
# RabbitMQ, PostgreSQL and Python Celery of this machine; then a check that they left nothing behind.
test: build services
	$(NODE) --test --test-concurrency=2 $$(find dist/test -name '*.test.js' | sort)
	$(NODE) dist/test/helpers/leftovers.js

# Unit tests only (no services needed).
test-unit: build
	$(NODE) --test dist/test/protocol/

bench: build services
	$(NODE) dist/test/bench/run.js

fixtures: services
	/usr/bin/python3 fixtures/capture/capture.py --redis redis://127.0.0.1:6379/15 --amqp amqp://guest:guest@127.0.0.1:5672/posthog-plugins-capture --out fixtures/messages

clean:
	rm -rf dist
