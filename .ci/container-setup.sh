#!/usr/bin/env bash
# Prepare a Debian 12 (bookworm) machine to build and run hud containers with podman.
#
#   sudo .ci/container-setup.sh
#
# Idempotent: every step is skipped when its result is already there.
#   1. apt-get install podman, runc, debootstrap (only if a command is missing)
#   2. write a containers.conf (runc runtime, no default ulimits, host CA bundle mounted)
#   3. make sure the base image localhost/hud-base:bookworm exists:
#        - present in podman storage          -> nothing to do
#        - cache tar present                  -> podman load
#        - otherwise                          -> debootstrap + podman import + podman save (cache)
#
# Why (see containers.md in the shared reference notes): on these VMs crun refuses the
# hybrid cgroup layout, the container runtime may not raise RLIMIT_NOFILE/NPROC
# (no CAP_SYS_RESOURCE), and TLS egress is verified against a host CA that
# containers lack. The config below fixes all three.
#
# Environment knobs:
#   HUD_CONTAINERS_CONF  where to write the config (default /etc/containers/containers.conf).
#                        If the file exists and was not written by this script, it is left
#                        alone and a drop-in /etc/containers/containers.conf.d/50-hud.conf is
#                        written instead.
#   HUD_BASE_IMAGE       image name (default localhost/hud-base:bookworm)
#   HUD_BASE_CACHE       cache tar (default /var/cache/hud/hud-base.tar)
#   HUD_BASE_REBUILD=1   ignore the image and the cache and debootstrap again
#   DEBIAN_MIRROR        debootstrap mirror (default http://deb.debian.org/debian)
#
# All logging goes to stderr. Step timings are logged as "[container-setup] <step>: N s".
set -euo pipefail

BASE_IMAGE="${HUD_BASE_IMAGE:-localhost/hud-base:bookworm}"
BASE_CACHE="${HUD_BASE_CACHE:-/var/cache/hud/hud-base.tar}"
CONF="${HUD_CONTAINERS_CONF:-/etc/containers/containers.conf}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
BASE_PACKAGES="python3,python3-venv,python3-pip,bubblewrap,ca-certificates"
HOST_CA=/etc/ssl/certs/ca-certificates.crt
MARKER="# written by hud .ci/container-setup.sh"

export DEBIAN_FRONTEND=noninteractive

