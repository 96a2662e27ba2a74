"""Prometheus metrics of a running array at ``/metrics`` (issue 18), names prefixed ``sanlab_``.

Built with prometheus_client, but only at scrape time: :class:`ArrayCollector` is a custom
collector that reads the per-LU counters the device servers keep (scsi/stats.py: plain integers,
updated once per command) and the status view (tools/status.py), and turns them into metric
families.  No prometheus object is touched per command, so serving metrics costs the target's
fast path nothing beyond those counters, and a scrape costs what ``/status.json`` costs.

A pair's or local copy's state is a state set: one sample per state it can be in, 1 for the
current one (``sanlab_pair_state{pair="p0",role="P-VOL",state="PAIR"} 1``), so
``sanlab_pair_state{state="PSUE"} == 1`` is an alert rule.
"""
from __future__ import annotations

from typing import Any, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.exposition import generate_latest

from sanlab.replication.local_copy_states import PairState as CopyState
from sanlab.replication.pair_state import PairState
from sanlab.scsi.stats import LATENCY_BOUNDS, Op
from sanlab.tools.status import ArrayView

PAIR_STATES = [s.name for s in PairState]
"""Every state a remote-copy pair half can be in (replication/pair_state.py)."""
COPY_STATES = [s.name for s in CopyState]
"""Every state a local copy pair can be in (replication/local_copy_states.py)."""
OP_NAMES = {Op.READ: "read", Op.WRITE: "write", Op.OTHER: "other"}
"""The ``op`` label of each kind of command."""
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The text exposition format every Prometheus reads (generate_latest writes it: our names need no
escaping), rather than the library's latest (1.0.0), which Prometheus 2 servers do not announce."""


def _num(value: Any) -> float:
    return float(value) if value is not None else 0.0


