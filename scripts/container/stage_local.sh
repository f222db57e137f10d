#!/usr/bin/env bash
# Stages the build context for Dockerfile.local: a prebuilt binary plus the
# shared libraries `ldd` says it loads, a passwd/group with the distroless
# "nonroot" user (65532), the host's CA bundle (rustls-platform-verifier
# reads the system store), and the folders the server writes to. The result
# builds FROM scratch, without pulling any base image:
#
#   scripts/container/stage_local.sh CTX [BINARY]
#   podman build --isolation chroot -f Dockerfile.local -t nano-banana-mcp:local CTX
#
# BINARY defaults to target/release/nano-banana-mcp. Only glibc-linked
# binaries of the host's architecture make sense here: the libraries come
# from this machine, so the image runs what was tested on this machine.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CTX=${1:?usage: stage_local.sh CTX [BINARY]}
BIN=${2:-$ROOT/target/release/nano-banana-mcp}

[ -x "$BIN" ] || { echo "stage_local: no executable at $BIN (build it first)" >&2; exit 1; }
command -v ldd >/dev/null || { echo "stage_local: ldd not found" >&2; exit 1; }

rm -rf "$CTX"
mkdir -p "$CTX/rootfs/etc/ssl/certs" "$CTX/rootfs/tmp" "$CTX/nonroot/data" "$CTX/nonroot/home/nonroot"
# Copy, not link: the binary may be rebuilt while an image is being built.
cp "$BIN" "$CTX/rootfs/nano-banana-mcp"
chmod 0755 "$CTX/rootfs/nano-banana-mcp"

# Every library with a path in ldd's answer ("name => /path (addr)" or
# "/path (addr)" for the loader), copied to the same path, symlinks resolved.
n=0
while read -r lib; do
  [ -n "$lib" ] || continue
  mkdir -p "$CTX/rootfs$(dirname "$lib")"
  cp -L "$lib" "$CTX/rootfs$lib"
  n=$((n + 1))
done < <(ldd "$BIN" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
[ "$n" -gt 0 ] || { echo "stage_local: ldd listed no libraries (static binary?)" >&2; }

chmod 1777 "$CTX/rootfs/tmp"
cat >"$CTX/rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$CTX/rootfs/etc/group" <<'EOF'
root:x:0:
nonroot:x:65532:
EOF
# glibc's built-in defaults would do; explicit is clearer.
printf 'hosts: files dns\n' >"$CTX/rootfs/etc/nsswitch.conf"
if [ -r /etc/ssl/certs/ca-certificates.crt ]; then
  cp -L /etc/ssl/certs/ca-certificates.crt "$CTX/rootfs/etc/ssl/certs/ca-certificates.crt"
else
  echo "stage_local: warning: no /etc/ssl/certs/ca-certificates.crt; TLS to Gemini/Azure will fail in this image" >&2
fi
chmod 0644 "$CTX"/rootfs/etc/passwd "$CTX"/rootfs/etc/group "$CTX"/rootfs/etc/nsswitch.conf

cp "$ROOT/Dockerfile.local" "$CTX/Dockerfile.local"
echo "stage_local: staged $BIN and $n libraries in $CTX" >&2
