"""Stand-ins for devstack's iniset / iniget / iniadd (inc/ini-config),
line-based as devstack's are: ``python ini.py set|get|add FILE SECTION
OPTION [VALUE...]``.  ``add`` keeps existing values of a multi-valued
option and appends the new ones as more ``option = value`` lines."""

import os
import sys


def _read(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().splitlines()


def _section_bounds(lines, section):
    """(first line after the header, end) of ``section``, or None."""
    start = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith('[') and stripped.endswith(']'):
            if start is not None:
                return start, i
            if stripped[1:-1] == section:
                start = i + 1
    return None if start is None else (start, len(lines))


def _option_lines(lines, bounds, option):
    out = []
    for i in range(*bounds):
        key = lines[i].split('=', 1)[0].strip()
        if '=' in lines[i] and key == option:
            out.append(i)
    return out


def main(argv):
    command, path, section, option = argv[:4]
    values = argv[4:]
    lines = _read(path)
    bounds = _section_bounds(lines, section)
    found = _option_lines(lines, bounds, option) if bounds else []
    if command == 'get':
        if found:
            print(lines[found[0]].split('=', 1)[1].strip())
        return 0
    if bounds is None:
        lines += ['[%s]' % section]
        bounds = (len(lines), len(lines))
    new = ['%s = %s' % (option, v) for v in values]
    if command == 'set':
        for i in reversed(found):
            del lines[i]
        at = found[0] if found else bounds[1]
        at = min(at, len(lines))
    elif command == 'add':
        existing = {lines[i].split('=', 1)[1].strip() for i in found}
        new = ['%s = %s' % (option, v) for v in values if v not in existing]
        at = bounds[1]
    else:
        raise SystemExit('unknown command %s' % command)
    lines[at:at] = new
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
