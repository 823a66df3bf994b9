"""The oslo.privsep context for rtmig-nova's privileged operations.

Everything that needs root (scheduling policies of other processes' threads,
traffic control) runs through this context, as Nova does it: a privsep
daemon holding only the capabilities below.
"""

from oslo_privsep import capabilities
from oslo_privsep import priv_context

sys_admin_pctxt = priv_context.PrivContext(
    "rtmig_nova",
    cfg_section="rtmig_privileged",
    pypath=__name__ + ".sys_admin_pctxt",
    capabilities=[capabilities.CAP_SYS_NICE,
                  capabilities.CAP_NET_ADMIN,
                  capabilities.CAP_SYS_ADMIN],
)
