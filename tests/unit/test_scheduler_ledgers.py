"""The scheduler's view of the ledgers computes publish (no Nova import:
rtmig_nova.scheduler.ledgers is pure apart from the stats it reads)."""

import types

import pytest

from rtmig_nova.model import ledger
from rtmig_nova.scheduler import ledgers

CAP = ledger.HostCapacity(cpus=2, bound=0.95, link=125e6,
                          migration_link=50e6, migration_cpu=0.1)


def host(uuid, stats):
    return types.SimpleNamespace(uuid=uuid, stats=stats)


def test_parsed_once_per_published_text():
    text = ledger.HostLedger(CAP, [ledger.VMEntry("a", 1, 0.5, 0, 3)]) \
        .to_json()
    first = ledgers.host_ledger(host("h1", {ledgers.STATS_KEY: text}))
    # The same text in a new object (stats rebuilt from the database).
    again = ledgers.host_ledger(host("h1", {ledgers.STATS_KEY:
                                            "".join(list(text))}))
    assert again is first
    # Best fit: the migration thread's 0.1 goes beside the VM's 0.5.
    assert first.free_desc == pytest.approx([0.95, 0.35])
    changed = ledger.HostLedger(CAP, []).to_json()
    assert ledgers.host_ledger(host("h1", {ledgers.STATS_KEY: changed})) \
        is not first


def test_hosts_without_or_with_a_bad_ledger():
    none = ledgers.host_ledger(host("h2", {}))
    assert isinstance(none, ledger.LedgerError)
    assert "publishes no rtmig ledger" in str(none)
    assert isinstance(ledgers.host_ledger(host("h3", None)),
                      ledger.LedgerError)
    bad = ledgers.host_ledger(host("h4", {ledgers.STATS_KEY: "{nope"}))
    assert isinstance(bad, ledger.LedgerError) and "malformed" in str(bad)
