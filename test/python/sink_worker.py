"""A plain Celery 5.2 worker app standing in for PostHog's Python `process_event` consumer.

Run (from this directory):

    SINK_BROKER_URL=redis://127.0.0.1:6379/14 SINK_OUTPUT=/tmp/sink.jsonl \\
        /usr/bin/python3 -m celery -A sink_worker worker -P solo -Q celery \\
        --without-heartbeat --without-mingle --without-gossip --loglevel INFO

Environment:
    SINK_BROKER_URL  broker URL (redis://... or amqp://...), required
    SINK_OUTPUT      file that receives one JSON line per task (appended, flushed and fsynced), required
    SINK_QUEUE       queue to consume and declare (default `celery`, as PostHog's CELERY_DEFAULT_QUEUE)
    SINK_PARENT_PID  optional: pid of the starting process; the worker gets SIGKILL when it dies (no orphans;
                     SIGTERM would not do: with its stdout pipe gone, Celery hangs in warm shutdown)

It registers `posthog.tasks.process_event.process_event(distinct_id, ip, site_url, data, team_id, now,
sent_at)` with PostHog's exact signature (positional or keyword). Each execution appends

    {"kind": "executed", "task_id", "task", "distinct_id", "ip", "site_url", "data", "team_id", "now",
     "sent_at", "positional": <number of positional args received>, "keywords": [<kwarg names received>],
     "routing_key", "exchange", "priority", "redelivered", "retries", "eta", "expires", "origin", "pid", "time"}

Anything that prevents an execution is also recorded, so tests can tell why a task never ran:
    {"kind": "failure", "task_id", "task", "exception", "exc_type", "args", "kwargs"}   (e.g. TypeError: bad signature)
    {"kind": "unknown", "task_id", "task", "message"}                                   (task name not registered)
    {"kind": "rejected", "message"}                                                      (undecodable/refused content)
    {"kind": "revoked", "task_id", "task", "expired"}                                    (expired before execution)
"""
import json
import os
import threading
import time

from celery import Celery, signals
from kombu import Exchange, Queue

BROKER_URL = os.environ.get('SINK_BROKER_URL')
OUTPUT = os.environ.get('SINK_OUTPUT')
QUEUE = os.environ.get('SINK_QUEUE') or 'celery'
if not BROKER_URL or not OUTPUT:
    raise RuntimeError('sink_worker needs SINK_BROKER_URL and SINK_OUTPUT in the environment')

app = Celery('sink_worker', broker=BROKER_URL)
app.conf.update(
    task_queues=(Queue(QUEUE, Exchange(QUEUE), QUEUE),),
    task_default_queue=QUEUE,
    task_serializer='json',
    accept_content=['json'],
    result_backend=None,
    task_ignore_result=True,
    worker_hijack_root_logger=True,
    worker_redirect_stdouts=False,
    broker_connection_retry_on_startup=True,
)

_lock = threading.Lock()


def _die_with_parent(pid):
    """SIGKILL this worker when the process that started it dies (Linux prctl PR_SET_PDEATHSIG).

    A watchdog thread would do too, but a sleeping thread delays Celery's exit by seconds."""
    import ctypes
    import signal
    try:
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() != pid:  # parent already gone before prctl took effect
        os._exit(3)


if os.environ.get('SINK_PARENT_PID'):
    _die_with_parent(int(os.environ['SINK_PARENT_PID']))


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def write_record(record):
    # ASCII JSON: a lone surrogate (valid in JSON and in a Python str, not encodable as UTF-8) is written as an
    # escape instead of failing the write; readers get the same strings back.
    line = json.dumps(record, ensure_ascii=True, default=repr) + '\n'
    with _lock:
        with open(OUTPUT, 'a', encoding='utf-8') as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


@app.task(name='posthog.tasks.process_event.process_event')
def process_event(distinct_id, ip, site_url, data, team_id, now, sent_at):
    req = process_event.request
    delivery_info = req.delivery_info or {}
    write_record({
        'kind': 'executed',
        'task_id': req.id,
        'task': process_event.name,
        'distinct_id': distinct_id,
        'ip': ip,
        'site_url': site_url,
        'data': _jsonable(data),
        'team_id': _jsonable(team_id),
        'now': _jsonable(now),
        'sent_at': _jsonable(sent_at),
        'positional': len(req.args or ()),
        'keywords': sorted((req.kwargs or {}).keys()),
        'routing_key': delivery_info.get('routing_key'),
        'exchange': delivery_info.get('exchange'),
        'priority': delivery_info.get('priority'),
        'redelivered': delivery_info.get('redelivered'),
        'retries': req.retries,
        'eta': _jsonable(req.eta),
        'expires': _jsonable(req.expires),
        'origin': req.origin,
        'pid': os.getpid(),
        'time': time.time(),
    })


@signals.task_failure.connect
def _on_failure(sender=None, task_id=None, exception=None, args=None, kwargs=None, **_):
    write_record({
        'kind': 'failure', 'task_id': task_id, 'task': getattr(sender, 'name', None),
        'exception': repr(exception), 'exc_type': type(exception).__name__,
        'args': _jsonable(list(args or ())), 'kwargs': _jsonable(dict(kwargs or {})),
    })


@signals.task_unknown.connect
def _on_unknown(name=None, id=None, message=None, exc=None, **_):
    write_record({'kind': 'unknown', 'task_id': id, 'task': name, 'message': repr(exc)})


@signals.task_rejected.connect
def _on_rejected(message=None, exc=None, **_):
    write_record({'kind': 'rejected', 'message': repr(exc),
                  'content_type': getattr(message, 'content_type', None)})


@signals.task_revoked.connect
def _on_revoked(sender=None, request=None, terminated=None, signum=None, expired=None, **_):
    write_record({'kind': 'revoked', 'task_id': getattr(request, 'id', None),
                  'task': getattr(sender, 'name', None), 'expired': bool(expired)})
