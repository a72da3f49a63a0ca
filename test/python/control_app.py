"""A tiny Celery 5.2 app for Celery's own remote-control and event tools, pointed at a test broker.

    CONTROL_BROKER_URL=redis://127.0.0.1:6379/3 /usr/bin/python3 -m celery -A control_app inspect ping
    CONTROL_BROKER_URL=... /usr/bin/python3 control_app.py broadcast METHOD [JSON_ARGUMENTS]
        prints the replies of app.control.broadcast(METHOD, arguments, reply=True) as one JSON line
    CONTROL_BROKER_URL=... /usr/bin/python3 control_app.py events SECONDS
        prints every event app.events.Receiver sees (one JSON object per line, flushed) for SECONDS;
        a `task.multi` list arrives as its single events, as Flower and `celery events` see them
"""
import json
import os
import sys

from celery import Celery

app = Celery('control_app', broker=os.environ['CONTROL_BROKER_URL'])


def broadcast(method, arguments):
    replies = app.control.broadcast(method, arguments=arguments, reply=True, timeout=float(os.environ.get('CONTROL_TIMEOUT', '3')))
    print(json.dumps(replies), flush=True)


def events(seconds):
    import socket

    def on_event(event):
        print(json.dumps(event, default=str), flush=True)

    with app.connection() as conn:
        recv = app.events.Receiver(conn, handlers={'*': on_event})
        print(json.dumps({'type': 'receiver-ready'}), flush=True)
        try:
            recv.capture(limit=None, timeout=seconds, wakeup=False)
        except (socket.timeout, TimeoutError):
            pass


if __name__ == '__main__':
    if sys.argv[1] == 'broadcast':
        broadcast(sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})
    elif sys.argv[1] == 'events':
        events(float(sys.argv[2]))
