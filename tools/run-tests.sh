#!/usr/bin/env bash
# Run the whole test suite, installing and starting what it needs first.
#   tools/run-tests.sh [pytest args]
#
# It installs Nova 34 and Placement (test-requirements-nova.txt) and the
# rtmig driver shim into Nova's package directory, for the in-process Nova
# tests in tests/functional/.  As root (CI is root) it also installs the system packages the host and
# testbed tests use (QEMU 10 and libvirt 11 from Debian's
# bookworm-backports, iproute2; gcc, busybox-static and a Debian kernel for
# the guest image), gives /dev/kvm the group udev would give it
# (libvirt otherwise re-probes QEMU for minutes on every domain start), and
# starts virtlogd and libvirtd.  Without root those tests skip, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP=("$PY" -m pip install --quiet --disable-pip-version-check)
# QEMU and libvirt come from Debian's bookworm-backports (QEMU 10.0,
# libvirt 11.3): bookworm's QEMU 7.2 under TCG loses guest writes in live
# migrations longer than a few seconds (docs/testbed.md).
BACKPORTS=bookworm-backports
VIRT_PACKAGES=(qemu-system-x86 libvirt-daemon-system libvirt-daemon-driver-qemu
               libvirt-clients libvirt-dev)
QEMU_MIN=10.0
LIBVIRT_MIN=11.3
APT_PACKAGES=(pkg-config iproute2 gcc libc6-dev busybox-static
              linux-image-amd64)

# Host A's daemons by their pid files: a testbed's host B runs daemons of
# the same names in the same pid namespace.
LIBVIRTD_PID=/run/libvirtd.pid
VIRTLOGD_PID=/run/virtlogd.pid

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"
}

version_of() {        # the package's version without its epoch, or ""
    local v
    v=$(dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true)
    echo "${v#*:}"
}

running() {           # the daemon of pid file $1 runs
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

if [ "$(id -u)" = 0 ]; then
    missing=()
    for p in "${APT_PACKAGES[@]}"; do
        installed "$p" || missing+=("$p")
    done
    virt_stale=0
    for p in "${VIRT_PACKAGES[@]}"; do
        installed "$p" || virt_stale=1
    done
    dpkg --compare-versions "$(version_of qemu-system-x86)" ge "$QEMU_MIN" ||
        virt_stale=1
    dpkg --compare-versions "$(version_of libvirt-daemon)" ge "$LIBVIRT_MIN" ||
        virt_stale=1
    sources=$(apt-cache policy 2>/dev/null || true)
    if [ $virt_stale = 1 ] && ! grep -q " $BACKPORTS/main " <<<"$sources"; then
        . /etc/os-release
        if [ "${VERSION_CODENAME:-}" != bookworm ]; then
            echo "== $VERSION_CODENAME: not adding $BACKPORTS; install QEMU" \
                 ">= $QEMU_MIN and libvirt >= $LIBVIRT_MIN yourself" >&2
            exit 1
        fi
        echo "== adding Debian's $BACKPORTS to apt's sources"
        printf '%s\n' "Types: deb" "URIs: http://deb.debian.org/debian" \
            "Suites: $BACKPORTS" "Components: main" \
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" \
            > "/etc/apt/sources.list.d/rtmig-$BACKPORTS.sources"
    fi
    if [ ${#missing[@]} -gt 0 ] || [ $virt_stale = 1 ]; then
        echo "== installing system packages: ${missing[*]}" \
             "$([ $virt_stale = 1 ] && echo "${VIRT_PACKAGES[*]} (from $BACKPORTS)")"
        apt-get update -qq
        apt_install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
                     --no-install-recommends -o Dpkg::Options::=--force-confold)
        if [ ${#missing[@]} -gt 0 ]; then
            "${apt_install[@]}" "${missing[@]}" >/dev/null
        fi
        if [ $virt_stale = 1 ]; then
            "${apt_install[@]}" -t "$BACKPORTS" "${VIRT_PACKAGES[@]}" >/dev/null
        fi
    fi
    if [ -c /dev/kvm ] && getent group kvm >/dev/null; then
        chgrp kvm /dev/kvm && chmod 660 /dev/kvm
    fi
    # A libvirtd started before an upgrade runs the old code: restart it;
    # virtlogd re-executes itself in place on SIGUSR1, keeping the console
    # logs of running domains.
    want=$(libvirtd --version | awk '{print $NF}')
    have=$(virsh -c qemu:///system version --daemon 2>/dev/null |
           awk '/daemon/ {print $NF}' || true)
    if running "$LIBVIRTD_PID" && [ -n "$have" ] && [ "$have" != "$want" ]; then
        echo "== restarting libvirtd $have -> $want"
        running "$VIRTLOGD_PID" && kill -USR1 "$(cat "$VIRTLOGD_PID")"
        old=$(cat "$LIBVIRTD_PID")
        kill "$old"
        for _ in $(seq 100); do
            kill -0 "$old" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$old" 2>/dev/null; then
            echo "== libvirtd $old did not exit in 20 s" >&2
            exit 1
        fi
    fi
    running "$VIRTLOGD_PID" || virtlogd -d
    if ! running "$LIBVIRTD_PID"; then
        libvirtd -d
        for _ in $(seq 50); do
            virsh -c qemu:///system version >/dev/null 2>&1 && break
            sleep 0.2
        done
    fi
fi

echo "== installing rtmig-nova and its test requirements (Nova 34 included)"
"${PIP[@]}" -r requirements.txt -r test-requirements.txt \
    -r test-requirements-nova.txt
if pkg-config --exists libvirt 2>/dev/null; then
    # the bindings of the libvirt installed (its C API, its constants)
    "${PIP[@]}" "libvirt-python==$(pkg-config --modversion libvirt)"
fi
"${PIP[@]}" --no-deps -e .
# Nova loads compute drivers only from its own package directory: put the
# rtmig driver shim there (tests/functional/ boot servers on it).
rtmig-nova-shim install
echo "== running the tests"
exec "$PY" -m pytest tests "$@"
