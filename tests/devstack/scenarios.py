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

"""The operator's live migrations of real-time servers through openstacksdk,
against any cloud: a real one (tests/devstack/test_real_cloud.py, with
``OS_CLOUD``) or the in-process Nova served on a loopback socket
(tests/functional/test_sdk_scenarios.py).

Each scenario takes an SDK ``Connection`` and a :class:`CloudFacts`: what
differs between clouds (hosts, image, network, how long to wait, where
the notifications can be read) and
the hooks a cloud needs (a fake's slow migrations, where an instance
profile is written).  The scenarios make the RT flavor with the documented
commands' calls (``rtmig flavor``, then its extra specs at microversion
2.86, as ``openstack flavor set`` sends them), boot servers on the source,
live-migrate them and read the outcome back from the migrations and the
instance actions and, where the cloud exposes them, the plan and the
outcome from rtmig's notifications.  They delete what they made.

Nothing here imports Nova: pytest imports this module, and importing Nova
monkey-patches the process (eventlet).
"""

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
import typing
import uuid

import openstack
from openstack import config as sdk_config
from openstack import exceptions as sdk_exceptions

from rtmig_nova.model import DirtyProfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# The RT flavor's contract, as in tests/functional/live_migration_base:
# one vCPU of 0.5 (one such server per RT CPU of a host, so two fit on a
# host of two RT CPUs), within 60 s and 300 ms of downtime.
RT_VCPUS = 1
RT_FLAVOR_ARGS = ('--vcpu-reservation', '5ms/10ms', '--net-rate', '10MB/s',
                  '--deadline', '60s', '--max-downtime', '300ms')
DEADLINE_S = 60.0
MAX_DOWNTIME_S = 0.3
PROFILE_SOURCES = ('instance', 'dirty_rate', 'flavor')
# the microversion at which Nova validates extra specs (docs/cli.md)
SPECS_MICROVERSION = '2.86'
FINAL_MIGRATION_STATES = ('completed', 'error', 'failed', 'cancelled',
                          'done')
RTMIG_CLI_TIMEOUT = 120     # s for one ``rtmig`` call


class ScenarioSkip(Exception):
    """This cloud cannot run the scenario (the reason says why); a real
    cloud's runner skips the test, the loopback cloud's fails it."""


@dataclasses.dataclass
class CloudFacts:
    """What the scenarios need to know of a cloud.

    ``source``, ``destination``: compute host names; the servers boot on
    ``source`` (``host`` at microversion 2.74, admin only) and a migration
    with a host goes to ``destination``.  ``image``: an image id.
    ``networks``: ``'none'`` or ``[{'uuid': NETWORK_ID}]``.
    ``flavor_ram_mb`` (MiB), ``flavor_disk_gb`` (GB): the flavors' sizes.
    ``timeout`` (s): the longest wait for a boot, a migration or a
    deletion; ``poll`` (s): the interval of the polls.
    ``notifications``: returns every rtmig notification received so far,
    as ``(event_type, payload)``; None where the cloud exposes none.
    ``notification_wait`` (s): how long one may take to arrive.
    ``migration_running(conn, server, migration)``: returns once the
    ``migration``, "running", can be aborted; by default after ``grace``
    s (Nova sets "running" just before the driver starts libvirt's job,
    and an abort without a job is lost).
    ``slow_migrations()``: a context manager in which a migration lasts
    long enough to be aborted (none on a real cloud: the abort is then a
    race with the migration's end, see docs/nova.md).
    ``place_profile(server_id, profile)``: writes a captured
    ``DirtyProfile`` where the source compute reads instance profiles
    (``[rtmig] instance_profile_dir``); None where it cannot be written.
    """

    source: str
    destination: str
    image: str
    networks: typing.Any = 'none'
    flavor_ram_mb: int = 64
    flavor_disk_gb: int = 1
    timeout: float = 300.0
    poll: float = 0.5
    notifications: typing.Optional[typing.Callable[[], list]] = None
    notification_wait: float = 0.0
    grace: float = 1.0
    migration_running: typing.Optional[typing.Callable] = None
    slow_migrations: typing.Callable = contextlib.nullcontext
    place_profile: typing.Optional[typing.Callable] = None


