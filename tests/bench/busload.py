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
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.bench.stats import NOT_AVAILABLE, Figure, Measure, describe

CHUNK = 1_000


def bus_events(bench) -> list[Figure]:
    """The one-subscriber row (issue 9), 3 and 10 subscribers, and a filter matching 1% (issue 22)."""
    params = bench.params
    try:
        import trio  # noqa: F401

        from bus.server import BusServer  # noqa: F401
        import bus.client  # noqa: F401
    except Exception as exc:
        figure = Figure("bus", "events through the bus to a subscriber", ">= 200,000 per second with zero loss",
                        "events/s", anchors=[], dockyard=[Measure("dockyard bus", "events/s")])
        figure.status = figure.dockyard[0].status = f"{NOT_AVAILABLE}: {describe(exc)}"
        return [figure]
    figures = [_rate_figure(bench, subscribers) for subscribers in (1, 3, 10)]
    figures.append(_rate_figure(bench, 1, remote=True))
    figures.append(_filter_figure(bench))
    return figures


def _rate_figure(bench, subscribers: int, remote: bool = False) -> Figure:
    """``remote``: one subscriber over tcp on 127.0.0.1 with CURVE (the daemon's
    ``--events-listen``, the client's key allowed as ``events-keys add`` does)."""
    import trio

    params = bench.params
    key = "bus" if subscribers == 1 else f"bus_{subscribers}"
    title = "events through the bus to a subscriber" if subscribers == 1 else \
        f"events through the bus to each of {subscribers} subscribers"
    target = ">= 200,000 per second with zero loss" if subscribers < 10 else "zero loss (no target for 10)"
    if remote:
        key, title = "bus_curve", "events through the bus to one CURVE subscriber over tcp (127.0.0.1)"
        target = ">= 100,000 per second with zero loss"
    measure = Measure("dockyard bus", "events/s")
    figure = Figure(key, title, target, "events/s", anchors=[], dockyard=[measure])
    figure.commands["dockyard bus"] = (f"BusServer.publish('bench.data', i, channel='events') x{params.bus_events} "
                                       f"-> {subscribers} x python -m tests.bench.bus_subscriber RUN_DIR"
                                       + (" remote tcp://127.0.0.1:PORT SERVER_KEY CLIENT_KEY" if remote else ""))
    bench.log(f"fig 4: {params.bus_events} events through the bus to {subscribers} "
              f"{'CURVE ' if remote else ''}subscriber(s) x{params.bus_reps}")
    lost_total = 0
    details = []
    for repetition in range(params.bus_reps):
        if bench.left() <= 0:
            break
        run_dir = bench.workspace.sub(f"bus-{'curve' if remote else subscribers}-{repetition}")
        try:
            results = trio.run(_one_run, run_dir, params.bus_events, subscribers, False, remote)
        except Exception as exc:
            measure.status = f"{NOT_AVAILABLE}: {describe(exc)}"
            break
        lost = sum(params.bus_events - result["unique"] for result in results)
        lost_total += lost
        rates = [result["received"] / (result["last"] - result["t0"]) for result in results if result["received"]]
        measure.add(min(rates) if len(rates) == subscribers else None)  # the slowest subscriber's rate
        details.append(f"slowest received {min(r['received'] for r in results)}/{params.bus_events}, "
                       f"gaps {sum(r['gaps'] for r in results)}, published in {results[0]['publish_seconds']:.2f} s, "
                       f"server dropped {results[0]['dropped']}, {results[0]['frames']} frames, CPU per event: "
                       f"publisher {results[0]['publisher_cpu'] / params.bus_events * 1e6:.2f} us, slowest subscriber "
                       f"{max(r['cpu'] / max(1, r['received']) for r in results) * 1e6:.2f} us")
    if measure.samples:
        measure.note = f"lost {lost_total} of {params.bus_events * subscribers * len(measure.samples)} in total; " + \
            "; ".join(details)
        figure.met = lost_total == 0 and (subscribers >= 10 or measure.median >= (100_000 if remote else 200_000))
        figure.notes.append(f"loss: {lost_total} events")
    if measure.status != "ok":
        figure.status = measure.status
    return figure


