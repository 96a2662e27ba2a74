"""Arrows of the topology page from the arrays' statuses (no I/O)."""
from __future__ import annotations

from typing import Any

from sanlab.tools.topology import pair_links


def _array(name: str, *pairs: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "status": {"pairs": list(pairs)}}


def test_p_side_state_wins_and_s_side_fills_in_for_an_unread_p_array() -> None:
    a = _array("array-a", {"name": "p0", "role": "P-VOL", "remote": "site-b", "state": "PSUS", "progress": 100})
    b = _array("array-b",
               {"name": "p0", "role": "S-VOL", "remote": "iqn.2026-11.org.sanlab:array-a", "state": "SSUS"},
               {"name": "b1", "role": "P-VOL", "remote": "array-c", "state": "PAIR", "mode": "async",
                "rpo_seconds": 1.5},
               {"name": "x9", "role": "S-VOL", "remote": "iqn.2026-11.org.sanlab:array-x", "state": "PSUE"})
    links = pair_links([a, b], {"site-b": "array-b"})  # A calls B "site-b"; B calls itself array-b
    by_pair = {link["pair"]: link for link in links}
    assert len(links) == 3
    assert by_pair["p0"] == {"pair": "p0", "from": "array-a", "to": "array-b", "state": "PSUS", "mode": "sync",
                             "progress": 100, "rpo_seconds": None, "reported_by": "array-a"}
    assert by_pair["b1"]["from"] == "array-b" and by_pair["b1"]["to"] == "array-c"
    assert by_pair["b1"]["mode"] == "async" and by_pair["b1"]["rpo_seconds"] == 1.5
    # x9's P array was not read: the S side's state is drawn, from the array named by its initiator name.
    assert by_pair["x9"]["from"] == "array-x" and by_pair["x9"]["state"] == "PSUE"


def test_unreachable_arrays_have_no_status_and_no_arrows() -> None:
    assert pair_links([{"name": "array-b", "status": None}], {}) == []
