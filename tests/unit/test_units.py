"""rtmig_nova.units: parsing and formatting of sizes, rates, durations."""

import math

import pytest

from rtmig_nova import units


@pytest.mark.parametrize("text, expected", [
    ("4096", 4096),
    ("0", 0),
    ("4KiB", 4096),
    ("4 KiB", 4096),
    ("4kib", 4096),
    ("4K", 4000),
    ("4kB", 4000),
    ("1.5GiB", 3 * 2 ** 29),
    ("2GB", 2 * 10 ** 9),
    ("64MiB", 64 * 2 ** 20),
    ("1TiB", 2 ** 40),
    ("100B", 100),
    ("8 bytes", 8),
    ("1e3", 1000),
    ("  2MiB  ", 2 * 2 ** 20),
])
def test_parse_size(text, expected):
    value = units.parse_size(text, "--page-size")
    assert value == expected
    assert isinstance(value, int)


@pytest.mark.parametrize("text, expected", [
    ("125e6", 125e6),
    ("125000000", 125e6),
    ("100MiB/s", 100 * 2 ** 20),
    ("100 MiB/s", 100 * 2 ** 20),
    ("100MB/s", 100e6),
    ("100MBps", 100e6),
    ("1Gbit/s", 125e6),
    ("1gbit", 125e6),
    ("1 Gbit", 125e6),
    ("800Mbps", 100e6),
    ("800Mb/s", 100e6),
    ("8bit/s", 1.0),
    ("10Gbits/s", 1.25e9),
    ("100M", 100e6),
    ("1KiB/s", 1024.0),
    ("12.5 bytes/s", 12.5),
])
def test_parse_rate(text, expected):
    assert units.parse_rate(text, "--bandwidth") == pytest.approx(expected)


@pytest.mark.parametrize("text, expected", [
    ("0.3", 0.3),
    ("300ms", 0.3),
    ("300 ms", 0.3),
    ("60s", 60.0),
    ("2min", 120.0),
    ("500us", 5e-4),
    ("500\u00b5s", 5e-4),
    ("10ns", 1e-8),
    ("1h", 3600.0),
    ("2.5e-6", 2.5e-6),
    ("7ms", 0.007),
])
def test_parse_duration(text, expected):
    assert units.parse_duration(text, "--deadline") == pytest.approx(
        expected, rel=1e-15)


def test_parse_duration_is_exact_for_decimal_input():
    # Decimal arithmetic, not 300 * 0.001 in binary.
    assert units.parse_duration("300ms") == 0.3
    assert units.parse_duration("7ms") == 0.007


@pytest.mark.parametrize("parse, text", [
    (units.parse_size, "-1"),
    (units.parse_size, "abc"),
    (units.parse_size, "4 furlongs"),
    (units.parse_size, "1.5B"),       # not whole bytes
    (units.parse_size, "4kbit"),      # bits make no size
    (units.parse_size, "nan"),
    (units.parse_size, ""),
    (units.parse_rate, "-5"),
    (units.parse_rate, "nan"),
    (units.parse_rate, "inf"),
    (units.parse_rate, "1e400"),
    (units.parse_rate, "1e999999999"),   # must not hang
    (units.parse_rate, "100 furlongs/s"),
    (units.parse_rate, "100Mps"),
    (units.parse_rate, "1 2"),
    (units.parse_duration, "-0.3"),
    (units.parse_duration, "NaN"),
    (units.parse_duration, "5m"),     # ambiguous: minutes or metres?
    (units.parse_duration, "3 fortnights"),
    (units.parse_duration, "ms"),
])
def test_bad_input_names_the_argument_and_forms(parse, text):
    with pytest.raises(ValueError) as info:
        parse(text, "--the-arg")
    msg = str(info.value)
    assert msg.startswith("--the-arg: ")
    assert "expected" in msg
    assert "\n" not in msg


def test_rate_message_lists_forms():
    with pytest.raises(ValueError, match="1Gbit/s"):
        units.parse_rate("fast", "--bandwidth")


@pytest.mark.parametrize("text, expected", [
    ("0.95", 0.95), ("95%", 0.95), ("0.5", 0.5), (" 99.9% ", 0.999)])
def test_parse_probability(text, expected):
    assert units.parse_probability(text, "--confidence") == \
        pytest.approx(expected)


@pytest.mark.parametrize("text", ["1.5", "0", "1", "-0.1", "nan", "inf",
                                  "x", "100%", ""])
def test_parse_probability_rejects(text):
    with pytest.raises(ValueError, match="^--confidence: "):
        units.parse_probability(text, "--confidence")


def test_parse_int():
    assert units.parse_int("20", "--runs", minimum=1) == 20
    assert units.parse_int(" 0 ", "--seed", minimum=0) == 0
    for bad in ("0", "2.5", "1e3", "x", ""):
        with pytest.raises(ValueError, match="^--runs: "):
            units.parse_int(bad, "--runs", minimum=1)


@pytest.mark.parametrize("seconds, text", [
    (1.234, "1.23 s"),
    (0.0456, "45.6 ms"),
    (0.3, "300 ms"),
    (60.0, "60.0 s"),
    (123.4, "123 s"),
    (3600.0, "3600 s"),
    (12e-6, "12.0 us"),
    (0.9996, "1.00 s"),
    (0.0, "0 s"),
    (9.999, "10.0 s"),
])
def test_format_duration(seconds, text):
    assert units.format_duration(seconds) == text


def test_format_infinite():
    assert units.format_duration(math.inf) == "inf"
    assert units.format_duration(math.inf, inf="not converged") == \
        "not converged"
    assert units.format_bytes(math.inf, inf="-") == "-"
    assert units.format_rate(math.inf) == "inf"


@pytest.mark.parametrize("n, text", [
    (512, "512 B"),
    (4096, "4.00 KiB"),
    (12.3 * 2 ** 20, "12.3 MiB"),
    (4 * 2 ** 30, "4.00 GiB"),
    (1023.9 * 2 ** 20, "1.00 GiB"),
    (3 * 2 ** 40, "3.00 TiB"),
])
def test_format_bytes(n, text):
    assert units.format_bytes(n) == text


def test_format_rate():
    assert units.format_rate(100 * 2 ** 20) == "100 MiB/s"
    assert units.format_rate(1.25e8) == "119 MiB/s"


def test_format_probability():
    assert units.format_probability(1.0) == "1"
    assert units.format_probability(0.0) == "0"
    assert units.format_probability(0.95) == "0.9500"
    assert units.format_probability(1 - 1e-12) == "> 0.9999"
    assert units.format_probability(1e-9) == "< 0.0001"


def test_round_trip_parse_format():
    for n in (4096, 2 ** 20, 3 * 2 ** 30):
        assert units.parse_size(units.format_bytes(n).replace(" ", "")) == n
