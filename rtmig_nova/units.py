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

"""Parsing and formatting of sizes, rates, durations and probabilities.

Pure functions, no I/O.  Every parser takes the text and the ``name`` of the
argument it came from; bad input raises :class:`ValueError` whose one-line
message names the argument and lists the accepted forms.

Units, as everywhere in rtmig-nova: bytes, seconds, bytes/s.

Sizes (:func:`parse_size`, returns whole bytes)
    ``4096``, ``4KiB``, ``1.5GiB``, ``2GB``, ``64 MiB``.  ``K M G T P`` with
    ``i`` are binary (1024), without ``i`` decimal (1000); the trailing ``B``
    is optional and the case of the letters does not matter.
Rates (:func:`parse_rate`, returns bytes/s)
    ``125e6`` (a bare number is bytes/s), ``100MiB/s``, ``100MB/s``,
    ``1Gbit/s``, ``1gbit``, ``800Mbps``, ``800Mb/s``.  ``B`` is bytes and
    ``b``/``bit``/``bits``/``bps`` are bits (divided by 8); the ``/s`` (or
    ``ps``) is optional.  A prefix with no ``B`` or ``b`` (``100M``) means
    bytes, as in QEMU's ``max-bandwidth``.
Durations (:func:`parse_duration`, returns seconds)
    ``0.3`` (a bare number is seconds), ``300ms``, ``60s``, ``2min``,
    ``500us`` (also ``µs``), ``1h``, ``10ns``.
"""

import math
import re
from fractions import Fraction

__all__ = ["parse_size", "parse_rate", "parse_duration", "parse_probability",
           "parse_int", "format_duration", "format_bytes", "format_rate",
           "format_probability", "format_number",
           "SIZE_FORMS", "RATE_FORMS", "DURATION_FORMS"]

SIZE_FORMS = "bytes as 4096, 4KiB, 1.5GiB, 2GB (KiB/MiB/GiB = 1024^n, " \
    "kB/MB/GB = 1000^n)"
RATE_FORMS = "bytes/s as 125e6, 100MiB/s, 100MB/s, or bits/s as 1Gbit/s, " \
    "1gbit, 800Mbps (a bare number is bytes/s)"
DURATION_FORMS = "seconds as 0.3, 300ms, 60s, 2min, 500us (a bare number " \
    "is seconds)"
PROBABILITY_FORMS = "a probability strictly between 0 and 1, as 0.95 or 95%"

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_QUANTITY = re.compile(r"^\s*(" + _NUMBER + r")\s*([^\s\d.+-][^\s]*)?\s*$")

_PREFIXES = {"": 1, "k": 10 ** 3, "m": 10 ** 6, "g": 10 ** 9,
             "t": 10 ** 12, "p": 10 ** 15}
_BIN_PREFIXES = {"ki": 2 ** 10, "mi": 2 ** 20, "gi": 2 ** 30,
                 "ti": 2 ** 40, "pi": 2 ** 50}

# Size units: prefix + optional "i" + optional "b"/"byte(s)".
_SIZE_UNIT = re.compile(r"^(?P<prefix>[kmgtp]i?)?(?P<byte>b|bytes?)?$")
# Rate units: prefix, then the quantum, then the optional per-second part.
# Case matters for the quantum only: "B" is bytes and "b" bits.
_RATE_UNIT = re.compile(
    r"^(?P<prefix>[kKmMgGtTpP][iI]?)?"
    r"(?P<quantum>B|[Bb]ytes?|b|[Bb]its?)?"
    r"(?P<per>/s|/sec|ps)?$")

_DURATIONS = {
    "": 1.0, "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0,
    "seconds": 1.0,
    "ms": 1e-3, "msec": 1e-3, "millisecond": 1e-3, "milliseconds": 1e-3,
    "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "usec": 1e-6,
    "microsecond": 1e-6, "microseconds": 1e-6,
    "ns": 1e-9, "nsec": 1e-9, "nanosecond": 1e-9, "nanoseconds": 1e-9,
    "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
}


