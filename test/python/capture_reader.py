#!/usr/bin/python3
"""Take tasks off a queue with kombu and hand each to real Celery 5.2 as a worker would, for tests of messages
posthog-plugins itself enqueues (posthog.capture from plugins → `process_event_with_plugins`).

Each message is read through Celery's own worker path: `celery.worker.request.Request` (header parsing, body
decoding, protocol v2 [args, kwargs, embed]) and `Request.execute()`, which calls a task registered with
PostHog's signature `process_event_with_plugins(distinct_id, ip, site_url, data, team_id, now, sent_at=None)`
(binding errors would fail the task). `now`, `sent_at` and `data.timestamp` are parsed with dateutil's
isoparse, as PostHog's process_event does.

Usage (prints one JSON line per message, then exits; exit 2 when fewer than --count arrived in --timeout s):

    /usr/bin/python3 capture_reader.py --broker redis://127.0.0.1:6379/13 --queue posthog-plugins --count 1

Output line: {"task", "id", "origin", "lang", "content_type", "args", "kwargs", "call": {<the seven parameters
as the function received them>}, "parsed": {"now", "sent_at", "timestamp"} (isoformat of the parsed values)}
or {"error": "...", "task", "id"} when the execution failed.
"""
import argparse
import json
import sys

from celery import Celery
from celery.worker.request import Request
from dateutil import parser as dateparser
from kombu import Exchange, Queue

PLUGINS_TASK = 'posthog.tasks.process_event.process_event_with_plugins'

calls = []


def make_app(broker):
    app = Celery('posthog', broker=broker)
    app.conf.update(task_serializer='json', accept_content=['json'], task_ignore_result=True, result_backend=None)

    @app.task(name=PLUGINS_TASK)
    def process_event_with_plugins(distinct_id, ip, site_url, data, team_id, now, sent_at=None):
        parsed = {
            'now': dateparser.isoparse(now).isoformat(),
            'sent_at': dateparser.isoparse(sent_at).isoformat() if sent_at else None,
            'timestamp': dateparser.isoparse(data['timestamp']).isoformat(),
        }
        calls.append({
            'call': dict(distinct_id=distinct_id, ip=ip, site_url=site_url, data=data, team_id=team_id, now=now,
                         sent_at=sent_at),
            'parsed': parsed,
        })

    return app


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--broker', required=True)
    ap.add_argument('--queue', default='posthog-plugins')
    ap.add_argument('--count', type=int, default=1)
    ap.add_argument('--timeout', type=float, default=10.0)
    opts = ap.parse_args()

    app = make_app(opts.broker)
    queue = Queue(opts.queue, Exchange(opts.queue), opts.queue)
    got = 0
    with app.connection_for_read() as conn:
        simple = conn.SimpleQueue(queue)
        try:
            while got < opts.count:
                try:
                    message = simple.get(block=True, timeout=opts.timeout)
                except simple.Empty:
                    break
                got += 1
                name = message.headers.get('task')
                req = Request(message, app=app, task=app.tasks[name])
                out = {
                    'task': req.task_name,
                    'id': req.id,
                    'origin': message.headers.get('origin'),
                    'lang': message.headers.get('lang'),
                    'content_type': message.content_type,
                    'args': list(req.args),
                    'kwargs': dict(req.kwargs),
                }
                before = len(calls)
                retval = req.execute()
                if len(calls) == before:
                    # an ExceptionInfo: say what the task raised (e.g. TypeError from a signature mismatch)
                    error = getattr(retval, 'exception', retval)
                    error = getattr(error, 'exc', error)
                    out = {'error': repr(error), 'task': req.task_name, 'id': req.id}
                else:
                    out.update(calls[-1])
                message.ack()
                print(json.dumps(out), flush=True)
        finally:
            simple.close()
    sys.exit(0 if got >= opts.count else 2)


if __name__ == '__main__':
    main()
