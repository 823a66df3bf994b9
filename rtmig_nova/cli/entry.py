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

""":func:`main`, the ``rtmig`` entry point: every failure becomes an exit
status and, for bad input, one line on stderr."""

import contextlib
import os
import sys

from rtmig_nova.cli.config import load_defaults
from rtmig_nova.cli.errors import (
    EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, PROG, CliError,
    os_error_message, report_error)
from rtmig_nova.cli.parser import build_parser


def _log_to(debug):
    """The library logs (oslo.log) what it changes on the host; the command
    prints its own report, so log records go to stderr only with --debug
    (without a handler Python would print warnings itself)."""
    import logging
    logger = logging.getLogger("rtmig_nova")
    for h in list(logger.handlers):
        if getattr(h, "_rtmig_cli", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr) if debug else \
        logging.NullHandler()
    handler._rtmig_cli = True
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)


def main(argv=None):
    """Run ``rtmig`` with ``argv`` (default: sys.argv[1:]); returns the
    exit status."""
    debug = False
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        debug = getattr(args, "debug", False)
        _log_to(debug)
        defaults = load_defaults(getattr(args, "config_file", None))
        status = args.func(args, defaults)
        sys.stdout.flush()
        return status
    except SystemExit as e:      # --help, --version
        return e.code if isinstance(e.code, int) else EXIT_OK
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed early (rtmig ... | head): not an error of ours.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")
        return EXIT_OK
    except CliError as e:
        return report_error(e)
    except OSError as e:
        return report_error(os_error_message(e))
    except ValueError as e:      # ProfileError, model argument checks
        return report_error(e)
    except Exception as e:       # a bug: still one line unless --debug
        if debug:
            raise
        return report_error(f"internal error: {type(e).__name__}: {e} (run "
                            f"with --debug for a traceback)", EXIT_INTERNAL)
