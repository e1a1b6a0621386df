"""Figure 4: events per second through the bus to a subscriber process, with loss counted.

::

    bench process (trio)                         subscriber process
    BusServer.serve()  <── bus.sync handshake ── Client(run_dir).subscribe(["bench."])
                                                 prints "ready"
    t0; publish("bench.data", i) x N  ──XPUB──▶  counts envelopes, gaps in seq
    publish("bench.end") until it exits  ─────▶  prints {received, gaps, first, last}

Rate = received / (last receipt - t0): end to end, publisher's first call to subscriber's
last receipt. Loss = N - distinct indexes received. The publisher yields to the event loop
every ``CHUNK`` events, as the daemon's tasks do between publishes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.bench.stats import NOT_AVAILABLE, Figure, Measure, describe

CHUNK = 1_000


def bus_events(bench) -> list[Figure]:
    params = bench.params
    measure = Measure("dockyard bus", "events/s")
    figure = Figure("bus", "events through the bus to a subscriber", ">= 200,000 per second with zero loss",
                    "events/s", anchors=[], dockyard=[measure])
    figure.commands["dockyard bus"] = (f"BusServer.publish('bench.data', i, channel='events') x{params.bus_events} "
                                       "-> python -m tests.bench.bus_subscriber RUN_DIR")
    try:
        import trio

        from bus.server import BusServer  # noqa: F401
        import bus.client  # noqa: F401
    except Exception as exc:
        measure.status = f"{NOT_AVAILABLE}: {describe(exc)}"
        figure.status = measure.status
        return [figure]
    bench.log(f"fig 4: {params.bus_events} events through the bus x{params.bus_reps}")
    lost_total = 0
    details = []
    for repetition in range(params.bus_reps):
        if bench.left() <= 0:
            break
        run_dir = bench.workspace.sub(f"bus-{repetition}")
        try:
            result = trio.run(_one_run, run_dir, params.bus_events)
        except Exception as exc:
            measure.status = f"{NOT_AVAILABLE}: {describe(exc)}"
            break
        lost = params.bus_events - result["unique"]
        lost_total += lost
        seconds = (result["last"] - result["t0"]) if result["received"] else None
        measure.add(result["received"] / seconds if seconds else None)
        details.append(f"received {result['received']}/{params.bus_events}, gaps {result['gaps']}, "
                       f"published in {result['publish_seconds']:.2f} s, server dropped {result['dropped']}")
    if measure.samples:
        measure.note = f"lost {lost_total} of {params.bus_events * len(measure.samples)} in total; " + "; ".join(details)
        figure.met = measure.median >= 200_000 and lost_total == 0
        figure.notes.append(f"loss: {lost_total} events")
    if measure.status != "ok":
        figure.status = measure.status
    return [figure]


async def _one_run(run_dir: Path, count: int) -> dict:
    import trio

    from bus.server import BusServer

    server = BusServer(run_dir, handlers={})
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        errors = open(run_dir / "subscriber.err", "w+")
        subscriber = subprocess.Popen([sys.executable, "-m", "tests.bench.bus_subscriber", str(run_dir)],
                                      stdout=subprocess.PIPE, stderr=errors, text=True,
                                      cwd=str(Path(__file__).resolve().parents[2]))
        try:
            ready = await trio.to_thread.run_sync(subscriber.stdout.readline)
            if not ready.startswith("ready"):
                await trio.to_thread.run_sync(subscriber.wait)
                errors.seek(0)
                tail = " | ".join(errors.read().strip().splitlines()[-1:])
                raise RuntimeError(f"the subscriber could not subscribe (exit {subscriber.poll()}): {tail}")
            publish = server.publish
            t0 = time.monotonic()
            for start in range(0, count, CHUNK):
                for index in range(start, min(start + CHUNK, count)):
                    publish("bench.data", index, channel="events")
                await trio.sleep(0)
            publish_seconds = time.monotonic() - t0
            answer = trio.Event()
            lines: list[str] = []

            async def read_answer() -> None:
                lines.append(await trio.to_thread.run_sync(subscriber.stdout.readline))
                answer.set()

            nursery.start_soon(read_answer)
            with trio.move_on_after(120):
                while not answer.is_set():
                    publish("bench.end", None, channel="events")
                    with trio.move_on_after(0.2):
                        await answer.wait()
            if not lines or not lines[0].strip():
                raise RuntimeError("subscriber gave no result")
            result = json.loads(lines[0])
        finally:
            if subscriber.poll() is None:
                subscriber.kill()
            await trio.to_thread.run_sync(subscriber.wait)
            errors.close()
        nursery.cancel_scope.cancel()
    result.update(t0=t0, publish_seconds=publish_seconds, dropped=server.stats.events_dropped)
    return result
