"""Normalise SDP produced by a media proxy so that two daemons' outputs compare equal.

Every value a daemon picks at random (media ports, ICE ufrag/pwd/foundations,
the loop-protect id, SDES keys, DTLS fingerprints, tls-id) is replaced by a
placeholder numbered by order of first appearance: ``{PORT1}``, ``{UFRAG1}``,
... .  One :class:`Normaliser` is kept for a whole call so that a value that
is reused (a re-INVITE keeping its ports, one ufrag for every m= line) keeps
its placeholder, and the structure "same as before" / "different" is still
compared.  An RTCP port that is a known RTP port + 1 is written
``{PORT3+1}`` (an m= line's port never is: it is a stream's own).  Session versions in ``o=`` get ``{VERSION<n>}`` the same way.
Line endings become ``\\n``; port 0 (rejected media) and ports listed in
``keep_ports`` (the peers' own ports, echoed in some outputs) stay as they are.
SDES keys that the peers themselves sent (:meth:`Normaliser.keep_input`) stay
as they are too, so passing a peer's key on differs from making a new one.

Command line: ``python -m omnirtp.test.sdpnorm FILE...`` prints the
normalised SDP of each file.
"""

import re
import sys

_CANDIDATE = re.compile(
    r"^a=candidate:(\S+) (\d+) (\S+) (\d+) (\S+) (\d+) typ (\S+)(.*)$")
_CRYPTO = re.compile(r"^(a=crypto:\d+ \S+ inline:)([^|\s=]+)(.*)$")  # base64 padding stays visible


class Normaliser:
    """Replaces random tokens by stable placeholders across one call."""

    def __init__(self, keep_ports=()):
        self.keep_ports = set(keep_ports)
        self.keep_keys = set()
        self._maps = {}

    def keep_input(self, sdp):
        """Keep the a=crypto keys of ``sdp`` (a request's SDP) literally."""
        if isinstance(sdp, bytes):
            sdp = sdp.decode("utf-8", "surrogateescape")
        for line in re.split(r"\r\n|\n|\r", sdp or ""):
            match = _CRYPTO.match(line)
            if match:
                self.keep_keys.add(match.group(2))

    def _token(self, kind, value):
        table = self._maps.setdefault(kind, {})
        if value not in table:
            table[value] = "{%s%d}" % (kind, len(table) + 1)
        return table[value]

    def port(self, text, address=None, rtp=False):
        """Placeholder for a media port on ``address`` (ports on different
        addresses are different sockets, even with the same number).
        ``rtp``: the port of an m= line, a stream's own socket, never
        written as a known port + 1 (rtpengine 10.5 may give an rtcp-mux
        stream the odd port an earlier stream left unused: where it picks
        its ports is random, so that would name the same SDP two ways)."""
        if not text.isdigit():
            return text
        port = int(text)
        if port == 0 or port in self.keep_ports:
            return text
        ports = self._maps.setdefault("PORT", {})
        if address in ("0.0.0.0", "::"):
            # a hold address says nothing about the socket: reuse any
            # placeholder already given to this port number
            for key in ports:
                if key[1] in (port, port - 1):
                    address = key[0]
                    break
        if (not rtp and (address, port) not in ports and (address, port - 1) in ports
                and port % 2 == 1):
            return ports[(address, port - 1)][:-1] + "+1}"
        return self._token("PORT", (address, port))

    def line(self, line, address=None):
        if line.startswith("m="):
            fields = line.split(" ")
            port, slash, count = fields[1].partition("/")
            fields[1] = self.port(port, address, rtp=True) + slash + count
            return " ".join(fields)
        if line.startswith("o="):
            fields = line[2:].split(" ")
            if len(fields) == 6:
                fields[2] = self._token("VERSION", fields[2])
            return "o=" + " ".join(fields)
        if line.startswith("a=rtcp:"):
            head, _, rest = line[7:].partition(" ")
            own = rest.split()[-1] if rest else address
            return "a=rtcp:" + self.port(head, own) + (" " + rest if rest else "")
        if line.startswith("a=ice-ufrag:"):
            return "a=ice-ufrag:" + self._token("UFRAG", line[12:])
        if line.startswith("a=ice-pwd:"):
            return "a=ice-pwd:" + self._token("PWD", line[10:])
        if line.startswith("a=rtpengine:"):
            return "a=rtpengine:" + self._token("LOOPID", line[12:])
        if line.startswith("a=tls-id:"):
            return "a=tls-id:" + self._token("TLSID", line[9:])
        if line.startswith("a=fingerprint:"):
            algo, _, fp = line[14:].partition(" ")
            return "a=fingerprint:%s %s" % (algo, self._token("FINGERPRINT", fp))
        match = _CRYPTO.match(line)
        if match:
            key = match.group(2)
            if key not in self.keep_keys:
                key = self._token("KEY", key)
            return match.group(1) + key + match.group(3)
        match = _CANDIDATE.match(line)
        if match:
            found, comp, transport, prio, addr, port, typ, rest = match.groups()
            return "a=candidate:%s %s %s %s %s %s typ %s%s" % (
                self._token("FOUNDATION", found), comp, transport, prio, addr,
                self.port(port, addr), typ, rest)
        return line

    def normalise(self, sdp):
        """Return the normalised text of ``sdp`` (str or bytes), LF endings."""
        if isinstance(sdp, bytes):
            sdp = sdp.decode("utf-8", "surrogateescape")
        lines = re.split(r"\r\n|\n|\r", sdp)
        if lines and lines[-1] == "":
            lines.pop()
        addresses = _addresses(lines)
        return "".join(self.line(ln, a) + "\n" for ln, a in zip(lines, addresses))


def _addresses(lines):
    """The effective connection address for each line (its section's c=,
    else the session's)."""
    session, sections, current = None, [], None
    for ln in lines:
        if ln.startswith("m="):
            current = [None]
            sections.append(current)
        elif ln.startswith("c="):
            address = ln.split()[-1].split("/")[0] if len(ln.split()) == 3 else None
            if current is None:
                session = address
            else:
                current[0] = address
    result, index, section = [], -1, None
    for ln in lines:
        if ln.startswith("m="):
            index += 1
            section = sections[index][0]
        result.append(section or session)
    return result


def normalise(sdp, keep_ports=()):
    """Normalise one SDP on its own."""
    return Normaliser(keep_ports).normalise(sdp)


def main(argv):
    for path in argv:
        with open(path, "rb") as f:
            sys.stdout.write(normalise(f.read()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
