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

"""``rtmig flavor``: the extra specs of a real-time flavor, as one
``openstack flavor set`` line (or JSON), the ``rtmig:`` keys and the
Placement request computed together so that they agree."""

import shlex

from rtmig_nova import bounds
from rtmig_nova.cli.errors import EXIT_OK, CliError
from rtmig_nova.cli.output import emit, print_json

# Microversion at which Nova validates extra specs (2.86).
API_VERSION = "2.86"
_OPTIONS = (("vcpu_reservation", "rtmig:vcpu_reservation"),
            ("vcpu_reclaim", "rtmig:vcpu_reclaim"),
            ("net_rate", "rtmig:net_rate"),
            ("deadline", "rtmig:migration_deadline"),
            ("max_downtime", "rtmig:max_downtime"),
            ("confidence", "rtmig:confidence"),
            ("profile", "rtmig:profile"))


def add_parser(sub, common, add_json):
    p = sub.add_parser(
        "flavor", parents=[common],
        help="the extra specs of a real-time flavor (an 'openstack flavor "
             "set' line)",
        description="Print the 'openstack flavor set' line that makes "
                    "FLAVOR real-time: the rtmig: extra specs and the "
                    "matching Placement request (resources:CUSTOM_RTMIG_*, "
                    "trait:CUSTOM_RTMIG_HOST), checked as Nova's API and "
                    "scheduler check them.  See docs/nova.md.")
    p.add_argument("flavor", metavar="FLAVOR", help="flavor name or id")
    p.add_argument("--vcpus", required=True, metavar="N",
                   help="the flavor's vCPUs (each gets the reservation)")
    p.add_argument("--vcpu-reservation", required=True,
                   metavar="RUNTIME/PERIOD",
                   help="CPU time per vCPU and period, e.g. 2ms/10ms")
    p.add_argument("--vcpu-reclaim", action="store_const", const="true",
                   help="let each vCPU also run on CPU time no reservation "
                        "uses (SCHED_FLAG_RECLAIM): its runtime is then a "
                        "guarantee but not a cap")
    p.add_argument("--net-rate", metavar="RATE",
                   help="the VM's reserved network rate, e.g. 10MB/s")
    p.add_argument("--deadline", required=True, metavar="DURATION",
                   help="a live migration must end within this, e.g. 60s")
    p.add_argument("--max-downtime", required=True, metavar="DURATION",
                   help="longest switch-over pause, e.g. 300ms")
    p.add_argument("--confidence", metavar="P",
                   help="probability of meeting both (default 0.95)")
    p.add_argument("--profile", metavar="REF",
                   help="profile to plan with: builtin:NAME or a name in "
                        "[rtmig] profile_dir (default builtin:default)")
    p.add_argument("--memory", metavar="SIZE",
                   help="the flavor's RAM, e.g. 4GiB: with --link-capacity, "
                        "refuse a deadline shorter than one pass over it")
    p.add_argument("--link-capacity", metavar="RATE",
                   help="migration link share of the hosts, e.g. 4Gbit/s")
    add_json(p)
    p.set_defaults(func=cmd_flavor)


def cmd_flavor(args, defaults):
    from rtmig_nova.model import flavor
    vcpus = bounds.VCPUS.parse(args.vcpus, "--vcpus")
    memory = link = None
    if (args.memory is None) != (args.link_capacity is None):
        raise CliError("--memory and --link-capacity go together")
    if args.memory is not None:
        memory = bounds.GUEST_MEMORY.parse(args.memory, "--memory")
        link = bounds.LINK_RATE.parse(args.link_capacity, "--link-capacity")
    specs = {key: getattr(args, opt) for opt, key in _OPTIONS
             if getattr(args, opt) is not None}
    try:
        props = flavor.flavor_properties(vcpus, specs, memory, link)
    except flavor.SpecError as e:
        raise CliError(str(e)) from None
    if args.json:
        print_json({"flavor": args.flavor, "extra_specs": props})
        return EXIT_OK
    words = ["openstack", "--os-compute-api-version", API_VERSION,
             "flavor", "set"]
    for key, value in props.items():
        words += ["--property", f"{key}={value}"]
    words.append(args.flavor)
    emit([" ".join(shlex.quote(w) for w in words)])
    return EXIT_OK
