"""/metrics: the statistics in Prometheus' text format with rtpengine's names.

The names, types and labels are those rtpengine 10.5 serves on its
``/metrics`` (read from the live daemon with calls set up).  Figures that
omnirtp does not keep (MOS, zero-packet and one-way streams, duration
squared, per-request seconds) are left out rather than sent as zeros.
The kernel series count what ``table = N`` forwarded in the kernel.

The text is written by prometheus_client (a private registry with one
collector over one ``statistics()`` snapshot), so escaping and number
formatting are the library's.
"""

from prometheus_client import generate_latest
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily

try:  # prometheus_client >= 0.20 has several; this is the classic text format
    from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE
except ImportError:  # Debian 12's 0.16
    from prometheus_client.exposition import CONTENT_TYPE_LATEST as CONTENT_TYPE

#: ng commands counted per proxy (``<key>count``) and rtpengine's request label
REQUESTS = (("ping", "ping"), ("offer", "offer"), ("answer", "answer"),
            ("delete", "delete"), ("query", "query"), ("list", "list"),
            ("stats", "statistics"))

CLOSED_REASONS = (
    ("rejected", "rejectedsessions"), ("timeout", "timeoutsessions"),
    ("silent_timeout", "silenttimeoutsessions"), ("final_timeout", "finaltimeoutsessions"),
    ("offer_timeout", "offertimeoutsessions"), ("terminated", "regularterminatedsessions"),
    ("force_terminated", "forcedterminatedsessions"),
)


def _n(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


class StatisticsCollector:
    """A prometheus_client collector over one statistics snapshot.

    :param stats: the ng ``statistics`` dictionary
    :param interfaces: ``Operations.interfaces()``
    :param media_streams: media streams of current calls (the kernel-only
        and mixed ones of ``statistics`` are taken off the userspace series)
    """

    def __init__(self, stats, interfaces, media_streams):
        self.stats = stats
        self.interfaces = interfaces
        self.media_streams = media_streams

    def collect(self):
        cur = self.stats.get("currentstatistics", {})
        tot = self.stats.get("totalstatistics", {})
        control = self.stats.get("controlstatistics", {})

        m = GaugeMetricFamily("rtpengine_sessions", "Owned sessions", labels=["type"])
        m.add_metric(["own"], _n(cur.get("sessionsown")))
        m.add_metric(["foreign"], _n(cur.get("sessionsforeign")))
        yield m
        m = GaugeMetricFamily("rtpengine_transcoded_media", "Transcoded media")
        m.add_metric([], _n(cur.get("transcodedmedia")))
        yield m
        m = GaugeMetricFamily("rtpengine_mediastreams", "Userspace-only media streams",
                              labels=["type"])
        kernel, mixed = _n(cur.get("media_kernel")), _n(cur.get("media_mixed"))
        m.add_metric(["userspace"], max(0.0, self.media_streams - kernel - mixed))
        m.add_metric(["kernel"], kernel)
        m.add_metric(["mixed"], mixed)
        yield m
        m = GaugeMetricFamily("rtpengine_uptime_seconds", "Uptime of rtpengine")
        m.add_metric([], _n(tot.get("uptime")))
        yield m
        m = CounterMetricFamily("rtpengine_sessions", "Total managed sessions")
        m.add_metric([], _n(tot.get("managedsessions")))
        yield m
        m = CounterMetricFamily("rtpengine_closed_sessions", "Total rejected sessions",
                                labels=["reason"])
        for reason, key in CLOSED_REASONS:
            m.add_metric([reason], _n(tot.get(key)))
        yield m
        for name, help_text, key in (
                ("rtpengine_packets", "Total relayed packets (userspace)", "relayedpackets"),
                ("rtpengine_packet_errors", "Total relayed packet errors (userspace)",
                 "relayedpacketerrors"),
                ("rtpengine_bytes", "Total relayed bytes (userspace)", "relayedbytes")):
            m = CounterMetricFamily(name, help_text, labels=["type"])
            kernel = _n(tot.get(key + "_kernel"))
            m.add_metric(["userspace"], _n(tot.get(key)) - kernel)
            m.add_metric(["kernel"], kernel)
            yield m
        m = GaugeMetricFamily("rtpengine_call_duration_avg", "Average call duration")
        m.add_metric([], _n(tot.get("avgcallduration")))
        yield m
        m = CounterMetricFamily("rtpengine_call_duration", "Total calls duration")
        m.add_metric([], _n(tot.get("totalcallsduration")))
        yield m
        proxies = control.get("proxies")
        if isinstance(proxies, list):
            requests = CounterMetricFamily("rtpengine_requests", "",
                                           labels=["proxy", "request"])
            errors = CounterMetricFamily("rtpengine_errors", "", labels=["proxy"])
            for proxy in proxies:
                host = str(proxy.get("proxy", ""))
                for key, label in REQUESTS:
                    requests.add_metric([host, label], _n(proxy.get(key + "count")))
                errors.add_metric([host], _n(proxy.get("errorcount")))
            yield requests
            yield errors
        for name, key in (("rtpengine_ports_used", "used"), ("rtpengine_ports_free", None),
                          ("rtpengine_ports", "total")):
            m = GaugeMetricFamily(name, "", labels=["name", "address"])
            for iface in self.interfaces:
                value = (iface["total"] - iface["used"]) if key is None else iface[key]
                m.add_metric([iface["name"], iface["address"]], value)
            yield m


def render(stats, interfaces, media_streams):
    """The /metrics body (bytes) for one snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatisticsCollector(stats, interfaces, media_streams))
    return generate_latest(registry)
