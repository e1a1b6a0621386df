"""The container lifecycle: a small core that decides, the kernel behind narrow interfaces.

=================  ================================================================
``core``           :class:`~supervisor.lifecycle.core.Lifecycle`: the containers;
                   create, start, stop, kill, wait, remove, update
``start``          a start (cgroup, network, launch), its one clean-up path on
                   failure, and the exit of the process
``reconcile``      the records at daemon start
``devices``        a container's command, environment, devices and capabilities
``initbinary``     ``--init``: the init binary found, bound at /dev/init, its command
``mechanics``      the interfaces of the cgroups, launcher, network and stores
``events``         publishing events to the user's callback and the bus
=================  ================================================================

Where a container's cgroup is written: :func:`supervisor.lifecycle.start.launch` calls
``cgroup.apply`` (the files themselves: :mod:`supervisor.runtime.cgroups`). The services
around the core (images, exec, restarts, health, stats) are in :mod:`supervisor.services`;
:class:`supervisor.api.Supervisor` is the public face of both.
"""
