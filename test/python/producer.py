#!/usr/bin/python3
"""Send `process_event_with_plugins` tasks the way PostHog's capture endpoint does, with real Celery 5.2.

PostHog (posthog/api/capture.py, late 2020) calls, once per event:

    celery_app.send_task(
        name="posthog.tasks.process_event.process_event_with_plugins",
        queue=settings.PLUGINS_CELERY_QUEUE,            # "posthog-plugins"
        args=[distinct_id, ip, site_url, event, team.id, now.isoformat(), sent_at],
    )

with `now = timezone.now()` (aware UTC, so `now.isoformat()` ends in `+00:00`) and `sent_at` a datetime
parsed from the request (kombu's JSON encoder turns an aware UTC datetime into an ISO string ending in `Z`)
or None. PostHog's Celery app declares `task_queues = (Queue('celery', Exchange('celery'), 'celery'),)`
and `task_default_queue = 'celery'`; `posthog-plugins` is not in that list, so Celery auto-creates
`Queue('posthog-plugins', Exchange('posthog-plugins'), 'posthog-plugins')` on the first send (on RabbitMQ a
durable queue and direct exchange; on Redis the binding set `_kombu.binding.posthog-plugins`).

Usage (prints one JSON line per sent task: {"id", "index", "distinct_id", "uuid", "queue", "args", "kwargs"},
where args/kwargs are the values exactly as a Python worker will receive them, i.e. after kombu's JSON):

    /usr/bin/python3 producer.py --broker redis://127.0.0.1:6379/1 --count 10 --team-id 2

Run with `--help` for all options. Also importable (capture.py uses make_app / build_event / send_one).
"""
import argparse
import datetime
import json
import sys
import uuid as uuidlib

from celery import Celery
from kombu import Exchange, Queue
from kombu.utils.json import dumps as kombu_dumps

PLUGINS_TASK = 'posthog.tasks.process_event.process_event_with_plugins'
PROCESS_EVENT_TASK = 'posthog.tasks.process_event.process_event'
PARAM_NAMES = ('distinct_id', 'ip', 'site_url', 'data', 'team_id', 'now', 'sent_at')


def make_app(broker, protocol=2, compression=None, accept_pickle=False, name='posthog'):
    """A Celery app configured like PostHog's (posthog/celery.py + settings.py of late 2020)."""
    app = Celery(name, broker=broker)
    conf = dict(
        task_queues=(Queue('celery', Exchange('celery'), 'celery'),),
        task_default_queue='celery',
        task_ignore_result=True,
        task_serializer='json',
        accept_content=['json', 'pickle'] if accept_pickle else ['json'],
        task_protocol=int(protocol),
        broker_connection_retry=True,
        broker_connection_max_retries=3,
    )
    if str(broker).startswith(('amqp', 'pyamqp')):
        # Publisher confirms: send_task returns only once RabbitMQ has the message. Without them a producer
        # that exits right after its last send can lose messages RabbitMQ had not read yet (flow control,
        # then the closing socket's reset discards them), and a test would blame the worker for the loss.
        conf['broker_transport_options'] = {'confirm_publish': True}
    if compression:
        # Celery 5.2 bug: task messages are compressed according to `result_compression`
        # (celery/app/amqp.py: default_compressor = conf.result_compression); set both.
        conf['task_compression'] = compression
        conf['result_compression'] = compression
    app.conf.update(conf)
    return app


def parse_time(value):
    """ISO-8601 string -> aware datetime (naive values are taken as UTC)."""
    dt = datetime.datetime.fromisoformat(value.replace('Z', '+00:00'))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt


def build_event(index, distinct_id, event_name='$pageview', event_uuid=None, timestamp=None):
    """A posthog-js style event object (the `data` argument)."""
    data = {
        'event': event_name,
        'properties': {
            'distinct_id': distinct_id,
            'index': index,
            'token': 'phc_test_token',
            '$lib': 'web',
            '$lib_version': '1.7.2',
            '$current_url': 'http://localhost:8000/page/%d' % index,
            '$host': 'localhost:8000',
            '$pathname': '/page/%d' % index,
        },
        'uuid': event_uuid or str(uuidlib.uuid4()),
    }
    if timestamp is not None:
        data['timestamp'] = timestamp
    return data


def wire_value(value):
    """The value as the Python worker will see it after kombu JSON (datetimes -> strings, tuples -> lists)."""
    return json.loads(kombu_dumps(value))


