"""The benchmark suite of issue 9: dockyard side by side with runc, crun, podman and docker.

Not part of the CI test run (no ``test_*.py`` here). Start it with ``scripts/bench.sh``
(installs the anchors and matplotlib, then runs ``python -m tests.bench.run``).

Theory of operation
-------------------
Every tool runs the same busybox root filesystem (:mod:`tests.rootfs`), imported as the
image ``base`` (dockyard, podman, docker) or unpacked as an OCI bundle (runc, crun). Each
tool lives in a private workspace (its own storage root, state dir, socket and, for docker,
its own ``dockerd``), so the suite never touches a system daemon and removes everything it
made, also on failure.

Samples are interleaved, ``A B C, B C A, C A B, ...``, so a noisy neighbour hurts every
tool alike; the report quotes medians and ratios (dockyard / anchor), never single times.

Modules:

* :mod:`.stats` - medians, ratios, the interleaved schedule (pure).
* :mod:`.procs` - timed subprocesses, PSS from ``/proc/<pid>/smaps_rollup``, process trees.
* :mod:`.tools` - the tools under test as context managers (set up, command lines, clean up).
* :mod:`.figures` - one function per figure of the issue; each returns a :class:`.stats.Figure`.
* :mod:`.memory` - memory per idle container: the daemons' growth, the fixed helpers, the rest.
* :mod:`.lines` - output a line at a time: the engines' CPU per 1000 lines, ``logs -f`` latency.
* :mod:`.busload` and :mod:`.bus_subscriber` - events per second through the bus.
* :mod:`.oci_timer` - times ``runc run`` / ``crun run`` from a helper process.
* :mod:`.report` and :mod:`.chart` - the table, results.json, docs/benchmarks.md and .png.
* :mod:`.run` - the entry point.
"""
