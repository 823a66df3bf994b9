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

"""The operator's scenarios (tests/devstack/scenarios.py) against a real
cloud through openstacksdk: ``OS_CLOUD`` names a clouds.yaml cloud with
admin credentials, on which the rtmig devstack plugin runs on two
computes; the ``RTMIG_DEVSTACK_*`` variables say the rest (docs/nova.md,
"Against a real cloud").  Without ``OS_CLOUD`` every test skips.  CI runs
the same scenarios against the in-process cloud
(tests/functional/test_sdk_scenarios.py), and this module too, through a
subprocess pointed at that cloud."""

import os

import pytest

pytest.importorskip('openstack', reason='needs openstacksdk')

from tests.devstack import real_cloud  # noqa: E402
from tests.devstack import scenarios  # noqa: E402

pytestmark = pytest.mark.skipif(
    not os.environ.get('OS_CLOUD'),
    reason='OS_CLOUD is not set: these tests run against a real cloud '
           '(docs/nova.md, "Against a real cloud")')


@pytest.fixture(scope='module')
def cloud():
    """(connection, facts) of the cloud OS_CLOUD names."""
    conn = scenarios.connect(os.environ['OS_CLOUD'])
    try:
        try:
            rc = real_cloud.RealCloud(conn)
        except scenarios.ScenarioSkip as e:
            pytest.skip(str(e))
        with rc:
            yield conn, rc.facts
    finally:
        conn.close()


def _run(scenario, cloud):
    try:
        return scenario(*cloud)
    except scenarios.ScenarioSkip as e:
        pytest.skip(str(e))


def test_rt_servers_migrate_without_and_with_a_host(cloud):
    _run(scenarios.migrate_without_and_with_host, cloud)


def test_an_abort_rolls_the_rt_migration_back(cloud):
    _run(scenarios.abort, cloud)


def test_a_refused_plan_is_explained_in_the_instance_action(cloud):
    _run(scenarios.refused_plan, cloud)


def test_a_stock_server_migrates_as_nova_migrates_it(cloud):
    _run(scenarios.stock_server, cloud)
