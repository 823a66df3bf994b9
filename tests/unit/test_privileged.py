"""The privsep context module imports quietly."""

import subprocess
import sys


def test_importing_the_privsep_context_prints_no_eventlet_notice():
    # a fresh interpreter: eventlet warns once per process, on its import
    out = subprocess.run(
        [sys.executable, "-W", "default", "-c",
         "import rtmig_nova.enforce.privileged"],
        capture_output=True, text=True, timeout=60, check=True)
    assert "Eventlet is deprecated" not in out.stderr
    assert out.stderr == ""
