"""The call model: Call -> Monologue (one per SIP tag) -> Media (one per m= line).

Plain data, no I/O.  A ``Media`` belongs to one monologue and holds the
local sockets *advertised to that monologue's party*: the party sends its
RTP to ``(address, rtp_port)`` and its RTCP to ``rtp_port + 1``.  What the
party told us in its SDP (where it wants to receive) is ``rtp_endpoint`` /
``rtcp_endpoint``.

SDES keys live per media (so per party): ``crypto_remote`` is the party's
chosen ``a=crypto`` (its key decrypts what it sends us), ``crypto_local``
ours for that party (encrypts what we send it); both are
:class:`omnirtp.sdp.crypto.Crypto` or None.  ``srtp_in``/``srtp_out`` give
them as the engine's crypto dicts.
"""

import base64

from omnirtp.interfaces import PTIME_MAX, PTIME_MIN
from omnirtp.sdp.rewrite import FOUNDATION_LENGTH, new_ice_credentials, random_token


class Interface:
    """One local address of a logical interface, as the SDP will show it."""

    __slots__ = ("name", "address", "advertised", "family", "ice_foundation")

    def __init__(self, name, address, advertised=None):
        self.name = name
        self.address = address
        self.advertised = advertised or address
        self.family = "IP6" if ":" in address else "IP4"
        self.ice_foundation = random_token(FOUNDATION_LENGTH)

    def __repr__(self):
        return "Interface(%r, %r, %r)" % (self.name, self.address, self.advertised)


#: the steps of kept SRTP indexes worth a write (Media.keep_srtp_index):
#: RTP in quarters of the sequence space, SRTCP in runs of 64
SRTP_KEEP_SHIFT = 14
SRTCP_KEEP_SHIFT = 6


def _srtp_coarse(kept):
    """``kept`` (``Media.srtp_index``) with each index cut to its step."""
    if kept is None:
        return None
    out = []
    for socket in ("rtp", "rtcp"):
        for word, indexes in sorted((kept.get(socket) or {}).items()):
            out.append((socket, word, indexes.get("key"),
                        sorted((s, i >> SRTP_KEEP_SHIFT)
                               for s, i in (indexes.get("rtp") or {}).items()),
                        sorted((s, i >> SRTCP_KEEP_SHIFT)
                               for s, i in (indexes.get("rtcp") or {}).items())))
    return out


def _engine_ptime(ptime):
    """``ptime`` if the media engine packetises at it, else None: a ptime
    beyond (an SDP's ``a=ptime:5000``, an ng ``ptime`` of 5000) is written
    in the SDP as given, as rtpengine 10.5 does, but the engine is not asked
    for it (it sends as the other side sends)."""
    if ptime and PTIME_MIN <= ptime <= PTIME_MAX:
        return ptime
    return None


