"""Subscriber process of the bus figure: counts what arrives, by seq.

    python -m tests.bench.bus_subscriber RUN_DIR

Subscribes to ``bench.`` with :class:`bus.client.Client` (which returns once the
subscription is in effect at the server), prints ``ready``, then counts ``bench.data``
envelopes until ``bench.end`` or 5 s of silence, and prints one JSON line: received, gaps
in seq, and the CLOCK_MONOTONIC times of the first and last data envelope (comparable with
the publisher's, same machine).
"""

from __future__ import annotations

import json
import sys
import time


def main() -> int:
    run_dir = sys.argv[1]
    from bus.client import Client

    with Client(run_dir) as client:
        subscription = client.subscribe(["bench."], timeout=5.0)
        print("ready", flush=True)
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
            indexes.add(envelope.data)
            seq = envelope.seq
            if previous is not None and seq != previous + 1:
                gaps += 1
                missing += max(0, seq - previous - 1)
            previous = seq
        subscription.close()
    print(json.dumps({"received": received, "unique": len(indexes), "gaps": gaps, "missing_in_gaps": missing,
                      "first": first, "last": last}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
