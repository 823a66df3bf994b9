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

import time

from nova import context as nova_context
from nova.virt.libvirt import driver as libvirt_driver

from rtmig_nova.compute import extension
from rtmig_nova.compute import live_migration


class RTLibvirtDriver(libvirt_driver.LibvirtDriver):

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi, read_only)
        self._rtmig = None
        self._rtmig_host = None
        self._rtmig_lm = None
        self._rtmig_guests = {}        # instance uuid -> RTGuest, migrating

    def init_host(self, host):
        super().init_host(host)
        self._rtmig_host = host
        self._rtmig = extension.RTComputeExtension(
            len(self._host.get_online_cpus()), host, self._host.get_guest,
            self._host.get_connection().getVersion())
        self._rtmig_lm = live_migration.RTLiveMigration(
            self._rtmig, host, self._host.get_guest)
        self._rtmig_lm.reconcile(set(), self._rtmig_connect)

    def _rtmig_connect(self, uri):
        # the driver's own connection (the reservation steps' URI is its)
        return self._host.get_connection()

    def _rtmig_migration_connection(self):
        # a connection of its own for migrateToURI3, opened as Nova opens
        # the driver's (tpool-proxied); aborts go over the driver's
        return self._host._connect(self._host._uri, False)

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
        self._rtmig_lm.reconcile(set(self._rtmig_guests),
                                 self._rtmig_connect)
        self._rtmig.reconcile_vms(nova_context.get_admin_context(),
                                  self._rtmig_host, nodename)
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

    # The paths that start a QEMU: _create_guest (spawn, hard reboot,
    # power on, resume, rescue, resize, rebuild), a soft reboot's and a
    # cold snapshot's launch; an incoming live migration has
    # pre_live_migration's watcher.
    def _create_guest(self, context, xml, instance, power_on=True,
                      pause=False, post_xml_callback=None):
        guest = super()._create_guest(context, xml, instance,
                                      power_on=power_on, pause=pause,
                                      post_xml_callback=post_xml_callback)
        if power_on or pause:
            self._rtmig.guest_started(context, instance, guest)
        return guest

    def _soft_reboot(self, instance):
        rebooted = super()._soft_reboot(instance)
        if rebooted:
            self._rtmig.guest_started(nova_context.get_admin_context(),
                                      instance, self._host.get_guest(instance))
        return rebooted

    def _resume_guest_after_snapshot(self, context, live_snapshot,
                                     original_power_state, instance, guest):
        super()._resume_guest_after_snapshot(
            context, live_snapshot, original_power_state, instance, guest)
        self._rtmig.guest_started(context, instance, guest)

    def destroy(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, destroy_secrets=True):
        super().destroy(context, instance, network_info,
                        block_device_info=block_device_info,
                        destroy_disks=destroy_disks,
                        destroy_secrets=destroy_secrets)
        self._rtmig.release_vm(instance)

    def pre_live_migration(self, context, instance, block_device_info,
                           network_info, disk_info, migrate_data):
        migrate_data = super().pre_live_migration(
            context, instance, block_device_info, network_info, disk_info,
            migrate_data)
        self._rtmig.prepare_arrival(context, instance)
        return migrate_data

    def post_live_migration_at_destination(self, context, instance,
                                           network_info,
                                           block_migration=False,
                                           block_device_info=None):
        super().post_live_migration_at_destination(
            context, instance, network_info, block_migration=block_migration,
            block_device_info=block_device_info)
        self._rtmig.arrived(context, instance)

    def rollback_live_migration_at_destination(self, context, instance,
                                               network_info,
                                               block_device_info,
                                               destroy_disks=True,
                                               migrate_data=None):
        self._rtmig.release_vm(instance, arriving=True)
        super().rollback_live_migration_at_destination(
            context, instance, network_info, block_device_info,
            destroy_disks=destroy_disks, migrate_data=migrate_data)

    def post_live_migration(self, context, instance, block_device_info,
                            migrate_data=None):
        super().post_live_migration(context, instance, block_device_info,
                                    migrate_data=migrate_data)
        self._rtmig.release_vm(instance)

    def check_can_live_migrate_destination(self, context, instance,
                                           src_compute_info, dst_compute_info,
                                           block_migration=False,
                                           disk_over_commit=False):
        self._rtmig_lm.check_destination(
            context, instance, dst_compute_info['hypervisor_hostname'])
        return super().check_can_live_migrate_destination(
            context, instance, src_compute_info, dst_compute_info,
            block_migration=block_migration,
            disk_over_commit=disk_over_commit)

    def check_can_live_migrate_source(self, context, instance,
                                      dest_check_data,
                                      block_device_info=None):
        self._rtmig_lm.plan(context, instance)
        return super().check_can_live_migrate_source(
            context, instance, dest_check_data,
            block_device_info=block_device_info)

    def _live_migration(self, context, instance, dest, post_method,
                        recover_method, block_migration, migrate_data):
        plan, refused = self._rtmig_lm.plan_at_start(context, instance)
        if refused:
            recover_method(context, instance, dest, migrate_data)
            return
        if plan is None:
            return super()._live_migration(
                context, instance, dest, post_method, recover_method,
                block_migration, migrate_data)
        guest = live_migration.RTGuest(self._host.get_guest(instance), plan,
                                       self._rtmig_migration_connection)
        self._rtmig_guests[instance.uuid] = guest
        started = time.monotonic()
        try:
            held = self._rtmig_lm.reserve_source(
                context, instance, plan, guest, self._host._uri,
                self._rtmig_connect, dest, migrate_data)
            if held is None:
                # refused (and said why): rolled back as a failed migration
                recover_method(context, instance, dest, migrate_data)
                return
            try:
                return super()._live_migration(
                    context, instance, dest, post_method, recover_method,
                    block_migration, migrate_data)
            finally:
                self._rtmig_lm.release(held, self._rtmig_connect, instance)
                self._rtmig_lm.ended(context, instance, plan, guest, started)
        finally:
            del self._rtmig_guests[instance.uuid]

    def _live_migration_operation(self, context, instance, dest,
                                  block_migration, migrate_data, guest,
                                  device_names):
        return super()._live_migration_operation(
            context, instance, dest, block_migration, migrate_data,
            self._rtmig_guests.get(instance.uuid, guest), device_names)

    def _live_migration_monitor(self, context, instance, guest, dest,
                                post_method, recover_method, block_migration,
                                migrate_data, future, disk_paths):
        return super()._live_migration_monitor(
            context, instance, self._rtmig_guests.get(instance.uuid, guest),
            dest, post_method, recover_method, block_migration,
            migrate_data, future, disk_paths)
