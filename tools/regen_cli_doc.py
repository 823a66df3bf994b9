#!/usr/bin/env python3
"""Regenerate the example output in docs/cli.md.

Every fenced code block of the document that holds ``$ COMMAND`` lines is
re-run: each block in a fresh temporary directory that holds the example
inputs the document refers to (made here, nothing is read from elsewhere):

  rates.npy     2048 per-page write rates (writes/s), 300 of them non-zero
  small.json    ``rtmig profile convert rates.npy small.json --zero-pages
                100``, unless the block makes it itself
  coarse.json   a coarse profile: 8 GiB at an aggregate 200 MB/s
  junk.json     3000 random bytes (not a profile)

``rtmig`` runs as ``python -m rtmig_nova.cli`` from this source tree; any
other command (``head``) as it is.  A command's output (stdout and stderr,
as a terminal shows them) replaces the lines that followed it.  A JSON
value the document shortens to ``{ "...": "TEXT" }`` is shortened the same
way in the new output.  Blocks without ``$`` lines are left alone, and so
is all the prose: read the diff, the text may quote numbers too.

    python tools/regen_cli_doc.py            # rewrite docs/cli.md
    python tools/regen_cli_doc.py --check    # exit 1 if it would change
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "cli.md")

# A fenced block, possibly indented (inside a list item).
BLOCK = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^`\n]*)\n(?P<body>.*?)"
                   r"^(?P=indent)```[ \t]*$", re.M | re.S)
# The one part of the output that differs from run to run.
ELAPSED = re.compile(r"^(Simulated \d+ migrations(?: \(seed \d+\))?) in .*$",
                     re.M)
# A shortened JSON value: "key": { "...": "text" }
SHORTENED = re.compile(r'"(?P<key>[^"]+)": \{ "\.\.\.": "(?P<text>[^"]*)" \}')
MAKES_SMALL = re.compile(r"^\$ rtmig profile convert \S+ small\.json\b",
                         re.M)
SMALL_ARGS = ["profile", "convert", "rates.npy", "small.json",
              "--zero-pages", "100"]


def rtmig_argv(args):
    return [sys.executable, "-m", "rtmig_nova.cli"] + list(args)


def environment():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [REPO] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                  if p])
    env["COLUMNS"] = "80"
    return env


def make_inputs(directory, env, with_small):
    """The example input files of the document, in ``directory``."""
    script = (
        "import sys\n"
        "import numpy as np\n"
        "from rtmig_nova.model import DirtyProfile\n"
        "rng = np.random.default_rng(1)\n"
        "rates = np.zeros(2048)\n"
        "idx = rng.choice(2048, 300, replace=False)\n"
        "rates[idx] = 10.0 ** rng.uniform(-2, 2.5, 300)\n"
        "np.save('rates.npy', rates)\n"
        "DirtyProfile.from_aggregate_rate(8 * 2 ** 30, 2e8)"
        ".save('coarse.json')\n"
        "with open('junk.json', 'wb') as f:\n"
        "    f.write(np.random.default_rng(0).bytes(3000))\n")
    # In a child, so that this tree's rtmig_nova is the one used.
    subprocess.run([sys.executable, "-c", script], cwd=directory, env=env,
                   check=True)
    if with_small:
        subprocess.run(rtmig_argv(SMALL_ARGS), cwd=directory, env=env,
                       check=True, stdout=subprocess.DEVNULL)


def run(command, directory, env, problems):
    """The output of one ``$`` command line, as a terminal shows it."""
    argv = shlex.split(command)
    if argv and argv[0] == "rtmig":
        argv = rtmig_argv(argv[1:])
    proc = subprocess.run(argv, cwd=directory, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=600)
    if proc.returncode not in (0, 1, 2) or "Traceback" in proc.stdout:
        problems.append(f"$ {command}: exit status {proc.returncode}\n"
                        f"{proc.stdout}")
    return proc.stdout.rstrip("\n")


def shorten(output, shortened):
    """Shorten the JSON values the document shortened (by key)."""
    if not shortened:
        return output
    try:
        doc = json.loads(output)
    except ValueError:
        return output

    def walk(node):
        if isinstance(node, dict):
            return {k: ({"...": shortened[k]} if k in shortened
                        and isinstance(v, dict) else walk(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    text = json.dumps(walk(doc), indent=2)
    return re.sub(r'\{\n\s*"\.\.\.": ("[^"]*")\n\s*\}', r'{ "...": \1 }',
                  text)


def regenerate_block(match, env, problems):
    indent, body = match.group("indent"), match.group("body")
    lines = [line[len(indent):] if line.startswith(indent) else line
             for line in body.splitlines()]
    if not any(line.startswith("$ ") for line in lines):
        return match.group(0)
    plain = "\n".join(lines)
    shortened = {m.group("key"): m.group("text")
                 for m in SHORTENED.finditer(plain)}
    out = []
    with tempfile.TemporaryDirectory(prefix="rtmig-doc-") as directory:
        make_inputs(directory, env,
                    with_small=not MAKES_SMALL.search(plain))
        for line in lines:
            if not line.startswith("$ "):
                continue            # old output: replaced
            out.append(line)
            result = run(line[2:], directory, env, problems)
            if result:
                out.append(shorten(result, shortened))
    text = "\n".join(out)
    text = "\n".join((indent + x) if x else x for x in text.split("\n"))
    return f"{indent}```{match.group('info')}\n{text}\n{indent}```"


def regenerate(text, env, problems):
    return BLOCK.sub(lambda m: regenerate_block(m, env, problems), text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("doc", nargs="?", default=DOC,
                        help="the document (default: docs/cli.md)")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if the examples are "
                             "out of date")
    args = parser.parse_args(argv)
    with open(args.doc, encoding="utf-8") as f:
        old = f.read()
    problems = []
    new = regenerate(old, environment(), problems)
    for p in problems:
        sys.stderr.write(f"regen_cli_doc: unexpected failure: {p}\n")
    if args.check:
        if ELAPSED.sub(r"\1", new) != ELAPSED.sub(r"\1", old):
            sys.stderr.write(f"{args.doc}: examples out of date; run "
                             f"tools/regen_cli_doc.py\n")
            return 1
        return 1 if problems else 0
    if new != old:
        with open(args.doc, "w", encoding="utf-8") as f:
            f.write(new)
        print(f"rewrote {args.doc}")
    else:
        print(f"{args.doc}: up to date")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
