"""rtmig-nova-shim: the driver shim copied into (a stand-in of) Nova's
nova/virt directory, and removed again only if it is ours."""

import os

import pytest

from rtmig_nova import virt_shim


def test_install_status_uninstall(tmp_path, capsys):
    virt = str(tmp_path)
    assert virt_shim.status(virt) == "absent"
    target = virt_shim.install(virt)
    assert target == os.path.join(virt, "rtmig")
    assert sorted(os.listdir(target)) == sorted(
        [*virt_shim.SHIM_FILES, virt_shim.MARKER])
    assert virt_shim.status(virt) == "installed"
    with open(os.path.join(target, "driver.py")) as f:
        assert "class RTLibvirtDriver(libvirt_driver.LibvirtDriver)" in \
            f.read()
    # An edited copy is outdated, and install replaces it.
    with open(os.path.join(target, "driver.py"), "a") as f:
        f.write("# local change\n")
    assert virt_shim.status(virt) == "outdated"
    virt_shim.install(virt)
    assert virt_shim.status(virt) == "installed"
    assert virt_shim.main(["status", "--nova-virt-dir", virt]) == 0
    assert "installed" in capsys.readouterr().out
    assert virt_shim.uninstall(virt) is True
    assert virt_shim.status(virt) == "absent"
    assert virt_shim.uninstall(virt) is False


def test_a_foreign_directory_is_left_alone(tmp_path, capsys):
    foreign = tmp_path / "rtmig"
    foreign.mkdir()
    (foreign / "__init__.py").write_text("# somebody else's\n")
    assert virt_shim.status(str(tmp_path)) == "foreign"
    with pytest.raises(virt_shim.ShimError, match="not rtmig-nova's"):
        virt_shim.install(str(tmp_path))
    with pytest.raises(virt_shim.ShimError):
        virt_shim.uninstall(str(tmp_path))
    assert virt_shim.main(["uninstall", "--nova-virt-dir",
                           str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rtmig-nova-shim: error: ") and \
        "Traceback" not in err
    assert (foreign / "__init__.py").read_text() == "# somebody else's\n"
