"""The devstack plugin's phases (devstack/plugin.sh) run by bash against a
temporary tree with stand-ins for devstack's helpers (tests/devstack/
stubs.sh); its nova-rootwrap filter against the command oslo.privsep
builds, and (as root) a real privsep daemon started through nova-rootwrap
with it.  tests/functional/test_devstack_config.py starts Nova from the
nova.conf the phases write."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import types

import pytest

from tests.devstack.phases import ROOT
from tests.devstack.phases import run_phases


def read_conf(path, *opts):
    """Values of (section, option) in an ini file, read by oslo.config's
    own parser (what Nova reads), multi-valued options as lists."""
    from oslo_config import cfg
    sections = {}
    cfg.ConfigParser(path, sections).parse()
    return {opt: sections.get(opt[0], {}).get(opt[1]) for opt in opts}


@pytest.fixture
def tree():
    path = tempfile.mkdtemp(prefix='rtmig-devstack-')
    os.makedirs(os.path.join(path, 'etc', 'nova'))
    yield path
    shutil.rmtree(path, True)


def test_the_phases_configure_a_compute_and_a_scheduler(tree):
    proc = run_phases(tree, ['stack install', 'stack post-config'])
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(tree, 'calls')) as f:
        assert f.read().splitlines() == ['setup_develop ' + ROOT,
                                         'rtmig-nova-shim install']
    etc = os.path.join(tree, 'etc', 'nova')
    conf = read_conf(
        os.path.join(etc, 'nova.conf'), ('rtmig', 'link_capacity'),
        ('rtmig', 'migration_link_share'), ('rtmig', 'migration_cpu'),
        ('rtmig', 'model'), ('filter_scheduler', 'available_filters'),
        ('filter_scheduler', 'enabled_filters'),
        ('filter_scheduler', 'weight_classes'))
    assert conf[('rtmig', 'link_capacity')] == ['1.25e9']
    assert conf[('rtmig', 'migration_link_share')] == ['0.4']
    assert conf[('rtmig', 'model')] == ['precopy']
    # Nova's own defaults kept: a file without these options gets them
    assert conf[('filter_scheduler', 'available_filters')] == [
        'nova.scheduler.filters.all_filters',
        'rtmig_nova.scheduler.filters.all_filters']
    enabled, = conf[('filter_scheduler', 'enabled_filters')]
    assert enabled.split(',')[0] == 'ComputeFilter'
    assert enabled.split(',')[-1] == 'RTReservationFilter'
    assert conf[('filter_scheduler', 'weight_classes')] == [
        'nova.scheduler.weights.all_weighers,'
        'rtmig_nova.scheduler.weights.RTHeadroomWeigher']
    cpu = read_conf(os.path.join(etc, 'nova-cpu.conf'),
                    ('DEFAULT', 'compute_driver'),
                    ('rtmig', 'reservation_state_dir'),
                    ('rtmig', 'instance_profile_dir'))
    assert cpu[('DEFAULT', 'compute_driver')] == ['rtmig.RTLibvirtDriver']
    for key in (('rtmig', 'reservation_state_dir'),
                ('rtmig', 'instance_profile_dir')):
        path, = cpu[key]
        assert path.startswith(os.path.join(tree, 'data', 'rtmig-nova'))
        assert os.stat(path).st_mode & 0o777 == 0o700


def test_post_config_twice_adds_nothing_twice(tree):
    proc = run_phases(tree, ['stack post-config', 'stack post-config'],
                      after_settings='iniset $NOVA_CONF filter_scheduler '
                      'enabled_filters ComputeFilter')
    assert proc.returncode == 0, proc.stderr
    conf = read_conf(os.path.join(tree, 'etc', 'nova', 'nova.conf'),
                     ('filter_scheduler', 'available_filters'),
                     ('filter_scheduler', 'enabled_filters'))
    assert conf[('filter_scheduler', 'enabled_filters')] == [
        'ComputeFilter,RTReservationFilter']
    assert conf[('filter_scheduler', 'available_filters')] == [
        'nova.scheduler.filters.all_filters',
        'rtmig_nova.scheduler.filters.all_filters']


def test_a_scheduler_only_node_gets_no_driver(tree):
    proc = run_phases(tree, ['stack post-config'], services='n-sch')
    assert proc.returncode == 0, proc.stderr
    assert not os.path.exists(os.path.join(tree, 'etc', 'nova',
                                           'nova-cpu.conf'))


@pytest.mark.parametrize('setting', ['RTMIG_NOVA_LINK_CAPACITY',
                                     'RTMIG_NOVA_STATE_DIR', 'NOVA_CONF'])
def test_a_missing_setting_fails_the_phase_naming_it(tree, setting):
    proc = run_phases(tree, ['stack post-config'],
                      after_settings='%s=' % setting)
    assert proc.returncode == 1
    assert 'rtmig-nova: set %s ' % setting in proc.stderr
    # nothing was written before the check
    assert os.listdir(os.path.join(tree, 'etc', 'nova')) == []


def test_clean_removes_the_shim(tree):
    proc = run_phases(tree, ['clean'])
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(tree, 'calls')) as f:
        assert f.read().splitlines() == ['rtmig-nova-shim uninstall']


def _privsep_command(monkeypatch, config_file):
    """What oslo.privsep runs (after the root helper) to start rtmig's
    daemon from a service started with ``--config-file config_file``."""
    from oslo_privsep import priv_context
    from rtmig_nova.enforce import privileged

    class Conf:
        # the service's global CONF as helper_command reads it
        config_dir = None

        def __init__(self, files):
            self.config_file = files

        def __getitem__(self, section):        # [rtmig_privileged]
            return types.SimpleNamespace(helper_command=None)

    monkeypatch.setattr(priv_context, '_HELPER_COMMAND_PREFIX', [])
    monkeypatch.setattr(priv_context.cfg, 'CONF', Conf([config_file]))
    return privileged.sys_admin_pctxt.helper_command(
        '/tmp/tmpq1w2e3/privsep.sock')


def _nova_rootwrap_d():
    """The rootwrap.d the nova wheel installed (<prefix>/etc/nova), found
    without importing nova (that would monkey-patch this process)."""
    for prefix in (sys.prefix, sys.base_prefix):
        path = os.path.join(prefix, 'etc', 'nova', 'rootwrap.d')
        if os.path.isdir(path):
            return path
    pytest.fail('no etc/nova/rootwrap.d under %s: is nova installed?'
                % sys.prefix)


def test_novas_rootwrap_admits_rtmigs_privsep_daemon(monkeypatch):
    # nova-compute starts every privsep daemon through its root helper
    # (sudo nova-rootwrap /etc/nova/rootwrap.conf): the filters Nova
    # installs, and oslo.rootwrap's own, must admit rtmig's
    from oslo_rootwrap import wrapper
    filters = wrapper.load_filters([_nova_rootwrap_d()])
    cmd = _privsep_command(monkeypatch, '/etc/nova/nova-cpu.conf')
    assert cmd[0] == 'privsep-helper'
    assert 'rtmig_nova.enforce.privileged.sys_admin_pctxt' in cmd
    bin_dir = [os.path.dirname(sys.executable)]     # privsep-helper's
    wrapper.match_filter(filters, cmd, bin_dir)     # raises if refused


@pytest.mark.skipif(os.geteuid() != 0, reason='starts a root daemon')
def test_the_daemon_starts_through_nova_rootwrap(tmp_path):
    """A real privsep daemon of rtmig's context, started by nova-rootwrap
    with Nova's filters (as a non-root nova-compute starts it, minus
    sudo), sets SCHED_DEADLINE on a thread and puts it back."""
    from rtmig_nova.enforce import deadline
    conf = tmp_path / 'rootwrap.conf'
    conf.write_text('[DEFAULT]\nfilters_path=%s\nexec_dirs=%s\n'
                    'use_syslog=False\n' % (
                        _nova_rootwrap_d(), os.path.dirname(sys.executable)))
    rootwrap = os.path.join(os.path.dirname(sys.executable), 'nova-rootwrap')
    target = subprocess.Popen(['sleep', '60'])
    try:
        code = textwrap.dedent('''\
            import os, sys
            from oslo_privsep import priv_context
            priv_context.init(root_helper=[sys.argv[1], sys.argv[2]])
            from rtmig_nova.enforce import deadline, privileged
            assert privileged.sys_admin_pctxt.client_mode
            tid = int(sys.argv[3])
            before = deadline.get_attr(tid)
            deadline.set_deadline(tid, 1000000, 10000000, 10000000)
            during = deadline.get_attr(tid)
            deadline.set_attr(tid, before.as_tuple())
            print(during.policy, during.runtime_ns, deadline.get_attr(
                tid).policy)
            ''')
        proc = subprocess.run(
            [sys.executable, '-c', code, rootwrap, str(conf),
             str(target.pid)], capture_output=True, text=True, timeout=60,
            cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == [str(deadline.SCHED_DEADLINE),
                                       '1000000',
                                       str(deadline.SCHED_OTHER)]
    finally:
        target.kill()
        target.wait()
