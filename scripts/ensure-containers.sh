#!/usr/bin/env bash
# What tests/deploy/test_compose_stack.py needs to run docker-compose.yml for real on a
# machine without a Docker engine or an image registry:
#   - Debian's podman (its Docker-compatible API drives Debian's docker-compose), runc,
#     netavark and aardvark-dns (container networks, names resolved between containers),
#     and debootstrap;
#   - podman settings this kind of machine needs (below);
#   - local images standing in for the ones compose and the Dockerfile name (python,
#     uv, postgres, rabbitmq, redis, nginx), built from Debian's packages on a Debian
#     root filesystem made by debootstrap: tests/deploy/images/.
# Idempotent, and quick once done: the base image is kept, and podman's layer cache
# turns the other builds into no-ops. Serialised by a lock, so concurrent runs on one
# machine share the work.
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$PATH:/usr/sbin:/sbin"
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

PREFIX=localhost/ecommerce-test
IMAGES=tests/deploy/images

missing=()
for tool in podman:podman runc:runc debootstrap:debootstrap netavark:netavark \
  aardvark-dns:aardvark-dns docker-compose:docker-compose iptables:iptables; do
  command -v "${tool%%:*}" >/dev/null 2>&1 \
    || [ -x "/usr/lib/podman/${tool%%:*}" ] || missing+=("${tool#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "Installing Debian's ${missing[*]}" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# crun, podman's default runtime on Debian, refuses this kind of machine's cgroups; and
# podman's default ulimits ask for more than the host's hard limits allow ("setrlimit:
# operation not permitted"), so stay below them.
nofile=$(( $(ulimit -Hn) < 16384 ? $(ulimit -Hn) : 16384 ))
nproc=8192
as_root install -d /etc/containers/containers.conf.d
cat <<EOF | as_root tee /etc/containers/containers.conf.d/50-ecommerce-tests.conf >/dev/null
# Written by the ecommerce repository's scripts/ensure-containers.sh.
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]

[engine]
runtime = "runc"

# Containers find each other by name through aardvark-dns, which comes with netavark
# (podman would pick CNI where its plugins happen to be installed).
[network]
network_backend = "netavark"
EOF

exec 9>/var/tmp/ecommerce-test-images.lock
flock 9

if ! podman image exists "$PREFIX/debian:bookworm"; then
  # The mirror this machine's apt already uses.
  mirror=$(apt-get indextargets --format '$(SITE)' 'Release: bookworm' 2>/dev/null | head -n 1)
  [ -n "$mirror" ] || mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources | head -n 1)
  [ -n "$mirror" ] || { echo "no Debian mirror found in apt's sources" >&2; exit 1; }
  rootfs=$(mktemp -d /var/tmp/ecommerce-rootfs.XXXXXX)
  trap 'as_root rm -rf "$rootfs"' EXIT
  echo "debootstrap --variant=minbase bookworm from $mirror" >&2
  as_root debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
    || { tail -n 20 "$rootfs.log" >&2; exit 1; }
  rm -f "$rootfs.log"
  as_root tar -C "$rootfs" -c . | podman import --quiet - "$PREFIX/debian:bookworm" >/dev/null
  as_root rm -rf "$rootfs"
  trap - EXIT
fi

# uv's image holds nothing but its binary: the version the Dockerfile pins, from PyPI.
uv_version=$(sed -n 's|^ARG UV_IMAGE=.*uv:||p' Dockerfile)
if ! podman image exists "$PREFIX/uv:$uv_version"; then
  wheels=$(mktemp -d)
  python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --dest "$wheels" "uv==$uv_version" 2>"$wheels/pip.log" \
    || { cat "$wheels/pip.log" >&2; exit 1; }
  context=$(mktemp -d)
  cp "$IMAGES/uv/Containerfile" "$context/"
  python3 - "$wheels"/uv-*.whl "$context/uv" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    name = next(n for n in wheel.namelist() if n.endswith(".data/scripts/uv"))
    with open(sys.argv[2], "wb") as out:
        out.write(wheel.read(name))
PY
  chmod 755 "$context/uv"
  podman build --quiet --format docker -t "$PREFIX/uv:$uv_version" "$context" >/dev/null
  rm -rf "$wheels" "$context"
fi

# The stand-ins, built side by side (mostly waiting on the mirror).
declare -A tags=([python]=3.11-slim-bookworm [postgres]=16 [rabbitmq]=3.13-management \
  [redis]=7 [nginx]=1.27)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pids=()
for name in "${!tags[@]}"; do
  cp -r "$IMAGES/$name" "$work/$name"
  if [ "$name" = python ]; then
    # The authorities this machine trusts besides Debian's (see python/Containerfile).
    mkdir -p "$work/python/ca-certificates"
    find /usr/local/share/ca-certificates -name '*.crt' -exec cp {} "$work/python/ca-certificates/" \; \
      2>/dev/null || true
  fi
  podman build --quiet --format docker -t "$PREFIX/$name:${tags[$name]}" \
    "$work/$name" >"/var/tmp/ecommerce-build-$name.log" 2>&1 &
  pids+=("$!:$name")
done
failed=0
for entry in "${pids[@]}"; do
  if ! wait "${entry%%:*}"; then
    echo "building the ${entry#*:} stand-in failed:" >&2
    tail -n 30 "/var/tmp/ecommerce-build-${entry#*:}.log" >&2
    failed=1
  fi
done
[ "$failed" -eq 0 ]
echo "$(podman --version), stand-in images under $PREFIX ready" >&2
