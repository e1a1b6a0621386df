"""The services around the lifecycle core (:mod:`supervisor.lifecycle`), one module each:

=================  ===============================================================
``images``         import, commit, diff, export, cp, tag, rmi, save, load
``execs``          attach (clients on a container's streams) and exec
``restarts``       the restart a restart policy asked for, after its delay
``healthchecks``   running a health check, recording its probes
``sampler``        the stats sampler and one-off samples
=================  ===============================================================

Each takes the core and asks it for containers; none touches the kernel except through the
core's mechanics (the exec's launcher) or its own store (images).
"""
