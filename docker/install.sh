#!/usr/bin/env bash
# docker/install.sh TARBALL [VERNEMQ_DIR] - installs the plugin from the
# release tarball (`make dist`) into a VerneMQ release directory (default
# /vernemq, the official image's): the plugin at VERNEMQ_DIR/plugins/vmq_pgevents,
# its cuttlefish schema into VERNEMQ_DIR/share/schema/. Checks the SHA-256
# beside the tarball when there is one. Needs no root: run it as the user that
# owns VERNEMQ_DIR (uid 10000 in the image). Used by docker/Dockerfile and by
# the image test (test/image/run.sh).
set -euo pipefail
tarball=${1:?usage: install.sh TARBALL [VERNEMQ_DIR]}
vmq=${2:-/vernemq}
[ -d "$vmq/share/schema" ] || { echo "install.sh: $vmq is not a VerneMQ release (no share/schema/)" >&2; exit 1; }
if [ -f "$tarball.sha256" ]; then
    want=$(cut -d' ' -f1 "$tarball.sha256")
    got=$(sha256sum "$tarball" | cut -d' ' -f1)
    [ "$want" = "$got" ] || { echo "install.sh: $tarball does not match $tarball.sha256" >&2; exit 1; }
fi
mkdir -p "$vmq/plugins"
rm -rf "$vmq/plugins/vmq_pgevents"
tar -xzf "$tarball" -C "$vmq/plugins" --no-same-owner
cp "$vmq/plugins/vmq_pgevents/priv/vmq_pgevents.schema" "$vmq/share/schema/"
echo "vmq_pgevents installed in $vmq/plugins/vmq_pgevents"
