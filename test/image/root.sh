#!/usr/bin/env bash
# test/image/root.sh DIR - the official VerneMQ image's root file system,
# without Docker: Debian bookworm (minbase) plus exactly the packages that
# image's Dockerfile installs (read from ../shared/docker-vernemq/Dockerfile),
# and its user vernemq (uid/gid 10000, home /vernemq). No libpq5, no
# libjansson4: the plugin must bring what it needs.
#
# Made once per machine and package list (DIR/.ready holds the list), with
# Debian's debootstrap, as root. The release and the plugin are added by
# test/image/run.sh into a copy, so this root stays as the image has it.
set -euo pipefail
dir=$1
dockerfile=${DOCKERFILE:-$(dirname "$0")/../../../shared/docker-vernemq/Dockerfile}
[ -f "$dockerfile" ] || { echo "image root: no Dockerfile at $dockerfile" >&2; exit 1; }
# the packages of the image's "apt-get -y install ..." line
pkgs=$(grep -oE 'apt-get -y install [^&\\]*' "$dockerfile" | head -n 1 | sed 's/apt-get -y install //' | xargs)
[ -n "$pkgs" ] || { echo "image root: no apt-get install line in $dockerfile" >&2; exit 1; }
want="bookworm minbase: $pkgs"
if [ -f "$dir/.ready" ] && [ "$(cat "$dir/.ready")" = "$want" ]; then
    exit 0
fi
command -v debootstrap >/dev/null || { echo "image root: debootstrap missing (apt-get install debootstrap)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "image root: debootstrap needs root" >&2; exit 1; }
mirror=${DEBIAN_MIRROR:-$(grep -hoE '^(URIs:|deb) *https?://[^ ]*/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1 | grep -oE 'https?://[^ ]*' || true)}
mirror=${mirror:-http://deb.debian.org/debian}
echo "   image root: debootstrap bookworm (minbase) + $pkgs"
rm -rf "$dir"
mkdir -p "$(dirname "$dir")"
debootstrap --variant=minbase --include="${pkgs// /,}" bookworm "$dir" "$mirror" >"$dir.log" 2>&1 ||
    { tail -n 20 "$dir.log" >&2; exit 1; }
# the Dockerfile's user and group (addgroup/adduser there; the same ids here)
chroot "$dir" groupadd --gid 10000 vernemq
chroot "$dir" useradd --uid 10000 --gid vernemq --system --home-dir /vernemq --no-create-home vernemq
rm -rf "$dir/var/cache/apt/archives/"*.deb "$dir/var/lib/apt/lists/"*
echo "$want" >"$dir/.ready"
