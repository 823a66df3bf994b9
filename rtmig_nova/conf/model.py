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

"""Options of the ``[rtmig]`` group: the migration model and reservation."""

import math

from oslo_config import cfg
from oslo_config import types

from rtmig_nova import bounds


class FiniteFloat(types.Float):
    """oslo.config's Float without NaN and infinities: NaN passes every
    min/max comparison, and the command line refuses both."""

    def __call__(self, value):
        value = super().__call__(value)
        # oslo.config's Float gives None for an empty value: left to the
        # reader of the option, as for any other type.
        if value is not None and not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value}")
        return value


def bounded_float(name, bound, **kwargs):
    """A float option of ``bound`` (rtmig_nova.bounds): min and max as
    oslo.config checks them (an open lower end as its closed one: the
    reader of the option refuses it, see rtmig_nova.cli.config)."""
    return cfg.Opt(name, type=FiniteFloat(min=bound.low, max=bound.high),
                   **kwargs)


def bounded_int(name, bound, **kwargs):
    return cfg.IntOpt(name, min=int(bound.low), max=int(bound.high),
                      **kwargs)


rtmig_group = cfg.OptGroup(
    'rtmig',
    title='Real-time live migration options',
    help="""
Options of rtmig-nova, which predicts how a QEMU/KVM pre-copy live migration
of a guest with a given dirty-page profile proceeds (rounds, transferred
bytes, downtime) and which CPU share the migration thread must be reserved so
that the prediction holds.
""")

