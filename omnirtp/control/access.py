"""Which source addresses may use a control listener (ng, CLI, HTTP).

``control-allow`` is omnirtp's own option (rtpengine 10.5 and the current
upstream release have none: they rely on the firewall).  Loopback
(127.0.0.0/8, ::1) is always allowed; the option adds networks::

    control-allow = 10.0.0.0/8;192.0.2.7;2001:db8::/32

A request from anywhere else gets no answer at all (an answer would tell a
scanner that the port is alive) and is counted per listener kind, so
``statistics`` can show it.  One :class:`AccessList` is shared by every
control listener of the daemon; each calls :meth:`AccessList.admit` with
the request's source host before it parses anything.

This module knows nothing of Twisted: it takes a host string, returns a
bool.
"""

import ipaddress

from omnirtp.config.model import parse_network

LOOPBACK = ("127.0.0.0/8", "::1/128")
"""Networks every control listener accepts, whatever the configuration."""

NG, CLI, HTTP = "ng", "cli", "http"
KINDS = (NG, CLI, HTTP)

_CACHE_MAX = 1024


class AccessList:
    """The networks allowed to send control requests.

    :param networks: extra networks (strings for :func:`parse_network`, or
        ``ipaddress`` networks).
    :param loopback: include :data:`LOOPBACK` (the daemon always does; a
        test or an embedding may leave it out).

    ``denied`` counts refused requests per listener kind (``ng``, ``cli``,
    ``http``; any other kind a caller names is counted too).
    """

    def __init__(self, networks=(), loopback=True):
        nets = [ipaddress.ip_network(n) for n in LOOPBACK] if loopback else []
        for n in networks:
            net = n if isinstance(n, (ipaddress.IPv4Network, ipaddress.IPv6Network)) \
                else parse_network(n)
            if net not in nets:
                nets.append(net)
        self.networks = tuple(nets)
        self._v4 = tuple(n for n in nets if n.version == 4)
        self._v6 = tuple(n for n in nets if n.version == 6)
        self.denied = dict.fromkeys(KINDS, 0)
        # host string -> bool; a flood of distinct sources only refills it
        self._cache = {}

    def allows(self, host):
        """True if ``host`` (an address string; IPv6 may carry ``%scope``;
        IPv4-mapped IPv6 counts as its IPv4 address) is in the list.
        Anything that is not an address is refused."""
        known = self._cache.get(host)
        if known is not None:
            return known
        ok = self._check(host)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        if isinstance(host, str):
            self._cache[host] = ok
        return ok

    def _check(self, host):
        if not isinstance(host, str):
            return False
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        nets = self._v4 if addr.version == 4 else self._v6
        return any(addr in n for n in nets)

    def admit(self, host, kind=NG):
        """:meth:`allows`, counting a refusal under ``kind``."""
        if self.allows(host):
            return True
        self.denied[kind] = self.denied.get(kind, 0) + 1
        return False

    def __repr__(self):
        return "AccessList(%s)" % (";".join(str(n) for n in self.networks),)


__all__ = ["AccessList", "parse_network", "LOOPBACK", "NG", "CLI", "HTTP"]