log() { printf '[container-setup] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

WORKDIR=
cleanup() { if [[ -n $WORKDIR ]]; then rm -rf "$WORKDIR"; fi; }
trap cleanup EXIT

# timed NAME CMD...: run CMD, log its wall-clock duration.
timed() {
    local name=$1 start end rc=0
    shift
    start=$(date +%s.%N)
    "$@" || rc=$?
    end=$(date +%s.%N)
    log "$name: $(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}') s (rc=$rc)"
    return "$rc"
}

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# ---------------------------------------------------------------- 1. packages
install_packages() {
    local missing=()
    command -v podman >/dev/null 2>&1 || missing+=(podman)
    command -v runc >/dev/null 2>&1 || missing+=(runc)
    command -v debootstrap >/dev/null 2>&1 || [[ -x /usr/sbin/debootstrap ]] || missing+=(debootstrap)
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "packages: podman, runc, debootstrap already installed"
        return 0
    fi
    log "packages: installing ${missing[*]}"
    timed "apt-get update" as_root apt-get update -q >&2
    # Recommends are wanted: netavark/aardvark-dns (networking), catatonit (--init), buildah.
    timed "apt-get install" as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q podman runc debootstrap >&2
}

# ---------------------------------------------------------------- 2. containers.conf
conf_body() {
    cat <<EOF
$MARKER
[containers]
# podman's root default is nofile/nproc = 1048576; without CAP_SYS_RESOURCE the
# runtime cannot raise the hard limits, so keep the inherited ones.
default_ulimits = []
EOF
    if [[ -f $HOST_CA ]]; then
        cat <<EOF
# TLS egress is verified against the host CA bundle; containers (and RUN steps of
# podman build) need it or pip fails with CERTIFICATE_VERIFY_FAILED.
volumes = ["$HOST_CA:$HOST_CA:ro"]
EOF
    fi
    cat <<'EOF'

[engine]
# crun 1.8 refuses hybrid cgroup v1/v2 hosts; runc works there.
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF
}

write_conf_file() {   # write_conf_file PATH
    local path=$1 tmp
    tmp=$(mktemp)
    conf_body >"$tmp"
    if [[ -f $path ]] && cmp -s "$tmp" "$path"; then
        log "config: $path is up to date"
        rm -f "$tmp"
        return 0
    fi
    as_root mkdir -p "$(dirname "$path")"
    as_root install -m 0644 "$tmp" "$path"
    rm -f "$tmp"
    log "config: wrote $path"
}

write_conf() {
    if [[ -f $CONF ]] && ! grep -qF "$MARKER" "$CONF"; then
        # Someone else's config: do not clobber it, add a drop-in (read after it).
        log "config: $CONF exists and is not ours; using a drop-in"
        write_conf_file /etc/containers/containers.conf.d/50-hud.conf
    else
        write_conf_file "$CONF"
        if [[ $CONF != /etc/containers/containers.conf ]]; then
            export CONTAINERS_CONF="$CONF"
            log "config: non-default path; export CONTAINERS_CONF=$CONF for later podman calls"
        fi
    fi
}

check_runtime() {
    local rt
    rt=$(podman info --format '{{.Host.OCIRuntime.Name}}' 2>/dev/null || true)
    [[ $rt == runc ]] || die "podman uses OCI runtime '${rt:-?}', expected runc: is the config read?"
    log "config: podman OCI runtime is $rt"
}

# ---------------------------------------------------------------- 3. base image
import_rootfs() {   # import_rootfs DIR: tar DIR into podman as $BASE_IMAGE
    tar -C "$1" -c . | podman import \
        --change "ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        --change "ENV=LANG=C.UTF-8" \
        --change "LABEL=org.hud.base.packages=$BASE_PACKAGES" \
        --change 'CMD=["/bin/bash"]' \
        - "$BASE_IMAGE" >/dev/null
}

debootstrap_base() {
    local rootfs
    WORKDIR=$(mktemp -d /var/tmp/hud-base.XXXXXX)
    rootfs=$WORKDIR/rootfs
    log "base: debootstrap $SUITE minbase + $BASE_PACKAGES (mirror $MIRROR)"
    timed "debootstrap" as_root debootstrap --variant=minbase --include="$BASE_PACKAGES" \
        "$SUITE" "$rootfs" "$MIRROR" >&2
    as_root rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    log "base: rootfs size $(du -sh "$rootfs" | cut -f1)"
    timed "podman import" import_rootfs "$rootfs"
    as_root rm -rf "$WORKDIR"
    WORKDIR=
}

ensure_base_image() {
    if [[ ${HUD_BASE_REBUILD:-0} == 1 ]]; then
        log "base: HUD_BASE_REBUILD=1, rebuilding"
        podman rmi -f "$BASE_IMAGE" >/dev/null 2>&1 || true
        rm -f "$BASE_CACHE"
    fi
    if podman image exists "$BASE_IMAGE"; then
        log "base: $BASE_IMAGE already present"
    elif [[ -s $BASE_CACHE ]] && timed "podman load" podman load -q -i "$BASE_CACHE" >&2 \
            && podman image exists "$BASE_IMAGE"; then
        log "base: loaded $BASE_IMAGE from $BASE_CACHE"
    else
        [[ -e $BASE_CACHE ]] && { log "base: cache $BASE_CACHE unusable, removing"; rm -f "$BASE_CACHE"; }
        debootstrap_base
        podman image exists "$BASE_IMAGE" || die "import did not produce $BASE_IMAGE"
    fi
    if [[ ! -s $BASE_CACHE ]]; then
        mkdir -p "$(dirname "$BASE_CACHE")"
        timed "podman save" podman save -q -o "$BASE_CACHE.tmp" "$BASE_IMAGE" >&2
        mv -f "$BASE_CACHE.tmp" "$BASE_CACHE"
        log "base: cached to $BASE_CACHE ($(du -h "$BASE_CACHE" | cut -f1))"
    fi
}

smoke_test() {
    local out
    out=$(podman run --rm --pull=never "$BASE_IMAGE" \
        sh -c 'python3 --version && command -v bwrap && python3 -m venv --help >/dev/null && echo ok') \
        || die "smoke test of $BASE_IMAGE failed"
    log "smoke: $(echo "$out" | tr '\n' ' ')"
}

main() {
    local t0
    t0=$(date +%s)
    install_packages
    write_conf
    check_runtime
    ensure_base_image
    timed "smoke test (podman run --rm)" smoke_test
    log "done in $(( $(date +%s) - t0 )) s; base image $BASE_IMAGE"
}

main "$@"
