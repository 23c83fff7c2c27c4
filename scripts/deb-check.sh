#!/usr/bin/env bash
# Installs the package from `make deb` on this machine as an airgapped host would (dpkg -i, no
# network), checks what it installed, installs it again (the upgrade path), purges it, and checks
# that the node's data and user survived the purge. Needs root; CI runs it (`make deb-check`).
# Usage: scripts/deb-check.sh DIR   (DIR holds edged_*.deb and edged-dbgsym_*.ddeb)
set -euo pipefail

dir=${1:?usage: deb-check.sh DIR}
deb=$(ls "$dir"/edged_*.deb)
ddeb=$(ls "$dir"/edged-dbgsym_*.ddeb)
fail() { echo "deb-check: FAILED: $*" >&2; exit 1; }
ok() { echo "deb-check: ok: $*"; }

[ "$(id -u)" -eq 0 ] || fail "must run as root (it installs the package)"
if dpkg -s edged >/dev/null 2>&1; then
    fail "edged is installed already; this check installs and purges it, so remove it first"
fi
user_existed=no
getent passwd edged >/dev/null && user_existed=yes
datadir_existed=no
[ -e /var/lib/edged ] && datadir_existed=yes

# No network: the package must install from the stick alone. Where the kernel does not let us
# make a network namespace (some containers), dpkg runs as is; dpkg itself never fetches.
install() {
    if unshare --net true 2>/dev/null; then
        unshare --net dpkg -i "$1"
        ok "installed $(basename "$1") with no network"
    else
        dpkg -i "$1"
        ok "installed $(basename "$1") (no network namespace here; dpkg does not fetch)"
    fi
}

install "$deb"

version=$(/usr/bin/edged --version)
[[ $version == "edged "* ]] || fail "edged --version printed: $version"
ok "/usr/bin/edged runs: $version"

if readelf -S --wide /usr/bin/edged | grep -Eq '\.debug_(info|line|str|abbrev|ranges|loc)'; then
    fail "/usr/bin/edged still carries debug sections"
fi
build_id=$(readelf -n /usr/bin/edged | awk '/Build ID/ {print $3}')
[ -n "$build_id" ] || fail "/usr/bin/edged has no build id"
debug_file="usr/lib/debug/.build-id/${build_id:0:2}/${build_id:2}.debug"
dpkg-deb -c "$ddeb" | grep -q "$debug_file" || fail "$(basename "$ddeb") lacks /$debug_file"
install "$ddeb"
readelf -S --wide "/$debug_file" | grep -q '\.debug_line' || fail "/$debug_file has no line tables"
ok "binary stripped ($(stat -c %s /usr/bin/edged) bytes); its line tables are in /$debug_file ($(basename "$ddeb"))"

IFS=: read -r _ _ _ _ _ home shell < <(getent passwd edged) || fail "no edged user"
[ "$home" = /var/lib/edged ] && [ "$shell" = /usr/sbin/nologin ] \
    || fail "edged user: home $home, shell $shell"
[ "$(stat -c '%U %a' /var/lib/edged)" = "edged 700" ] \
    || fail "/var/lib/edged is $(stat -c '%U %a' /var/lib/edged)"
[ -d /etc/edged ] || fail "no /etc/edged"
ok "system user edged (home /var/lib/edged, mode 700, no login shell) and /etc/edged"

unit=/usr/lib/systemd/system/edged.service
grep -q '^ExecStart=/usr/bin/edged run' "$unit" || fail "$unit does not start /usr/bin/edged"
grep -q '^User=edged' "$unit" || fail "$unit does not run as edged"
ok "hardened unit $unit"

for page in edged edged-import edged-export edged-completions edged-man; do
    zcat "/usr/share/man/man1/$page.1.gz" | grep -q "^\.TH $page 1" || fail "man page $page(1)"
done
ok "$(ls /usr/share/man/man1/edged*.1.gz | wc -l) man pages"

bash -c 'source /usr/share/bash-completion/completions/edged && complete -p edged' >/dev/null \
    || fail "bash completion does not load"
[ -s /usr/share/zsh/vendor-completions/_edged ] || fail "zsh completion"
[ -s /usr/share/fish/vendor_completions.d/edged.fish ] || fail "fish completion"
[ -s /usr/share/doc/edged/examples/edge.toml.example ] || fail "example config"
ok "completions (bash, zsh, fish) and the example config"

# The installed binary works as the service user: a publisher key, a signed segment, verified.
work=$(mktemp -d)
chown edged:edged "$work"
as_edged() { setpriv --reuid=edged --regid=edged --init-groups -- "$@"; }
as_edged /usr/bin/edged key gen --out "$work/pub.key" > "$work/key.out"
trust=$(grep -o 'ed25519:[0-9a-f]*' "$work/key.out" | head -1)
head -c 100000 /dev/urandom > "$work/payload"
as_edged /usr/bin/edged segment create --key "$work/pub.key" --name check \
    --out "$work/check.seg" "$work/payload" > /dev/null 2>&1
as_edged /usr/bin/edged segment verify --trust "$trust" "$work/check.seg" > /dev/null
rm -rf "$work"
ok "as user edged: key gen, segment create, segment verify"

# Upgrade path: installing over itself keeps the user and runs the scripts again.
install "$deb"

echo "data" > /var/lib/edged/.deb-check-marker
dpkg --purge edged-dbgsym edged
[ ! -e /usr/bin/edged ] && [ ! -e "/$debug_file" ] || fail "files left after purge"
[ -e /var/lib/edged/.deb-check-marker ] || fail "purge removed the node's data"
getent passwd edged >/dev/null || fail "purge removed the edged user"
ok "purged: binary gone, /var/lib/edged and the edged user kept"

# Leave the machine as it was.
rm -f /var/lib/edged/.deb-check-marker
[ "$datadir_existed" = yes ] || rmdir /var/lib/edged /etc/edged 2>/dev/null || true
[ "$user_existed" = yes ] || userdel edged
echo "deb-check: the package installs, works and purges cleanly"
