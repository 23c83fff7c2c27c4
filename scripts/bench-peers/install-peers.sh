#!/usr/bin/env bash
# Install the peers `make bench-peers` runs beside edged, from the distribution's packages
# (Debian/Ubuntu), when any is missing: nncp, syncthing, rsync, openssh-server, jq.
#
# Installing openssh-server (or nncp) normally starts its service; the benchmark must never
# leave an sshd listening beyond 127.0.0.1 (it runs sshd daemons of its own, on 127.0.0.1 only).
# While apt runs, a policy-rc.d that refuses every service start is put in place if none is
# there, and removed afterwards.
set -euo pipefail

missing=()
for cmd in nncp-file nncp-call nncp-daemon nncp-toss nncp-xfer nncp-cfgnew syncthing rsync ssh \
  ssh-keygen /usr/sbin/sshd jq; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
((${#missing[@]} == 0)) && exit 0

echo "bench-peers: missing ${missing[*]}; installing the peers' packages"
pkgs=(nncp syncthing rsync openssh-server openssh-client jq)
if ((EUID != 0)); then
  echo "bench-peers: needs root to install them: apt-get install -y ${pkgs[*]}" >&2
  exit 2
fi
command -v apt-get >/dev/null 2>&1 || {
  echo "bench-peers: no apt-get here; install ${pkgs[*]} by hand" >&2
  exit 2
}

policy=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\n# bench-peers: no service starts while its packages install\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  made_policy=1
fi
remove_policy() { if ((made_policy)); then rm -f "$policy"; fi; }
trap remove_policy EXIT

apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}"
