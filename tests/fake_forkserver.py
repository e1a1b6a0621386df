"""The real fork server (``supervisor/runtime/forkserver.py``) with a scripted stage 0, for tests.

Each stage 0 it forks execs SCRIPT in place of the init stage, with the launch's fds on
0-4 as the stage has them, so the supervisor's side of the handshake (``spawn.py``) can be
tested against a stage 0 that misbehaves on purpose, without root. A test's ForkServer
runs it through its ``python``: a shell script that ignores its arguments and runs
``python -I -S fake_forkserver.py RUNTIME_DIR SCRIPT``.
"""

import os
import sys

runtime_dir, script = sys.argv[1], sys.argv[2]
sys.path.insert(0, runtime_dir)
import forkserver  # noqa: E402 - found by the path above, as the real server finds the stage
import init_stage  # noqa: E402


def run_script(join=None) -> None:
    try:
        os.execv(script, [script])
    finally:
        os._exit(127)  # never back into the server's loop


init_stage.run_init_stage = run_script
forkserver.main()
