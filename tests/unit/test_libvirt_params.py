import pytest

from rtmig_nova.enforce import libvirt_controls as lc


def test_migration_params_round_up_to_whole_mib():
    assert lc.migration_params(50 * lc.MIB) == {"bandwidth": 50}
    assert lc.migration_params(50 * lc.MIB + 1) == {"bandwidth": 51}
    assert lc.migration_params(1.0) == {"bandwidth": 1}


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "1"])
def test_migration_params_reject_bad_bandwidth(bad):
    with pytest.raises(ValueError, match="bandwidth"):
        lc.migration_params(bad)


def test_module_imports_without_libvirt():
    # Nova's test base poisons ``import libvirt``: nothing at module level.
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(lc))
    top = [n for n in tree.body if isinstance(n, (ast.Import,
                                                  ast.ImportFrom))]
    names = [a.name for n in top for a in n.names]
    assert "libvirt" not in names and "libvirt_qemu" not in names
