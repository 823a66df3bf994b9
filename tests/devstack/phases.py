"""Runs devstack/plugin.sh's phases with the stand-ins of stubs.sh."""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def run_phases(tree, phases, services='n-cpu,n-sch', after_settings=''):
    """Sources devstack/settings then devstack/plugin.sh once per phase
    (e.g. ``stack install``) in one bash, as stack.sh does; returns the
    CompletedProcess.  ``after_settings``: bash run between the two (an
    operator's local.conf)."""
    script = textwrap.dedent('''\
        set -e
        source {root}/tests/devstack/stubs.sh
        DEST={tree}/opt DATA_DIR={tree}/data STACK_USER=$(id -un)
        NOVA_CONF_DIR={tree}/etc/nova
        NOVA_CONF=$NOVA_CONF_DIR/nova.conf
        NOVA_CPU_CONF=$NOVA_CONF_DIR/nova-cpu.conf
        RTMIG_NOVA_DIR={root}
        ENABLED_SERVICES={services}
        source {root}/devstack/settings
        {after_settings}
        ''').format(root=ROOT, tree=tree, services=services,
                    after_settings=after_settings)
    for phase in phases:
        script += 'source %s/devstack/plugin.sh %s\n' % (ROOT, phase)
    env = dict(os.environ, CALLS=os.path.join(tree, 'calls'),
               RTMIG_PYTHON=sys.executable, PYTHON=sys.executable)
    return subprocess.run(['bash', '-c', script], env=env,
                          capture_output=True, text=True, timeout=60)
