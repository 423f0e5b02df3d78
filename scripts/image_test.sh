#!/usr/bin/env bash
# `make image-test`: build the real Dockerfile and run the image on this machine, without a registry or Docker.
#
#   1. a bookworm root file system with python3 and a venv (mmdebstrap, unshare mode: mounts nothing on the
#      host), imported as the base image localhost/stord-base:local;
#   2. `buildah bud --isolation chroot` of ./Dockerfile with --build-arg BASE_IMAGE=that base;
#   3. podman (runtime runc, host network) runs the image: HEALTHCHECK through `podman healthcheck run`, the
#      non-root user, a named volume that outlives its container, SIGTERM ending with exit status 0; then
#      with TLS and an API key, the HEALTHCHECK speaking TLS and the host's `stord` CLI calling in with both.
#
# Everything lives in one folder of its own (image storage included). On exit, whatever happened, the folder is
# removed, and the run fails if /dev/null is no longer a character device or a mount was left behind (the mount
# table is compared with the one at the start; changes other processes make meanwhile are reported only).
# Needs root and the Debian packages below (installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

STORD_CLI=${STORD_CLI:-.venv/bin/stord}
PYTHON=${PYTHON:-.venv/bin/python}
WORK=$(mktemp -d /tmp/stord-image-test.XXXXXX)
STORAGE=(--root "$WORK/storage" --runroot "$WORK/run" --storage-driver overlay)
PODMAN=(podman "${STORAGE[@]}" --cgroup-manager cgroupfs --events-backend file --tmpdir "$WORK/tmp")
BUILDAH=(buildah "${STORAGE[@]}")
RUN=(run --runtime runc --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 --network host)
BASE=localhost/stord-base:local
IMAGE=localhost/stord:image-test
STARTED=$SECONDS

# Without systemd, podman says so on every run and removal; health checks run on demand, so it does not matter.
quiet() { "$@" 2> >(grep -v 'unable to get systemd connection' >&2); }
# Mount point, file system type and source of every mount (the fields after mountinfo's "-" separator).
mounts() { awk '{for (i = 7; $i != "-"; i++); print $5, $(i + 1), $(i + 2)}' /proc/self/mountinfo | sort; }
step() { printf '\n== %s (%ss)\n' "$*" "$((SECONDS - STARTED))"; }
fail() { echo "image-test: FAILED: $*" >&2; exit 1; }

MOUNTS_BEFORE=$(mounts)

