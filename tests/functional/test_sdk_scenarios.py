# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""The real-cloud suite's scenarios (tests/devstack/scenarios.py,
openstacksdk) against the in-process cloud's API on a loopback socket
(tests/functional/loopback_cloud.py): the same code that runs against a
devstack (tests/devstack/test_real_cloud.py), with this cloud's facts and
its fake's hooks passed in, then checks of what only the fake shows (what
libvirt was told, what the source held).

The SDK runs in this process: its (eventlet-patched) sockets yield to the
API's green server, as Nova's own clients' do."""

import contextlib
import os
import subprocess
import sys
import tempfile
import time

from oslo_messaging.notify import _impl_test

from rtmig_nova import conf
from rtmig_nova.enforce import deadline
# numpy and scipy imported now: Nova's test base mocks os.uname later
from rtmig_nova.model import DirtyProfile  # noqa: F401
from tests.devstack import scenarios
from tests.functional import base
from tests.functional import live_migration_base
from tests.functional import loopback_cloud

CONF = conf.CONF
NO_SPEED_LIMIT = 8796093022207      # MiB/s, libvirt's default
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
REAL_SUITE_TIMEOUT = 300            # s for the real-cloud suite's run


class SDKScenariosTest(live_migration_base.RTLiveMigrationBase):

    def setUp(self):
        super().setUp()
        self.start_rt_computes(2, cpus=4)
        self.cloud = self.useFixture(loopback_cloud.LoopbackCloud(
            self.glance, self.api.project_id))
        # only the loopback cloud's clouds.yaml, none of this machine's
        self.conn = scenarios.connect(
            'rtmig-test', config_files=[self.cloud.clouds_yaml],
            api_timeout=loopback_cloud.CLI_TIMEOUT)
        self.addCleanup(self.conn.close)
        self.facts = scenarios.CloudFacts(
            source='compute1', destination='compute2',
            image=base.IMAGE_UUID, networks='none', flavor_ram_mb=64,
            flavor_disk_gb=1, timeout=60, poll=0.1,
            notifications=self._notifications,
            migration_running=self._fake_job_running,
            slow_migrations=self._slow_migrations,
            place_profile=self._place_profile)

    # -- this cloud's hooks ------------------------------------------------

    def _notifications(self):
        return [(msg['event_type'], msg['payload'])
                for _ctx, msg, _prio, _retry in _impl_test.NOTIFICATIONS
                if msg['event_type'].startswith('rtmig.')]

    def _fake_job_running(self, conn, server, migration):
        # The migration record is "running" before migrateToURI3 starts
        # the fake's job: an abort before that would be lost.
        self.assertTrue(self.migrating.wait(30))
        time.sleep(1.0)         # Nova's monitor: the thread's reservation

    @contextlib.contextmanager
    def _slow_migrations(self):
        self.migrating.clear()
        before, self.migration_seconds = self.migration_seconds, 30
        try:
            yield
        finally:
            self.migration_seconds = before

    def _place_profile(self, server_id, profile):
        profile.save(os.path.join(self.profile_dir, server_id + '.json.gz'))

    # -- the scenarios -----------------------------------------------------

    def test_rt_servers_migrate_without_and_with_a_host(self):
        result = scenarios.migrate_without_and_with_host(
            self.conn, self.facts)
        # the scheduler's choice: the one other host
        self.assertEqual(['compute2'] * 2,
                         [s.compute_host for s in result['servers']])
        self.assertEqual([['compute1', True]] * 2,
                         self.migration_connections)
        pl = self.expected_plan()
        plans = result['plans']
        self.assertEqual({'flavor'},
                         {p['profile_source'] for p in plans.values()})
        self.assertEqual({pl.bandwidth},
                         {p['bandwidth_bytes_per_s'] for p in plans.values()})
        # what the notifications say is what libvirt was told
        self.assertEqual(
            [(s.id, round(pl.bandwidth / 2 ** 20))
             for s in result['servers']],
            [(uuid, params['bandwidth'])
             for uuid, params, _ in self.migrate_calls])
        self.assertEqual([], self.migration_state_files())

    def test_an_abort_rolls_the_rt_migration_back(self):
        scenarios.abort(self.conn, self.facts)
        (uuid, _params, _flags), = self.migrate_calls
        self.assertEqual(deadline.SCHED_DEADLINE,
                         self.during[0]['thread'].policy)
        # the source back as it was
        self.assertEqual(NO_SPEED_LIMIT, self.speeds[-1])
        self.assertEqual(-1, self.cpu[uuid]['emulator_quota'])
        self.assertEqual(deadline.SCHED_OTHER,
                         deadline.get_attr(self.migration_thread).policy)
        self.assertEqual([], self.migration_state_files())

    def test_a_refused_plan_is_explained_in_the_instance_action(self):
        result = scenarios.refused_plan(self.conn, self.facts)
        self.assertIn('rtmig:migration_deadline=60s', result['reason'])
        self.assertEqual([], self.migrate_calls)
        self.assertEqual([], self.downtimes)

    def test_a_stock_server_migrates_as_nova_migrates_it(self):
        result = scenarios.stock_server(self.conn, self.facts)
        self.assertEqual('compute2', result['server'].compute_host)
        (_uuid, params, _flags), = self.migrate_calls
        self.assertEqual(CONF.libvirt.live_migration_bandwidth,
                         params['bandwidth'])
        self.assertEqual([], self.migration_connections)
        self.assertEqual([], self._notifications())

    def test_the_real_cloud_suite_runs_against_this_cloud(self):
        # tests/devstack/test_real_cloud.py as an operator runs it, in a
        # process of its own: its facts from this cloud and the
        # RTMIG_DEVSTACK_* variables (the hosts found from the services),
        # no notifications, and no hook but the profile directory.  A
        # fake migration lasts long enough for its abort.
        self.migration_seconds = 5
        env = self.cloud.env()
        env.update(RTMIG_DEVSTACK_IMAGE=base.IMAGE_UUID,
                   RTMIG_DEVSTACK_NETWORK='none',
                   RTMIG_DEVSTACK_FLAVOR_RAM='64',
                   RTMIG_DEVSTACK_PROFILE_DIR=self.profile_dir,
                   RTMIG_DEVSTACK_TIMEOUT='60',
                   PYTHONPATH=os.pathsep.join(
                       p for p in (ROOT, env.get('PYTHONPATH')) if p),
                   PYTHONDONTWRITEBYTECODE='1')
        argv = [sys.executable, '-m', 'pytest', '-q', '-p',
                'no:cacheprovider', 'tests/devstack/test_real_cloud.py']
        # files, not pipes, and a poll: this process is eventlet's, and
        # the cloud it serves must keep answering while the suite runs
        with tempfile.TemporaryFile('w+') as out:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env,
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT)
            end = time.monotonic() + REAL_SUITE_TIMEOUT
            while proc.poll() is None and time.monotonic() < end:
                time.sleep(0.2)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            out.seek(0)
            output = out.read()
        self.assertEqual(0, proc.returncode, output)
        self.assertIn('4 passed', output)
        self.assertNotIn('skipped', output)
        # the refusal found its profile; nothing was left behind
        self.assertEqual([], os.listdir(self.profile_dir))
        self.assertEqual([], self.migration_state_files())