def connect(cloud, config_files=None, **kwargs):
    """An SDK connection to ``cloud`` of clouds.yaml: the usual files
    (``OS_CLIENT_CONFIG_FILE``, ~/.config/openstack, /etc/openstack), or
    only ``config_files`` (no environment variables read then)."""
    if config_files is None:
        return openstack.connect(cloud=cloud, **kwargs)
    loader = sdk_config.OpenStackConfig(config_files=list(config_files),
                                        vendor_files=[], load_envvars=False)
    return openstack.connection.Connection(
        config=loader.get_one(cloud, **kwargs))


# -- checks ------------------------------------------------------------------

def expect(want, got, what):
    if want != got:
        raise AssertionError('%s: expected %r, got %r' % (what, want, got))


def expect_true(value, what):
    if not value:
        raise AssertionError(what)


# -- steps -------------------------------------------------------------------

class Resources(contextlib.AbstractContextManager):
    """Servers and flavors a scenario made, deleted at its end, servers
    first (and waited for), then their flavors.  A failure to delete fails
    the scenario unless it already failed."""

    def __init__(self, conn, facts):
        self.conn = conn
        self.facts = facts
        self.prefix = 'rtmig-sdk-%s' % uuid.uuid4().hex[:6]
        self.servers = []
        self.flavors = []

    def name(self, what):
        return '%s-%s' % (self.prefix, what)

    def __exit__(self, exc_type, exc, tb):
        errors = []
        for server in self.servers:
            try:
                self.conn.compute.delete_server(server, ignore_missing=True)
            except sdk_exceptions.SDKException as e:
                errors.append('deleting server %s: %s' % (server.id, e))
        for server in self.servers:
            try:
                self.conn.compute.wait_for_delete(
                    server, interval=self.facts.poll,
                    wait=self.facts.timeout)
            except sdk_exceptions.SDKException as e:
                errors.append('waiting for %s to go: %s' % (server.id, e))
        for flavor in self.flavors:
            try:
                self.conn.compute.delete_flavor(flavor, ignore_missing=True)
            except sdk_exceptions.SDKException as e:
                errors.append('deleting flavor %s: %s' % (flavor.id, e))
        if errors and exc is None:
            raise AssertionError('clean-up failed: ' + '; '.join(errors))
        return False


