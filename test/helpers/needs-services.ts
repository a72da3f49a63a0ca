/**
 * Called at the top of every test helper that reaches a service (Redis, RabbitMQ, PostgreSQL, Python Celery, a
 * worker process). `make test-unit` runs only the test files that import none of these (test/helpers/unit-files.ts
 * finds them by this call) and sets TEST_NO_SERVICES=1, so a file picked by mistake fails at once, naming what it
 * needs, instead of timing out or passing against whatever services happen to run.
 */
export function needsServices(what: string): void {
  if (process.env.TEST_NO_SERVICES) {
    throw new Error(
      `this test needs ${what}, and TEST_NO_SERVICES is set (make test-unit runs only service-free tests)`,
    );
  }
}
