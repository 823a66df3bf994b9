"""pytest bridge to the in-process real-Nova functional tests.

Nova's testtools classes misbehave under pytest collection (pytest runs
them, then fails them in cleanup with an AttributeError), so
tests/functional/ is not collected by pytest (its conftest.py).  Instead
every testtools test there runs once per session in a subprocess
(``python -m subunit.run discover``), and each one shows up here as its own
pytest test that passes, fails (with its traceback and log) or skips as it
did there.

RTMIG_NOVA_FUNCTIONAL_TIMEOUT (seconds, default 840: below setup.cfg's
pytest-timeout of 900, which also counts the session fixture's time in the
first test) bounds the subprocess.
"""

import importlib.util
import io
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

if importlib.util.find_spec('nova') is None:
    # Not imported here: importing nova monkey-patches (eventlet) the
    # pytest process.  A broken nova still fails below, it does not skip.
    pytest.skip('nova is not importable (pip install nova==34.0.0 '
                'openstack-placement and the test deps)',
                allow_module_level=True)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DISCOVER = ['discover', '-s', os.path.join('tests', 'functional'), '-t', '.']
TIMEOUT = float(os.environ.get('RTMIG_NOVA_FUNCTIONAL_TIMEOUT', '840'))
LISTING_ERROR = '<listing tests/functional>'
LOG_TAIL = 20000  # chars of each non-traceback detail shown on failure


def _env():
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE='1')
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (ROOT, env.get('PYTHONPATH')) if p)
    return env


def _list_ids():
    """Test ids under tests/functional (imports them, runs nothing)."""
    proc = subprocess.run(
        [sys.executable, '-m', 'testtools.run'] + DISCOVER + ['--list'],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    ids = [line.strip() for line in proc.stdout.splitlines()
           if line.strip().startswith('tests.functional.')]
    if proc.returncode != 0 or not ids:
        # e.g. an import error: report it as a failing test, not a skip.
        return [LISTING_ERROR], proc.stdout + proc.stderr
    return ids, None


def pytest_generate_tests(metafunc):
    if 'nova_test_id' in metafunc.fixturenames:
        ids, error = _list_ids()
        metafunc.config._rtmig_ids = ids
        metafunc.config._rtmig_listing_error = error
        metafunc.parametrize('nova_test_id', ids, ids=ids)


@pytest.fixture(scope='session')
def nova_results(request, tmp_path_factory):
    """Run tests/functional once (only the selected ids if -k/-m/node ids
    deselected some); {test id: StreamToDict dict}."""
    from subunit import ByteStreamToStreamResult
    from testtools import StreamToDict

    selected = sorted({item.callspec.params['nova_test_id']
                       for item in request.session.items
                       if 'nova_test_id' in getattr(item, 'fixturenames', ())
                       } - {LISTING_ERROR})
    args = list(DISCOVER)
    if selected and len(selected) < len(request.config._rtmig_ids):
        load_list = tmp_path_factory.mktemp('nova') / 'load-list'
        load_list.write_text('\n'.join(selected) + '\n')
        args += ['--load-list', str(load_list)]

    # Files, not pipes: once a pipe's 64 KiB buffer filled, the child's
    # (eventlet-patched) write to it never resumed, a hang seen every time.
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
        start = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, '-m', 'subunit.run'] + args,
            cwd=ROOT, env=_env(), stdin=subprocess.DEVNULL, stdout=out_f,
            stderr=err_f,
            start_new_session=True)  # own group: a timeout kills it all
        timed_out = False
        try:
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    elapsed = time.monotonic() - start

    results = {}
    sink = StreamToDict(lambda case: results.__setitem__(case['id'], case))
    sink.startTestRun()
    # Bytes that are not subunit (a test's print) are kept, not fatal.
    ByteStreamToStreamResult(io.BytesIO(out), non_subunit_name='stdout').run(
        sink)
    sink.stopTestRun()
    results.pop(None, None)
    summary = ('subunit.run: %d tests in %.1f s, rc=%s%s'
               % (len(results), elapsed, proc.returncode,
                  ' (killed after %.0f s timeout)' % TIMEOUT
                  if timed_out else ''))
    print('\n' + summary, file=sys.stderr)
    return {'cases': results, 'summary': summary,
            'stderr': err.decode('utf-8', 'replace')}


def _details(case):
    """Traceback first, then the tail of every other detail (log...)."""
    parts = []
    details = case['details']
    for name in sorted(details, key=lambda n: n != 'traceback'):
        text = details[name].as_text()
        if not text.strip():
            continue
        if name != 'traceback' and len(text) > LOG_TAIL:
            text = '[... %d chars cut ...]\n%s' % (
                len(text) - LOG_TAIL, text[-LOG_TAIL:])
        parts.append('---- %s ----\n%s' % (name, text))
    return '\n'.join(parts)


def test_nova_functional(nova_test_id, nova_results, request):
    if nova_test_id == LISTING_ERROR:
        pytest.fail('listing tests/functional failed:\n%s'
                    % request.config._rtmig_listing_error, pytrace=False)
    case = nova_results['cases'].get(nova_test_id)
    if case is None:
        pytest.fail('%s did not report a result (%s)\n---- stderr tail ----\n'
                    '%s' % (nova_test_id, nova_results['summary'],
                            nova_results['stderr'][-LOG_TAIL:]),
                    pytrace=False)
    status = case['status']
    if status == 'skip':
        reason = case['details'].get('reason')
        pytest.skip(reason.as_text() if reason else 'skipped in testtools')
    if status == 'xfail':
        pytest.xfail('expected failure in testtools')
    if status != 'success':
        pytest.fail('%s: %s\n%s' % (nova_test_id, status, _details(case)),
                    pytrace=False)
