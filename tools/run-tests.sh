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
APT_PACKAGES=(pkg-config iproute2 gcc libc6-dev busybox-static
              linux-image-amd64)

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"
}

if [ "$(id -u)" = 0 ]; then
    if ! grep -rqs "^Suites:.*\b$BACKPORTS\b" /etc/apt/sources.list.d/ &&
       ! grep -qs "^deb .* $BACKPORTS " /etc/apt/sources.list; then
        echo "== adding Debian's $BACKPORTS to apt's sources"
        printf '%s\n' "Types: deb" "URIs: http://deb.debian.org/debian" \
            "Suites: $BACKPORTS" "Components: main" \
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" \
            > "/etc/apt/sources.list.d/rtmig-$BACKPORTS.sources"
    fi
    missing=()
    for p in "${APT_PACKAGES[@]}"; do
        installed "$p" || missing+=("$p")
    done
    virt_stale=0
    for p in "${VIRT_PACKAGES[@]}"; do
        installed "$p" || virt_stale=1
    done
    qemu_version=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null |
                   sed 's/^[0-9]*://')
    dpkg --compare-versions "${qemu_version:-0}" ge "$QEMU_MIN" || virt_stale=1
    if [ ${#missing[@]} -gt 0 ] || [ $virt_stale = 1 ]; then
        echo "== installing system packages: ${missing[*]}" \
             "$([ $virt_stale = 1 ] && echo "${VIRT_PACKAGES[*]} (from $BACKPORTS)")"
        apt-get update -qq
        if [ ${#missing[@]} -gt 0 ]; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends "${missing[@]}" >/dev/null
        fi
        if [ $virt_stale = 1 ]; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends -t "$BACKPORTS" \
                "${VIRT_PACKAGES[@]}" >/dev/null
        fi
    fi
    if [ -c /dev/kvm ] && getent group kvm >/dev/null; then
        chgrp kvm /dev/kvm && chmod 660 /dev/kvm
    fi
    # A libvirtd started before an upgrade runs the old code: restart it.
    want=$(libvirtd --version | awk '{print $NF}')
    have=$(virsh -c qemu:///system version --daemon 2>/dev/null |
           awk '/daemon/ {print $NF}' || true)
    if pgrep -x libvirtd >/dev/null && [ "$have" != "$want" ]; then
        echo "== restarting libvirtd ${have:-?} -> $want"
        pkill -x libvirtd || true
        pkill -x virtlogd || true
        for _ in $(seq 50); do
            pgrep -x libvirtd >/dev/null || break
            sleep 0.2
        done
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
    # the bindings of the libvirt installed (its C API, its constants)
    "${PIP[@]}" "libvirt-python==$(pkg-config --modversion libvirt)"
fi
"${PIP[@]}" --no-deps -e .
# Nova loads compute drivers only from its own package directory: put the
# rtmig driver shim there (tests/functional/ boot servers on it).
rtmig-nova-shim install
echo "== running the tests"
exec "$PY" -m pytest tests "$@"
