#!/usr/bin/env bash
# Build the Serendip component image (docker/Dockerfile) with docker, or with buildah
# where no docker daemon answers (no root daemon, no Docker Hub).
#
#   docker/build_image.sh [--variant cpu|cuda] [--tag NAME] [--base IMAGE] [--no-cache]
#
# Environment (all optional):
#   SERENDIP_IMAGE / SERENDIP_GPU_IMAGE  tag of the CPU / CUDA image (defaults as in
#                                         serendip/platform/kfp/components/__init__.py)
#   SERENDIP_IMAGE_BASE                   base image (default python:3.11-slim); with buildah,
#                                         when it cannot be pulled, a Debian bookworm root file
#                                         system made by debootstrap is imported as
#                                         localhost/debian-base:bookworm and used instead
#   SERENDIP_IMAGE_BUILDER                docker | buildah (default: docker if its daemon
#                                         answers, else buildah)
#   PIP_FIND_LINKS                        a directory holding the torch 2.13.0 CPU wheel: mounted
#                                         at /wheels in the build (buildah), so pip takes it
#                                         instead of downloading
#   PIP_CERT                              CA bundle pip needs to reach the registry: mounted
#                                         into the build (buildah) and used by pip there
#   BUILDAH_STORAGE_DRIVER                default vfs (works without fuse-overlayfs or a
#                                         kernel overlay mount)
#
# Exit status: 0 built, 2 bad option or no builder (one line on stderr says which).
set -euo pipefail

# All in one function: bash parses it whole before running, so editing this file during a
# (long) build does not change the running one.
main() {

    ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    VARIANT=cpu
    TAG=
    BASE=${SERENDIP_IMAGE_BASE:-python:3.11-slim}
    NO_CACHE=
    DEBIAN_BASE=localhost/debian-base:bookworm

    die() { echo "build_image: $*" >&2; exit 2; }

    while [ $# -gt 0 ]; do
        case "$1" in
            --variant) VARIANT=${2:?}; shift 2 ;;
            --tag) TAG=${2:?}; shift 2 ;;
            --base) BASE=${2:?}; shift 2 ;;
            --no-cache) NO_CACHE=1; shift ;;
            -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
            *) die "unknown option '$1'; use --variant cpu|cuda, --tag NAME, --base IMAGE, --no-cache" ;;
        esac
    done

    case "$VARIANT" in
        cpu)  TORCH_INDEX=https://download.pytorch.org/whl/cpu
              TAG=${TAG:-${SERENDIP_IMAGE:-ghcr.io/serendip/serendip:0.1.0}} ;;
        # torch 2.13.0 on PyPI is the CUDA 13.0 build (its metadata requires cuda-toolkit 13.0.3);
        # the CUDA libraries come as nvidia-* wheels, so the same base image serves (the node's
        # driver is mounted by the NVIDIA container toolkit).
        cuda) TORCH_INDEX=https://pypi.org/simple
              TAG=${TAG:-${SERENDIP_GPU_IMAGE:-ghcr.io/serendip/serendip:0.1.0-cuda}} ;;
        *) die "--variant must be cpu or cuda, got '$VARIANT'" ;;
    esac

    BUILDER=${SERENDIP_IMAGE_BUILDER:-}
    if [ -z "$BUILDER" ]; then
        if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
            BUILDER=docker
        elif command -v buildah >/dev/null 2>&1; then
            BUILDER=buildah
        else
            die "neither a docker daemon nor buildah is available; install one (apt-get install buildah)"
        fi
    fi

    ARGS=(-f "$ROOT/docker/Dockerfile" -t "$TAG" --build-arg "TORCH_INDEX=$TORCH_INDEX")
    [ -n "$NO_CACHE" ] && ARGS+=(--no-cache)

    if [ "$BUILDER" = docker ]; then
        # A docker machine pulls the official Python image and reaches the torch index itself.
        echo ">> docker build $TAG (base $BASE, torch from $TORCH_INDEX)"
        exec docker build "${ARGS[@]}" --build-arg "BASE=$BASE" "$ROOT"
    fi
    [ "$BUILDER" = buildah ] || die "SERENDIP_IMAGE_BUILDER must be docker or buildah, got '$BUILDER'"
    command -v buildah >/dev/null 2>&1 || die "buildah not found; install it (apt-get install buildah)"

    B=(buildah --storage-driver "${BUILDAH_STORAGE_DRIVER:-vfs}")

    have_image() { "${B[@]}" inspect --type image "$1" >/dev/null 2>&1; }

    if ! have_image "$BASE" && ! "${B[@]}" pull -q "$BASE" >/dev/null 2>&1; then
        if [ -n "${SERENDIP_IMAGE_BASE:-}" ] && [ "$BASE" != "$DEBIAN_BASE" ]; then
            die "base image '$BASE' (SERENDIP_IMAGE_BASE) is neither local nor pullable"
        fi
        if ! have_image "$DEBIAN_BASE"; then
            command -v debootstrap >/dev/null 2>&1 || \
                die "cannot pull '$BASE' and debootstrap is absent (apt-get install debootstrap)"
            echo ">> '$BASE' cannot be pulled: making $DEBIAN_BASE with debootstrap (~30 s)"
            ROOTFS=$(mktemp -d "${TMPDIR:-/var/tmp}/serendip-rootfs.XXXXXX")
            trap 'rm -rf "$ROOTFS"' EXIT
            MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
            debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" \
                > "$ROOTFS.log" 2>&1 || { tail -5 "$ROOTFS.log" >&2; die "debootstrap failed (log $ROOTFS.log)"; }
            rm -f "$ROOTFS.log"
            # debootstrap writes only "bookworm main": add the updates and security suites so
            # packages installed on this base get their fixes.
            printf '%s\n' "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
                "deb ${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security} bookworm-security main" \
                > "$ROOTFS/etc/apt/sources.list"
            # buildah 1.28 (bookworm) has no `import`: unpack into a scratch container, commit it.
            CTR=$("${B[@]}" from scratch)
            MNT=$("${B[@]}" mount "$CTR")
            tar -C "$ROOTFS" -c . | tar -C "$MNT" -x --numeric-owner
            "${B[@]}" umount "$CTR" >/dev/null
            "${B[@]}" config --cmd /bin/bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$CTR"
            "${B[@]}" commit -q "$CTR" "$DEBIAN_BASE" >/dev/null
            "${B[@]}" rm "$CTR" >/dev/null
            rm -rf "$ROOTFS"
            trap - EXIT
        fi
        BASE=$DEBIAN_BASE
    fi
    ARGS+=(--build-arg "BASE=$BASE")

    # The CPU wheel and the CA bundle of this machine, mounted read-only into every RUN step.
    if [ "$VARIANT" = cpu ] && [ -n "${PIP_FIND_LINKS:-}" ]; then
        for d in $PIP_FIND_LINKS; do
            if [ -d "$d" ] && compgen -G "$d/torch-2.13.0+cpu-*.whl" >/dev/null; then
                ARGS+=(-v "$d:/wheels:ro"); break
            fi
        done
    fi
    [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ] && ARGS+=(-v "$PIP_CERT:/etc/serendip-build/pip-ca.pem:ro")

    echo ">> buildah bud $TAG (base $BASE, torch from ${TORCH_INDEX}$(printf '%s' "${ARGS[*]}" | grep -q /wheels && echo ' or the mounted wheel directory'))"
    "${B[@]}" bud --isolation chroot --layers "${ARGS[@]}" "$ROOT"
}

main "$@"
