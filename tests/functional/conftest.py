import os

import pytest

# These are testtools tests on Nova's base classes: pytest's own collection
# runs them, then fails them in cleanup (AttributeError).  They run in a
# subprocess instead, through tests/test_nova_functional.py.
collect_ignore_glob = ['*.py']

HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_collection_modifyitems(config, items):
    # collect_ignore does not stop a file named on the command line.
    if any(str(item.path).startswith(HERE + os.sep) for item in items):
        raise pytest.UsageError(
            'tests/functional/ holds testtools tests; run them with '
            'pytest tests/test_nova_functional.py -k NAME (or '
            'python -m testtools.run tests.functional.MODULE)')
