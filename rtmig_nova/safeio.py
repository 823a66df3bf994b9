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

"""Bounded reads of input files: a size limit on every read, a limit on
what gzip may expand to, and a nesting limit on JSON.

Standard library only.  Every failure is a :class:`ReadError` (a
ValueError) whose one-line message starts with the name the caller gave
the input (its path, ``<stdin>``...).  The limits are in
:mod:`rtmig_nova.bounds`.
"""

import json
import os
import stat
import zlib

from rtmig_nova import bounds

GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16
_READ_CHUNK = 1 << 20


class ReadError(ValueError):
    """An input file is too large or malformed: ``where: reason``, one
    line."""

    def __init__(self, where, reason):
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


def _size(n):
    return bounds.fmt("size", n)


def read_stream(f, where, limit):
    """At most ``limit`` bytes of the binary stream ``f``; more is an
    error (read ``limit + 1`` bytes, never the whole of /dev/zero)."""
    # In chunks: read(limit + 1) would allocate the whole limit up front,
    # 64 MiB for every small profile.
    data = bytearray()
    while len(data) <= limit:
        chunk = f.read(min(_READ_CHUNK, limit + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    data = bytes(data)
    if len(data) > limit:
        raise ReadError(where, f"larger than {_size(limit)}, the limit "
                        f"for this kind of file")
    return data


def read_file(path, limit, where=None):
    """The bytes of ``path``, at most ``limit`` of them.  An OSError
    (missing, a directory, no permission) stays an OSError, named by
    ``path``."""
    where = where or str(path)
    # A pipe would block the read until a writer comes (a hang); a device
    # such as /dev/zero is bounded by the limit like any file.
    if stat.S_ISFIFO(os.stat(path).st_mode) or \
            stat.S_ISSOCK(os.stat(path).st_mode):
        raise ReadError(where, "not a regular file (a pipe or a socket)")
    with open(path, "rb") as f:
        return read_stream(f, where, limit)


def gunzip(data, where, limit):
    """``data`` decompressed (every gzip member), streamed so that no more
    than ``limit`` bytes are ever held: a small file that expands to
    gigabytes is refused, not inflated."""
    out = bytearray()
    rest = data
    while rest:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pos = 0
        try:
            while pos < len(rest) and not d.eof:
                room = limit - len(out) + 1
                chunk = d.decompress(rest[pos:pos + _CHUNK], room)
                out += chunk
                if len(out) > limit:
                    raise ReadError(where, f"expands to more than "
                                    f"{_size(limit)} (a gzip bomb?)")
                # Output held back by max_length: drain it before feeding
                # more input.
                while d.unconsumed_tail:
                    chunk = d.decompress(d.unconsumed_tail,
                                         limit - len(out) + 1)
                    out += chunk
                    if len(out) > limit:
                        raise ReadError(where, f"expands to more than "
                                        f"{_size(limit)} (a gzip bomb?)")
                pos += _CHUNK
        except zlib.error as e:
            raise ReadError(where, f"corrupt gzip data ({e})") from None
        if not d.eof:
            raise ReadError(where, "truncated gzip data")
        # What follows the member: the rest of the last chunk fed, then
        # what was not fed yet.
        rest = d.unused_data + rest[pos:]
        if rest and not rest.startswith(GZIP_MAGIC):
            if rest.strip(b"\0"):
                raise ReadError(where, "trailing garbage after the gzip "
                                "data")
            rest = b""
    return bytes(out)


def _refuse_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def loads_json(data, where, max_depth=bounds.MAX_JSON_DEPTH):
    """The JSON document in ``data`` (bytes, UTF-8; or str).  NaN and
    Infinity are refused (not JSON), and so is nesting deeper than
    ``max_depth`` (which would otherwise end in RecursionError here or in
    whatever walks the document later)."""
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ReadError(where, "not JSON (not UTF-8 text)") from None
    try:
        doc = json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise ReadError(where, f"not JSON we read: nested deeper than "
                        f"{max_depth} levels") from None
    except ValueError as e:
        # json's messages are one line, with a position; int() ones too.
        raise ReadError(where, f"not JSON ({str(e)[:200]})") from None
    check_depth(doc, where, max_depth)
    return doc


def check_depth(doc, where, max_depth=bounds.MAX_JSON_DEPTH):
    """ReadError if lists and dicts in ``doc`` nest deeper than
    ``max_depth`` (walked without recursion)."""
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > max_depth:
            raise ReadError(where, f"not JSON we read: nested deeper than "
                            f"{max_depth} levels")
        stack.extend((c, depth + 1) for c in children)
