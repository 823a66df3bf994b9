"""The oslo.privsep context for rtmig-nova's privileged operations.

Everything that needs root (scheduling policies of other processes' threads,
traffic control, a socket option on QEMU's migration socket) runs through
this context, as Nova does it: a privsep daemon holding only the
capabilities below.
"""

import contextlib
import os
import warnings

with warnings.catch_warnings():
    # oslo.privsep imports eventlet only to see whether something else
    # monkey-patched it; eventlet's own deprecation notice, printed on every
    # rtmig command, is not for rtmig's users (Nova's services import
    # eventlet before this anyway)
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    from oslo_privsep import capabilities
    from oslo_privsep import priv_context

sys_admin_pctxt = priv_context.PrivContext(
    "rtmig_nova",
    cfg_section="rtmig_privileged",
    pypath=__name__ + ".sys_admin_pctxt",
    capabilities=[capabilities.CAP_SYS_NICE,
                  capabilities.CAP_NET_ADMIN,
                  capabilities.CAP_SYS_ADMIN,
                  # pidfd_getfd(2) on QEMU's socket (send_queue)
                  capabilities.CAP_SYS_PTRACE],
)


@contextlib.contextmanager
def in_process_as_root():
    """As root, run the privileged operations in this process (an
    operator's command or a testbed experiment has nothing to separate
    from them); otherwise they go through oslo.privsep's daemon (``sudo
    privsep-helper``, as in Nova)."""
    if os.geteuid() != 0:
        yield
        return
    previous = sys_admin_pctxt.client_mode
    sys_admin_pctxt.set_client_mode(False)
    try:
        yield
    finally:
        sys_admin_pctxt.set_client_mode(previous)
