"""python -m workers NAME --root DIR --run DIR [--log-format F] [--log-level L]: how the
daemon starts a worker (the same as `dockyard worker`, without the CLI's parser)."""

import argparse
import sys

from workers.runner import main

parser = argparse.ArgumentParser(prog="python -m workers")
parser.add_argument("name")
parser.add_argument("--root", required=True)
parser.add_argument("--run", required=True)
parser.add_argument("--log-format", default="logfmt")
parser.add_argument("--log-level", default="info")
parser.add_argument("--parent-pid", type=int, default=0, help="end when this process (the daemon) dies")
parser.add_argument("--api", action="append", default=[], help="the api worker: another address to serve")
parser.add_argument("--tlsverify", action="store_true", help="the api worker: TCP over TLS with client certificates")
parser.add_argument("--tlscacert", default="")
parser.add_argument("--tlscert", default="")
parser.add_argument("--tlskey", default="")
args = parser.parse_args()
tls = (args.tlscacert, args.tlscert, args.tlskey) if args.tlsverify else ()
sys.exit(main(args.name, args.root, args.run, args.log_format, args.log_level, args.parent_pid, tuple(args.api), tls))