cleanup() {
    local status=$?
    set +e
    "${PODMAN[@]}" rm --all --force --time 0 >/dev/null 2>&1
    "${BUILDAH[@]}" rm --all >/dev/null 2>&1
    "${PODMAN[@]}" volume rm --all --force >/dev/null 2>&1
    "${PODMAN[@]}" rmi --all --force >/dev/null 2>&1
    # Overlay layers and the storage root may stay mounted inside the folder: unmount them before removing it.
    awk -v work="$WORK" 'index($5, work) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r target; do
        umount "$target" 2>/dev/null || umount -l "$target"
    done
    rm -rf "$WORK"
    local problems=""
    [ -c /dev/null ] || problems+=" /dev/null is no longer a character device;"
    local added removed ours
    added=$(comm -13 <(echo "$MOUNTS_BEFORE") <(mounts))
    removed=$(comm -23 <(echo "$MOUNTS_BEFORE") <(mounts))
    # The table is the whole machine's, which other processes change too (test harnesses making network
    # namespaces, say). A mount is this run's when it is where container tools mount: fail on those; report
    # the rest.
    ours=$(echo "$added" | grep -E "^($WORK|/var/lib/containers|/run/containers|/var/run/containers|/run/libpod|/run/netns/(netns|cni)-|/var/lib/cni)|^[^ ]+ overlay " || true)
    if [ -n "$ours" ]; then
        problems+=" mounts left behind:"$'\n'"$ours"
    fi
    if [ -n "$added$removed" ] && [ -z "$ours" ]; then
        echo "image-test: the mount table changed meanwhile, not by this run (added: ${added:-none}; removed: ${removed:-none})"
    fi
    if [ -n "$problems" ]; then
        echo "image-test: clean-up check failed:$problems" >&2
        exit 1
    fi
    if [ "$status" -eq 0 ]; then
        echo "image-test: passed in $((SECONDS - STARTED)) s; /dev/null a character device, no mount left behind"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$WORK/tmp"

step "tools"
missing=()
for tool in buildah podman runc mmdebstrap newuidmap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing for: ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        buildah podman runc uidmap mmdebstrap >/dev/null
fi
buildah --version && podman --version && runc --version | head -1

step "base image: Debian bookworm with python3 and a venv (mmdebstrap)"
# Debian's python3 has no pip; the venv's has, and goes first on PATH as in python:3.11-slim.
# dpkg without fsync (force-unsafe-io): the tarball is written once at the end, so nothing is lost by it.
mmdebstrap --mode=unshare --variant=minbase --quiet --dpkgopt=force-unsafe-io \
    --aptopt='Acquire::Languages "none"' \
    --include=python3,python3-venv,ca-certificates \
    --customize-hook='chroot "$1" python3 -m venv /opt/venv' \
    --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
    bookworm "$WORK/rootfs.tar"
"${PODMAN[@]}" import --quiet \
    --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$WORK/rootfs.tar" "$BASE" >/dev/null
rm "$WORK/rootfs.tar"

step "build ./Dockerfile with buildah (BASE_IMAGE=$BASE)"
# The network here presents its own certificate authority: pip in the build trusts the host's bundle, mounted
# read-only for the build only, never copied into the image.
"${BUILDAH[@]}" bud --quiet --isolation chroot --format docker --pull=never --layers \
    --build-arg "BASE_IMAGE=$BASE" \
    -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
    -t "$IMAGE" . >/dev/null
"${PODMAN[@]}" image inspect --format 'image {{.Id}}: {{.Size}} bytes, user {{.Config.User}}' "$IMAGE" \
    | sed 's/sha256://' | cut -c1-200
[ "$("${PODMAN[@]}" image inspect --format '{{.Config.User}}' "$IMAGE")" = stord ] || fail "the image's user is not stord"
"${PODMAN[@]}" image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE" | grep -q '"stord","health"' \
    || fail "the image has no HEALTHCHECK running stord health"

free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_healthy() {  # NAME: the image's own HEALTHCHECK, until it passes (30 s at most)
    local deadline=$((SECONDS + 30))
    until "${PODMAN[@]}" healthcheck run "$1" >/dev/null 2>&1; do
        if [ "$("${PODMAN[@]}" inspect --format '{{.State.Running}}' "$1")" != true ]; then
            "${PODMAN[@]}" logs "$1" >&2
            fail "$1 exited before it became healthy"
        fi
        [ $SECONDS -lt $deadline ] || { "${PODMAN[@]}" logs "$1" >&2; fail "$1 not healthy within 30 s"; }
        sleep 0.5
    done
    echo "$1: HEALTHCHECK passed (podman healthcheck run)"
}

stop_with_sigterm() {  # NAME: SIGTERM, then the exit status must be 0
    local began=$SECONDS
    quiet "${PODMAN[@]}" kill --signal TERM "$1" >/dev/null
    local code
    code=$("${PODMAN[@]}" wait "$1")
    [ "$code" = 0 ] || { "${PODMAN[@]}" logs "$1" >&2; fail "$1 exited with $code after SIGTERM"; }
    "${PODMAN[@]}" logs "$1" 2>&1 | grep -q '"event":"stopped"' || fail "$1 logged no stopped event"
    echo "$1: SIGTERM -> exit status 0 within $((SECONDS - began)) s"
}

step "run: default command (serve --insecure), a named volume, the non-root user"
PORT=$(free_port)
quiet "${PODMAN[@]}" "${RUN[@]}" -d --name plain -e "STORD_LISTEN=127.0.0.1:$PORT" -v stord-data:/data "$IMAGE" >/dev/null
wait_healthy plain
[ "$("${PODMAN[@]}" exec plain id -u)" = 10001 ] || fail "the daemon does not run as uid 10001"
"${PODMAN[@]}" top plain user comm | grep -q '^stord' || fail "the serving process is not the stord user's"
echo "plain: runs as $("${PODMAN[@]}" exec plain id -un) (uid 10001)"
"$STORD_CLI" kv set kept "in the volume" --address "127.0.0.1:$PORT" --namespace image
"${PODMAN[@]}" exec plain stord health --service stord.v1.DatabaseService
"${PODMAN[@]}" exec plain ls -l /data/stord.db
stop_with_sigterm plain
quiet "${PODMAN[@]}" rm plain >/dev/null

PORT=$(free_port)
quiet "${PODMAN[@]}" "${RUN[@]}" -d --name again -e "STORD_LISTEN=127.0.0.1:$PORT" -v stord-data:/data "$IMAGE" >/dev/null
wait_healthy again
value=$("$STORD_CLI" kv get kept --address "127.0.0.1:$PORT" --namespace image)
[ "$value" = "in the volume" ] || fail "the volume lost the key: got '$value'"
echo "again: a new container on the same volume reads the key the first one wrote"
stop_with_sigterm again

step "run: TLS and an API key"
mkdir -p "$WORK/secrets"
"$PYTHON" -c 'import sys; from pathlib import Path; from tests.harness.certs import make_certificates
make_certificates(Path(sys.argv[1]))' "$WORK/secrets"
KEY=$("$STORD_CLI" keys --file "$WORK/secrets/keys.yaml" add --namespace shop --principal shop-api --role read-write)
chown -R 10001 "$WORK/secrets"  # the daemon reads them as uid 10001
PORT=$(free_port)
quiet "${PODMAN[@]}" "${RUN[@]}" -d --name secure -v "$WORK/secrets:/etc/stord:ro" \
    -e "STORD_LISTEN=127.0.0.1:$PORT" \
    -e STORD_TLS_CERT=/etc/stord/server.pem -e STORD_TLS_KEY=/etc/stord/server.key \
    -e STORD_TLS_CA=/etc/stord/ca.pem -e STORD_API_KEYS_FILE=/etc/stord/keys.yaml \
    "$IMAGE" serve >/dev/null
wait_healthy secure
TLS=(--address "127.0.0.1:$PORT" --tls-ca "$WORK/secrets/ca.pem")
"$STORD_CLI" kv set greeting hello "${TLS[@]}" --api-key "$KEY"
[ "$("$STORD_CLI" kv get greeting "${TLS[@]}" --api-key "$KEY")" = hello ] || fail "TLS + key: wrong value"
echo "secure: the host's stord CLI set and got a key over TLS with the API key"
if "$STORD_CLI" kv get greeting "${TLS[@]}" 2>"$WORK/no-key.txt"; then fail "a call without a key succeeded"; fi
grep -q UNAUTHENTICATED "$WORK/no-key.txt" || fail "no key: $(cat "$WORK/no-key.txt")"
echo "secure: without the key: $(head -1 "$WORK/no-key.txt")"
if "$STORD_CLI" kv get greeting --address "127.0.0.1:$PORT" --api-key "$KEY" --timeout 2 2>"$WORK/plain.txt"; then
    fail "a plaintext call to the TLS daemon succeeded"
fi
grep -q "serves TLS" "$WORK/plain.txt" || fail "plaintext: $(cat "$WORK/plain.txt")"
echo "secure: plaintext: $(tail -1 "$WORK/plain.txt")"
stop_with_sigterm secure
