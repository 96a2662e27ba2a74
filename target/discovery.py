"""SendTargets: which targets, at which portals, an initiator is shown (RFC 7143 §4.3, Appendix C).

Asked in a discovery session (``SendTargets=All``) or in a normal session (the session's own
target, or a named one).  A target whose ACL does not admit the initiator is not shown: it could
not log in to it anyway, and its name is not the initiator's to learn.  A portal bound to the
wildcard address is shown as the address the question came in on, the one the initiator can
reach.
"""
from __future__ import annotations

from collections.abc import Iterable

from sanlab.target.login import TargetAuth


def send_targets(targets: Iterable[TargetAuth], bound: Iterable[tuple[str, int]], tpgt: int, value: str,
                 initiator: str, local: tuple[str, int] | None) -> list[tuple[str, str]]:
    """The SendTargets answer's key=value pairs for ``value`` (``All`` or a target name)."""
    out: list[tuple[str, str]] = []
    portals = list(bound)
    for t in targets:
        if value not in ("All", t.name):
            continue
        if t.acl is not None and initiator not in t.acl:
            continue
        out.append(("TargetName", t.name))
        for host, port in portals:
            if host in ("0.0.0.0", "::") and local is not None:
                host = local[0]
            shown = f"[{host}]" if ":" in host else host
            out.append(("TargetAddress", f"{shown}:{port},{tpgt}"))
    return out