class Media:
    """One m= line of one party, with the local RTP/RTCP sockets facing it."""

    __slots__ = (
        "index", "type", "protocol", "interface", "rtp_port",
        "rtp_endpoint", "rtcp_endpoint", "rtcp_mux", "mux", "direction",
        "rejected", "zero_address", "ice_ufrag", "ice_pwd",
        "codec_keys", "ptime", "ptime_forced",
        "crypto_remote", "crypto_local", "crypto_offered", "crypto_candidates",
        "dtls_setup", "dtls_fingerprint", "dtls_role", "dtls_srtp", "srtp_index",
        "ice_used", "ice_controlling", "ice_lite", "ice_remote_ufrag", "ice_remote_pwd",
        "ice_candidates", "ice_trickle", "ice_remote_lite", "ice_seen", "ice_bases", "mid",
        "codecs", "codecs_in", "codecs_out", "codecs_planned", "transcoding",
        "codec_source", "codec_out_source", "codec_last",
    )

    def __init__(self, index, type_, interface):
        self.index = index
        self.type = type_
        self.protocol = None
        self.interface = interface
        self.rtp_port = None
        self.rtp_endpoint = None
        self.rtcp_endpoint = None
        #: the party offered or answered a=rtcp-mux
        self.rtcp_mux = False
        #: the party multiplexes RTCP on its RTP port (negotiated)
        self.mux = False
        self.direction = None
        self.rejected = False
        self.zero_address = False
        #: our ICE credentials towards this party, made when an SDP to it
        #: first carries ICE (Negotiator._ice_plan): None for a party that
        #: never gets ICE data, a plain SIP call's (no token, no strings kept)
        self.ice_ufrag = self.ice_pwd = None
        self.codec_keys = frozenset()
        self.ptime = None
        #: the ptime this party is to be sent (and told), as the offer's ng
        #: ``ptime`` (towards its recipient) or ``ptime-reverse`` (towards
        #: the offerer) set it; kept for the dialogue's later SDP (None: not
        #: forced)
        self.ptime_forced = None
        #: SDES in use with this party (see the module docstring)
        self.crypto_remote = None
        self.crypto_local = None
        #: our a=crypto lines in the last offer sent to this party
        self.crypto_offered = ()
        #: the party's usable a=crypto lines of its last offer, in its order
        self.crypto_candidates = ()
        #: DTLS-SRTP with this party: its a=setup word and first a=fingerprint
        #: value (None: not given), and our DTLS role towards it ("client" /
        #: "server"; None: no DTLS with this party)
        self.dtls_setup = None
        self.dtls_fingerprint = None
        self.dtls_role = None
        #: the SRTP keys the DTLS handshake of this party's socket exported
        #: (``{"in", "out", "role", "fingerprint"[, "restored"]}``), kept by
        #: the state store so that the leg relays on after a restart or a
        #: takeover without a new handshake (docs/scaling.md); None until then
        self.dtls_srtp = None
        #: where the SRTP contexts of this party's sockets were, for a
        #: restart or a takeover to go on from (RFC 3711's rollover counters
        #: and SRTCP indexes): ``{"rtp": indexes, "rtcp": indexes}`` of the
        #: RTP and the RTCP socket, each the engine's ``srtp_index`` stats
        #: value or None; kept by :meth:`keep_srtp_index`
        self.srtp_index = None
        #: ICE with this party: ``ice_used`` when our last SDP to it carried
        #: our ICE data (``ice_ufrag``/``ice_pwd``) and the party did not
        #: answer without ICE; its own credentials, a=candidate values (valid
        #: ones, in its order), trickle option and a=ice-lite; our role
        self.ice_used = False
        self.ice_controlling = False
        self.ice_lite = False
        self.ice_remote_ufrag = None
        self.ice_remote_pwd = None
        self.ice_candidates = ()
        self.ice_trickle = False
        self.ice_remote_lite = False
        #: the party's last SDP had ICE attributes
        self.ice_seen = False
        #: ICE on an interface with several addresses: ``((address, rtp
        #: port), ...)`` of the port pairs bound on its other addresses, each
        #: a host candidate after the one of ``interface`` (as rtpengine
        #: 10.5 does); () for one address, or a party never offered ICE
        self.ice_bases = ()
        #: the party's a=mid value (None: none)
        self.mid = None
        #: codecs (omnirtp.call.codecstore.PayloadType lists): the formats of
        #: the party's last SDP (``codecs_in``; None: none yet), of the m= line we last gave
        #: it (``codecs_out``; None: none yet) and, in a request that writes
        #: them from the codec store, the formats to write (``codecs_planned``)
        self.codecs_in = None
        self.codecs_out = None
        self.codecs_planned = None
        #: unparsed while the call has no codec operation: the party's last
        #: m= section, and (section, CodecOps) of the one we last gave it,
        #: each an omnirtp.sdp.model.KeptSection (text, parsed when needed)
        self.codec_source = None
        self.codec_out_source = None
        #: which of them is the party's latest SDP ("in": sent, "out": got)
        self.codec_last = None
        #: the party's codec store once the call asked for a codec operation
        #: (None: plain filtering); ``transcoding``: media from the party
        #: needs a transcoder towards the other side
        self.codecs = None
        self.transcoding = False

    @property
    def rtp_key(self):
        return (self.interface.address, self.rtp_port)

    @property
    def rtcp_key(self):
        return (self.interface.address, self.rtp_port + 1)

    @property
    def has_ports(self):
        return self.rtp_port is not None

    @property
    def srtp_in(self):
        """Crypto dict that unprotects what the party sends, or None."""
        if self.crypto_remote is None or self.crypto_local is None:
            return None
        return self.crypto_remote.to_dict()

    @property
    def srtp_out(self):
        """Crypto dict that protects what we send the party, or None."""
        if self.crypto_remote is None or self.crypto_local is None:
            return None
        return {"suite": self.crypto_local.suite,
                "key": base64.b64encode(self.crypto_local.key).decode("ascii")}

    def kept_dtls(self):
        """The kept DTLS-SRTP keys (:attr:`dtls_srtp`) when this party's
        sockets relay with them instead of a handshake: after a restore, as
        long as the DTLS role and the party's fingerprint are the ones the
        keys came from (a new fingerprint is a new association: a new
        handshake).  None otherwise."""
        if not self.dtls_keys_current() or not self.dtls_srtp.get("restored"):
            return None
        return self.dtls_srtp

    def dtls_keys_current(self):
        """The kept DTLS-SRTP keys (:attr:`dtls_srtp`) are those of this
        party's current DTLS association: the same role and fingerprint,
        and the RTCP socket's too when RTCP is not multiplexed."""
        kept = self.dtls_srtp
        return (kept is not None and kept.get("role") == self.dtls_role
                and kept.get("fingerprint") == self.dtls_fingerprint
                and (self.mux or kept.get("rtcp") is not None))

    def keep_srtp_index(self, rtp, rtcp):
        """Take the ``srtp_index`` stats values of this party's RTP and
        RTCP socket (None: none); True when they moved in a way a restart
        needs to know (then the call is to be written to the store): a new
        key or SSRC, an RTP index into another quarter of the sequence
        space (a rollover counter that changed among them: a restored
        context guesses the ROC right while the kept index is less than
        half the space behind), an SRTCP index into another run of 64
        (a restored sender goes on ``omnirtp.media.srtp.SRTCP_LEAP`` past
        the kept one).  Other changes are not written."""
        new = None if rtp is None and rtcp is None else {"rtp": rtp, "rtcp": rtcp}
        if _srtp_coarse(new) == _srtp_coarse(self.srtp_index):
            return False
        self.srtp_index = new
        return True

    def dtls_entry(self):
        """The engine's ``dtls`` socket-entry value for this party."""
        if self.dtls_role is None:
            return None
        return {"role": self.dtls_role, "fingerprint": self.dtls_fingerprint}

    def ice_entry(self, component):
        """The engine's ``ice`` socket-entry value for this party's socket of
        ``component`` (1: RTP, 2: separate RTCP), None without ICE."""
        if not self.ice_used or (component == 2 and self.mux):
            return None
        prefix = "%d " % component
        entry = {"ufrag": self.ice_ufrag, "pwd": self.ice_pwd,
                 "remote_ufrag": self.ice_remote_ufrag, "remote_pwd": self.ice_remote_pwd,
                 "controlling": self.ice_controlling, "lite": self.ice_lite,
                 "component": component,
                 "candidates": [c for c in self.ice_candidates
                                if c.split(" ", 2)[1:2] == [prefix.strip()]]}
        if self.ice_bases:
            # the same component's socket on each other address
            entry["bases"] = [(address, port + component - 1) for address, port in self.ice_bases]
        return entry

    def codec_entry(self, linked):
        """The engine's codec keys for a socket facing this party
        (CODEC-CONTRACT.md), once its call handles codecs (``codecs`` is
        set; a plain call gets none): ``codecs_send`` (the formats of the
        party's latest SDP, the one it sends with: an answerer's own answer,
        an offerer the m= line we answered it, before the answer the
        offer), ``codecs_recv`` (its own m= line; absent until known),
        ``transcode`` (only when media from it is transcoded) and ``ptime``
        (what it takes from us, None: as the other side sends)."""
        entry = {}
        forced = _engine_ptime(self.ptime_forced)
        if forced and self.type == "audio":
            # the ng ptime keys: what reaches the party untranscoded is
            # repacketised to that ptime too (rtpengine 10.5 does)
            entry["repacketise"] = forced
        if self.codecs is None:
            return entry
        if self.codec_last == "in":
            send = self.codecs_in if self.codecs_in is not None else self.codecs_out
        else:
            send = self.codecs_out if self.codecs_out is not None else self.codecs_in
        if send is not None:
            entry["codecs_send"] = _engine_formats(send)
        if self.codecs_in is not None:
            entry["codecs_recv"] = _engine_formats(self.codecs_in)
        if self.transcoding and linked:
            entry["transcode"] = True
        # the packet duration the party takes from us: forced by the ng
        # flags, else its own a=ptime, else None (as the other side sends)
        entry["ptime"] = forced or _engine_ptime(self.ptime)
        return entry

    @property
    def receiving(self):
        """True unless the party said it will not send (hold/inactive)."""
        return not self.zero_address and self.direction not in ("sendonly", "inactive")