model_opts = [
    cfg.StrOpt(
        'model',
        default='precopy',
        help="""
Model that predicts a migration.

The value is the name of a plugin in the stevedore namespace
``rtmig_nova.models``; the package provides ``precopy``, ``geometric``,
``qemu-estimate`` and ``montecarlo``.  Unit: none (a plugin name).
"""),
    cfg.StrOpt(
        'dirty_log',
        default='sync',
        choices=[
            ('sync', 'The dirty bitmap is synced once per round (TCG, and '
                     'KVM without manual dirty-log protection): a page '
                     'written after the sync is sent again next round.'),
            ('clear', 'KVM_CLEAR_DIRTY_LOG: the dirty log of a page is '
                      'cleared just before the page is sent, so only writes '
                      'after that moment make it dirty again.'),
        ],
        help="""
How the hypervisor tracks dirty pages during pre-copy.

Unit: none (one of the choices).  It decides from which moment a page's
writes count towards the next round.
"""),
    cfg.StrOpt(
        'qemu_version',
        default='auto',
        regex=r'^(auto|([2-9]|[1-9][0-9])\.[0-9]{1,2}(\.[0-9]{1,4})?)$',
        help="""
The QEMU release whose pre-copy the models follow.

``auto``: on a compute host, the QEMU libvirt reports there; elsewhere (the
scheduler, ``rtmig`` without a host) the models' default, 7.2.  Or a
release such as ``10.0``.  It decides how QEMU's rate limit counts bytes:
up to 8.1 as they are queued (a window sends its quota plus one page), from
8.2 on as they are flushed, 32 pages at a time (up to 25% above the limit:
at 4 MiB/s), which the plans' bandwidth, CPU and link share follow.  Set
it explicitly where the scheduler must plan as the hosts do.

Unit: none (``auto`` or MAJOR.MINOR).
"""),
    cfg.StrOpt(
        'send_order',
        default='address',
        choices=[
            ('address', "QEMU's order: pages are sent by increasing guest "
                        "physical address."),
            ('rate', 'Pages are sent by increasing dirtying rate, so the '
                     'hottest pages go last (Checconi et al. 2009).'),
        ],
        help="""
Order in which the dirty pages of a round are sent.

Unit: none (one of the choices).
"""),
    bounded_float(
        'check_interval', bounds.CHECK_INTERVAL,
        default=0.1,
        help="""
Period, in seconds, at which QEMU checks the pending bytes against the
downtime limit (its BUFFER_DELAY, 100 ms in QEMU).

Unit: seconds.
"""),
    bounded_float(
        'switchover_time', bounds.SWITCHOVER_TIME,
        default=0.0,
        help="""
Fixed part of the downtime, in seconds: the time to transfer device state
and to switch the guest over to the destination, added to the time to send
the last round of dirty pages.

Unit: seconds.
"""),
    bounded_float(
        'setup_time', bounds.SETUP_TIME,
        default=0.0,
        help="""
Fixed time, in seconds, from the start of the migration job to QEMU's first
page, added to the predicted total time: libvirt's prepare phase, which
starts the destination QEMU (about 0.3 s on the project's testbed; measure
it on your hosts as docs/testbed.md describes).

Unit: seconds.
"""),
    bounded_float(
        'setup_time_sd', bounds.SETUP_TIME,
        default=0.0,
        help="""
Standard deviation, in seconds, of setup_time from one migration to the
next; it widens the predicted total-time distribution (taken as normal and
independent of the rest).

Unit: seconds.
"""),
    bounded_float(
        'send_rate_sd', bounds.LOG_SPREAD,
        default=0.0,
        help="""
Standard deviation of log(bytes the host sends per second / the send rate
QEMU's rate limit allows) from one migration to the next: one factor for a
whole migration, so it moves the total time and, near the convergence
cliff, whether the migration converges.  The predictions then mix a few
model runs (docs/model.md, "Uncertainty").  Measure it with idle-guest
migrations at two bandwidths (`rtmig experiment validate` writes it to
calibration.json as send_rate_sd: 0.01-0.05 on the project's testbed).

Unit: none (a relative spread; 0.03 is about 3%).
"""),
    bounded_int(
        'max_rounds', bounds.MAX_ROUNDS,
        default=200,
        help="""
Largest number of pre-copy rounds the model simulates before it declares that
the migration does not converge.

Unit: rounds (a count).
"""),
    bounded_float(
        'confidence', bounds.CONFIDENCE,
        default=0.95,
        help="""
Probability with which the predicted downtime and migration time must hold:
the models report this quantile of their distributions.

Unit: probability (more than 0, at most 0.999999).
"""),
    bounded_float(
        'cpu_cost_per_page', bounds.CPU_COST_PER_PAGE,
        default=2.5e-06,
        help="""
CPU time, in seconds, that the migration thread spends per page it sends
(scanning, copying, and the socket write).  Calibrate it on the host with
``rtmig experiment calibrate`` (to come in a later release).

Unit: seconds of CPU time per page.
"""),
    bounded_float(
        'cpu_margin', bounds.CPU_MARGIN,
        default=1.25,
        help="""
Safety factor applied to the computed CPU share of the migration thread
before it is reserved.

Unit: none (a factor, at least 1.0).
"""),
    bounded_float(
        'deadline_period', bounds.DEADLINE_PERIOD,
        default=0.01,
        help="""
Period, in seconds, of the SCHED_DEADLINE reservation of the migration
thread; its runtime is the reserved CPU share times this period.  Linux
refuses periods below ``kernel.sched_deadline_period_min_us`` (100 us by
default).

Unit: seconds.
"""),
    bounded_int(
        'cgroup_period', bounds.CGROUP_PERIOD_US,
        default=100000,
        help="""
CPU bandwidth period of the cgroup that holds the migration thread when the
reservation is made with the cgroup CPU controller (cpu.max); the quota is
the reserved CPU share times this period.

Unit: microseconds.
"""),
    cfg.StrOpt(
        'default_profile',
        default='builtin:default',
        help="""
Dirty-page profile used when none is given.  ``builtin:NAME`` names a
profile shipped in the package (``builtin:default`` is
``rtmig_nova/data/default-profile.json``); any other value is a path to a
profile file.

Unit: none (a profile reference).
"""),
    cfg.StrOpt(
        'reservation_state_dir',
        default='/var/lib/rtmig-nova/reservations',
        help="""
Directory of the state files of the host reservations that ``rtmig reserve
apply`` makes (libvirt migration and CPU settings, SCHED_DEADLINE, traffic
shaping): one JSON file per reservation that records, before each change,
what to restore.  ``rtmig reserve show`` lists them and ``rtmig reserve
release`` undoes them, also after a crash of the process that made them.
Only root should be able to write it: releasing a record changes what it
names.

Unit: none (a directory path).
"""),
]


def register_opts(conf):
    conf.register_group(rtmig_group)
    conf.register_opts(model_opts, group=rtmig_group)


def list_opts():
    return {rtmig_group: model_opts}
