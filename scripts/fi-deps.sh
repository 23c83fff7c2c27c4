#!/usr/bin/env bash
# Installs, from the distribution's packages, what the edge-fi host-environment scenarios use
# and the machine lacks. Idempotent: a machine that has everything is left untouched (no
# package index update, no install). `make edge-fi` runs it before the scenarios.
#
#   libfaketime  clock scenarios: LD_PRELOAD of libfaketime.so.1 skews or jumps one daemon's
#                wall clock (package libfaketime)
#   mount        disk-full scenarios: a small tmpfs on a node's data dir (package mount)
#   mknod        USB media scenarios: a device node on a stick (package coreutils)
#   tcpdump      INV-27: every datagram on loopback during a fleet run is captured and checked
#                against the nodes' configured peers (package tcpdump)
#
# Without root (or without apt-get) nothing is installed: the missing tools are listed and the
# script exits 0, and the scenarios that need them end SKIPPED with the reason.
set -euo pipefail

# Where Debian and Ubuntu put libfaketime.so.1 (multiarch first, then the older paths).
faketime_lib() {
  local arch=""
  if command -v dpkg-architecture >/dev/null 2>&1; then
    arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || true)
  fi
  if [ -z "$arch" ]; then
    arch="$(uname -m)-linux-gnu"
  fi
  local p
  for p in "/usr/lib/$arch/faketime/libfaketime.so.1" /usr/lib/faketime/libfaketime.so.1 \
           /usr/lib64/faketime/libfaketime.so.1; do
    if [ -e "$p" ]; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

missing=()
faketime_lib >/dev/null || missing+=(libfaketime)
command -v mount >/dev/null 2>&1 || missing+=(mount)
command -v mknod >/dev/null 2>&1 || missing+=(coreutils)
# tcpdump lives in sbin, which a user's PATH may lack.
PATH="$PATH:/usr/sbin:/sbin" command -v tcpdump >/dev/null 2>&1 || missing+=(tcpdump)

if [ ${#missing[@]} -eq 0 ]; then
  echo "fi-deps: everything present (libfaketime: $(faketime_lib))"
  exit 0
fi

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "fi-deps: missing ${missing[*]}; not root or no apt-get, so not installed:" \
       "the scenarios that need them will be SKIPPED" >&2
  exit 0
fi

echo "fi-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# The package lists may be absent on a fresh machine: update once, then install.
if ! apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if lib=$(faketime_lib); then
  echo "fi-deps: libfaketime at $lib"
else
  echo "fi-deps: libfaketime.so.1 still not found after installing" >&2
  exit 1
fi
