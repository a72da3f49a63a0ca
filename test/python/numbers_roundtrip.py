#!/usr/bin/python3
"""Numbers Python's json writes and JSON.parse would change, through posthog-plugins and back into Python.

    numbers_roundtrip.py send --broker URL --team-id N [--float-team-id] [--count K]
        Sends K process_event_with_plugins tasks as PostHog's capture endpoint does (producer.send_one), each
        with the values below in data.properties (and nested in lists and dicts); --float-team-id sends the
        team id as a float (N.0). Prints one JSON line per task: {"uuid", "team_id", "data"}, described.
    numbers_roundtrip.py describe FILE
        Reads sink_worker.py's records and prints one JSON line per executed process_event: {"uuid",
        "team_id", "data"}, described.

"Described" replaces every int and float by "<type>:<repr>" (e.g. "int:18446744073709551617", "float:-0.0",
"float:nan"), so two descriptions are equal exactly when Python holds the same values of the same types.
"""
import argparse
import datetime
import json
import sys
import uuid as uuidlib

from producer import make_app, send_one, wire_value

VALUES = {
    'int_10_30': 10 ** 30,
    'int_2_64_plus_1': 2 ** 64 + 1,
    'int_min_i64': -(2 ** 63),
    'int_2_53_plus_1': 2 ** 53 + 1,
    'int_400_digits': 10 ** 400,
    'neg_zero': -0.0,
    'zero_float': 0.0,
    'one_float': 1.0,
    'int_small': 7,
    'e308': 1e308,
    'max_float': 1.7976931348623157e308,
    'min_subnormal': 5e-324,
    'f17': 0.30000000000000004,
    'e16': 1e16,
    'e22': 1e22,
    'small': 1.5e-07,
    'e_minus_5': 1e-05,
    'big_float': 123456789012345678.0,
    'time': 1733000000.123,
    'inf': float('inf'),
    'neg_inf': float('-inf'),
    'nan': float('nan'),
}


def event(index):
    props = dict(VALUES)
    props['nested'] = [[10 ** 30, -0.0, [1.0, float('inf')]], {'x': 2.0, 'y': -(2 ** 63)}]
    props['change_me'] = 3.0
    props['index'] = index
    return {'event': 'numbers', 'uuid': str(uuidlib.uuid4()), 'properties': props}


def describe(value):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return '%s:%r' % (type(value).__name__, value)
    if isinstance(value, list):
        return [describe(v) for v in value]
    if isinstance(value, dict):
        return {k: describe(v) for k, v in value.items()}
    raise TypeError('unexpected %r' % (value,))


def send(opts):
    app = make_app(opts.broker)
    team_id = float(opts.team_id) if opts.float_team_id else opts.team_id
    now = datetime.datetime.now(datetime.timezone.utc)
    with app.producer_or_acquire() as producer:
        for i in range(opts.count):
            data = event(i)
            send_one(app, 'numbers-%d' % i, '127.0.0.1', 'http://localhost:8000', data, team_id, now, now,
                     producer=producer)
            # As the Python worker will read it back from kombu's JSON.
            line = {'uuid': data['uuid'], 'team_id': describe(wire_value(team_id)), 'data': describe(wire_value(data))}
            sys.stdout.write(json.dumps(line) + '\n')
    app.close()


def describe_records(opts):
    with open(opts.file, encoding='utf-8') as f:
        for text in f:
            if not text.strip():
                continue
            record = json.loads(text)
            if record.get('kind') != 'executed':
                continue
            data = record['data']
            line = {'uuid': data.get('uuid'), 'team_id': describe(record['team_id']), 'data': describe(data)}
            sys.stdout.write(json.dumps(line) + '\n')


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = p.add_subparsers(dest='cmd', required=True)
    s = sub.add_parser('send')
    s.add_argument('--broker', required=True)
    s.add_argument('--team-id', type=int, required=True)
    s.add_argument('--float-team-id', action='store_true')
    s.add_argument('--count', type=int, default=1)
    d = sub.add_parser('describe')
    d.add_argument('file')
    opts = p.parse_args()
    if opts.cmd == 'send':
        send(opts)
    else:
        describe_records(opts)


if __name__ == '__main__':
    main()