def _filter_figure(bench) -> Figure:
    """A subscriber whose filter passes 1% of the events, against one that takes them all:
    the CPU of each (from its own process time) and of the publishing process."""
    import trio

    params = bench.params
    subscriber_cpu = Measure("dockyard, 1% filter", "ms")
    everything_cpu = Measure("dockyard, no filter", "ms")
    figure = Figure("bus_filter", "CPU of a subscriber whose filter passes 1% of the events (per 100k published)",
                    "the subscriber's CPU drops accordingly; the daemon's rises < 10%", "ms",
                    anchors=[everything_cpu], dockyard=[subscriber_cpu])
    figure.commands["dockyard, 1% filter"] = "dockyard events --filter event=hit (server-side, bus/filters.py)"
    daemon_ratio = []
    for repetition in range(params.bus_reps):
        if bench.left() <= 0:
            break
        try:
            plain = trio.run(_one_run, bench.workspace.sub(f"bus-plain-{repetition}"), params.bus_events, 1, False)[0]
            kept = trio.run(_one_run, bench.workspace.sub(f"bus-filter-{repetition}"), params.bus_events, 1, True)[0]
        except Exception as exc:
            subscriber_cpu.status = f"{NOT_AVAILABLE}: {describe(exc)}"
            break
        per = 100_000 / params.bus_events
        everything_cpu.add(plain["cpu"] * 1000 * per)
        subscriber_cpu.add(kept["cpu"] * 1000 * per)
        daemon_ratio.append(kept["publisher_cpu"] / plain["publisher_cpu"] if plain["publisher_cpu"] else 0)
        if kept["unique"] != params.bus_events // 100:
            figure.notes.append(f"the filtered subscriber got {kept['unique']} of {params.bus_events // 100}")
    if subscriber_cpu.samples and everything_cpu.samples:
        figure.ratio = subscriber_cpu.median / everything_cpu.median if everything_cpu.median else None
        figure.ratio_basis = "the unfiltered subscriber"
        daemon = sorted(daemon_ratio)[len(daemon_ratio) // 2]
        figure.notes.append(f"the publishing process's CPU with the filter: {daemon:.2f}x without")
        figure.met = figure.ratio is not None and figure.ratio < 0.2 and daemon < 1.10
    if subscriber_cpu.status != "ok":
        figure.status = subscriber_cpu.status
    return figure


async def _one_run(run_dir: Path, count: int, subscribers: int = 1, filtered: bool = False,
                   remote: bool = False) -> list[dict]:
    import trio

    from bus.server import BusServer

    keys = run_dir / "events-keys"
    server = BusServer(run_dir, handlers={}, events_listen=f"tcp://127.0.0.1:{_free_port()}" if remote else None,
                       events_keys=keys if remote else None)
    server.publisher.filter_channel = "events"
    # A remote subscriber's sync is a replay (bus/remote.py): of an empty journal here.
    server.publisher.replayer = lambda after: ([], server.last_seq("events"), 0)
    server.publisher.identity = {"id": "0" * 32, "name": "bench"}
    repo = str(Path(__file__).resolve().parents[2])
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        mode = ["filtered" if filtered else "all"]
        if remote:
            mode = ["remote", server.events_endpoint, *_allowed_client(keys, run_dir / "client")]
        errors = [open(run_dir / f"subscriber-{i}.err", "w+") for i in range(subscribers)]
        processes = [subprocess.Popen([sys.executable, "-m", "tests.bench.bus_subscriber", str(run_dir), *mode],
                                      stdout=subprocess.PIPE, stderr=errors[i], text=True, cwd=repo)
                     for i in range(subscribers)]
        try:
            for i, process in enumerate(processes):
                ready = await trio.to_thread.run_sync(process.stdout.readline)
                if not ready.startswith("ready"):
                    await trio.to_thread.run_sync(process.wait)
                    errors[i].seek(0)
                    tail = " | ".join(errors[i].read().strip().splitlines()[-1:])
                    raise RuntimeError(f"a subscriber could not subscribe (exit {process.poll()}): {tail}")
            publish = server.publish
            hit = {"type": "bench", "action": "hit", "id": "", "attributes": {}}
            miss = {"type": "bench", "action": "miss", "id": "", "attributes": {}}
            cpu0 = time.process_time()
            t0 = time.monotonic()
            for start in range(0, count, CHUNK):
                for index in range(start, min(start + CHUNK, count)):
                    publish("bench.data", {**(hit if index % 100 == 0 else miss), "i": index}, channel="events")
                await trio.sleep(0)
            publish_seconds = time.monotonic() - t0
            lines: list[str] = []
            answered = trio.Event()

            async def read_answers() -> None:
                for process in processes:
                    lines.append(await trio.to_thread.run_sync(process.stdout.readline))
                answered.set()

            nursery.start_soon(read_answers)
            with trio.move_on_after(120):
                while not answered.is_set():
                    publish("bench.end", {**hit, "id": "end"}, channel="events")
                    with trio.move_on_after(0.2):
                        await answered.wait()
            publisher_cpu = time.process_time() - cpu0
            if len(lines) != subscribers or not all(line.strip() for line in lines):
                raise RuntimeError("a subscriber gave no result")
            results = [json.loads(line) for line in lines]
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                await trio.to_thread.run_sync(process.wait)
            for handle in errors:
                handle.close()
        nursery.cancel_scope.cancel()
    for result in results:
        result.update(t0=t0, publish_seconds=publish_seconds, dropped=server.stats.events_dropped,
                      frames=getattr(server.stats, "event_frames", None),
                      publisher_cpu=publisher_cpu)
    return results


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _allowed_client(keys: Path, directory: Path) -> tuple[str, str]:
    """A client key pair made in ``directory`` and allowed (what ``events-keys generate`` then
    ``events-keys add`` do): the daemon's public key and the client's secret key file."""
    import zmq.auth

    from bus import remote

    directory.mkdir(parents=True, exist_ok=True)
    public_file, secret_file = zmq.auth.create_certificates(directory, "bench")
    remote.add_key(keys / "allowed", "bench", remote.load_key(public_file).decode())
    server_public, _ = remote.server_keys(keys)
    return server_public.decode(), str(secret_file)
