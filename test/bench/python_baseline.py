"""The Python Celery baseline of `make bench`: the same pass-through posthog-plugins does, in Python Celery 5.2.

It consumes `posthog.tasks.process_event.process_event_with_plugins` (PostHog's 7 positional args) from queue
`posthog-plugins`, adds one property to the event (what the bench plugin does), and sends
`posthog.tasks.process_event.process_event` with the seven values as kwargs to queue `celery`, like PostHog's
plugin server did. Celery defaults otherwise (early ack, prefetch multiplier 4), as PostHog ran it.

Run (from this directory; the harness does it):

    BENCH_BROKER_URL=redis://127.0.0.1:6379/12 /usr/bin/python3 -m celery -A python_baseline worker \\
        -P prefork -c 2 -Q posthog-plugins --without-heartbeat --without-mingle --without-gossip -l WARNING

Environment:
    BENCH_BROKER_URL  broker URL, required
    BENCH_PARENT_PID  optional: the worker gets SIGKILL when that process dies (no orphans)

Prints `BENCH READY <pid>` on stderr once the worker consumes (the INFO "ready." line is not logged at WARNING).
"""
import os
import sys

from celery import Celery, signals
from kombu import Exchange, Queue

PLUGINS_TASK = 'posthog.tasks.process_event.process_event_with_plugins'
PROCESS_EVENT_TASK = 'posthog.tasks.process_event.process_event'
INPUT_QUEUE = os.environ.get('BENCH_INPUT_QUEUE') or 'posthog-plugins'
OUTPUT_QUEUE = os.environ.get('BENCH_OUTPUT_QUEUE') or 'celery'
PROPERTY_NAME = os.environ.get('BENCH_PROPERTY_NAME') or 'bench_plugin'

BROKER_URL = os.environ.get('BENCH_BROKER_URL')
if not BROKER_URL:
    raise RuntimeError('python_baseline needs BENCH_BROKER_URL in the environment')

app = Celery('posthog', broker=BROKER_URL)
app.conf.update(
    task_queues=(Queue(INPUT_QUEUE, Exchange(INPUT_QUEUE), INPUT_QUEUE),),
    task_default_queue=OUTPUT_QUEUE,
    task_serializer='json',
    accept_content=['json'],
    result_backend=None,
    task_ignore_result=True,
    worker_hijack_root_logger=True,
    worker_redirect_stdouts=False,
    broker_connection_retry_on_startup=True,
)


def _die_with_parent(pid):
    """SIGKILL this process when the process that started the worker dies (Linux PR_SET_PDEATHSIG)."""
    import ctypes
    import signal
    try:
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)
    except OSError:
        return
    if os.getppid() != pid:
        os._exit(3)


if os.environ.get('BENCH_PARENT_PID'):
    _die_with_parent(int(os.environ['BENCH_PARENT_PID']))


@app.task(name=PLUGINS_TASK)
def process_event_with_plugins(distinct_id, ip, site_url, data, team_id, now, sent_at=None):
    properties = data.get('properties')
    if not isinstance(properties, dict):
        properties = data['properties'] = {}
    properties[PROPERTY_NAME] = '1'
    app.send_task(
        PROCESS_EVENT_TASK,
        args=[],
        kwargs={'distinct_id': distinct_id, 'ip': ip, 'site_url': site_url, 'data': data, 'team_id': team_id,
                'now': now, 'sent_at': sent_at},
        queue=OUTPUT_QUEUE,
    )


@signals.worker_ready.connect
def _ready(**_):
    sys.stderr.write('BENCH READY %d\n' % os.getpid())
    sys.stderr.flush()
