"""Tests on the real host: they need root (CI runs as root)."""

import os

import pytest

from rtmig_nova.enforce import privileged


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root: creates network "
                                       "namespaces, changes scheduling "
                                       "policies and qdiscs")
        for item in items:
            if "tests/host" in str(item.fspath):
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def privsep_in_process():
    # Run privileged functions in this (root) process instead of through a
    # privsep daemon, as Nova's tests do.
    privileged.sys_admin_pctxt.set_client_mode(False)
    yield
    privileged.sys_admin_pctxt.set_client_mode(True)
