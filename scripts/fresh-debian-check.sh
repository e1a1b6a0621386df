#!/usr/bin/env bash
# The README's commands on a fresh Debian 12, from a clean clone: a bookworm tree made with
# debootstrap (minbase, kept in /var/tmp/fresh-bookworm for the next run), made the root of
# a private mount namespace with pivot_root (containers pivot_root inside it as on a real
# host), then `./scripts/setup.sh && ./scripts/test.sh` in it. Every mount lives in that
# namespace and goes with it. As root; not part of CI (it needs Debian's mirror).
#
#   scripts/fresh-debian-check.sh [PYTEST ARGS...]     # SRC=DIR: the repository to clone
set -u
R=${FRESH_ROOT:-/var/tmp/fresh-bookworm}
SRC=${SRC:-$(cd "$(dirname "$0")/.." && pwd)}
if [ ! -x "$R/bin/bash" ]; then
    command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    debootstrap --variant=minbase bookworm "$R" http://deb.debian.org/debian >/dev/null || exit 1
fi
rm -rf "$R/src" && git clone -q "$SRC" "$R/src"
cp /etc/resolv.conf "$R/etc/resolv.conf"
# A host that reaches PyPI through a proxy with its own CA needs that CA inside too.
mkdir -p "$R/etc/ssl/certs" && cp /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/" 2>/dev/null
export R
unshare --mount --propagation private bash -c '
  set -e
  mount --rbind "$R" "$R"
  mount -t proc proc "$R/proc"
  mount --rbind /sys "$R/sys"
  mount --rbind /dev "$R/dev"
  mount -t tmpfs tmpfs "$R/run"; mount -t tmpfs tmpfs "$R/tmp"
  cd "$R"; mkdir -p .oldroot; pivot_root . .oldroot
  umount -l /.oldroot
  exec /bin/bash -c "apt-get update -qq && apt-get install -y -qq python3 >/dev/null && cd /src && ./scripts/setup.sh && CI=true ./scripts/test.sh -p no:cacheprovider $*"
' bash "$@"
