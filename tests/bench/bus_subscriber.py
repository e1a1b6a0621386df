"""Subscriber process of the bus figure: counts what arrives, by seq.

    python -m tests.bench.bus_subscriber RUN_DIR [all|filtered]

Subscribes to ``bench.`` with :class:`bus.client.Client` (which returns once the
subscription is in effect at the server), prints ``ready``, then counts ``bench.data``
envelopes until ``bench.end`` or 5 s of silence, and prints one JSON line: received, gaps
in seq, and the CLOCK_MONOTONIC times of the first and last data envelope (comparable with
the publisher's, same machine), and its own CPU time. ``filtered``: a filtered subscription
(bus/filters.py) to the events whose action is ``hit`` (1% of them in the benchmark).
"""

from __future__ import annotations

import json
import sys
import time


def main() -> int:
    run_dir = sys.argv[1]
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


if __name__ == "__main__":
    sys.exit(main())