def _bad(name, text, forms, why=None):
    # A pasted megabyte stays one short line.
    if isinstance(text, str) and len(text) > 60:
        text = text[:60] + "..."
    what = f"invalid value {text!r}" if why is None else \
        f"{why}, got {text!r}"
    return ValueError(f"{name}: {what}; expected {forms}")


def _split(text, name, forms):
    """(number as Fraction, unit text) of ``text``; rejects signs < 0."""
    if not isinstance(text, str):
        if isinstance(text, bool) or not isinstance(text, (int, float)):
            raise _bad(name, text, forms)
        text = repr(text)
    m = _QUANTITY.match(text)
    if not m:
        low = text.strip().lower()
        if low.lstrip("+-") in ("nan", "inf", "infinity"):
            raise _bad(name, text, forms, "must be a finite number")
        raise _bad(name, text, forms)
    if len(m.group(1)) > 400:
        # Python refuses int() of more than 4300 digits, in a message that
        # names no option; no quantity of ours needs 400.
        raise _bad(name, text, forms, "too many digits")
    exp = re.search(r"[eE]([+-]?\d+)$", m.group(1))
    if exp and abs(int(exp.group(1))) > 400:
        # Fraction("1e999999999") would take forever to build.
        raise _bad(name, text, forms, "exponent out of range")
    number = Fraction(m.group(1))
    if number < 0:
        raise _bad(name, text, forms, "must not be negative")
    return number, m.group(2) or ""


def parse_size(text, name="size"):
    """Bytes (an int) from ``"4096"``, ``"4KiB"``, ``"1.5GiB"``,
    ``"2GB"``...  A size that is not a whole number of bytes is an error."""
    number, unit = _split(text, name, SIZE_FORMS)
    m = _SIZE_UNIT.match(unit.lower())
    if not m or (m.group("prefix") is None and m.group("byte") is None
                 and unit):
        raise _bad(name, text, SIZE_FORMS, f"unknown size unit {unit!r}")
    prefix = m.group("prefix") or ""
    mult = _BIN_PREFIXES.get(prefix) or _PREFIXES[prefix]
    value = number * mult
    if value.denominator != 1:
        raise _bad(name, text, SIZE_FORMS,
                   "must be a whole number of bytes")
    return int(value)


def parse_rate(text, name="rate"):
    """Bytes/s (a float) from ``"125e6"``, ``"100MiB/s"``, ``"1Gbit/s"``,
    ``"1gbit"``, ``"800Mbps"``...; bits are divided by 8."""
    number, unit = _split(text, name, RATE_FORMS)
    m = _RATE_UNIT.match(unit)
    if not m:
        raise _bad(name, text, RATE_FORMS, f"unknown rate unit {unit!r}")
    prefix = (m.group("prefix") or "").lower()
    quantum = m.group("quantum") or ""
    per = m.group("per") or ""
    if per == "ps" and not quantum:
        # "Mps" alone says neither bits nor bytes.
        raise _bad(name, text, RATE_FORMS, f"unknown rate unit {unit!r}")
    mult = _BIN_PREFIXES.get(prefix) or _PREFIXES[prefix]
    bits = quantum == "b" or quantum.lower().startswith("bit")
    value = number * mult / (8 if bits else 1)
    return _finite(value, name, text, RATE_FORMS)


def parse_duration(text, name="duration"):
    """Seconds (a float) from ``"0.3"``, ``"300ms"``, ``"60s"``,
    ``"2min"``, ``"500us"``..."""
    number, unit = _split(text, name, DURATION_FORMS)
    try:
        mult = _DURATIONS[unit.lower() if unit not in _DURATIONS else unit]
    except KeyError:
        raise _bad(name, text, DURATION_FORMS,
                   f"unknown time unit {unit!r}") from None
    return _finite(number * Fraction(repr(mult)), name, text,
                   DURATION_FORMS)