def _engine_formats(formats):
    """The engine's format entries of an m= line's payload types, leaving
    out those it cannot describe (a dynamic type without a=rtpmap, an
    rtpmap with no encoding name, clock rate 0 or 0 channels): nothing can
    be transcoded from or to them, and the engine refuses such an entry
    (an offer with codec flags was answered "Internal error"; found by
    make fuzz, fixtures/fuzz/ng/codec-mask-pt-without-rtpmap.bin)."""
    return [c.as_dict() for c in formats
            if c.encoding and c.clock_rate > 0 and c.channels > 0 and 0 <= c.pt <= 127]


class Monologue:
    """What one SIP party (one tag) offered or answered."""

    def __init__(self, tag, created, interface_name=None, via_branch=None):
        self.tag = tag
        self.aliases = []
        self.label = None
        self.via_branch = via_branch
        self.created = created
        self.interface_name = interface_name
        self.medias = []
        self.peer = None
        self.protocol = None
        self.rtcp_mux_opts = frozenset()
        self.had_mid = False
        self.ice = False
        #: ICE-lite towards this party when it is answered (``ICE-lite``
        #: backward/both on its offer)
        self.ice_lite_back = False
        #: when a delayed partial ``delete`` removes this monologue (None: not)
        self.deletion_at = None

    @property
    def tagged(self):
        return bool(self.tag)

    def media(self, index):
        """The ``Media`` for 1-based ``index``, or None."""
        if 0 < index <= len(self.medias):
            return self.medias[index - 1]
        return None

    def port_medias(self):
        return [m for m in self.medias if m.has_ports]


