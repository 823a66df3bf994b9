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

"""A real cloud's :class:`~tests.devstack.scenarios.CloudFacts`, from the
cloud itself and the ``RTMIG_DEVSTACK_*`` environment variables (docs/
nova.md, "Against a real cloud"), and rtmig's notifications read from
its notification transport when ``RTMIG_DEVSTACK_TRANSPORT_URL`` is set."""

import contextlib
import os
import threading

from tests.devstack import scenarios

PREFIX = 'RTMIG_DEVSTACK_'
# The notification listener's pool: its own queue, a copy of every
# message, so Nova's other consumers lose none.  One fixed name: one queue
# on the broker, whatever the number of runs.
LISTENER_POOL = 'rtmig-devstack-tests'


def _env(environ, name, default=None):
    value = environ.get(PREFIX + name, '').strip()
    return value or default


def _number(environ, name, default, kind=float):
    value = _env(environ, name)
    if value is None:
        return default
    try:
        return kind(value)
    except ValueError:
        raise ValueError('%s%s: not a number: %r' % (PREFIX, name, value))


def compute_hosts(conn, environ):
    """(source, destination): ``RTMIG_DEVSTACK_HOSTS=SOURCE,DESTINATION``,
    else the first two nova-compute services up and enabled, by name."""
    hosts = _env(environ, 'HOSTS')
    if hosts:
        names = [h.strip() for h in hosts.split(',') if h.strip()]
        if len(names) != 2 or names[0] == names[1]:
            raise ValueError('%sHOSTS: two different compute hosts, '
                             'SOURCE,DESTINATION; got %r' % (PREFIX, hosts))
        return tuple(names)
    up = sorted(s.host for s in conn.compute.services(binary='nova-compute')
                if s.state == 'up' and s.status == 'enabled')
    if len(up) < 2:
        raise scenarios.ScenarioSkip(
            'needs two nova-compute services up and enabled, found %s '
            '(or set %sHOSTS=SOURCE,DESTINATION)' % (up or 'none', PREFIX))
    return up[0], up[1]


def image_id(conn, environ):
    """``RTMIG_DEVSTACK_IMAGE`` (a name or an id), else the active image
    whose name starts with ``cirros`` (devstack's), the last by name."""
    name = _env(environ, 'IMAGE')
    if name:
        return conn.image.find_image(name, ignore_missing=False).id
    cirros = sorted((i for i in conn.image.images()
                     if (i.name or '').startswith('cirros')
                     and i.status == 'active'), key=lambda i: i.name)
    if not cirros:
        raise scenarios.ScenarioSkip('no cirros image: set %sIMAGE'
                                     % PREFIX)
    return cirros[-1].id


def networks(conn, environ):
    """``RTMIG_DEVSTACK_NETWORK`` (a name or an id; ``none`` boots without
    one), by default devstack's ``private``."""
    name = _env(environ, 'NETWORK', 'private')
    if name == 'none':
        return 'none'
    return [{'uuid': conn.network.find_network(name,
                                               ignore_missing=False).id}]


class Notifications:
    """rtmig's notifications (``rtmig.*``, priority INFO) received by an
    oslo.messaging listener on ``url``'s ``topic``, from its start on;
    called, the ``(event_type, payload)`` received so far."""

    def __init__(self, url, topic):
        import oslo_messaging
        from oslo_config import cfg
        self._received = []
        self._lock = threading.Lock()
        self._transport = oslo_messaging.get_notification_transport(
            cfg.ConfigOpts(), url=url)
        self._listener = oslo_messaging.get_notification_listener(
            self._transport, [oslo_messaging.Target(topic=topic)], [self],
            executor='threading', pool=LISTENER_POOL)
        self._listener.start()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        # the listener's endpoint: messages of every service come here
        if event_type.startswith('rtmig.'):
            with self._lock:
                self._received.append((event_type, payload))

    def __call__(self):
        with self._lock:
            return list(self._received)

    def close(self):
        self._listener.stop()
        self._listener.wait()
        self._transport.cleanup()


class RealCloud(contextlib.AbstractContextManager):
    """The facts of the cloud ``conn`` reaches, from the cloud and
    ``environ``; on exit the notification listener stops and the instance
    profiles written are removed.

    :raises scenarios.ScenarioSkip: the cloud lacks what every scenario
        needs (two computes, an image)
    """

    def __init__(self, conn, environ=os.environ):
        self._written = []
        self._notifications = None
        source, destination = compute_hosts(conn, environ)
        profile_dir = _env(environ, 'PROFILE_DIR')
        self.facts = scenarios.CloudFacts(
            source=source, destination=destination,
            image=image_id(conn, environ), networks=networks(conn, environ),
            flavor_ram_mb=_number(environ, 'FLAVOR_RAM', 256, int),
            flavor_disk_gb=_number(environ, 'FLAVOR_DISK', 1, int),
            timeout=_number(environ, 'TIMEOUT', 300.0),
            # a small guest migrates in a second or two: abort early
            grace=_number(environ, 'ABORT_DELAY', 0.5),
            notification_wait=_number(environ, 'NOTIFICATION_WAIT', 10.0),
            place_profile=(self._placer(profile_dir) if profile_dir
                           else None))
        # last: nothing after it can fail and leave it running
        url = _env(environ, 'TRANSPORT_URL')
        if url:
            self._notifications = Notifications(
                url, _env(environ, 'NOTIFICATION_TOPIC', 'notifications'))
            self.facts.notifications = self._notifications

    def _placer(self, profile_dir):
        def place_profile(server_id, profile):
            path = os.path.join(profile_dir, server_id + '.json.gz')
            profile.save(path)
            self._written.append(path)
        return place_profile

    def __exit__(self, exc_type, exc, tb):
        for path in self._written:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if self._notifications is not None:
            self._notifications.close()
        return False
