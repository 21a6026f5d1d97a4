"""zope interfaces for the pluggable and process-crossing parts of omnirtp."""

from zope.interface import Attribute, Interface

#: the packet durations (ms) a media engine takes for ``configure``'s
#: ``ptime`` and ``repacketise``
PTIME_MIN, PTIME_MAX = 1, 1000


class IMediaEngine(Interface):
    """The media plane as the control plane sees it.

    Implemented in-process by ``omnirtp.media.engine.EmbeddedEngine``
    (``num-threads = 0``) and across processes by
    ``omnirtp.media.pool.WorkerPool`` (``num-threads = N``), which runs one
    ``EmbeddedEngine`` per worker behind AMP.  Every method returns a
    ``Deferred``; values are plain data (str, int, bool, tuples, lists,
    dicts) so that they can cross a process boundary.

    A *socket key* is ``(local_address, local_port)``.  Ports come in pairs:
    an even RTP port ``p`` and the RTCP port ``p + 1``; both are bound.
    """

    def allocate(call_id, address, count):
        """Bind ``count`` RTP/RTCP port pairs on ``address`` for ``call_id``.

        Fires with a list of ``count`` even RTP ports.  Fails with
        ``omnirtp.errors.PortsExhausted`` if not enough pairs are free, in
        which case nothing of this request stays bound.  All ports of one
        call live in the same engine (worker).
        """

    def claim(call_id, address, ports):
        """Bind exactly the even RTP ``ports`` (and each port + 1) on
        ``address`` for ``call_id``: a call restored from the state store
        keeps the ports its parties were given.  Fires with the ports;
        fails with ``omnirtp.errors.PortsExhausted`` if one of them is taken
        or not in the engine's range (nothing of the request stays bound).
        """

    def configure(call_id, sockets):
        """Set the forwarding of some of the call's sockets.

        ``sockets`` is a list of dicts, one per local socket::

            {"local": (addr, port),        # the socket this entry configures
             "peer": (addr, port) | None,  # local socket that packets received
                                           #   here are sent out of (None: drop)
             "rtcp_peer": (addr, port) | None,  # optional: where RTCP (PT
                                           #   192-223) received here goes
                                           #   instead (rtcp-mux on this side
                                           #   only)
             "endpoint": (addr, port) | None,  # where packets sent *from* this
                                           #   socket go: the party it faces,
                                           #   from that party's SDP
             "learning": "delayed" | "immediate" | "off" | "heuristic",
             "strict": bool,               # strict-source: drop other sources
             "handover": bool,             # media-handover: re-learn always
             "asymmetric": bool,           # never learn, always send to SDP
             "reset": bool,                # a signalling event: restart the
                                           #   learning window, last_packet=now
             "tos": int | None,            # optional: the TOS byte (IPv4) or
                                           #   traffic class (IPv6), 0-255, the
                                           #   socket and its companion send
                                           #   with (absent/None: unchanged)
             "srtp_in": crypto | None,     # optional: unprotect (SRTP/SRTCP)
                                           #   what this socket RECEIVES from
                                           #   its party, with the party's key
             "srtp_out": crypto | None}    # optional: protect what this socket
                                           #   SENDS to its party, with the key
                                           #   we gave that party

        ``crypto`` is ``{"suite": name, "key": base64}``: ``suite`` one of
        ``AES_CM_128_HMAC_SHA1_80``, ``AES_CM_128_HMAC_SHA1_32``,
        ``AEAD_AES_128_GCM`` (RFC 4568 / rtpengine spelling), ``key`` the
        base64 of master key || master salt (30 bytes for AES-CM-128, 28 for
        AEAD-AES-128-GCM); see ``omnirtp.media.srtp``.  The keys apply to
        RTP and RTCP sockets alike (SRTCP on an RTCP socket or for RTCP
        multiplexed on an RTP socket).

        ``srtp_in`` / ``srtp_out``: an *absent* key leaves that direction as
        it is (so an entry that does not mention SRTP never disturbs keys set
        before); ``None`` removes it (plain RTP again); a dict equal to the
        one in force (same suite and key) keeps the running SRTP context,
        with its rollover counter and replay window; a different dict
        replaces it.  A packet received on socket S and sent out of S's
        ``peer`` (or ``rtcp_peer``) P runs S's ``srtp_in`` (unprotect) and
        then P's ``srtp_out`` (protect); a socket pair without either keeps
        the plain fast path.  Packets that fail (authentication, replay)
        are dropped and counted (see :meth:`stats`).

        ``"srtp_resume"`` (optional, what a restored call's entries carry):
        ``{"in": indexes, "out": indexes}``, the socket's ``srtp_index``
        (see :meth:`stats`) from before a restart or a takeover; an SRTP
        step this entry builds anew for ``srtp_in`` ("in") or ``srtp_out``
        ("out") goes on from it when it was counted under the same key
        (its RTP rollover counters and highest indexes, its SRTCP index
        plus a margin), a running step or another key ignore it.

        ``"ice"`` and ``"dtls"`` (optional; absent: unchanged, None:
        removed; the shapes are in WIRING-CONTRACT / ``omnirtp.media.engine``):
        ``ice`` ``{"ufrag", "pwd", "remote_ufrag", "remote_pwd",
        "controlling", "lite", "component", "candidates"}`` puts an ICE
        agent on the socket: the endpoint is the address it selects (not the
        SDP's ``endpoint``), nothing is learnt, packets from addresses it did
        not authorise are dropped, and after consent loss the party gets
        nothing.  The same local credentials and remote ones that are the
        same or not known on one side (None) keep the running agent and add
        new candidates; others make a new agent (ICE restart).  ``dtls``
        ``{"role": "client" | "server", "fingerprint": str | None}`` runs
        DTLS-SRTP with the engine's certificate: the socket's media is held
        back (dropped both ways) until the handshake's keys take the place
        of ``srtp_in`` / ``srtp_out``, and stays held if it fails.  The
        same role with the same fingerprint, or with None (not known in this
        entry), keeps the running endpoint (a fingerprint that arrives late
        is checked then); another role or fingerprint starts a new one.

        Codecs (optional; filled by the negotiator for calls with codec
        operations, CODEC-CONTRACT.md; the same on a party's RTP and RTCP
        socket): ``"codecs_send"`` lists the
        formats the party this socket faces may send us (those of the
        latest SDP of its offer/answer: an answerer's own answer, for an
        offerer the answer omnirtp gave it, before the answer the offer),
        ``"codecs_recv"``
        the formats it accepts from us (its own m= line; absent until its
        SDP is known), both in m= order, each ``{"pt": int, "encoding":
        lower-case rtpmap name, "clock_rate": int, "channels": int, "fmtp":
        str}``.  ``"transcode": True`` is present only when media from this
        party needs a transcoder towards the peer's party (a codec it may
        send is not accepted there, rtpengine 10.5's decision); absent, the
        socket keeps the plain fast path whatever the format lists say.
        ``"ptime"`` (int ms, :data:`PTIME_MIN`-:data:`PTIME_MAX`, or None;
        absent: unchanged) is the packet
        duration the party this socket faces takes from us (what the
        transcoder towards it packetises at; None: as the sender sends);
        ``"repacketise"`` (int ms in the same range; absent or None: none), only where the
        ng ``ptime``/``ptime-reverse`` forced that party's ptime: what
        reaches it untranscoded is repacketised to it (G.711, G.722).
        Calls without codec operations (ng ``codec``, ``codec-…`` flags,
        ``always-transcode``, ``single-codec``) get none of these keys.

        ``"record"`` (optional; absent: unchanged, None: this socket is not
        recorded any more) ``{"path": str, "format": "raw" | "eth",
        "paused": bool}`` records what this socket receives from its party,
        in the clear (after ``srtp_in`` / DTLS, before any other step), into
        the call's pcap file ``path`` (``omnirtp.recording``): one file per
        call in the engine owning its sockets, opened (truncated) when a
        path is first given, closed when no socket of the call records into
        it any more or the call's ports are released.  ``paused`` keeps the
        file open and records nothing.  Writing is buffered and done off the
        packet path; a file that cannot be opened or written (no directory,
        no permission, a full disk) is logged once with the call-id, counted
        in :meth:`totals` (``recording_errors``) and the call goes on
        unrecorded.  An entry holding only ``local`` and ``record`` changes
        nothing else of the socket (the ``start/stop/pause recording``
        commands).

        Every entry is validated before any is applied: an unknown suite, a
        key that is not base64 or has the wrong length, a bad ``ice`` or
        ``dtls`` value fails the whole call with ValueError and changes
        nothing.  Fires with None.
        """

    def release(call_id, sockets=None):
        """Close and return to the pool the given RTP socket keys (each pair
        goes together) or, when ``sockets`` is None, every port of the call.
        Fires with None; releasing what is not held is not an error."""

    def stats(call_id=None):
        """Fire with ``{call_id: {(addr, port): counters}}`` for one call
        (or all calls when None).  ``counters`` is a dict with ``packets``,
        ``bytes``, ``errors`` (ingress, as rtpengine counts a stream;
        datagrams not forwarded are counted in errors), ``last_packet`` (unix time float of
        the last ingress packet, or of the last reset), ``endpoint``
        ((addr, port) currently sent to, or None) and ``confirmed`` (bool).
        A socket that received media also has ``ssrc`` (the SSRC of its
        last RTP datagram; an RTCP socket's: the sender SSRC of its last
        RTCP one), ``rtcp ssrc`` (an RTP socket's last RTCP sender SSRC,
        rtcp-mux) and ``payload types`` (``{payload type: RTP
        datagrams}``), each once it has one.
        A socket with transforms (``srtp_in`` / ``srtp_out``) also has
        ``transforms``: ``{name: counters}`` of the steps it owns, e.g.
        ``{"srtp-unprotect": {"auth-failures": 0, "replays": 0,
        "errors": 0}, "srtp-protect": {...}}`` (see
        :meth:`IPacketTransform.counters`); a plain socket has no such key.
        Its SRTP steps' indexes are ``srtp_index``: ``{"in": indexes,
        "out": indexes}`` (each direction only when it has some), indexes
        ``{"key": digest of the key, "rtp": {ssrc: ROC << 16 | SEQ},
        "rtcp": {ssrc: SRTCP index sent}}`` (``omnirtp.media.srtp``: what
        a restarted daemon resumes from, kept by the state store).
        A socket with ICE or DTLS also has ``datagrams`` (STUN/DTLS handed
        on), ``wire`` (``consent-lost``, ``ice-failed``, ``ice-restarts``,
        ``dtls-unauthorised``, ``dtls-failed``), ``ice`` (``state``,
        ``selected``, ``controlling``, ``lite``, ``component``, ``pairs``,
        ``counters``) and/or ``dtls`` (``state``, ``role``, ``profile``,
        ``failure``, ``counters``); once a DTLS handshake exported its keys
        also ``dtls_srtp`` (``{"in": crypto dict, "out": crypto dict, "role"}``:
        key material, kept by the state store, never shown to clients)."""

    def totals():
        """Fire with engine-wide counters: ``{"packets", "bytes", "errors",
        "junk", "ports_used", "ports_free", "recording_errors"}`` (``junk``:
        datagrams dropped on media ports because they were not RTP/RTCP or
        came from nowhere known; ``recording_errors``: call recordings that
        failed, see ``record`` in :meth:`configure`)."""


