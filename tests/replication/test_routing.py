"""Connection tables and the choice of the next hop (replication/routing.py; seed 003 FIG. 35-37)."""
from __future__ import annotations

from sanlab.replication.routing import ConnectionTable


def mesh() -> ConnectionTable:
    """A links B and C; B and C link D; D links E."""
    t = ConnectionTable("A")
    t.learn({"B": {"B": ("A", "D"), "D": ("B", "C", "E")}, "C": {"C": ("A", "D"), "D": ("B", "C")}})
    return t


def test_the_farthest_listed_neighbour_is_the_next_hop() -> None:
    t = mesh()
    assert t.next_hop(("B", "C"), ("B", "C")) == ("C", ("C",))  # FIG. 37: skip B, C is linked directly
    assert t.next_hop(("B", "D"), ("B", "C")) == ("B", ("B", "D"))


def test_a_name_alone_goes_the_fewest_links_and_a_link_down_changes_the_route() -> None:
    t = mesh()
    assert t.shortest_path("D", ("B", "C")) == ["A", "B", "D"]  # ties by name
    assert t.next_hop(("D",), ("B", "C")) == ("B", ("D",))
    assert t.next_hop(("D",), ("C",)) == ("C", ("D",))  # A-B down
    assert t.shortest_path("E", ("B", "C")) == ["A", "B", "D", "E"]  # D's row came from B, who knows it
    assert t.next_hop(("D",), ()) is None
    assert t.next_hop(("Z",), ("B", "C")) is None


def test_a_neighbours_own_row_wins_and_this_arrays_row_is_its_own() -> None:
    t = ConnectionTable("A")
    t.learn({"B": {"A": ("X",), "B": ("A", "C"), "C": ("B",)}, "C": {"C": ("B", "D")}})
    assert t.graph(("B",)) == {"A": ("B",), "B": ("A", "C"), "C": ("B", "D")}
