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

"""``rtmig-nova-shim install|uninstall|status``: put rtmig-nova's compute
driver where Nova loads drivers from.

Nova loads ``compute_driver`` only from under ``nova.virt``, and both
``nova`` and ``nova.virt`` are regular packages, so a ``nova/virt/rtmig``
on another sys.path entry (an editable install) is never imported.  As
nova-lxd did, the two files of :mod:`rtmig_nova.virt_shim.files` are copied
into Nova's own package directory, with a marker that says they are
rtmig-nova's; ``uninstall`` removes only a directory that has it.
"""

import argparse
import filecmp
import os
import shutil
import sys
from importlib import resources

MARKER = "RTMIG_NOVA_SHIM"
SHIM_FILES = ("__init__.py", "driver.py")


class ShimError(Exception):
    """The shim cannot be installed or removed (one line)."""


def nova_virt_dir():
    """Nova's ``nova/virt`` directory, found without importing Nova."""
    import importlib.util
    spec = importlib.util.find_spec("nova")
    if spec is None or not spec.submodule_search_locations:
        raise ShimError("Nova is not installed in this Python "
                        f"({sys.executable}): pip install rtmig-nova[nova]")
    return os.path.join(list(spec.submodule_search_locations)[0], "virt")


def _target(virt_dir):
    return os.path.join(virt_dir or nova_virt_dir(), "rtmig")


def status(virt_dir=None):
    """``"installed"``, ``"outdated"``, ``"absent"`` or ``"foreign"``."""
    target = _target(virt_dir)
    if not os.path.exists(target):
        return "absent"
    if not os.path.isfile(os.path.join(target, MARKER)):
        return "foreign"
    src = resources.files(__name__).joinpath("files")
    for name in SHIM_FILES:
        with resources.as_file(src.joinpath(name)) as path:
            dst = os.path.join(target, name)
            if not os.path.isfile(dst) or \
                    not filecmp.cmp(path, dst, shallow=False):
                return "outdated"
    return "installed"


def install(virt_dir=None):
    """Copy the shim into Nova (replacing an older copy of it); returns
    the directory."""
    target = _target(virt_dir)
    state = status(virt_dir)
    if state == "foreign":
        raise ShimError(f"{target} exists and is not rtmig-nova's (no "
                        f"{MARKER} file): not overwritten")
    os.makedirs(target, exist_ok=True)
    src = resources.files(__name__).joinpath("files")
    for name in SHIM_FILES:
        with resources.as_file(src.joinpath(name)) as path:
            tmp = os.path.join(target, f".{name}.tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, os.path.join(target, name))
    with open(os.path.join(target, MARKER), "w") as f:
        f.write("Installed by rtmig-nova-shim; removed by "
                "'rtmig-nova-shim uninstall'.\n")
    return target


def uninstall(virt_dir=None):
    """Remove the shim; returns whether there was one."""
    target = _target(virt_dir)
    state = status(virt_dir)
    if state == "absent":
        return False
    if state == "foreign":
        raise ShimError(f"{target} is not rtmig-nova's (no {MARKER} file): "
                        "left alone")
    shutil.rmtree(target)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="rtmig-nova-shim",
        description="Install rtmig-nova's compute driver (compute_driver = "
                    "rtmig.RTLibvirtDriver) into Nova's package directory.")
    parser.add_argument("action", choices=("install", "uninstall", "status"))
    parser.add_argument("--nova-virt-dir", metavar="DIR",
                        help="Nova's nova/virt directory (default: the one "
                             "of the Nova this Python imports)")
    args = parser.parse_args(argv)
    try:
        if args.action == "install":
            print(f"rtmig-nova-shim: installed {install(args.nova_virt_dir)}")
        elif args.action == "uninstall":
            gone = uninstall(args.nova_virt_dir)
            print("rtmig-nova-shim: " + ("removed" if gone else
                                         "nothing installed"))
        else:
            print(f"rtmig-nova-shim: {status(args.nova_virt_dir)} "
                  f"({_target(args.nova_virt_dir)})")
    except (ShimError, OSError) as e:
        print(f"rtmig-nova-shim: error: {e}", file=sys.stderr)
        return 2
    return 0