class IStateStore(Interface):
    """Where the call registry keeps serialised calls (memory, Redis)."""

    def save(call_id, blob):
        """Store ``blob`` (bytes) for ``call_id``."""

    def delete(call_id):
        """Forget ``call_id``."""

    def load_all():
        """Fire with ``{call_id: blob}``."""


class ICodecFactory(Interface):
    """A codec the transcoder can build: a plugin, a module-level instance
    in a module of ``omnirtp.plugins`` (see ``omnirtp.codecs.registry``).

    ``(encoding, clock_rate, channels)`` is the rtpmap the factory serves
    and its key in the registry.  ``clock_rate`` is the RTP clock of the
    SDP, ``sample_rate`` the rate of the PCM its codecs take and give: they
    differ for G.722 (8000 in SDP, 16000 audio, RFC 3551 4.5.2)."""

    encoding = Attribute("rtpmap encoding name, lower-case, e.g. 'pcmu'")
    clock_rate = Attribute("RTP clock rate in Hz (as in the SDP's rtpmap)")
    channels = Attribute("rtpmap channel count (1; Opus: 2, as RFC 7587 requires)")
    sample_rate = Attribute("the codec's native PCM sample rate in Hz (what build gives by default)")
    sample_rates = Attribute("every PCM rate build can run the codec at (a tuple, native first):"
                             " the transcoder picks one both sides share to avoid resampling")
    payload_type = Attribute("static RTP payload type (RFC 3551), or None for a dynamic one")
    ptime = Attribute("packet duration in ms the codec's encoder uses unless told otherwise")
    default_fmtp = Attribute("fmtp omnirtp offers for the codec when it adds it ('' for none)")

    def available():
        """Return None if usable, else a one-line reason (e.g. a library missing)."""

    def build(fmtp, sample_rate=None):
        """Return a fresh :class:`ICodec` for one stream, with PCM at
        ``sample_rate`` (one of ``sample_rates``; None: the native
        ``sample_rate``; another raises ValueError); ``fmtp`` is the
        a=fmtp value (str, '' for none) of the side the codec talks to: an
        encoder follows the receiver's parameters (Opus ``stereo``,
        ``maxplaybackrate``, ``useinbandfec``, ``maxaveragebitrate``,
        ``ptime``); unknown parameters are ignored."""

    def samples(payload):
        """How many samples per channel at ``clock_rate`` the RTP payload
        holds (what it advances the RTP timestamp by); 0 if not known."""