def send_one(app, distinct_id, ip, site_url, data, team_id, now, sent_at, *, queue='posthog-plugins',
             task_name=PLUGINS_TASK, as_kwargs=False, task_id=None, **options):
    """One send_task exactly like PostHog's capture endpoint (positional args, no kwargs).

    `now` is an aware datetime (sent as now.isoformat()), `sent_at` an aware datetime or None.
    `as_kwargs` sends args=[] and the seven values as kwargs instead (what posthog-plugins publishes).
    Extra options (priority, countdown, eta, expires, serializer, headers, ...) go to send_task.
    Returns (task_id, args, kwargs) with args/kwargs as the worker will receive them.
    """
    values = [distinct_id, ip, site_url, data, team_id, now.isoformat(), sent_at]
    if as_kwargs:
        args, kwargs = [], dict(zip(PARAM_NAMES, values))
    else:
        args, kwargs = values, {}
    result = app.send_task(task_name, args=args, kwargs=kwargs, queue=queue, task_id=task_id, **options)
    return result.id, wire_value(args), wire_value(kwargs)


def none_or(value):
    return None if value is None or value.lower() in ('none', 'null') else value


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--broker', required=True, help='redis://host:port/db or amqp://user:pass@host:port/vhost')
    p.add_argument('--queue', default='posthog-plugins')
    p.add_argument('--task-name', default=PLUGINS_TASK)
    p.add_argument('--count', type=int, default=None,
                   help='number of events (default 1, or the number of lines of --events-file)')
    p.add_argument('--start-index', type=int, default=0, help='first index i (distinct_id user-<i>)')
    p.add_argument('--team-id', type=int, default=2)
    p.add_argument('--event-name', default='$pageview')
    p.add_argument('--events-file', help='JSONL file, one `data` object per line (sent as is)')
    p.add_argument('--protocol', type=int, choices=(1, 2), default=2, help='Celery task_protocol')
    p.add_argument('--priority', type=int, default=None)
    p.add_argument('--compression', choices=('zlib', 'gzip', 'bzip2'), default=None)
    p.add_argument('--serializer', default=None, help='e.g. pickle (accept_content then includes pickle)')
    p.add_argument('--countdown', type=float, default=None, help='seconds (becomes the eta header)')
    p.add_argument('--expires', type=float, default=None, help='seconds from now')
    p.add_argument('--ip', default='127.0.0.1', help='"none" for null (anonymized IP)')
    p.add_argument('--site-url', default='http://localhost:8000')
    p.add_argument('--now', default=None, help='fixed ISO time for the `now` argument (default: current time)')
    p.add_argument('--sent-at', default='now',
                   help='"now" (same instant as now), an ISO time, or "none" for null')
    p.add_argument('--id-prefix', default=None,
                   help='deterministic task ids: <prefix> + zero-padded index, must form a uuid '
                        '(e.g. 00000000-0000-4000-8000- gives ...-000000000007)')
    p.add_argument('--kwargs', action='store_true',
                   help='send args=[] and the seven values as kwargs (the posthog-plugins output style)')
    opts = p.parse_args(argv)

    events = None
    if opts.events_file:
        with open(opts.events_file, encoding='utf-8') as f:
            events = [json.loads(line) for line in f if line.strip()]
    count = opts.count if opts.count is not None else (len(events) if events is not None else 1)

    app = make_app(opts.broker, protocol=opts.protocol, compression=opts.compression,
                   accept_pickle=opts.serializer == 'pickle')
    options = {}
    if opts.priority is not None:
        options['priority'] = opts.priority
    if opts.countdown is not None:
        options['countdown'] = opts.countdown
    if opts.expires is not None:
        options['expires'] = opts.expires
    if opts.serializer:
        options['serializer'] = opts.serializer

    ip = none_or(opts.ip)
    out = sys.stdout
    with app.producer_or_acquire() as producer:
        for n in range(count):
            index = opts.start_index + n
            now = parse_time(opts.now) if opts.now else datetime.datetime.now(datetime.timezone.utc)
            if opts.sent_at == 'now':
                sent_at = now
            else:
                sent_at = none_or(opts.sent_at)
                sent_at = parse_time(sent_at) if sent_at else None
            if events is not None:
                data = events[n % len(events)]
                props = data.get('properties') if isinstance(data, dict) else None
                distinct_id = (props or {}).get('distinct_id') or (data.get('distinct_id') if isinstance(data, dict) else None) or 'user-%d' % index
            else:
                distinct_id = 'user-%d' % index
                data = build_event(index, distinct_id, opts.event_name)
            task_id = None
            if opts.id_prefix is not None:
                task_id = opts.id_prefix + str(index).zfill(36 - len(opts.id_prefix))
            tid, args, kwargs = send_one(app, distinct_id, ip, opts.site_url, data, opts.team_id, now, sent_at,
                                         queue=opts.queue, task_name=opts.task_name, as_kwargs=opts.kwargs,
                                         task_id=task_id, producer=producer, **options)
            out.write(json.dumps({
                'id': tid, 'index': index, 'distinct_id': distinct_id,
                'uuid': data.get('uuid') if isinstance(data, dict) else None,
                'queue': opts.queue, 'args': args, 'kwargs': kwargs,
            }, ensure_ascii=False) + '\n')
            out.flush()
    app.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
