#!/usr/bin/env bash
# Run the whole test suite, installing and starting what it needs first.
#   tools/run-tests.sh [pytest args]
#
# It installs Nova 34 and Placement (test-requirements-nova.txt) and the
# rtmig driver shim into Nova's package directory, for the in-process Nova
# tests in tests/functional/.  As root (CI is root) it also installs the system packages the host and
# testbed tests use (QEMU, libvirt, iproute2; gcc, busybox-static and a
# Debian kernel for the guest image), gives /dev/kvm the group udev would give it
# (libvirt otherwise re-probes QEMU for minutes on every domain start), and
# starts virtlogd and libvirtd.  Without root those tests skip, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP=("$PY" -m pip install --quiet --disable-pip-version-check)
APT_PACKAGES=(qemu-system-x86 libvirt-daemon-system libvirt-daemon-driver-qemu
              libvirt-clients libvirt-dev pkg-config iproute2
              gcc libc6-dev busybox-static linux-image-amd64)

if [ "$(id -u)" = 0 ]; then
    missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
            || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "== installing system packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if [ -c /dev/kvm ] && getent group kvm >/dev/null; then
        chgrp kvm /dev/kvm && chmod 660 /dev/kvm
    fi
    pgrep -x virtlogd >/dev/null || virtlogd -d
    if ! pgrep -x libvirtd >/dev/null; then
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
    "${PIP[@]}" "libvirt-python>=9.0,<10"
fi
"${PIP[@]}" --no-deps -e .
# Nova loads compute drivers only from its own package directory: put the
# rtmig driver shim there (tests/functional/ boot servers on it).
rtmig-nova-shim install
echo "== running the tests"
exec "$PY" -m pytest tests "$@"