class ICodec(Interface):
    """One stream's codec state (built by :meth:`ICodecFactory.build`).

    A transcoder is a pipeline step (``IPacketTransform``, a ``middle``
    step of the receiving socket) that decodes the payload with one codec
    and encodes it with another; see docs/architecture.md and
    ``omnirtp.codecs.transcode``.  PCM is signed 16-bit little-endian mono
    at the codec's ``sample_rate``.  None of the methods may raise for
    bad input: they run on the per-packet path."""

    sample_rate = Attribute("the rate in Hz of the PCM this codec takes and gives")

    def decode(payload):
        """RTP payload (bytes) -> PCM; None if the payload is corrupt."""

    def encode(pcm):
        """PCM (a whole number of frames, as the encoder's ptime asks) ->
        RTP payload (bytes)."""

    def conceal(samples, next_payload=None):
        """PCM for ``samples`` lost samples (at ``sample_rate``): packet
        loss concealment, or forward error correction from
        ``next_payload`` (the packet after the loss) where the codec has
        it (Opus in-band FEC); silence for codecs with neither."""


class IPacketTransform(Interface):
    """One step of one direction of a stream, run per packet in the media plane.

    A socket owns the steps for what it receives (e.g. SRTP unprotect with
    its party's key) and for what it sends (e.g. SRTP protect with the key
    given to its party); the packet received on socket S and sent out of
    S's peer P runs S's receive steps, then P's send steps (see
    ``omnirtp.media.pipeline``).  Both methods run on the per-packet path:
    they must be cheap, must not log, and must not raise (a failure is
    counted and returned as None).  A step keeps its own state (an SRTP
    context, a codec) for the life of the stream.

    A step gives one packet for one (SRTP, a recording tap), unless it has
    ``fan_out = True`` (a transcoder that repacketises to the receiver's
    ptime): then its ``rtp`` may also return a tuple of 0..N packets (the
    empty tuple while it holds audio back for a longer packet: no drop),
    each of which runs the steps after it.  A chain has at most one such
    step (the first counts); sockets without one keep their paths as they
    are (``omnirtp.media.relay.RelaySocket._fan``).
    """

    name = Attribute("short name, e.g. 'srtp-unprotect'; the key of its counters in query")

    def rtp(data):
        """Return the RTP packet (bytes) transformed, or None to drop it
        (the transform counts why); a ``fan_out`` step may return a tuple
        of packets instead (see above)."""

    def rtcp(data):
        """The same for an RTCP packet (SRTCP for SRTP)."""

    def counters():
        """Plain-data dict of this step's counters, e.g. {'auth-failures': 0, 'replays': 0}."""


