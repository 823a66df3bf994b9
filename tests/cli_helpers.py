"""Running ``rtmig`` in-process in tests."""

from rtmig_nova import cli


def run(capsys, *argv):
    """``rtmig ARGV`` in this process: (exit status, stdout, stderr)."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code, out, err):
    """Bad input: exit status 2 and exactly one ``rtmig: error:`` line."""
    assert code == 2, (code, out, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("rtmig: error: "), err
    assert "Traceback" not in err