class Call:
    """One call-id: its monologues and bookkeeping."""

    def __init__(self, call_id, created):
        self.call_id = call_id
        self.created = created
        self.last_signal = created
        #: the newest media packet time the timeout sweep has seen in the
        #: engine's counters (0: none yet); never newer than the engine's
        self.last_media = 0.0
        self.monologues = []
        self.answered = False
        self.deletion_at = None
        self.created_from = None
        self.metadata = None
        self.untagged_counter = 0
        #: the TOS byte an offer's ``TOS`` set for the call's media, None:
        #: the daemon's ``tos`` option
        self.tos = None
        #: the running CallRecording (omnirtp.recording.spool), or None
        self.recording = None

    def find(self, tag):
        """The monologue known by ``tag`` (or an alias of it), else None."""
        if not tag:
            return None
        for ml in self.monologues:
            if ml.tag == tag or tag in ml.aliases:
                return ml
        return None

    def find_branch(self, via_branch):
        for ml in self.monologues:
            if via_branch and ml.via_branch == via_branch:
                return ml
        return None

    def all_medias(self):
        for ml in self.monologues:
            for m in ml.medias:
                yield ml, m

    def socket_keys(self):
        """Every RTP socket key this call holds."""
        return [m.rtp_key for _, m in self.all_medias() if m.has_ports]
