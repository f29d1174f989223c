#!/usr/bin/env bash
# Build the capsearch service image with podman (or docker), from the Dockerfile at the repository root.
#
#   scripts/build_container.sh              # base: capsearch-base:bookworm, made here from Debian packages
#   BASE_IMAGE=python:3.11-slim-bookworm scripts/build_container.sh   # where a registry is reachable
#
# Environment:
#   BASE_IMAGE       the base image; unset: build (once) the local Debian 12 base with debootstrap
#   TAG              the app image's tag (default capsearch:latest)
#   INDEX_URL        pip's index inside the build (default: the one pip is configured with here, if any)
#   PIP_CERT         CA bundle for pip inside the build (default: pip's global.cert here, if any)
#   TORCH_INDEX_URL  where torch/torchvision come from (default: the Dockerfile's CPU-only index when it
#                    answers, else empty: INDEX_URL / pip's default index, which serves the CUDA build)
#   ENGINE           podman (default) or docker
#   REBUILD_BASE=1   rebuild the local base image even if it exists
#
# Machines whose kernel refuses what podman asks by default (no CAP_SYS_RESOURCE, cgroup v1/v2 hybrid)
# get a containers.conf with the current resource limits and runc (see sandbox_conf below).
set -euo pipefail
cd "$(dirname "$0")/.."

ENGINE=${ENGINE:-podman}
TAG=${TAG:-capsearch:latest}
LOCAL_BASE=capsearch-base:bookworm
SUITE=bookworm
WORK=${CAPSEARCH_CONTAINER_WORK:-/var/tmp/capsearch-container}
mkdir -p "$WORK"

say() { printf '[build_container] %s\n' "$*" >&2; }

# The Debian mirror apt uses on this machine, for a suite ("bookworm" or "bookworm-security").
debian_mirror() {
    python3 - "$1" <<'PY'
import glob, sys
suite = sys.argv[1]
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in open(path, encoding="utf-8").read().split("\n\n"):
        fields = dict(line.split(":", 1) for line in stanza.splitlines() if ":" in line and not line.startswith("#"))
        if suite in fields.get("Suites", "").split() and "Types" in fields:
            print(fields["URIs"].split()[0]); sys.exit(0)
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError:
        continue
    for line in lines:
        words = [w for w in line.split() if not w.startswith("[")]
        if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
            print(words[1]); sys.exit(0)
sys.exit(f"no apt source for {suite} in /etc/apt")
PY
}

# Debian 12 (Python 3.11) with python3-venv and CA certificates, current security updates, as an image.
build_local_base() {
    local mirror security root
    mirror=$(debian_mirror "$SUITE")
    security=$(debian_mirror "$SUITE-security")
    root="$WORK/rootfs"
    rm -rf "$root"
    say "debootstrap $SUITE (minbase + python3, python3-venv, ca-certificates)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$root" "$mirror" \
        >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log" >&2; return 1; }
    printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
        "$mirror" "$SUITE" "$mirror" "$SUITE" "$security" "$SUITE" >"$root/etc/apt/sources.list"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    mount --bind /proc "$root/proc"
    chroot "$root" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -y -qq upgrade \
        && apt-get clean && rm -rf /var/lib/apt/lists/*' >"$WORK/upgrade.log" 2>&1 || {
        umount "$root/proc"; tail -20 "$WORK/upgrade.log" >&2; return 1; }
    umount "$root/proc"
    : >"$root/etc/resolv.conf"
    say "import $LOCAL_BASE ($(chroot "$root" python3 --version))"
    tar --numeric-owner -C "$root" -c . | "$ENGINE" import --change 'CMD ["python3"]' - "$LOCAL_BASE" >/dev/null
    rm -rf "$root"
}

# A containers.conf for sandboxes: rlimits no higher than ours (raising them needs CAP_SYS_RESOURCE,
# which crun and runc both ask for by default) and runc (crun refuses a cgroup v1/v2 hybrid).
sandbox_conf() {
    local conf="$WORK/containers.conf" nofile nproc
    nofile=$(ulimit -Hn)
    nproc=$(ulimit -Hu)
    [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
    cat >"$conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
events_logger = "file"
cgroup_manager = "cgroupfs"
EOF
    echo "$conf"
}

# Use podman's defaults where they work; else the sandbox conf (the refusal is logged for the results).
choose_podman_conf() {
    [ "$ENGINE" = podman ] || return 0
    if "$ENGINE" run --rm --network none "$1" true 2>"$WORK/default-run.err"; then
        say "podman's defaults work"
        return 0
    fi
    say "podman's defaults refused: $(tail -1 "$WORK/default-run.err")"
    CONTAINERS_CONF=$(sandbox_conf)
    export CONTAINERS_CONF
    say "using $CONTAINERS_CONF"
    "$ENGINE" run --rm --network none "$1" true
}

# The CPU-only torch index when it answers; else the general index (the same pinned version, CUDA build).
torch_index() {
    local cpu
    cpu=$(sed -n 's/^ARG TORCH_INDEX_URL=//p' Dockerfile)
    if python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/torch/', timeout=10)" \
        "$cpu" 2>/dev/null; then
        echo "$cpu"
    else
        say "the CPU-only torch index does not answer here: torch comes from pip's index (CUDA build)"
        echo ""
    fi
}

main() {
    local base=${BASE_IMAGE:-$LOCAL_BASE} torch
    if [ -z "${BASE_IMAGE:-}" ] && { [ "${REBUILD_BASE:-0}" = 1 ] || ! "$ENGINE" image exists "$LOCAL_BASE"; }; then
        build_local_base
    fi
    choose_podman_conf "$base"
    INDEX_URL=${INDEX_URL:-$(python3 -m pip config get global.index-url 2>/dev/null || true)}
    torch=${TORCH_INDEX_URL-$(torch_index)}
    say "build $TAG on $base (index: ${INDEX_URL:-pip default}; torch: ${torch:-pip default})"
    local args=(--build-arg "BASE_IMAGE=$base" --build-arg "INDEX_URL=$INDEX_URL"
        --build-arg "TORCH_INDEX_URL=$torch" -t "$TAG" .)
    # pip's CA bundle here (TLS to the index may be intercepted): a build secret, in no layer
    local cert=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
    [ -n "$cert" ] && [ -s "$cert" ] && args=(--secret "id=pip_cert,src=$cert" "${args[@]}")
    # docker format: OCI images drop HEALTHCHECK
    [ "$ENGINE" = podman ] && args=(--format docker --layers "${args[@]}")
    "$ENGINE" build "${args[@]}"
    say "built $TAG: $("$ENGINE" image inspect --format '{{.Size}}' "$TAG") bytes"
}

main "$@"
