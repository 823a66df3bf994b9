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

"""Profiles on the command line: ``--profile`` (a file or
``builtin:NAME``), and the files ``profile convert`` reads and writes."""

import contextlib
import os
import stat
import tempfile

from rtmig_nova.cli.errors import CliError

BUILTIN_PREFIX = "builtin:"


def builtin_profiles():
    """``{NAME: resource}`` of the profiles shipped in rtmig_nova/data."""
    # Imported here: rtmig_nova.planning pulls in rtmig_nova.model (numpy),
    # which the command's start does not need.
    from rtmig_nova import planning
    return planning.builtin_profiles()


def load_profile(ref, where="--profile"):
    """A DirtyProfile from a path or ``builtin:NAME``; errors name
    ``where`` (the option or config value it came from)."""
    from rtmig_nova.model import DirtyProfile, ProfileError

    if ref.startswith(BUILTIN_PREFIX):
        from rtmig_nova import planning
        try:
            return planning.load_profile(ref, None)
        except ProfileError as e:
            raise CliError(f"{where}: {e}") from None
    if not ref:
        raise CliError(f"{where}: empty profile path")
    try:
        return DirtyProfile.load(os.path.expanduser(ref))
    except ProfileError as e:
        raise CliError(f"{where}: {e}") from None


def resolve_profile(args, defaults):
    """``(ref, DirtyProfile)`` of ``--profile``, or of the [rtmig]
    default_profile when it is not given."""
    if args.profile is not None:
        return args.profile, load_profile(args.profile)
    ref = defaults.default_profile
    return ref, load_profile(ref, "[rtmig] default_profile")


def file_kind(path, what):
    """``"npy"``, ``"csv"`` or ``"json"`` from the name of the ``profile
    convert`` INPUT or OUTPUT (``what``)."""
    low = path.lower()
    for ext, kind in ((".json.gz", "json"), (".json", "json"),
                      (".npy", "npy"), (".csv", "csv")):
        if low.endswith(ext):
            if what == "OUTPUT" and kind == "npy":
                break
            return kind
    forms = ".npy, .csv, .json or .json.gz" if what == "INPUT" else \
        ".json, .json.gz or .csv"
    raise CliError(f"{what}: {path}: unknown file type; expected {forms}")


def read_npy(path):
    """The per-page rates (writes/s) of a ``.npy`` file: a 1-D numeric
    array."""
    import numpy as np

    from rtmig_nova import bounds
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        # np.load of a pipe would wait for a writer.
        raise CliError(f"{path}: not a regular file")
    if st.st_size > bounds.MAX_NPY_BYTES:
        raise CliError(f"{path}: larger than "
                       f"{bounds.fmt('size', bounds.MAX_NPY_BYTES)}, the "
                       f"limit for per-page rates (capture a histogram "
                       f"profile instead)")
    try:
        arr = np.load(path, allow_pickle=False)
    except OSError:
        raise
    except (ValueError, EOFError) as e:
        raise CliError(f"{path}: not a .npy array of per-page rates "
                       f"({str(e).splitlines()[0] if str(e) else 'corrupt'})"
                       ) from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 1 or \
            arr.dtype.kind not in "fiu":
        raise CliError(f"{path}: expected a one-dimensional numeric array "
                       f"of per-page rates (writes/s), got "
                       f"{getattr(arr, 'dtype', type(arr))} with shape "
                       f"{getattr(arr, 'shape', '?')}")
    return arr


@contextlib.contextmanager
def replacing(path, suffix):
    """A temporary path next to ``path``, renamed over it on success.  A
    failure to write is reported for ``path``: the hidden temporary file
    is ours, not the user's, and is removed."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".rtmig-", suffix=suffix,
                                   dir=directory)
    except OSError as e:
        raise CliError(f"{path}: cannot write: {e.strerror}") from None
    os.close(fd)
    # mkstemp makes the file 0600; give it the mode open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise CliError(f"{path}: cannot write: {e.strerror}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