class ITransformFactory(Interface):
    """Builds the :class:`IPacketTransform` steps of one kind.

    Implementations are plugins: module-level instances in a module of the
    ``omnirtp.plugins`` package, found with
    ``twisted.plugin.getPlugins(ITransformFactory, omnirtp.plugins)`` once,
    when an engine first needs them (never per packet).  ``params`` is plain
    data (it crosses AMP), e.g. the crypto dict of
    :meth:`IMediaEngine.configure` for ``kind`` ``"srtp"``.
    """

    kind = Attribute("what the factory builds, e.g. 'srtp'")

    def available():
        """None if usable here, else a one-line reason (library missing)."""

    def check(params):
        """Raise ValueError (with a clear text) unless ``params`` can build a
        step; return None.  Cheap, builds nothing."""

    def inbound(params):
        """A fresh :class:`IPacketTransform` for what a socket receives from
        its party (e.g. SRTP unprotect with the party's key)."""

    def outbound(params):
        """A fresh :class:`IPacketTransform` for what a socket sends to its
        party (e.g. SRTP protect with the key we gave the party)."""


class IDatagramHandler(Interface):
    """Takes the non-RTP datagrams of a media socket that RFC 7983 assigns to
    it (STUN: first byte 0-3; DTLS: 20-63), routed by
    ``omnirtp.media.demux.Demux``.  Sends through a callable it was given at
    construction (``RelaySocket.send(data, address)`` or
    ``RelaySocket.send_endpoint(data)``).  Implemented by
    ``omnirtp.media.ice.IceAgent`` and ``omnirtp.media.dtls.DtlsEndpoint``."""

    def datagram(data, source):
        """Handle one datagram (bytes) from ``source`` ((addr, port)).
        Returns None; must not raise for bad input (count it instead)."""


