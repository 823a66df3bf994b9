"""The [rtmig] options: defaults, parsing and the generated sample."""

import os
import shutil
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest
from oslo_config import cfg

from rtmig_nova.conf import model as model_conf
from rtmig_nova.conf import opts

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
GENERATOR_CONF = os.path.join(
    REPO, 'etc', 'rtmig-nova', 'rtmig-nova-config-generator.conf')

EXPECTED_DEFAULTS = {
    'model': 'precopy',
    'dirty_log': 'sync',
    'send_order': 'address',
    'qemu_version': 'auto',
    'check_interval': 0.1,
    'switchover_time': 0.0,
    'setup_time': 0.0,
    'setup_time_sd': 0.0,
    'send_rate_sd': 0.0,
    'max_rounds': 200,
    'confidence': 0.95,
    'cpu_cost_per_page': 2.5e-06,
    'cpu_margin': 1.25,
    'deadline_period': 0.01,
    'cgroup_period': 100000,
    'default_profile': 'builtin:default',
    'reservation_state_dir': '/var/lib/rtmig-nova/reservations',
    # The Nova layer's (rtmig_nova/conf/nova.py).
    'link_capacity': 1.25e9,
    'migration_link_share': 0.4,
    'migration_cpu': 0.5,
    'max_evacuation_time': 0.0,
    'rt_cpu_count': 0,
    'profile_dir': '/var/lib/rtmig-nova/profiles',
    'headroom_weight_multiplier': 1.0,
    'instance_profile_dir': '/var/lib/rtmig-nova/instance-profiles',
    'migration_profile_sources': ['instance', 'dirty_rate', 'flavor'],
    'enforce_vcpu_reservation': True,
    'migration_thread_deadline': True,
    'migration_thread_reclaim': True,
    'send_queue_cap': 0,
    'migration_interface': '',
    'migration_port_min': 49152,
    'migration_port_max': 49215,
    'dirty_rate_seconds': 1,
    'replan': True,
    'replan_interval': 1.0,
    'replan_abort': True,
}


def _rtmig_opts():
    groups = [(group, group_opts) for group, group_opts in opts.list_opts()
              if getattr(group, 'name', group) == 'rtmig']
    assert len(groups) == 1, groups
    return {opt.name: opt for opt in groups[0][1]}


def test_list_opts_has_every_option_with_its_default():
    found = _rtmig_opts()
    assert set(found) == set(EXPECTED_DEFAULTS)
    for name, default in EXPECTED_DEFAULTS.items():
        assert found[name].default == default, name


def test_every_option_has_help():
    for name, opt in _rtmig_opts().items():
        assert opt.help and 'Unit:' in opt.help, name


def test_choices():
    found = _rtmig_opts()
    assert set(found['dirty_log'].type.choices) == {'sync', 'clear'}
    assert set(found['send_order'].type.choices) == {'address', 'rate'}
    for name in ('dirty_log', 'send_order'):
        assert all(found[name].type.choices.values()), name


def test_global_conf_registers_group():
    from rtmig_nova import conf
    assert conf.CONF.rtmig.model == 'precopy'
    assert conf.CONF.rtmig.dirty_log == 'sync'


def _conf_from(tmp_path, text):
    path = tmp_path / 'rtmig.conf'
    path.write_text(textwrap.dedent(text))
    conf = cfg.ConfigOpts()
    model_conf.register_opts(conf)
    conf(args=['--config-file', str(path)], project='rtmig-nova',
         default_config_files=[], default_config_dirs=[])
    return conf


def test_config_file_sets_dirty_log(tmp_path):
    conf = _conf_from(tmp_path, """
        [rtmig]
        dirty_log = clear
        send_order = rate
        max_rounds = 30
        cpu_cost_per_page = 1e-6
        """)
    assert conf.rtmig.dirty_log == 'clear'
    assert conf.rtmig.send_order == 'rate'
    assert conf.rtmig.max_rounds == 30
    assert conf.rtmig.cpu_cost_per_page == pytest.approx(1e-6)
    assert conf.rtmig.model == 'precopy'


@pytest.mark.parametrize('line', [
    'dirty_log = bogus',
    'send_order = random',
    'qemu_version = ten',
    'qemu_version = 10',
    'max_rounds = 0',
    'confidence = 1.0',
    'cgroup_period = 999',
    'check_interval = 0',
])
def test_config_file_rejects_bad_value(tmp_path, line):
    conf = _conf_from(tmp_path, f"""
        [rtmig]
        {line}
        """)
    name = line.split('=')[0].strip()
    with pytest.raises(cfg.ConfigFileValueError):
        getattr(conf.rtmig, name)


def _entry_point_installed():
    eps = metadata.entry_points(group='oslo.config.opts')
    return any(ep.name == 'rtmig_nova' for ep in eps)


@pytest.mark.skipif(not _entry_point_installed(),
                    reason='rtmig-nova is not installed (pip install -e .): '
                           'the oslo.config.opts entry point is missing')
def test_generator_writes_sample(tmp_path):
    generator = shutil.which('oslo-config-generator')
    command = ([generator] if generator else
               [sys.executable, '-m', 'oslo_config.generator'])
    out = tmp_path / 'rtmig-nova.conf.sample'
    env = dict(os.environ)
    # Import this working tree's rtmig_nova, whatever copy is installed.
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (REPO, env.get('PYTHONPATH')) if p)
    subprocess.run(
        command + ['--config-file', GENERATOR_CONF,
                   '--output-file', str(out)],
        cwd=REPO, env=env, check=True, timeout=120,
        capture_output=True, text=True)
    sample = out.read_text()
    assert '[rtmig]' in sample
    assert '#dirty_log = sync' in sample
    assert '#model = precopy' in sample
    assert '#cgroup_period = 100000' in sample
    # oslo.log's options come with the second namespace.
    assert '#debug = false' in sample


def test_a_bad_option_in_a_file_is_named_at_start(tmp_path):
    """oslo.config checks a file's value only when it is read: the compute
    extension and the filter read every [rtmig] option at start."""
    from rtmig_nova import conf
    from rtmig_nova.conf import nova as nova_conf
    path = tmp_path / "nova.conf"
    path.write_text("[rtmig]\nmax_rounds = 20000\ncheck_interval = 0.1\n")
    local = cfg.ConfigOpts()
    model_conf.register_opts(local)
    nova_conf.register_opts(local)
    local(args=[], default_config_files=[str(path)],
          default_config_dirs=[])
    with pytest.raises(ValueError) as e:
        conf.check_options(local)
    message = str(e.value)
    assert message.startswith("[rtmig] max_rounds: ")
    assert "LocationInfo" not in message and str(path) in message
    path.write_text("[rtmig]\nmax_rounds = 200\n")
    local.reload_config_files()
    conf.check_options(local)           # every option readable
