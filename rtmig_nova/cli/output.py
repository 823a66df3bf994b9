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

"""Writing to stdout: lines, aligned tables and strict JSON, in which
non-finite values (not converged) are null."""

import dataclasses
import json
import math
import sys


def jsonable(obj):
    """``obj`` as plain JSON data: non-finite floats (not converged)
    become None, numpy scalars Python numbers, tuples lists."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if hasattr(obj, "item") and callable(obj.item):   # numpy scalar
        try:
            return jsonable(obj.item())
        except (TypeError, ValueError):
            pass
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    return str(obj)


def print_json(obj, out=None):
    """Print ``obj`` as one indented, strict JSON document."""
    out = out or sys.stdout
    out.write(json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")


def table(header, rows, indent="  "):
    """Left-aligned first column, right-aligned others."""
    widths = [max(len(str(r[i])) for r in [header] + rows)
              for i in range(len(header))]
    lines = []
    for r in [header] + rows:
        cells = [str(r[0]).ljust(widths[0])] + \
            [str(c).rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def emit(lines):
    """Print ``lines``, one per line."""
    sys.stdout.write("\n".join(lines) + "\n")