class IForwarder(Interface):
    """Forwarding of plain streams below userspace (``table = N``).

    A *stream* is ``omnirtp.media.kernel.Stream(local, source, out, dest)``:
    datagrams from ``source`` to our socket ``local`` leave from our socket
    ``out`` to ``dest``.  Implemented by
    ``omnirtp.media.kernel.NftForwarder`` (nftables).  Synchronous and off
    the per-packet path; the media engine calls it after configurations,
    once a second for calls whose sockets saw packets, and to read
    counters when something needs them."""

    def start():
        """Take our table over (removing what a previous run left) or raise
        ``omnirtp.media.kernel.KernelUnavailable`` saying why not."""

    def stop():
        """Remove everything this forwarder installed."""

    def offload(call_id, streams):
        """Make the call's forwarded streams exactly ``streams`` (a list;
        those the kernel cannot forward are left out), in one batch.  An
        empty list removes the call."""

    def offload_calls(calls):
        """``offload`` for several calls (``{call_id: streams}``) in as few
        batches as one call needs; returns ``{call_id: error}`` of the
        calls the kernel refused (their new streams stay in userspace)."""

    def offloaded(call_id=None):
        """``{local: Stream}`` in the kernel now (of one call, or all)."""

    def counters(fresh=True, locals=None):
        """``{local: (packets, bytes)}`` forwarded by the kernel per
        receiving socket, cumulative over its offloads until ``forget``, of
        the sockets ``locals`` (None: of every socket it counted; a socket
        the kernel never forwarded for is left out).  ``fresh``: read the
        kernel's counters of those sockets now (one lookup of their
        elements; None: of every stream); ``fresh=False``: as of each
        stream's last read (no kernel round trip)."""

    def forget(local):
        """Drop the counters of a released socket."""
