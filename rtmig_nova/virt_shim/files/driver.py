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

"""Nova's libvirt driver with rtmig-nova's extension points; no logic
here, every decision is in rtmig_nova (installed by rtmig-nova-shim)."""

from nova import context as nova_context
from nova.virt.libvirt import driver as libvirt_driver

from rtmig_nova.compute import extension


class RTLibvirtDriver(libvirt_driver.LibvirtDriver):

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi, read_only)
        self._rtmig = None
        self._rtmig_host = None

    def init_host(self, host):
        super().init_host(host)
        self._rtmig_host = host
        self._rtmig = extension.RTComputeExtension(
            len(self._host.get_online_cpus()))

    def update_provider_tree(self, provider_tree, nodename,
                             allocations=None):
        super().update_provider_tree(provider_tree, nodename,
                                     allocations=allocations)
        self._rtmig.update_provider_tree(provider_tree, nodename)

    def get_available_resource(self, nodename):
        resources = super().get_available_resource(nodename)
        stats = dict(resources.get("stats") or {})
        stats.update(self._rtmig.stats(nova_context.get_admin_context(),
                                       self._rtmig_host, nodename))
        resources["stats"] = stats
        return resources

    def spawn(self, context, instance, image_meta, injected_files,
              admin_password, allocations, network_info=None,
              block_device_info=None, power_on=True, accel_info=None):
        self._rtmig.check_spawn(context, instance, self._rtmig_host,
                                instance.node)
        return super().spawn(context, instance, image_meta, injected_files,
                             admin_password, allocations,
                             network_info=network_info,
                             block_device_info=block_device_info,
                             power_on=power_on, accel_info=accel_info)
