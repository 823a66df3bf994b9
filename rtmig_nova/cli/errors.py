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

"""The program name, the exit statuses and the one-line error report."""

import sys

PROG = "rtmig"
EXIT_OK = 0
EXIT_INFEASIBLE = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """Bad input or usage: reported as one line, exit status 2."""


def one_line(text):
    return " ".join(str(text).split()) or "unknown error"


def os_error_message(e):
    if e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return str(e)


def report_error(message, status=EXIT_USAGE):
    """Write ``rtmig: error: <message>`` (one line) to stderr; returns
    ``status``."""
    sys.stderr.write(f"{PROG}: error: {one_line(message)}\n")
    return status
