"""``dockyard-runtime``: dockyard's runtime behind the OCI runtime command line (runc's shape),
so that podman, conmon, containerd's runc shim and CRI-O can drive it (docs/runtime.md).

Modules: ``cli.py`` (the commands and runc's error output), ``bundle.py`` (a bundle's
config.json checked and turned into the init stage's config, pure), ``seccomp.py`` (the OCI
seccomp format), ``state.py`` (the state directory, its lock and the spec's state),
``cgroups.py`` (cgroupsPath and linux.resources), ``launch.py`` (forking the init stage of
``supervisor/runtime/bundle_stage.py`` and its handshake), ``prelude.py`` (what run and
create start before their imports: ``warmup.py``'s cgroup wait, stage 0), ``hooks.py``, ``lifecycle.py``
(create, start, run, exec, kill, delete), ``template.py`` (``spec``'s config.json).
Nothing here imports trio, pyzmq or structlog: every command is a short-lived process.
"""
