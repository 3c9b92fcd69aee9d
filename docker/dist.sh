#!/usr/bin/env bash
# docker/dist.sh DIST NAME - what `make dist` runs after building: the
# release tarball DIST/NAME.tar.gz and DIST/NAME.tar.gz.sha256.
#
# The tarball holds one directory, vmq_pgevents/, which is a plugin
# directory for plugins.vmq_pgevents.path:
#   ebin/                    the application
#   priv/vmq_pgevents_nif.so the NIF (RUNPATH $ORIGIN/lib)
#   priv/lib/                libpq.so.5 and libjansson.so.4 of the build
#                            machine, with their copyright files
#   priv/schema.sql          the table, partitions and views
#   priv/vmq_pgevents.schema the cuttlefish schema (goes to share/schema/)
#   priv/vmq_pgevents.rules.yml  Prometheus alert rules
#   INSTALL                  the steps, in short
# The NIF loads in a broker without libpq5 and libjansson4 (e.g. the
# official Docker image); what libpq itself needs (libssl3,
# libgssapi-krb5-2, libldap-2.5-0) must be on the system.
set -euo pipefail
cd "$(dirname "$0")/.."
dist=$1 name=$2
nif=priv/vmq_pgevents_nif.so
stage=$dist/stage
rm -rf "$stage" "$dist/$name.tar.gz" "$dist/$name.tar.gz.sha256"
mkdir -p "$stage/vmq_pgevents/priv/lib"
top=$stage/vmq_pgevents
cp -r ebin "$top/"
cp "$nif" priv/schema.sql priv/vmq_pgevents.schema priv/vmq_pgevents.rules.yml "$top/priv/"
# the shared libraries the NIF names, as this machine resolves them
for lib in libpq.so.5 libjansson.so.4; do
    path=$(ldd "$nif" | awk -v l="$lib" '$1 == l { print $3 }')
    [ -f "$path" ] || { echo "dist: $nif does not resolve $lib (ldd)" >&2; exit 1; }
    cp -L "$path" "$top/priv/lib/$lib"
    pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -n 1 | cut -d: -f1 || true)
    if [ -n "$pkg" ] && [ -f "/usr/share/doc/$pkg/copyright" ]; then
        cp "/usr/share/doc/$pkg/copyright" "$top/priv/lib/$lib.copyright"
        ver=$(dpkg-query -W -f '${Version}' "$pkg" 2>/dev/null || true)
        echo "$lib: Debian package $pkg $ver" >>"$top/priv/lib/VERSIONS"
    else
        echo "$lib: $(readlink -f "$path")" >>"$top/priv/lib/VERSIONS"
    fi
done
vsn=$(sed -n 's/^ *{vsn, *"\([^"]*\)"}.*/\1/p' erl_src/vmq_pgevents.app.src)
cat >"$top/INSTALL" <<TXT
vmq_pgevents $vsn - records every VerneMQ hook event in PostgreSQL.

This directory is the plugin. For a VerneMQ release unpacked at VMQ (the
official Docker image: VMQ=/vernemq; the Debian/RPM packages: plugin
under /usr/lib/vernemq, schema in /usr/share/vernemq/schema):

  1. copy this directory, e.g. to VMQ/plugins/vmq_pgevents
  2. cp VMQ/plugins/vmq_pgevents/priv/vmq_pgevents.schema VMQ/share/schema/
  3. in vernemq.conf:
       plugins.vmq_pgevents = on
       plugins.vmq_pgevents.path = VMQ/plugins/vmq_pgevents
       plugins.vmq_pgevents.priority = 1
       vmq_pgevents.dsn = host=db.example port=5432 user=vmq dbname=vmq
       vmq_pgevents.spool_dir = VMQ/data/vmq_pgevents
     (the password in a PGPASSFILE, never in vernemq.conf; spool_dir an
     absolute path on a local disk, for the packages e.g.
     /var/lib/vernemq/vmq_pgevents)
  4. restart VerneMQ; \`vmq-admin pgevents status\` says "connected".

priv/lib/ holds libpq and jansson (versions in priv/lib/VERSIONS): the
NIF uses them before the system's. Remove priv/lib/ to use the system's
libpq5 and libjansson4 instead (then security updates of libpq come with
the system's packages). The project's docs/install.md and docs/database.md
(roles, and the schema applied by a DBA) say more.
TXT
tar -C "$stage" --owner=0 --group=0 --sort=name -czf "$dist/$name.tar.gz" vmq_pgevents
(cd "$dist" && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
rm -rf "$stage"
echo "dist: $dist/$name.tar.gz ($(du -k "$dist/$name.tar.gz" | cut -f1) KiB)"
