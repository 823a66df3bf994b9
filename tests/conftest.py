"""Fixtures shared by the test packages."""

import os
import shutil
import tempfile

import pytest


@pytest.fixture(scope="session")
def guest_boot_files():
    """(kernel, initrd) of the testbed guest, built once per session in a
    directory QEMU's own user (libvirt-qemu) can read: pytest's tmp dirs
    are root-only.  Missing Debian packages are installed as root, else
    the test skips naming them."""
    from rtmig_nova.testbed import image
    try:
        image.ensure_packages(image.ALL_PACKAGES)
    except image.ImageError as e:
        pytest.skip(str(e))
    workdir = tempfile.mkdtemp(prefix="rtmig-guest-image-")
    try:
        os.chmod(workdir, 0o755)
        yield image.find_kernel(), image.build_initramfs(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
