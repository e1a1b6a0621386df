"""Subscriber process of the bus figure: counts what arrives, by seq.

    python -m tests.bench.bus_subscriber RUN_DIR [all|filtered]
    python -m tests.bench.bus_subscriber RUN_DIR remote ENDPOINT SERVER_KEY CLIENT_SECRET_KEY_FILE

Subscribes to ``bench.`` with :class:`bus.client.Client` (which returns once the
subscription is in effect at the server), prints ``ready``, then counts ``bench.data``
envelopes until ``bench.end`` or 5 s of silence, and prints one JSON line: received, gaps
in seq, and the CLOCK_MONOTONIC times of the first and last data envelope (comparable with
the publisher's, same machine), and its own CPU time. ``filtered``: a filtered subscription
(bus/filters.py) to the events whose action is ``hit`` (1% of them in the benchmark).
``remote``: over tcp with CURVE, as ``dockyard events --remote`` (bus/remote_client.py):
ready once its first replay (the remote subscriber's sync) has ended.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> int:
    run_dir = sys.argv[1]
    if len(sys.argv) > 2 and sys.argv[2] == "remote":
        return remote(*sys.argv[3:6])
    filtered = len(sys.argv) > 2 and sys.argv[2] == "filtered"
    from bus import filters
    from bus.client import Client

    prefixes = [filters.topic_of({"event": ["hit"]})] if filtered else ["bench."]
    with Client(run_dir) as client:
        subscription = client.subscribe(prefixes, timeout=5.0)
        print("ready", flush=True)
        cpu_at_ready = time.process_time()  # the start-up and imports are not the subscription's
        received = gaps = missing = 0
        previous = None
        first = last = None
        indexes = set()
        monotonic = time.monotonic
        for envelope in subscription:
            if envelope.topic == "bench.end":
                break
            now = monotonic()
            if first is None:
                first = now
            last = now
            received += 1
            indexes.add(envelope.data["i"] if isinstance(envelope.data, dict) else envelope.data)
            seq = envelope.seq
            if not filtered and previous is not None and seq != previous + 1:
                gaps += 1
                missing += max(0, seq - previous - 1)
            previous = seq
        if filtered:
            missing = gaps = subscription.filter_gaps.missed
        subscription.close()
    print(json.dumps({"received": received, "unique": len(indexes), "gaps": gaps, "missing_in_gaps": missing,
                      "first": first, "last": last, "cpu": time.process_time() - cpu_at_ready}), flush=True)
    return 0


def remote(endpoint: str, server_key: str, secret_file: str) -> int:
    """The remote subscriber: the same counting, over CURVE."""
    import zmq

    from bus.remote import load_key
    from bus.remote_client import RemoteStream

    context = zmq.Context()
    stream = RemoteStream(context, endpoint, server_key=server_key.encode(),
                          public_key=load_key(secret_file), secret_key=load_key(secret_file, secret=True),
                          prefixes=["bench."])
    poller = zmq.Poller()
    poller.register(stream.socket, zmq.POLLIN)
    poller.register(stream.monitor, zmq.POLLIN)
    deadline = time.monotonic() + 10
    while not stream.synced:
        if time.monotonic() > deadline or stream.failed:
            print(f"not synced: {stream.warnings}", file=sys.stderr, flush=True)
            return 1
        for sock, _ in poller.poll(100):
            if sock is stream.monitor:
                stream.on_monitor()
            else:
                stream.on_messages()
    print("ready", flush=True)
    cpu_at_ready = time.process_time()
    received = 0
    first = last = None
    indexes = set()
    monotonic = time.monotonic
    ended = False
    while not ended:
        ready = poller.poll(5000)
        if not ready:
            break
        for sock, _ in ready:
            if sock is stream.monitor:
                stream.on_monitor()
                continue
            shown = stream.on_messages()
            if not shown:
                continue
            now = monotonic()
            for envelope in shown:
                if envelope.topic == "bench.end":
                    ended = True
                    break
                if first is None:
                    first = now
                last = now
                received += 1
                indexes.add(envelope.data["i"])
    cpu = time.process_time() - cpu_at_ready
    gaps = stream.replays - 1  # every gap in seq replays from the cursor
    stream.close()
    context.destroy(linger=0)
    print(json.dumps({"received": received, "unique": len(indexes), "gaps": gaps, "missing_in_gaps": 0,
                      "first": first, "last": last, "cpu": cpu}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
