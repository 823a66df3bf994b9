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

"""The ``rtmig`` command: predict, plan and simulate pre-copy migrations,
and apply and release the host reservations of a plan.

Subcommands (see ``docs/cli.md`` for options, output and JSON keys)::

    rtmig predict  --bandwidth RATE --downtime-limit DUR
    rtmig plan     [--deadline DUR] [--max-downtime DUR] ...
    rtmig simulate --bandwidth RATE --downtime-limit DUR [--runs N]
    rtmig profile show [--profile P]
    rtmig profile convert INPUT OUTPUT
    rtmig reserve apply --domain NAME [--plan FILE] ...
    rtmig reserve show
    rtmig reserve release (ID | --all)

Exit status: 0 on success (an infeasible ``plan`` is an answer: also 0,
unless ``--fail-infeasible``, then 1); 2 for bad input or usage, with one
line ``rtmig: error: <message>`` on stderr; 3 for an internal error (a bug;
``--debug`` shows the traceback); 130 when interrupted.

Modules, one job each:

``entry``
    :func:`main`: parse, load the defaults, run the command, and turn every
    failure into an exit status.
``errors``
    the program name, the exit statuses, :class:`CliError` and the one-line
    ``rtmig: error: ...`` report.
``parser``
    the argparse command line (options, help texts, subcommands).
``config``
    the ``[rtmig]`` oslo.config options that default the model settings
    and the reservation state directory.
``profiles``
    ``--profile`` (files and ``builtin:NAME``), and the files ``profile
    convert`` reads and writes.
``commands``
    one function per model and profile subcommand: option values in, model
    call, output out.
``reserve``
    the ``reserve`` subcommands: options and ``--plan`` checked, then the
    host, then the enforcement layer's all-or-nothing ``Reservation``
    (imported only when they run).
``reports``
    what the commands print: the tables and the JSON documents.
``output``
    writing to stdout: lines, aligned tables, strict JSON (inf as null).
"""

from rtmig_nova.cli.entry import main

__all__ = ["main"]