class ArrayCollector(Collector):
    """Everything about one array, collected from :class:`ArrayView` when scraped."""

    def __init__(self, view: ArrayView) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        """The metric families of one scrape."""
        view = self.view
        status = view.status()
        info = GaugeMetricFamily("sanlab_info", "The array: its name and sanlab's version", labels=["array", "version"])
        info.add_metric([view.name, view.version], 1)
        yield info
        yield from self._lus()
        sessions = GaugeMetricFamily("sanlab_sessions", "Live iSCSI sessions per target", labels=["target"])
        for target, n in sorted(view.sessions().items()):
            sessions.add_metric([target], n)
        yield sessions
        link = GaugeMetricFamily("sanlab_remote_link_up", "1 while the link to the remote array is logged in",
                                 labels=["remote"])
        for r in status["remotes"]:
            link.add_metric([r["name"]], 1 if r["link"] == "up" else 0)
        yield link
        yield from self._raid(status["raid_groups"])
        yield from self._pairs(status["pairs"])
        yield from self._journals(status["journals"])
        yield from self._copies(status["copies"])

    def _lus(self) -> Iterator[Metric]:
        labels = ["target", "lun", "op"]
        commands = CounterMetricFamily("sanlab_lu_commands", "SCSI commands ended, by kind", labels=labels)
        errors = CounterMetricFamily("sanlab_lu_errors", "SCSI commands ended with a status other than GOOD",
                                     labels=labels)
        moved = CounterMetricFamily("sanlab_lu_bytes", "Bytes read (Data-In) or written (Data-Out) by commands "
                                    "that ended GOOD", labels=labels)
        latency = HistogramMetricFamily("sanlab_lu_latency_seconds", "Device server time per command, from the "
                                        "whole command (its Data-Out in) to its status", labels=labels)
        size = GaugeMetricFamily("sanlab_lu_size_bytes", "Capacity of the LU", labels=["target", "lun"])
        bounds = [repr(b) for b in LATENCY_BOUNDS] + ["+Inf"]
        for target, lun, lu in self.view.lus():
            st = lu.stats
            size.add_metric([target, str(lun)], lu.num_blocks * lu.block_size)
            for op, name in OP_NAMES.items():
                key = [target, str(lun), name]
                commands.add_metric(key, st.commands[op])
                errors.add_metric(key, st.errors[op])
                if op != Op.OTHER:
                    moved.add_metric(key, st.bytes[op])
                cumulative, buckets = 0, []
                for bound, n in zip(bounds, st.buckets[op]):
                    cumulative += n
                    buckets.append((bound, cumulative))
                latency.add_metric(key, buckets, st.latency_ns[op] / 1e9)
        yield from (commands, errors, moved, latency, size)

    @staticmethod
    def _raid(groups: list[dict[str, Any]]) -> Iterator[Metric]:
        degraded = GaugeMetricFamily("sanlab_raid_group_degraded", "1 while a drive of the group is out",
                                     labels=["group"])
        rebuild = GaugeMetricFamily("sanlab_raid_group_rebuild_progress_ratio", "Rebuild progress (0-1; 1 when "
                                    "no rebuild runs)", labels=["group"])
        for g in groups:
            degraded.add_metric([g["name"]], 1 if g["degraded"] else 0)
            p = g.get("rebuild_progress")
            rebuild.add_metric([g["name"]], 1.0 if p is None else float(p))
        yield from (degraded, rebuild)

    @staticmethod
    def _pairs(pairs: list[dict[str, Any]]) -> Iterator[Metric]:
        labels = ["pair", "role"]
        state = GaugeMetricFamily("sanlab_pair_state", "Remote-copy pair state (1 for the current one)",
                                  labels=[*labels, "state"])
        progress = GaugeMetricFamily("sanlab_pair_progress_ratio", "Share of the pair's area that is copied "
                                     "(0-1)", labels=labels)
        copied = GaugeMetricFamily("sanlab_pair_copied_bytes", "Bytes the last initial copy or resync sent",
                                   labels=labels)
        pending = GaugeMetricFamily("sanlab_pair_pending_bytes", "Bytes that differ and wait for a copy",
                                    labels=labels)
        rate = GaugeMetricFamily("sanlab_pair_copy_rate_bytes_per_second", "Rate of the running copy (0 when "
                                 "none runs)", labels=labels)
        rpo = GaugeMetricFamily("sanlab_pair_rpo_seconds", "Async pair: age of the oldest update not yet "
                                "acquired (primary) or restored (secondary)", labels=labels)
        lag = GaugeMetricFamily("sanlab_pair_lag_bytes", "Async pair: journal bytes behind", labels=labels)
        lag_entries = GaugeMetricFamily("sanlab_pair_lag_entries", "Async pair: journal entries behind",
                                        labels=labels)
        for p in pairs:
            key = [p["name"], p["role"]]
            for s in PAIR_STATES:
                state.add_metric([*key, s], 1 if p["state"] == s else 0)
            progress.add_metric(key, p["progress"] / 100)
            copied.add_metric(key, p["copied_bytes"])
            pending.add_metric(key, p["pending_bytes"])
            rate.add_metric(key, _num(p.get("rate_bytes_per_s")))
            if p.get("mode") == "async":
                rpo.add_metric(key, _num(p.get("rpo_seconds")))
                lag.add_metric(key, _num(p.get("lag_bytes")))
                lag_entries.add_metric(key, _num(p.get("lag_entries")))
        yield from (state, progress, copied, pending, rate, rpo, lag, lag_entries)

    @staticmethod
    def _journals(journals: list[dict[str, Any]]) -> Iterator[Metric]:
        labels = ["journal", "role"]
        use = GaugeMetricFamily("sanlab_journal_use_ratio", "Share of the journal in use (0-1)", labels=labels)
        rpo = GaugeMetricFamily("sanlab_journal_rpo_seconds", "Age of the oldest update behind", labels=labels)
        lag = GaugeMetricFamily("sanlab_journal_lag_bytes", "Bytes behind", labels=labels)
        lag_entries = GaugeMetricFamily("sanlab_journal_lag_entries", "Entries behind", labels=labels)
        for j in journals:
            key = [j["name"], j.get("role") or ""]
            use.add_metric(key, _num(j.get("journal_use")) / 100)
            rpo.add_metric(key, _num(j.get("rpo_seconds")))
            lag.add_metric(key, _num(j.get("lag_bytes")))
            lag_entries.add_metric(key, _num(j.get("lag_entries")))
        yield from (use, rpo, lag, lag_entries)

    @staticmethod
    def _copies(copies: list[dict[str, Any]]) -> Iterator[Metric]:
        state = GaugeMetricFamily("sanlab_local_copy_state", "Local copy pair state (1 for the current one)",
                                  labels=["copy", "state"])
        progress = GaugeMetricFamily("sanlab_local_copy_progress_ratio", "Share of the copy done (0-1)",
                                     labels=["copy"])
        copied = GaugeMetricFamily("sanlab_local_copy_copied_bytes", "Bytes the last generation, resync or "
                                   "restore copied", labels=["copy"])
        pending = GaugeMetricFamily("sanlab_local_copy_pending_bytes", "Bytes that differ or wait for a copy",
                                    labels=["copy"])
        for c in copies:
            for s in COPY_STATES:
                state.add_metric([c["name"], s], 1 if c["state"] == s else 0)
            progress.add_metric([c["name"]], c["progress"] / 100)
            copied.add_metric([c["name"]], c["copied_bytes"])
            pending.add_metric([c["name"]], c["pending_bytes"])
        yield from (state, progress, copied, pending)


def registry_for(view: ArrayView) -> CollectorRegistry:
    """A registry holding only this array's collector (not the process-wide default one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ArrayCollector(view))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The text exposition of one scrape."""
    return generate_latest(registry)
