"""tests/host's throw-away domains: a crashed run's are removed, a live
run's are left alone."""

import os
import subprocess

from tests.host import domains


class _Dom:
    def __init__(self, name, active=True):
        self._name, self.active, self.destroyed = name, active, False

    def name(self):
        return self._name

    def isActive(self):
        return self.active

    def destroy(self):
        self.destroyed = True


class _Conn:
    def __init__(self, doms):
        self.doms = doms

    def listAllDomains(self):
        return list(self.doms)


def _dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid        # reaped: no such process (unless reused at once)


def test_only_domains_of_gone_test_processes_are_destroyed():
    live = _Dom(f"{domains.PREFIX}{os.getppid()}-0a1b2c3d")
    ours = _Dom(f"{domains.PREFIX}{os.getpid()}-0a1b2c3e")
    dead = _Dom(f"{domains.PREFIX}{_dead_pid()}-0a1b2c3f")
    old = _Dom(f"{domains.PREFIX}0a1b2c40")          # before pids in names
    other = _Dom("guest-of-someone-else")
    off = _Dom(f"{domains.PREFIX}{_dead_pid()}-0a1b2c41", active=False)
    domains.remove_stale(_Conn([live, ours, dead, old, other, off]))
    assert [d.destroyed for d in (live, ours, dead, old, other, off)] == [
        False, False, True, True, False, False]
