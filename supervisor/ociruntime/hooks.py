"""The bundle's hooks (``hooks`` of config.json), run by the runtime in its own namespaces:
each with the container's state as JSON on its stdin, its ``args`` and ``env``, killed after
its ``timeout`` seconds. When each kind runs is written in docs/runtime.md; the stage runs
the ``startContainer`` ones itself, in the container (``bundle_stage.run_start_hooks``).
"""

from __future__ import annotations


from supervisor.ociruntime.errors import RuntimeCommandError
from supervisor.runtime import jsonlite


def run_hooks(kind: str, hooks: list[dict], state: dict) -> None:
    """Run ``hooks`` in order; the first that fails (or times out) stops the rest.

    Raises:
        RuntimeCommandError: naming the hook kind, its path and the cause.
    """
    if not hooks:
        return
    import subprocess

    data = jsonlite.dumps(state).encode()
    for hook in hooks:
        path = hook["path"]
        env = dict(entry.split("=", 1) for entry in hook.get("env") or [] if "=" in entry)
        try:
            result = subprocess.run(
                hook.get("args") or [path], executable=path, input=data, env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=hook.get("timeout") or None,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeCommandError(f'{kind} hook "{path}" timed out after {hook["timeout"]} s') from None
        except OSError as exc:
            raise RuntimeCommandError(f'cannot run the {kind} hook "{path}": {exc.strerror}') from None
        if result.returncode != 0:
            detail = result.stderr.decode(errors="replace").strip()[:500]
            raise RuntimeCommandError(
                f'{kind} hook "{path}" failed with status {result.returncode}' + (f": {detail}" if detail else ""))


def run_hooks_warning(kind: str, hooks: list[dict], state: dict, warn) -> None:
    """poststart and poststop: a failure is logged as a warning and the rest still run
    (the spec's rule for these two kinds)."""
    for hook in hooks:
        try:
            run_hooks(kind, [hook], state)
        except RuntimeCommandError as exc:
            warn(exc.message)