def rtmig_flavor_specs(name):
    """The extra specs ``rtmig flavor NAME ... --json`` gives the RT
    flavor: the rtmig: keys and the Placement request (this checkout's
    ``rtmig``: its console script may point at another)."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (ROOT, env.get('PYTHONPATH')) if p)
    proc = subprocess.run(
        [sys.executable, '-m', 'rtmig_nova.cli', 'flavor', name, '--json',
         '--vcpus', str(RT_VCPUS)] + list(RT_FLAVOR_ARGS),
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=RTMIG_CLI_TIMEOUT)
    if proc.returncode != 0:
        raise AssertionError('rtmig flavor exited %d: %s'
                             % (proc.returncode, proc.stderr))
    return json.loads(proc.stdout)['extra_specs']


def make_flavor(conn, res, what, rt=True):
    """A flavor (``openstack flavor create``), made real-time as docs/
    cli.md says: the extra specs ``rtmig flavor`` prints, set at
    microversion 2.86 (``openstack flavor set``), where Nova's API
    validates them.  Returns the flavor with its extra specs read back."""
    name = res.name(what)
    flavor = conn.compute.create_flavor(
        name=name, vcpus=RT_VCPUS, ram=res.facts.flavor_ram_mb,
        disk=res.facts.flavor_disk_gb)
    res.flavors.append(flavor)
    if not rt:
        return flavor
    specs = rtmig_flavor_specs(name)
    resp = conn.compute.post('/flavors/%s/os-extra_specs' % flavor.id,
                             json={'extra_specs': specs},
                             microversion=SPECS_MICROVERSION)
    sdk_exceptions.raise_from_response(resp)
    flavor = conn.compute.fetch_flavor_extra_specs(flavor)
    expect(specs, dict(flavor.extra_specs), 'the flavor\'s extra specs')
    expect('required', flavor.extra_specs.get('trait:CUSTOM_RTMIG_HOST'),
           'the RT host trait')
    return flavor


def boot(conn, res, flavor, what, host=None):
    """A server of ``flavor`` on ``host`` (the source), ACTIVE."""
    facts = res.facts
    host = host or facts.source
    server = conn.compute.create_server(
        name=res.name(what), flavor_id=flavor.id, image_id=facts.image,
        networks=facts.networks, host=host)
    res.servers.append(server)
    server = conn.compute.wait_for_server(
        server, status='ACTIVE', failures=['ERROR'], interval=facts.poll,
        wait=facts.timeout)
    expect(host, server.compute_host, '%s\'s host' % server.name)
    return server


def migrations(conn, server):
    """The server's migrations of any status (``openstack server
    migration list --server``), oldest first."""
    return sorted(conn.compute.migrations(server_id=server.id),
                  key=lambda m: m.id)


def live_migrate(conn, facts, server, host=None):
    """Starts a live migration of ``server`` (to ``host``: through the
    scheduler, not forced); returns (HTTP status, the error's message or
    None, the ids of the migrations before it).

    The SDK sends ``os-migrateLive`` at microversion 2.30, where Nova's
    API waits for the conductor's checks (asynchronous from 2.34 on): a
    migration they refuse is answered 400 (no 202)."""
    before = {m.id for m in migrations(conn, server)}
    try:
        conn.compute.live_migrate_server(server, host=host,
                                         block_migration='auto')
    except sdk_exceptions.HttpException as e:
        return e.status_code, str(e), before
    return 202, None, before


def wait_for_migration(conn, facts, server, before, states):
    """The server's migration newer than ``before`` once its status is
    one of ``states`` (a real cloud's conductor makes it after the API
    answered); fails when it ends in another final status."""
    end = time.monotonic() + facts.timeout
    seen = None
    while True:
        new = [m for m in migrations(conn, server) if m.id not in before]
        if new:
            seen = new[-1]
            if seen.status in states:
                return seen
            if seen.status in FINAL_MIGRATION_STATES:
                raise AssertionError('migration %s of %s ended %s, not %s'
                                     % (seen.id, server.id, seen.status,
                                        '/'.join(states)))
        if time.monotonic() > end:
            raise AssertionError(
                'no migration of %s reached %s in %g s (last: %s)'
                % (server.id, '/'.join(states), facts.timeout,
                   seen.status if seen else 'none made'))
        time.sleep(facts.poll)


def settled(conn, facts, server):
    """The server, read again, once no task runs on it (ACTIVE, not
    MIGRATING)."""
    # wait_for_server returns the object it is given, unread, if that
    # one says ACTIVE
    server = conn.compute.get_server(server.id)
    return conn.compute.wait_for_server(
        server, status='ACTIVE', failures=['ERROR'], interval=facts.poll,
        wait=facts.timeout)


def action_events(conn, server, action):
    """{event name: event} of the server's latest instance action
    ``action`` (``openstack server event show``; the events' details,
    the error messages, since microversion 2.84)."""
    found = sorted((a for a in conn.compute.server_actions(server)
                    if a.action == action), key=lambda a: a.start_time)
    expect_true(found, 'no %s action on %s' % (action, server.id))
    shown = conn.compute.get_server_action(found[-1].request_id, server,
                                           ignore_missing=False)
    return {e.event: e for e in shown.events}


def expect_event(events, name, result):
    expect_true(name in events, 'no %s event in %s' % (name, sorted(events)))
    expect(result, events[name].result,
           '%s (details: %s)' % (name, events[name].details))
    return events[name]


def notified(facts, event_type, server_ids, each=1):
    """{server id: [payloads]} of ``event_type``, once every server has
    ``each`` (or ``notification_wait`` s passed); None when the cloud
    exposes no notifications."""
    if facts.notifications is None:
        return None
    end = time.monotonic() + facts.notification_wait
    while True:
        got = {sid: [p for t, p in facts.notifications()
                     if t == event_type and p.get('instance_uuid') == sid]
               for sid in server_ids}
        if all(len(v) >= each for v in got.values()) or \
                time.monotonic() >= end:
            return got
        time.sleep(min(facts.poll, 0.5))


def _check_plan(plan, what):
    """A plan notification's payload holds the flavor's contract."""
    expect_true(plan['profile_source'] in PROFILE_SOURCES,
                '%s: profile source %r' % (what, plan['profile_source']))
    expect(DEADLINE_S, plan['deadline_s'], what + ': deadline (s)')
    expect(MAX_DOWNTIME_S, plan['max_downtime_s'], what + ': max downtime')
    expect_true(plan['bandwidth_bytes_per_s'] > 0, what + ': no bandwidth')
    expect_true(0 < plan['downtime_limit_s'] <= MAX_DOWNTIME_S,
                '%s: downtime limit %r s' % (what, plan['downtime_limit_s']))
    expect_true(plan['predicted_total_time_s'] <= DEADLINE_S,
                '%s: predicted %r s' % (what,
                                        plan['predicted_total_time_s']))


# -- scenarios ---------------------------------------------------------------

def migrate_without_and_with_host(conn, facts):
    """Two RT servers on the source: one live-migrated without a host (the
    scheduler picks one), one to ``destination``; both completed, each
    one's ``compute_live_migration`` event a success; the plan and the
    outcome in the notifications.  Returns {'servers': [both, as
    migrated], 'plans': {server id: payload} or None}."""
    with Resources(conn, facts) as res:
        flavor = make_flavor(conn, res, 'rt')
        one = boot(conn, res, flavor, 'rt-1')
        two = boot(conn, res, flavor, 'rt-2')
        moved = []
        for server, host in ((one, None), (two, facts.destination)):
            status, _, before = live_migrate(conn, facts, server, host)
            expect(202, status, 'the API\'s answer to the migration')
            migration = wait_for_migration(conn, facts, server, before,
                                           ('completed',))
            expect(facts.source, migration.source_compute,
                   'the migration\'s source')
            server = settled(conn, facts, server)
            expect(migration.dest_compute, server.compute_host,
                   '%s\'s host after' % server.name)
            if host:
                expect(host, server.compute_host, 'the requested host')
            else:
                expect_true(server.compute_host != facts.source,
                            '%s still on %s' % (server.name, facts.source))
            events = action_events(conn, server, 'live-migration')
            expect_event(events, 'compute_live_migration', 'Success')
            moved.append(server)
        ids = [one.id, two.id]
        plans = notified(facts, 'rtmig.migration.plan', ids)
        ends = notified(facts, 'rtmig.migration.end', ids)
        if plans is not None:
            for sid in ids:
                expect(1, len(plans[sid]), 'plans of %s' % sid)
                expect(1, len(ends[sid]), 'ends of %s' % sid)
                _check_plan(plans[sid][0], 'plan of %s' % sid)
                end = ends[sid][0]
                expect(('completed', True),
                       (end['outcome'], end['deadline_met']),
                       'outcome of %s' % sid)
                expect(plans[sid][0]['bandwidth_bytes_per_s'],
                       end['bandwidth_bytes_per_s'],
                       'the bandwidth %s ran at' % sid)
            plans = {sid: plans[sid][0] for sid in ids}
        return {'servers': moved, 'plans': plans}


def abort(conn, facts):
    """An RT server's running live migration aborted (``openstack server
    migration abort``): the migration ``cancelled``, the server ACTIVE on
    its source, the abort's event a success, the outcome ``failed`` in the
    notifications.  Returns {'server': the server}."""
    with Resources(conn, facts) as res:
        flavor = make_flavor(conn, res, 'rt')
        server = boot(conn, res, flavor, 'rt-abort')
        with facts.slow_migrations():
            status, _, before = live_migrate(conn, facts, server)
            expect(202, status, 'the API\'s answer to the migration')
            try:
                migration = wait_for_migration(conn, facts, server, before,
                                               ('running',))
            except AssertionError:
                _ended_first(conn, facts, server, before)
                raise
            if facts.migration_running is not None:
                facts.migration_running(conn, server, migration)
            else:
                time.sleep(facts.grace)
            try:
                conn.compute.abort_server_migration(
                    migration.id, server, ignore_missing=False)
            except sdk_exceptions.HttpException:
                _ended_first(conn, facts, server, before)
                raise
            try:
                wait_for_migration(conn, facts, server, before,
                                   ('cancelled',))
            except AssertionError:
                _ended_first(conn, facts, server, before)
                raise
        server = settled(conn, facts, server)
        expect(facts.source, server.compute_host, 'the host after the abort')
        events = action_events(conn, server, 'live_migration_cancel')
        expect_event(events, 'compute_live_migration_abort', 'Success')
        ends = notified(facts, 'rtmig.migration.end', [server.id])
        if ends is not None:
            expect(['failed'], [e['outcome'] for e in ends[server.id]],
                   'the outcome of the aborted migration')
        return {'server': server}


def _ended_first(conn, facts, server, before):
    """Raises ScenarioSkip if the migration completed before it could be
    aborted (a real guest that migrates faster than a poll)."""
    done = [m for m in migrations(conn, server)
            if m.id not in before and m.status == 'completed']
    if done:
        raise ScenarioSkip(
            'the migration of %s completed before its abort reached it: '
            'give it a guest that takes longer to migrate (see '
            'docs/nova.md)' % server.id)


def refused_plan(conn, facts):
    """An RT server whose captured profile (8 GiB dirtied at 2 GB/s) no
    link share can carry: the migration ``error``, the server ACTIVE on
    its source, untouched; the reason in the details of the
    ``compute_check_can_live_migrate_source`` event and in an
    ``rtmig.admission.reject`` notification.  Returns {'server': ...,
    'reason': the event's details}."""
    if facts.place_profile is None:
        raise ScenarioSkip('the source compute\'s [rtmig] '
                           'instance_profile_dir cannot be written from '
                           'here (RTMIG_DEVSTACK_PROFILE_DIR, docs/nova.md)')
    with Resources(conn, facts) as res:
        flavor = make_flavor(conn, res, 'rt')
        server = boot(conn, res, flavor, 'rt-refused')
        facts.place_profile(server.id, DirtyProfile.from_aggregate_rate(
            8 * 2 ** 30, 2e9))
        status, message, before = live_migrate(conn, facts, server)
        # (the answer's message is the conductor's "No valid host was
        # found": the reason is in the instance action)
        expect(400, status, 'the API\'s answer to a refused migration: %s'
               % message)
        wait_for_migration(conn, facts, server, before, ('error',))
        server = settled(conn, facts, server)
        expect(facts.source, server.compute_host, 'the host after')
        events = action_events(conn, server, 'live-migration')
        refused = expect_event(
            events, 'compute_check_can_live_migrate_source', 'Error')
        expect_true('cannot be migrated within' in (refused.details or ''),
                    'no reason in the event\'s details: %r'
                    % refused.details)
        rejects = notified(facts, 'rtmig.admission.reject', [server.id])
        if rejects is not None:
            expect(['plan'], [r['stage'] for r in rejects[server.id]],
                   'the stage of the refusal')
            expect_true('cannot be migrated within'
                        in rejects[server.id][0]['reason'],
                        'no reason in the notification')
            plans = notified(facts, 'rtmig.migration.plan', [server.id],
                             each=0)
            expect([], plans[server.id], 'plans of a refused migration')
        return {'server': server, 'reason': refused.details}


def stock_server(conn, facts):
    """A server of a flavor without rtmig: specs live-migrates as stock
    Nova migrates it: completed, and no rtmig notification of it.
    Returns {'server': the server}."""
    with Resources(conn, facts) as res:
        flavor = make_flavor(conn, res, 'plain', rt=False)
        server = boot(conn, res, flavor, 'plain')
        status, _, before = live_migrate(conn, facts, server)
        expect(202, status, 'the API\'s answer to the migration')
        wait_for_migration(conn, facts, server, before, ('completed',))
        server = settled(conn, facts, server)
        expect_true(server.compute_host != facts.source,
                    '%s still on %s' % (server.name, facts.source))
        events = action_events(conn, server, 'live-migration')
        expect_event(events, 'compute_live_migration', 'Success')
        if facts.notifications is not None:
            time.sleep(facts.notification_wait)
            ours = [t for t, p in facts.notifications()
                    if p.get('instance_uuid') == server.id]
            expect([], ours, 'rtmig notifications of a stock server')
        return {'server': server}


SCENARIOS = (migrate_without_and_with_host, abort, refused_plan,
             stock_server)