def parse_probability(text, name="probability"):
    """A probability in (0, 1) from ``"0.95"`` or ``"95%"``."""
    s = text.strip() if isinstance(text, str) else text
    percent = isinstance(s, str) and s.endswith("%")
    if percent:
        s = s[:-1]
    try:
        value = float(s)
    except (TypeError, ValueError):
        raise _bad(name, text, PROBABILITY_FORMS) from None
    if percent:
        value /= 100.0
    if not (math.isfinite(value) and 0.0 < value < 1.0):
        raise _bad(name, text, PROBABILITY_FORMS, "out of range")
    return value


def parse_int(text, name="count", minimum=None):
    """An integer (``"20"``, ``"1e3"`` is refused) of at least
    ``minimum``."""
    forms = "a whole number" + ("" if minimum is None
                                else f" >= {minimum}")
    try:
        value = int(str(text).strip(), 10)
    except ValueError:
        raise _bad(name, text, forms) from None
    if minimum is not None and value < minimum:
        raise _bad(name, text, forms, "out of range")
    return value


def _finite(value, name, text, forms):
    """``value`` (a Fraction) as a finite float."""
    try:
        out = float(value)
    except OverflowError:
        out = math.inf
    if not math.isfinite(out):
        raise _bad(name, text, forms, "too large")
    return out


# -- formatting -------------------------------------------------------------

def format_number(x, digits=3):
    """``x`` with about ``digits`` significant digits, never in exponent
    notation below 10**digits' magnitude (``1.23``, ``45.6``, ``789``)."""
    if not math.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else "nan")
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    decimals = max(digits - 1 - mag, 0)
    text = f"{x:.{decimals}f}"
    # Rounding may add a digit (9.999 -> "10.00"): drop one decimal.
    if decimals and len(text.replace("-", "").replace(".", "").lstrip("0")) \
            > digits:
        text = f"{x:.{decimals - 1}f}"
    return text


def format_duration(seconds, inf="inf"):
    """``"1.23 s"``, ``"45.6 ms"``, ``"789 us"``, ``"12.0 ns"``; minutes
    stay seconds (``"123 s"``, ``"3600 s"``)."""
    if not math.isfinite(seconds):
        return inf
    a = abs(seconds)
    if a == 0:
        return "0 s"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        # 0.9996 s reads better as 1.00 s than as 1000 ms.
        if a >= scale * (1 - 5e-4):
            return f"{format_number(seconds / scale)} {unit}"
    return f"{format_number(seconds / 1e-9)} ns"


_BINARY_UNITS = (("PiB", 2 ** 50), ("TiB", 2 ** 40), ("GiB", 2 ** 30),
                 ("MiB", 2 ** 20), ("KiB", 2 ** 10))


def format_bytes(n, inf="inf"):
    """``"512 B"``, ``"4.00 KiB"``, ``"12.3 MiB"``, ``"4.00 GiB"``."""
    if not math.isfinite(n):
        return inf
    a = abs(n)
    for unit, scale in _BINARY_UNITS:
        # 1023.9 MiB reads better as 1.00 GiB than as 1024 MiB.
        if a >= scale * (1 - 5e-4):
            return f"{format_number(n / scale)} {unit}"
    return f"{format_number(n)} B" if n != int(n) else f"{int(n)} B"


def format_rate(bytes_per_s, inf="inf"):
    """``"95.4 MiB/s"`` and so on (binary units of bytes per second)."""
    if not math.isfinite(bytes_per_s):
        return inf
    return format_bytes(bytes_per_s) + "/s"


def format_probability(p):
    """Four decimals; ``"> 0.9999"``/``"< 0.0001"`` rather than a rounded
    ``1.0000``/``0.0000`` that is not exactly 1 or 0."""
    if p >= 1.0:
        return "1"
    if p <= 0.0:
        return "0"
    if p > 0.99995:
        return "> 0.9999"
    if p < 0.00005:
        return "< 0.0001"
    return f"{p:.4f}"
