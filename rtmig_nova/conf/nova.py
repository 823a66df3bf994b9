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

"""Options of the ``[rtmig]`` group read by the Nova layer: a compute's
real-time capacity, the migration headroom it keeps, and the scheduler's
weigher."""

from oslo_config import cfg

from rtmig_nova import bounds
from rtmig_nova.conf.model import FiniteFloat
from rtmig_nova.conf.model import bounded_float
from rtmig_nova.conf.model import bounded_int
from rtmig_nova.conf.model import rtmig_group

nova_opts = [
    bounded_float(
        'link_capacity', bounds.LINK_RATE,
        default=1.25e9,
        help="""
Capacity of the compute host's link that carries both the real-time VMs'
reserved traffic and live migrations, in bytes/s (1.25e9 is 10 Gbit/s).
It becomes the total of the host's ``CUSTOM_RTMIG_NET_KBPS`` Placement
inventory.

Unit: bytes/s.

Related options:

* ``migration_link_share``: the part of it kept for migrations.
"""),
    cfg.Opt(
        'migration_link_share',
        type=FiniteFloat(min=0.001, max=1.0),
        default=0.4,
        help="""
Fraction of ``link_capacity`` kept free for live migrations: it is the
``reserved`` amount of the host's ``CUSTOM_RTMIG_NET_KBPS`` inventory, so
VMs can never claim it, and every real-time VM admitted to the host must be
migratable away within its deadline at this bandwidth.

Unit: none (a fraction in (0, 1]).

Related options:

* ``link_capacity``, ``migration_cpu``, ``max_evacuation_time``.
"""),
    cfg.Opt(
        'migration_cpu',
        type=FiniteFloat(min=0.001, max=1.0),
        default=0.5,
        help="""
Share of one CPU kept for the live-migration thread: it is reserved out of
the host's ``CUSTOM_RTMIG_CPU_MILLI`` inventory and placed on one CPU in
the per-CPU bookkeeping.  A VM whose planned migration needs more is not
admitted.  Must not exceed the kernel's real-time bound per CPU.

Unit: share of one CPU.
"""),
    cfg.Opt(
        'max_evacuation_time',
        type=FiniteFloat(min=0.0, max=864000.0),
        default=0.0,
        help="""
Bound on the time to live-migrate every real-time VM away from the host,
one after the other, each at its planned bandwidth and confidence (the sum
of the planned migration times).  A VM that would push the sum past it is
not admitted.  0 sets no bound (the sum is still reported).

Unit: seconds.
"""),
    cfg.IntOpt(
        'rt_cpu_count',
        default=0,
        min=0,
        max=65536,
        help="""
Number of physical CPUs offered to real-time reservations.  0 takes the
CPUs the libvirt driver reports for VCPU (``[compute] cpu_dedicated_set`` /
``cpu_shared_set`` or the online CPUs).

Unit: CPUs (a count).
"""),
    cfg.StrOpt(
        'profile_dir',
        default='/var/lib/rtmig-nova/profiles',
        help="""
Directory of named dirty-page profiles: a flavor's ``rtmig:profile=NAME``
(without ``builtin:``) names the file ``NAME.json`` or ``NAME.json.gz``
here (the format of docs/profile-format.md).  The scheduler and the compute
hosts must hold the same files.

Unit: none (a directory path).
"""),
    cfg.Opt(
        'headroom_weight_multiplier',
        type=FiniteFloat(min=-1000.0, max=1000.0),
        default=1.0,
        help="""
Multiplier of ``rtmig_nova.scheduler.weights.RTHeadroomWeigher``: a
positive value spreads real-time VMs over the hosts with the most free
real-time CPU, a negative one packs them onto the fullest.  It weighs only
real-time requests.

Unit: none (a factor).
"""),
    cfg.StrOpt(
        'instance_profile_dir',
        default='/var/lib/rtmig-nova/instance-profiles',
        help="""
Per-instance store of captured dirty-page profiles on a compute host: the
profile of instance UUID is ``UUID.json`` or ``UUID.json.gz`` here (the
output of ``rtmig profile capture --domain instance-... --output``).  A live
migration of a real-time instance is planned from its captured profile when
there is one (``migration_profile_sources``).

Unit: none (a directory path).
"""),
    cfg.ListOpt(
        'migration_profile_sources',
        default=['instance', 'dirty_rate', 'flavor'],
        help="""
Where a compute takes the dirty-page profile of a real-time instance it
live-migrates away, in order: the first source that has one wins.  Names of
plugins in the stevedore namespace ``rtmig_nova.migration_extensions``:
``instance`` (the captured profile in ``instance_profile_dir``),
``dirty_rate`` (a coarse rate libvirt measures on the running domain for
``dirty_rate_seconds``, started at the migration's pre-checks) and
``flavor`` (the flavor's ``rtmig:profile``).  The compute service refuses
to start with a name that is not installed.

Unit: none (plugin names).
"""),
    cfg.BoolOpt(
        'enforce_vcpu_reservation',
        default=True,
        help="""
Put each vCPU thread of a real-time instance under SCHED_DEADLINE with its
flavor's ``rtmig:vcpu_reservation`` (runtime per period, deadline = period)
on the compute that runs it: after spawn (a refusal fails the build, which
Nova reschedules) and on a live migration's destination as soon as the
incoming QEMU's vCPU threads exist, so that it holds when the guest
resumes there.  A reservation is a guarantee and a cap: a vCPU gets its
runtime every period, and no more.  False: real-time instances are
admitted (scheduler, Placement, ledgers) but not enforced.

Unit: none (a switch).
"""),
    cfg.BoolOpt(
        'migration_thread_deadline',
        default=True,
        help="""
Put QEMU's migration thread (``live_migration``; on 10.0 ``mig/src/main``)
under SCHED_DEADLINE with the plan's CPU reservation for the duration of a
real-time live migration, on the source, as soon as the thread exists (Nova's
monitor looks every 0.5 s). The emulator cgroup's CFS quota, set before the
migration, caps it until then. A kernel that refuses (no CAP_SYS_NICE for the
privsep daemon, the thread's CPU affinity narrower than its root domain, the
deadline bandwidth full) aborts the migration, which Nova rolls back. With
False only the CFS quota holds: a cap, not a guarantee.

Unit: none (a switch).
"""),
    cfg.BoolOpt(
        'migration_thread_reclaim',
        default=True,
        help="""
With ``migration_thread_deadline``, give the migration thread's
SCHED_DEADLINE reservation ``SCHED_FLAG_RECLAIM``: beyond its runtime it may
run on CPU time no SCHED_DEADLINE reservation on its CPU is using, taken from
best-effort tasks, so the runtime is a guarantee but not a cap.  Admission
counts the runtime either way.  The pre-copy's CPU is bounded by the
bandwidth limit anyway; the stop phase (final bitmap sync, last RAM pass,
device state) needs a burst that a hard cap stretches: on two testbed
machines the median QEMU downtime went from 139 and 128 ms capped to 92 and
95 ms reclaiming, 3 runs a side each (docs/results-isolation.md).  False: a
hard cap (constant-bandwidth server).

Unit: none (a switch).
"""),
    bounded_int(
        'send_queue_cap', bounds.SEND_QUEUE_CAP,
        default=0,
        help="""
Cap, in bytes, on the data a real-time live migration's stream holds unsent
in its socket on the source, set (``TCP_NOTSENT_LOWAT``) on QEMU's socket as
soon as the migration thread exists; 0: no cap.  QEMU counts bytes as sent
once they are in the socket: on a link or HTB class slower than QEMU's burst
the socket's send buffer fills (350-725 kB measured at 7 MiB/s), the guest
stops with that backlog still to cross, and the downtime grows by backlog /
link rate beyond the downtime limit.  The planner counts the cap and one
64 KiB segment past it, and one in flight, in the downtime (none with 0).
Off by default: a capped socket makes QEMU's migration thread wake for
every few segments, and under its SCHED_DEADLINE reservation it then needs
more CPU a page than ``cpu_cost_per_page``'s default: on the TCG testbed a
65536 cap with the 2.5 us default sent 55-65% of the planned rate and the
migration stopped converging.  Set it (65536 is the value measured) with a
``cpu_cost_per_page`` measured under load.  Setting it needs
``pidfd_getfd`` (Linux 5.6) and CAP_SYS_PTRACE for the privsep daemon; a
kernel that refuses aborts the migration, which Nova rolls back.  At most
67108864 (64 MiB).

Unit: bytes.
"""),
    cfg.StrOpt(
        'migration_interface',
        default='',
        help="""
Network interface that live-migration streams leave this compute host by.
When set, the stream of a real-time live migration from this host gets an
HTB class of the plan's bandwidth on it (and everything else a best-effort
class sharing the rest of ``link_capacity``) for the migration's duration:
packets to the destination's address and to ports ``migration_port_min``
to ``migration_port_max``.  rtmig-nova replaces only a kernel default root
qdisc (or its own); an interface with another root qdisc refuses the
migration.  One shaped migration at a time per host (Nova's default
``[DEFAULT] max_concurrent_live_migrations = 1``); a second one is refused.
Empty: no shaping.

Unit: none (an interface name).
"""),
    cfg.PortOpt(
        'migration_port_min',
        default=49152,
        help="""
First destination port of the migration streams that ``migration_interface``
shapes: libvirt's ``migration_port_min`` in the destination's qemu.conf.

Unit: none (a TCP port).
"""),
    cfg.PortOpt(
        'migration_port_max',
        default=49215,
        help="""
Last destination port of the migration streams that ``migration_interface``
shapes: libvirt's ``migration_port_max`` in the destination's qemu.conf.

Unit: none (a TCP port).
"""),
    bounded_int(
        'dirty_rate_seconds', bounds.DIRTY_RATE_SECONDS,
        default=1,
        help="""
Length of libvirt's dirty-rate calculation (``virDomainStartDirtyRateCalc``,
QEMU's ``calc-dirty-rate``) that the ``dirty_rate`` profile source runs
before a live migration.  It starts at the migration's pre-checks; the
migration's start waits for what is left of it, at most 0.75 s, and plans
from the next source if it is not done by then.

Unit: seconds (whole, QEMU's range 1-60).
"""),
    cfg.BoolOpt(
        'replan',
        default=True,
        help="""
Re-plan a real-time live migration while it runs (the closed loop): every
``replan_interval`` the migration's libvirt job stats (bytes remaining,
bytes sent, bitmap syncs, QEMU's dirty rate) are held against the plan's
prediction; when the projected total time leaves the plan's band, the rest
is re-planned from what is observed and the bandwidth raised, never above
the host's reserved migration link share (``link_capacity`` x
``migration_link_share``) nor beyond what its admitted migration CPU
(``migration_cpu``) can push, with the migration thread's CPU and the
migration's HTB class raised with it, all or nothing; or, when even that
cannot meet ``rtmig:migration_deadline``, the migration is aborted early
(``replan_abort``).  Each decision is sent as ``rtmig.migration.replan``.
False: the plan's bandwidth holds to the end.

Unit: none (a switch).
"""),
    bounded_float(
        'replan_interval', bounds.REPLAN_INTERVAL,
        default=1.0,
        help="""
How often the closed loop (``replan``) reads a running real-time
migration's job and re-plans if it left the plan's band.  Nova's monitor
reads the job every 0.5 s; the loop uses every reading at least this far
apart.

Unit: seconds.
"""),
    cfg.BoolOpt(
        'replan_abort',
        default=True,
        help="""
Abort a real-time live migration as soon as the closed loop (``replan``)
finds, at two readings in a row, that even the most bandwidth allowed
cannot meet its deadline (it does not converge, or its expected end is
past the deadline) or that the migration has stalled: Nova rolls it back
and the instance goes on running on the source, instead of a migration
that runs past its deadline.  False: such a migration goes on at the most
bandwidth allowed.

Unit: none (a switch).
"""),
]


def register_opts(conf):
    conf.register_group(rtmig_group)
    conf.register_opts(nova_opts, group=rtmig_group)


def list_opts():
    return {rtmig_group: nova_opts}
