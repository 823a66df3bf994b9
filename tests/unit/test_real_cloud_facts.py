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

"""What tests/devstack/real_cloud.py takes from a real cloud and the
RTMIG_DEVSTACK_* variables, on stand-ins of the SDK's proxies, and its
notification listener on oslo.messaging's in-memory driver (the parts the
functional test's run of the real-cloud suite does not reach: it names no
hosts and reads no notifications)."""

import time
import types

import pytest

pytest.importorskip('openstack', reason='needs openstacksdk')

from tests.devstack import real_cloud  # noqa: E402
from tests.devstack import scenarios  # noqa: E402


def _service(host, state='up', status='enabled'):
    return types.SimpleNamespace(host=host, state=state, status=status)


def _conn(services=(), images=(), network_id='net-1'):
    compute = types.SimpleNamespace(
        services=lambda binary: list(services))
    image = types.SimpleNamespace(
        images=lambda: list(images),
        find_image=lambda name, ignore_missing: types.SimpleNamespace(
            id='id-of-' + name))
    network = types.SimpleNamespace(
        find_network=lambda name, ignore_missing: types.SimpleNamespace(
            id=network_id))
    return types.SimpleNamespace(compute=compute, image=image,
                                 network=network)


def test_the_hosts_named_or_found():
    env = {'RTMIG_DEVSTACK_HOSTS': 'a, b'}
    assert ('a', 'b') == real_cloud.compute_hosts(_conn(), env)
    for bad in ('a', 'a,a', 'a,b,c'):
        with pytest.raises(ValueError, match='RTMIG_DEVSTACK_HOSTS'):
            real_cloud.compute_hosts(_conn(), {'RTMIG_DEVSTACK_HOSTS': bad})
    # the first two up and enabled, by name
    conn = _conn([_service('c3'), _service('c1', state='down'),
                  _service('c2'), _service('c0', status='disabled'),
                  _service('c4')])
    assert ('c2', 'c3') == real_cloud.compute_hosts(conn, {})
    with pytest.raises(scenarios.ScenarioSkip, match='two nova-compute'):
        real_cloud.compute_hosts(_conn([_service('c1')]), {})


def test_the_image_and_network():
    images = [types.SimpleNamespace(name=n, status=s, id=n + '-id')
              for n, s in (('cirros-0.6.2', 'active'), ('debian', 'active'),
                           ('cirros-0.6.3', 'active'),
                           ('cirros-0.7', 'queued'))]
    assert 'cirros-0.6.3-id' == real_cloud.image_id(_conn(images=images), {})
    assert 'id-of-mine' == real_cloud.image_id(
        _conn(), {'RTMIG_DEVSTACK_IMAGE': 'mine'})
    with pytest.raises(scenarios.ScenarioSkip, match='RTMIG_DEVSTACK_IMAGE'):
        real_cloud.image_id(_conn(images=images[1:2]), {})
    assert [{'uuid': 'net-1'}] == real_cloud.networks(_conn(), {})
    assert 'none' == real_cloud.networks(
        _conn(), {'RTMIG_DEVSTACK_NETWORK': 'none'})


def test_the_facts_of_a_cloud():
    conn = _conn([_service('c1'), _service('c2')])
    with real_cloud.RealCloud(conn, {'RTMIG_DEVSTACK_IMAGE': 'img',
                                     'RTMIG_DEVSTACK_TIMEOUT': '60'}) as rc:
        facts = rc.facts
        assert ('c1', 'c2', 'id-of-img', 60.0, 256) == (
            facts.source, facts.destination, facts.image, facts.timeout,
            facts.flavor_ram_mb)
        # without a profile directory or a transport, the scenarios that
        # need them skip or leave the notifications out
        assert facts.place_profile is None
        assert facts.notifications is None
    with pytest.raises(ValueError, match='RTMIG_DEVSTACK_FLAVOR_RAM'):
        real_cloud.RealCloud(conn, {'RTMIG_DEVSTACK_IMAGE': 'img',
                                    'RTMIG_DEVSTACK_FLAVOR_RAM': '1G'})


def test_a_profile_placed_is_removed_after(tmp_path):
    from rtmig_nova.model import DirtyProfile
    conn = _conn([_service('c1'), _service('c2')])
    with real_cloud.RealCloud(conn, {
            'RTMIG_DEVSTACK_IMAGE': 'img',
            'RTMIG_DEVSTACK_PROFILE_DIR': str(tmp_path)}) as rc:
        rc.facts.place_profile('uuid-1', DirtyProfile.from_aggregate_rate(
            2 ** 30, 1e6))
        assert ['uuid-1.json.gz'] == [p.name for p in tmp_path.iterdir()]
    assert [] == list(tmp_path.iterdir())


def test_rtmig_notifications_are_read_from_the_transport():
    import oslo_messaging
    received = real_cloud.Notifications('fake://', 'notifications')
    try:
        # what the compute's notifier sends (messagingv2, INFO)
        notifier = oslo_messaging.Notifier(
            received._transport, publisher_id='rtmig.compute1',
            driver='messagingv2', topics=['notifications'])
        notifier.info({}, 'compute.instance.update', {'instance_uuid': 'u'})
        notifier.info({}, 'rtmig.migration.plan', {'instance_uuid': 'u'})
        end = time.monotonic() + 10
        while not received() and time.monotonic() < end:
            time.sleep(0.05)
        assert [('rtmig.migration.plan', {'instance_uuid': 'u'})] == \
            received()
    finally:
        received.close()
