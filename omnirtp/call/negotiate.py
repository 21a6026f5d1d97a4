"""Offer/answer: from an ng request to monologues, ports, engine and SDP.

``Negotiator.offer`` / ``answer`` take a ``Flags`` and return the rewritten
SDP.  Port allocation is all-or-nothing per request: whatever a failed
request bound is released before the error propagates, and a call that the
request created is removed again.
"""

from twisted.logger import Logger

from omnirtp import sync
from omnirtp.call.model import Interface, Media, Monologue
from omnirtp.errors import (
    E_MKI_UNSUPPORTED, E_NO_SUCH_TAG, E_SDP_INCOMPLETE, E_SDP_PARSE, E_SDP_REWRITE,
    E_UNKNOWN_CALL, NGError, SDPError)
from omnirtp.media import dtls
from omnirtp.media.ice import parse_candidate
from omnirtp.sdp import crypto as sdes
from omnirtp.sdp import model as sdpmodel
from omnirtp.sdp.rewrite import (
    ICE_REMOVE, PRIMARY_LOCAL_PREFERENCE, IcePlan, MediaPlan, SessionPlan, host_candidates,
    new_ice_credentials,
    rewrite)
from omnirtp.sdp.codecs import CodecOps, codec_for
from omnirtp.call import codecstore

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

#: the plans are made as ``_new(MediaPlan)`` and ``_media_plan(plan, **fields)``:
#: CPython 3.11 hands a class call's keywords to ``__init__`` as a dict
#: (built and unpacked again, about 450 instructions a keyword: 15 per
#: MediaPlan); ``__init__`` called itself takes them as they are
_new = object.__new__
_media_plan = MediaPlan.__init__
_session_plan = SessionPlan.__init__
_ice_plan = IcePlan.__init__

#: CodecOps with nothing to do (immutable: one for every media plan that
#: filters nothing)
_NO_CODEC_OPS = CodecOps()


def _render_crypto(crypto, words):
    """The a=crypto values of ``crypto`` (a list made here: a comprehension
    in :meth:`Negotiator._plan` would make ``flags`` a cell there)."""
    return [sdes.render(c, words) for c in crypto]


def _int(text):
    return int(text) if text and text.isdigit() else None


#: (encoding, clock rate) -> the codec key, one tuple shared by all calls
#: (each keeps its keys for its lifetime)
_CODEC_KEYS = {}
_CODEC_KEYS_MAX = 4096


def _codec_key(codec):
    if codec.encoding is None:
        return codec.pt
    spelled = (codec.encoding, codec.clock_rate)
    key = _CODEC_KEYS.get(spelled)
    if key is None:
        key = (codec.encoding.lower(), codec.clock_rate)
        if len(_CODEC_KEYS) < _CODEC_KEYS_MAX:
            _CODEC_KEYS[spelled] = key
    return key


def is_srtp_profile(proto):
    """True for the SRTP profiles (RTP/SAVP, RTP/SAVPF, UDP/TLS/RTP/SAVP(F)):
    rtpengine 10.5 offers a=crypto towards each of them unless SDES-off."""
    known = _SRTP_PROFILES.get(proto)
    if known is None:
        known = bool(proto) and "SAVP" in proto.upper()
        if len(_SRTP_PROFILES) < 256:  # (profiles come from the network)
            _SRTP_PROFILES[proto] = known
    return known


#: profile -> is_srtp_profile's answer
_SRTP_PROFILES = {}


#: (formats, a=rtpmap values) of an m= section -> (its formats' codec
#: keys in order, their frozenset): the same few lists come again and again
#: (bounded: they come from the network)
_SECTION_KEYS = {}


def _section_keys(section, formats):
    """``(keys, frozenset(keys))`` of ``section``'s formats (``formats``:
    the same, a tuple: MediaInfo.formats)."""
    spelled = (formats, tuple(section.attributes("rtpmap")))
    known = _SECTION_KEYS.get(spelled)
    if known is None:
        rtpmaps = section._cached_rtpmaps()  # read only
        keys = tuple([_codec_key(codec_for(f, rtpmaps)) for f in formats])
        known = keys, frozenset(keys)
        if len(_SECTION_KEYS) < _CODEC_KEYS_MAX:
            _SECTION_KEYS[spelled] = known
    return known


def default_codecs():
    """The available codec factories (omnirtp.codecs.registry), or none
    when that module is not there."""
    try:
        from omnirtp import codecs
    except ImportError:
        return {}
    return codecs.registry()


def codec_ops_requested(flags, offer=True):
    """True if an ng request names a codec operation (any ``codec`` part,
    the flag forms, ``always-transcode``, ``single-codec``, ``reuse-codecs``,
    ``no-codec-renegotiation``).  As in 10.5,
    an answer's ``transcode``/``mask``/``accept``/``consume``/``set`` and
    ``always-transcode`` do nothing."""
    # (``flags.flags`` empty, the usual request: no flag word to look up)
    words = flags.flags
    if flags.codec_strip or flags.codec_offer or flags.codec_except \
            or (words and (flags.has("single-codec") or _reuse_codecs(flags))):
        return True
    return offer and bool(flags.codec_mask or flags.codec_transcode or flags.codec_accept
                          or flags.codec_consume or flags.codec_set
                          or (words and flags.has("always-transcode")))


def _reuse_codecs(flags):
    return flags.has("reuse-codecs") or flags.has("no-codec-renegotiation")


#: (learning, strict, handover, asymmetric, tos) -> the engine's socket
#: entries of an RTP and an RTCP socket with those values and every other
#: value None (Negotiator._sockets copies them; nobody changes them)
_SOCKET_TEMPLATES = {}


def _socket_templates(learning, strict, handover, asymmetric, tos):
    rtp = {"learning": learning, "strict": strict, "handover": handover,
           "asymmetric": asymmetric, "reset": True, "tos": tos,
           "local": None, "endpoint": None, "peer": None, "rtcp_peer": None,
           "ice": None, "dtls": None, "srtp_in": None, "srtp_out": None}
    # the RTCP socket's: the same keys in the same order, without rtcp_peer
    rtcp = {key: value for key, value in rtp.items() if key != "rtcp_peer"}
    templates = rtp, rtcp
    if len(_SOCKET_TEMPLATES) < 64:  # (learning words and TOS: a handful)
        _SOCKET_TEMPLATES[(learning, strict, handover, asymmetric, tos)] = templates
    return templates


#: omnirtp.media.amp.placeholder, imported by Negotiator._batch at its first use
placeholder = None


class Interfaces:
    """The logical interfaces: name -> list of local addresses."""

    log = Logger()

    def __init__(self, specs):
        self.by_name = {}
        self.order = []
        for spec in specs:
            iface = Interface(spec.name, spec.address, spec.advertised)
            if spec.name not in self.by_name:
                self.order.append(spec.name)
            self.by_name.setdefault(spec.name, []).append(iface)
        if not self.order:
            raise ValueError("no interface configured")
        self.default = self.order[0]
        #: some name has several addresses (ICE binds every one of them)
        self.multi = any(len(addrs) > 1 for addrs in self.by_name.values())

    def resolve(self, name):
        """A known interface name; unknown names fall back to the default."""
        if name in self.by_name:
            return name
        if name:
            # the current rtpengine's BASE:SUFFIX names: BASE picks among
            # them (upstream round-robins by free ports; we take the first)
            for known in self.order:
                if known.startswith(name + ":"):
                    return known
            self.log.warn("unknown interface {name!r}, using {default!r}",
                          name=name, default=self.default)
        return self.default

    def pick(self, name, family=None, any_name=False):
        """The address of interface ``name`` to use for ``family`` (IP4/IP6).

        When that interface has no address of ``family``, the first
        interface that has one is used if ``name`` is None (no ``direction``
        named it) or ``any_name`` is true, else its first address (as
        rtpengine 10.5 chooses)."""
        addrs = self.by_name[self.resolve(name)]
        if family:
            for iface in addrs:
                if iface.family == family:
                    return iface
            if any_name or not name:
                for other in self.order:
                    for iface in self.by_name[other]:
                        if iface.family == family:
                            return iface
        return addrs[0]

    def others(self, iface):
        """The other addresses of ``iface``'s name, in the configured order."""
        return [i for i in self.by_name.get(iface.name, ()) if i is not iface]

    def engine_map(self, port_min, port_max):
        """``{address: (port_min, port_max)}`` for the media engine."""
        return {i.address: (port_min, port_max)
                for addrs in self.by_name.values() for i in addrs}


#: the attributes _learn_transport reads (ICE, DTLS)
_TRANSPORT_ATTRIBUTES = frozenset((
    "ice-ufrag", "ice-pwd", "candidate", "ice-options", "ice-lite", "setup", "fingerprint"))


def _ice_credential(value):
    """An SDP ``a=ice-ufrag``/``a=ice-pwd`` value as the ICE agent takes
    it, or None for no credential: empty, or bytes that are not UTF-8 text
    (the ng layer keeps such bytes as lone surrogates, which STUN's
    USERNAME and the MESSAGE-INTEGRITY key cannot carry: found by make
    fuzz, an Internal error on the answer before)."""
    if not value:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


class Negotiator:
    """Applies offers and answers to the registry's calls."""

    log = Logger()

    def __init__(self, registry, interfaces, endpoint_learning="delayed",
                 instance_id=None, tos=0, certificate=None, codecs=None):
        self.registry = registry
        #: () -> {(encoding, clock rate, channels): ICodecFactory}, the codecs
        #: we can transcode (omnirtp.codecs.registry); asked once, when first
        #: needed
        self._codecs_source = codecs or default_codecs
        self._available = None
        #: the daemon's DTLS certificate (omnirtp.media.dtls.Certificate),
        #: whose fingerprint goes into a=fingerprint; the engine holds the
        #: same one.  None: one is made when first needed (tests).
        self._certificate = certificate
        #: hash name -> (certificate, its a=fingerprint value) (_dtls_plan)
        self._fingerprints = {}
        #: the TOS byte of media of calls whose offer set none (option ``tos``)
        self.tos = tos
        self.engine = registry.engine
        self.interfaces = interfaces
        self.endpoint_learning = endpoint_learning
        self.instance_id = instance_id

    @property
    def available_codecs(self):
        if self._available is None:
            self._available = dict(self._codecs_source())
        return self._available

    @property
    def certificate(self):
        if self._certificate is None:
            self._certificate = dtls.Certificate.generate()
        return self._certificate

    # -- entry points ----------------------------------------------------

    # Both return the SDP, raise, or return a Deferred when the engine's
    # work is asynchronous (media workers): see omnirtp.sync.

    def offer(self, flags):
        return self.registry.run_locked_now(flags.call_id, self._offer, flags)

    def answer(self, flags):
        return self.registry.run_locked_now(flags.call_id, self._answer, flags)

    # -- offer -----------------------------------------------------------

    @sync.steps
    def _offer(self, flags):
        sd, infos = self._parse(flags.sdp)
        # (no flag word at all, the usual request: no look-up)
        if flags.flags and flags.has("loop-protect") and self._looped(sd):
            return flags.sdp
        registry = self.registry
        call = registry.get(flags.call_id)
        created = call is None
        if created:
            call = registry.create(flags.call_id)
        try:
            a, b = self._offer_sides(call, flags)
            result = yield from self._negotiate(call, a, b, sd, infos, flags, offer=True)
        except BaseException:
            if created:
                registry.forget(call)
                yield self._release(call.call_id)
            raise
        return result

    def _release(self, call_id, keys=None):
        """The engine's release of ``call_id``'s ``keys`` (None: all), for a
        ``yield``: done (None) with an engine that answers at once
        (``release_now``), else its Deferred."""
        engine = self.engine
        now = getattr(engine, "release_now", None)
        if now is not None:
            return now(call_id, keys)
        return engine.release(call_id) if keys is None else engine.release(call_id, keys)

    def _offer_sides(self, call, flags):
        now = self.registry.clock.seconds()
        # interface names from `direction` (None: not named, the default)
        directions = tuple([self.interfaces.resolve(d) if d else None
                            for d in flags.direction]) if flags.direction else ()
        a = call.find(flags.from_tag)
        if a is None:
            a = Monologue(flags.from_tag, now, directions[0] if directions else None)
            call.monologues.append(a)
        b = None
        if flags.to_tag:
            b = call.find(flags.to_tag)
            if b is None and a.peer is not None and not a.peer.tagged:
                b = a.peer
                b.tag = flags.to_tag
        elif a.peer is not None:
            b = a.peer
            if flags.via_branch and b.via_branch and b.via_branch != flags.via_branch \
                    and not b.tagged:
                b = call.find_branch(flags.via_branch)
        if b is None:
            b = Monologue(flags.to_tag or "", now,
                          directions[1] if len(directions) > 1 else
                          (directions[0] if directions else a.interface_name),
                          flags.via_branch)  # (positional: no keyword dict)
            call.monologues.append(b)
        if len(directions) > 1:
            a.interface_name, b.interface_name = directions[:2]
        a.peer, b.peer = b, a
        return a, b

    # -- answer ----------------------------------------------------------

    @sync.steps
    def _answer(self, flags):
        sd, infos = self._parse(flags.sdp)
        call = self.registry.get(flags.call_id)
        if call is None:
            raise NGError(E_UNKNOWN_CALL)
        offerer = call.find(flags.from_tag)
        if offerer is None:
            raise NGError(E_UNKNOWN_CALL)
        answerer = call.find(flags.to_tag)
        if answerer is None and flags.via_branch:
            answerer = call.find_branch(flags.via_branch)
        if answerer is None:
            answerer = offerer.peer
        if answerer is None:
            raise NGError(E_NO_SUCH_TAG)
        if not answerer.tagged:
            answerer.tag = flags.to_tag
        elif answerer.tag != flags.to_tag and flags.to_tag not in answerer.aliases:
            answerer.aliases.append(flags.to_tag)
        offerer.peer, answerer.peer = answerer, offerer
        result = yield from self._negotiate(call, answerer, offerer, sd, infos, flags, offer=False)
        call.answered = True
        return result

    # -- shared ----------------------------------------------------------

    def _parse(self, sdp):
        try:
            sd = sdpmodel.SessionDescription.parse(sdp)
            infos = sdpmodel.inspect(sd)
        except sdpmodel.SDPIncomplete as e:
            self.log.info("incomplete SDP: {error}", error=str(e))
            raise NGError(E_SDP_INCOMPLETE)
        except SDPError as e:
            self.log.info("bad SDP: {error}", error=str(e))
            raise NGError(E_SDP_PARSE)
        if not infos:
            raise NGError(E_SDP_REWRITE)
        return sd, infos

    def _looped(self, sd):
        return self.instance_id is not None and sd.loop_protect_id == self.instance_id

    def _negotiate(self, call, src, dst, sd, infos, flags, offer):
        """``src`` sent ``sd``; produce the SDP for ``dst``.

        Media of ``src`` learn their endpoints from ``sd``; media of
        ``dst`` get ports (offer) and are advertised in the output.
        The SDP's a=crypto lines are read first: an SDP that cannot be
        keyed (MKI only) fails before anything of the call changes.

        A generator of :meth:`_offer`'s or :meth:`_answer`'s steps (``yield
        from``, as :meth:`_allocate` and :meth:`_allocate_configure` are
        its): one ``sync`` driver per request, not one per level.
        """
        cryptos = {}
        for info, section in zip(infos, sd.media):
            if not info.rejected and is_srtp_profile(info.proto):
                cryptos[info.index] = self._crypto_lines(section, flags)
        now = self.registry.clock.seconds()
        call.last_signal = now
        call.deletion_at = None
        for ml in call.monologues:
            # (every monologue of a call is associated with src or dst)
            ml.deletion_at = None
        if flags.received_from and not call.created_from:
            call.created_from = flags.received_from
        family = self._family(flags)
        new_medias = []
        #: (info, section, src's media, dst's media) per m= line
        pairs = []
        for info, section in zip(infos, sd.media):
            index = info.index
            for ml in (src, dst):
                medias = ml.medias
                m = medias[index - 1] if index <= len(medias) else None
                if m is None:
                    # the sender is faced in the family of its own SDP;
                    # `address family` chooses the recipient's
                    if ml is src:
                        iface = self.interfaces.pick(ml.interface_name, info.family, True)
                    else:
                        iface = self.interfaces.pick(ml.interface_name, family or info.family)
                    m = Media(index, info.type, iface)
                    medias.append(m)
                if not info.rejected and m.rtp_port is None and (offer or ml is src):
                    new_medias.append(m)
            s = src.medias[index - 1]
            pairs.append((info, section, s, dst.medias[index - 1]))
            self._learn(s, info, flags, offer)
        for info, section, s, _d in pairs:
            if not info.rejected:
                self._learn_transport(s, info, section, sd, flags, offer)
        # a new call's ports and configuration go to a media worker in one
        # round trip: the ports stand in as placeholders until it answers
        batch = self._batch(call, new_medias)
        if batch is None and new_medias:
            yield from self._allocate(call, new_medias)
        if offer:
            src.rtcp_mux_opts = frozenset(flags.rtcp_mux)
            # as rtpengine: only an offer sets the call's TOS; absent or
            # over 255 means the default again, negative leaves it as it is
            if flags.tos is None or flags.tos > 255:
                call.tos = None
            elif flags.tos >= 0:
                call.tos = flags.tos
            if flags.transport_protocol:
                dst.protocol = flags.transport_protocol
        elif flags.transport_protocol:
            dst.protocol = flags.transport_protocol
        for info, _section, s, d in pairs:
            s.protocol = info.proto
            if info.rejected and d.rtp_port is None:
                d.rejected = True
        self._negotiate_codecs(pairs, flags, offer)
        plan = self._plan(dst, src, pairs, infos, flags, offer, cryptos)
        # ICE on an interface name with several addresses: a port pair on
        # each other address too, each a host candidate
        bases = self._ice_base_medias(pairs, plan) if self.interfaces.multi else None
        if bases and batch is None:
            yield from self._allocate_bases(call, bases)
        sockets = self._sockets(call, flags)
        if batch is not None:
            yield from self._allocate_configure(call, batch, sockets, plan)
            if bases:
                # (a second and third round trip, for such a call only)
                yield from self._allocate_bases(call, bases)
                yield self.engine.configure(call.call_id, self._sockets(call, flags))
        elif sockets:  # a call whose every m= line is rejected holds no ports
            engine = self.engine
            now = getattr(engine, "configure_now", None)
            if now is not None:
                now(call.call_id, sockets)  # (an engine that answers at once)
            else:
                yield engine.configure(call.call_id, sockets)
        try:
            out = rewrite(sd, plan)
        except (SDPError, ValueError) as e:
            self.log.info("SDP rewrite failed: {error}", error=str(e))
            raise NGError(E_SDP_REWRITE)
        return out

    def _family(self, flags):
        fam = (flags.address_family or "").upper()
        return fam if fam in ("IP4", "IP6") else None

    def _learn(self, m, info, flags, offer):
        m.type = info.type
        m.rejected = info.rejected
        m.direction = info.direction
        m.zero_address = info.zero_address
        m.rtcp_mux = info.rtcp_mux
        if info.rejected:
            m.rtp_endpoint = m.rtcp_endpoint = None
            return
        rtp, rtcp = info.rtp, info.rtcp
        addr = None
        if flags.media_address:
            addr = flags.media_address
        elif flags.flags and flags.has("SIP-source-address") and flags.received_from:
            addr = flags.received_from[1]
        if addr and rtp:
            rtp = (addr, rtp[1])
            rtcp = (addr, rtcp[1]) if rtcp else None
        if info.zero_address:
            rtp = rtcp = None
        m.rtp_endpoint = rtp
        m.rtcp_endpoint = rtcp
        if not offer:
            # the answerer multiplexes exactly when its answer says so
            m.mux = info.rtcp_mux

    def _learn_transport(self, m, info, section, sd, flags, offer):
        """The party's ICE and DTLS data from its SDP (``section`` of ``sd``).

        ICE: its ufrag/pwd (media level, else session level), its valid
        a=candidate values (a bad one is logged and ignored, as 10.5 does),
        ice-options:trickle and a=ice-lite.  A new ufrag is an ICE restart:
        the credentials we give this party change too; otherwise they stay
        for the whole call.  A party that answers our ICE offer without ICE
        does not do ICE: no agent on its sockets.

        DTLS: its a=setup word and first a=fingerprint.  When it answers our
        offer, our role follows from its a=setup (RFC 5763 5: active -> we
        are the server, passive -> the client); no a=setup: no DTLS with it.
        """
        if not (section.has_any(_TRANSPORT_ATTRIBUTES)
                or sd.session.has_any(_TRANSPORT_ATTRIBUTES)):
            # no ICE or DTLS attribute at all (a plain SIP call): what the
            # code below leaves, without its look-ups
            m.ice_seen = info.ice
            m.ice_remote_ufrag = m.ice_remote_pwd = None
            m.ice_candidates = ()
            m.ice_trickle = m.ice_remote_lite = False
            if not offer and not info.ice:
                m.ice_used = False
            m.dtls_setup = m.dtls_fingerprint = None
            if not offer:
                m.dtls_role = None
            return

        def attribute(name):
            value = section.attribute(name)
            return sd.session.attribute(name) if value is None else value

        ufrag = _ice_credential(attribute("ice-ufrag"))
        if ufrag and m.ice_remote_ufrag and ufrag != m.ice_remote_ufrag:
            m.ice_ufrag, m.ice_pwd = new_ice_credentials()
        m.ice_seen = info.ice
        # an empty a=ice-ufrag:/a=ice-pwd: is no credential (the engine's
        # agent takes None, not ""; "" was an Internal error, found by make fuzz)
        m.ice_remote_ufrag = ufrag
        m.ice_remote_pwd = _ice_credential(attribute("ice-pwd"))
        candidates = []
        for value in section.attributes("candidate"):
            try:
                parse_candidate(value)
            except ValueError as e:
                self.log.info("[{call_id}] ignoring a=candidate:{value}: {error}",
                              call_id=flags.call_id, value=value, error=str(e))
                continue
            candidates.append(value)
        m.ice_candidates = tuple(candidates)
        options = (section.attributes("ice-options") or sd.session.attributes("ice-options"))
        m.ice_trickle = any("trickle" in (o or "").split() for o in options)
        m.ice_remote_lite = sd.session.has_attribute("ice-lite") \
            or section.has_attribute("ice-lite")
        if not offer and not info.ice:
            m.ice_used = False

        setup = attribute("setup")
        m.dtls_setup = setup.strip().lower() if setup else None
        m.dtls_fingerprint = None
        for value in section.attributes("fingerprint") or sd.session.attributes("fingerprint"):
            try:
                dtls.parse_fingerprint(value)
            except ValueError as e:
                self.log.info("[{call_id}] ignoring a=fingerprint:{value}: {error}",
                              call_id=flags.call_id, value=value, error=str(e))
                continue
            m.dtls_fingerprint = value.strip()
            break
        if not offer:
            if m.dtls_role is not None and is_srtp_profile(info.proto) and m.dtls_setup:
                m.dtls_role = dtls.role_from_answer(m.dtls_setup)
            else:
                m.dtls_role = None

    def _allocate(self, call, medias):
        """Bind ports for ``medias``, all or nothing."""
        by_address = {}
        for m in medias:
            by_address.setdefault(m.interface.address, []).append(m)
        taken = []
        engine = self.engine
        # (an engine that answers at once: its ports, no Deferred)
        now = getattr(engine, "allocate_now", None)
        try:
            for address, group in by_address.items():
                if now is not None:
                    ports = now(call.call_id, address, len(group))
                else:
                    ports = yield engine.allocate(call.call_id, address, len(group))
                for m, port in zip(group, ports):
                    m.rtp_port = port
                    taken.append(m)
        except BaseException:
            keys = [m.rtp_key for m in taken]
            for m in taken:
                m.rtp_port = None
            if keys:
                yield self._release(call.call_id, keys)
            raise

    def _batch(self, call, medias):
        """For a call that holds no ports yet, with an engine that can
        allocate and configure in one step (a worker pool's
        ``allocate_configure``): ``[(address, [media, ...])]`` with each
        media given its placeholder port (omnirtp.media.amp.placeholder),
        else None (allocate first, as always)."""
        if not medias or getattr(self.engine, "allocate_configure", None) is None:
            return None
        if any(m.has_ports for ml in call.monologues for m in ml.medias if m not in medias):
            return None
        global placeholder
        if placeholder is None:
            # (imported at the first use: only a worker pool has allocate_configure)
            from omnirtp.media.amp import placeholder

        groups = {}
        for m in medias:
            groups.setdefault(m.interface.address, []).append(m)
        index = 0
        for group in groups.values():
            for m in group:
                m.rtp_port = placeholder(index)
                index += 1
        return list(groups.items())

    def _allocate_configure(self, call, groups, sockets, plan):
        """Allocate and configure in one step; the real ports replace the
        placeholders in the medias and in the SDP plan (port, a=rtcp,
        ICE candidates).  On failure no media holds a port."""
        try:
            ports = yield self.engine.allocate_configure(
                call.call_id, [(address, len(group)) for address, group in groups], sockets)
        except BaseException:
            for _address, group in groups:
                for m in group:
                    m.rtp_port = None
            raise
        real = {}
        for (_address, group), got in zip(groups, ports):
            for m, port in zip(group, got):
                real[m.rtp_port] = m
                m.rtp_port = port
        for mplan in plan.media:
            m = real.get(mplan.port)
            if m is None:
                continue
            if mplan.rtcp_port is not None:
                mplan.rtcp_port = m.rtp_port if mplan.rtcp_port == mplan.port else m.rtp_port + 1
            mplan.port = m.rtp_port
            if isinstance(mplan.ice, IcePlan) and mplan.ice.candidates:
                mplan.ice.candidates = self._candidates(
                    m, len(mplan.ice.candidates) == 1 + len(m.ice_bases))

    def _ice_base_medias(self, pairs, plan):
        """``[(media, its MediaPlan)]`` of the medias towards ``dst`` that
        get ICE host candidates now and have no ports on their interface's
        other addresses yet (one that has none: not listed)."""
        out = []
        for (_info, _section, _s, d), mplan in zip(pairs, plan.media):
            if (d.ice_used and d.has_ports and not d.ice_bases and isinstance(mplan.ice, IcePlan)
                    and mplan.ice.candidates and self.interfaces.others(d.interface)):
                out.append((d, mplan))
        return out

    def _allocate_bases(self, call, medias):
        """Bind a port pair for each of ``medias`` on every other address of
        its interface: the same port where it is free there, else any
        (rtpengine 10.5 takes each address's next free pair from a pool of
        its own: the same number while those pools are in step), and write
        their candidates into the plans.  All or nothing: when an address has no
        port left the offer fails (Ran out of ports) and what this step
        bound is released."""
        engine = self.engine
        call_id = call.call_id
        allocate_now = getattr(engine, "allocate_now", None)
        taken = []
        try:
            for m, _mplan in medias:
                bases = []
                for iface in self.interfaces.others(m.interface):
                    try:
                        ports = yield engine.claim(call_id, iface.address, [m.rtp_port])
                    except Exception:
                        if allocate_now is not None:
                            ports = allocate_now(call_id, iface.address, 1)
                        else:
                            ports = yield engine.allocate(call_id, iface.address, 1)
                    taken.append((iface.address, ports[0]))
                    bases.append((iface.address, ports[0]))
                m.ice_bases = tuple(bases)
        except BaseException:
            for m, _mplan in medias:
                m.ice_bases = ()
            if taken:
                yield self._release(call_id, taken)
            raise
        for m, mplan in medias:
            mux_only = len(mplan.ice.candidates) == 1
            mplan.ice.candidates = self._candidates(m, mux_only)

    def _candidates(self, m, mux_only):
        """Our host candidates towards ``m``'s party: component 1 on each
        address (the interface's first, then ``m.ice_bases``'), then
        component 2 on each unless RTCP is multiplexed only; local
        preference 65535, 65534, ... by address (rtpengine 10.5's order
        and priorities)."""
        rtcp = None if mux_only else m.rtp_port + 1
        if not m.ice_bases:
            return host_candidates(m.interface.ice_foundation, m.interface.advertised, m.rtp_port, rtcp)
        each = [host_candidates(m.interface.ice_foundation, m.interface.advertised, m.rtp_port, rtcp)]
        by_address = {i.address: i for i in self.interfaces.others(m.interface)}
        for index, (address, port) in enumerate(m.ice_bases, 1):
            iface = by_address.get(address)
            if iface is None:
                continue  # (a restored call's address no longer configured)
            each.append(host_candidates(iface.ice_foundation, iface.advertised, port,
                                        None if mux_only else port + 1,
                                        local_preference=PRIMARY_LOCAL_PREFERENCE - index))
        return [lines[0] for lines in each] + ([] if mux_only else [lines[1] for lines in each])

    def restored_sockets(self, call):
        """The engine configuration of a call restored from the state store
        (``omnirtp.state.restore``): as its last request left it, with the
        daemon's defaults for the per-request learning flags."""
        from omnirtp.control.flags import Flags
        sockets = self._sockets(call, Flags.from_request({"command": "offer"}))
        # the SRTP contexts go on from where they were (Media.srtp_index)
        kept = {}
        for _ml, m in call.all_medias():
            if m.has_ports and m.srtp_index is not None:
                kept[m.rtp_key] = m.srtp_index.get("rtp")
                kept[m.rtcp_key] = m.srtp_index.get("rtcp")
        for entry in sockets:
            resume = kept.get(tuple(entry["local"]))
            if resume:
                entry["srtp_resume"] = resume
        return sockets

    def _sockets(self, call, flags):
        """The engine configuration for every port pair of the call.

        Each socket faces the party of its media and carries that party's
        SDES keys: ``srtp_in`` (the party's key, unprotects what it sends)
        and ``srtp_out`` (ours for it, protects what we send it), None for
        plain RTP.  ``ice`` (:meth:`Media.ice_entry`) and ``dtls``
        (:meth:`Media.dtls_entry`) say whether an ICE agent and a DTLS
        endpoint run on the socket (None: not); a DTLS socket gets its SRTP
        keys from the handshake, not from SDES.  Packets to a party that multiplexes RTCP (rtcp-mux) all
        leave its RTP socket; RTCP from it arrives on its RTP socket and, when the
        other party does not multiplex, is sent out of the other party's
        RTCP socket (``rtcp_peer``).  ``codecs_send``/``codecs_recv``/``transcode``
        (:meth:`Media.codec_entry`) are the same on both sockets of a party.
        """
        learning = flags.endpoint_learning or self.endpoint_learning
        if flags.flags:
            strict = flags.has("strict-source")
            handover = flags.has("media-handover")
            asymmetric = flags.has("asymmetric")
        else:  # no flag word at all (the usual request)
            strict = handover = asymmetric = False
        tos = self.tos if call.tos is None else call.tos
        sockets = []
        # each entry a copy of a template with the request's values
        # (_socket_templates), the keys in the order they always had:
        # learning .. tos, local, endpoint, peer, [rtcp_peer], ice, dtls,
        # srtp_in, srtp_out, then the codec keys; what is not None is set
        # (a copy and a few stores: a 14-key dict display costs three times
        # as much)
        known = (learning, strict, handover, asymmetric, tos)
        templates = _SOCKET_TEMPLATES.get(known)
        if templates is None:
            templates = _socket_templates(*known)
        rtp_template, rtcp_template = templates
        for ml in call.monologues:
            peer = ml.peer
            peer_medias = peer.medias if peer is not None else ()
            for m in ml.medias:
                port = m.rtp_port
                if port is None:
                    continue
                index = m.index
                pm = peer_medias[index - 1] if 0 < index <= len(peer_medias) else None
                linked = pm is not None and pm.rtp_port is not None
                address = m.interface.address
                rtp_key = (address, port)
                rtcp_key = (address, port + 1)
                mux = m.mux
                # (m.dtls_entry(), and m.srtp_in and m.srtp_out, asked only
                # of a party with DTLS, or with SDES in use)
                dtls_entry = m.dtls_entry() if m.dtls_role is not None else None
                kept = m.kept_dtls() if dtls_entry is not None else None
                rtcp_keys = None
                if dtls_entry is None:
                    if m.crypto_remote is None or m.crypto_local is None:
                        srtp_in = srtp_out = None
                    else:
                        srtp_in, srtp_out = m.srtp_in, m.srtp_out
                elif kept is not None:
                    # DTLS-SRTP restored: the keys its handshake exported, no
                    # new handshake (docs/scaling.md)
                    dtls_entry = None
                    srtp_in, srtp_out = kept["rtp"]["in"], kept["rtp"]["out"]
                    if not mux:
                        rtcp_keys = kept["rtcp"]["in"], kept["rtcp"]["out"]
                else:
                    # DTLS-SRTP: the engine keys this socket from the handshake
                    srtp_in = srtp_out = None
                rtcp_in, rtcp_out = (srtp_in, srtp_out) if rtcp_keys is None else rtcp_keys
                rtp = rtp_template.copy()
                rtcp = rtcp_template.copy()
                rtp["local"] = rtp_key
                rtcp["local"] = rtcp_key
                endpoint = m.rtp_endpoint
                if endpoint is not None:
                    rtp["endpoint"] = endpoint
                if not mux:
                    endpoint = m.rtcp_endpoint
                if endpoint is not None:
                    rtcp["endpoint"] = endpoint
                if linked:
                    pm_rtp = rtp["peer"] = (pm.interface.address, pm.rtp_port)
                    if pm.mux:
                        rtcp["peer"] = pm_rtp
                    else:
                        rtcp["peer"] = pm_rtcp = (pm_rtp[0], pm_rtp[1] + 1)
                        if mux:
                            rtp["rtcp_peer"] = pm_rtcp
                if m.ice_used:
                    ice = rtp["ice"] = m.ice_entry(1)
                    if ice is not None:
                        rtcp["ice"] = m.ice_entry(2)
                if dtls_entry is not None:
                    rtp["dtls"] = dtls_entry
                    if not mux:
                        rtcp["dtls"] = dtls_entry
                if srtp_in is not None or srtp_out is not None:
                    rtp["srtp_in"] = srtp_in
                    rtp["srtp_out"] = srtp_out
                if rtcp_in is not None or rtcp_out is not None:
                    rtcp["srtp_in"] = rtcp_in
                    rtcp["srtp_out"] = rtcp_out
                if m.codecs is not None or m.ptime_forced:
                    codec = m.codec_entry(linked)
                    rtp.update(codec)
                    rtcp.update(codec)
                sockets.append(rtp)
                sockets.append(rtcp)
        return sockets

    def _plan(self, dst, src, pairs, infos, flags, offer, cryptos):
        """The rewrite plan for the SDP ``dst`` will receive (``pairs``:
        :meth:`_negotiate`'s, per m= line)."""
        if flags.sdes:  # (none, the usual request: nothing to log)
            unsupported, unknown = sdes.ignored_options(flags.sdes)
            for word in unknown:
                self.log.warn("[{call_id}] Unknown 'SDES' flag encountered: '{word}'",
                              call_id=flags.call_id, word=word)
            for word in unsupported:
                self.log.info("[{call_id}] SDES option '{word}' is not supported, ignored",
                              call_id=flags.call_id, word=word)
        iface = None
        media_plans = []
        any_ice = False
        for info in infos:
            if info.ice:
                any_ice = True
                break
        if flags.ice is None:  # (no ICE key, the usual request: _ice_mode's default)
            ice_mode = "force" if any_ice else "remove"
        else:
            ice_mode = self._ice_mode(flags, any_ice)
        if not offer and dst.ice:
            ice_mode = "force"
        if offer:
            src.ice = any_ice
        lite_out = self._ice_lite(flags, offer, dst, src)
        if flags.flags:
            trickle_flag = flags.has("trickle-ice")
            no_rtcp_attribute = flags.has("no-rtcp-attribute")
            full_rtcp_attribute = flags.has("full-rtcp-attribute")
            original_sendrecv = flags.has("original-sendrecv")
            loop_protect = flags.has("loop-protect")
        else:  # no flag word at all (the usual request)
            trickle_flag = no_rtcp_attribute = full_rtcp_attribute = False
            original_sendrecv = loop_protect = False
        for info, section, s_media, d in pairs:
            iface = iface or d.interface
            if offer:
                s_media.mid = section.attribute("mid")
            # trickle ICE towards a party that offered it (10.5 does not pass
            # the offerer's option on in the offer), or with `trickle ICE`
            trickle = trickle_flag or (not offer and d.ice_trickle)
            if info.rejected or not d.has_ports:
                d.ice_used = False
                d.dtls_role = None
                mplan = _new(MediaPlan)
                _media_plan(
                    mplan, port=0, protocol=dst.protocol or d.protocol or info.proto,
                    keep_mid=offer or dst.had_mid, mid=None if offer else d.mid,
                    ice=IcePlan("", "", trickle=True)
                    if ice_mode == "force" and trickle else ICE_REMOVE)
                media_plans.append(mplan)
                continue
            mux = self._mux_out(info, flags, offer, d, dst.rtcp_mux_opts)
            if not offer or mux == "only":
                # what we answered the offerer (or required of the
                # recipient) is what that party will do
                d.mux = mux == "only"
            rtcp_port = None if no_rtcp_attribute else (
                d.rtp_port if mux == "only" else d.rtp_port + 1)
            direction = info.direction or "sendrecv"
            if info.zero_address and not info.direction:
                direction = "sendonly"
            ice = ICE_REMOVE
            d.ice_used = ice_mode == "force"
            if d.ice_used:
                ice = self._ice_plan(d, mux == "only")
                ice.trickle = trickle
                d.ice_lite = lite_out
                # controlling towards the party we offer to (RFC 8445 6.1.1),
                # and towards a lite party; never when we are lite
                d.ice_controlling = (offer or d.ice_remote_lite) and not lite_out
            s_media.ptime = _int(section.attribute("ptime")) or s_media.ptime
            if offer:
                s_media.codec_keys = _section_keys(section, info.formats)[1]
            ptime = self._ptime_out(flags, offer, s_media, d)
            # the request's transport-protocol (remembered per monologue),
            # else the profile the recipient itself last used (an answer
            # keeps the offerer's; a re-INVITE from the other side keeps
            # the recipient's), else the sender's
            out_proto = dst.protocol or d.protocol or info.proto
            lines = cryptos.get(info.index) if cryptos else None
            if lines or is_srtp_profile(out_proto):
                if lines is None:
                    lines = []
                if offer:
                    crypto = self._sdes_offer(lines, s_media, d, out_proto, flags)
                else:
                    crypto = self._sdes_answer(lines, s_media, d, out_proto, flags)
                dtls_lines = self._dtls_plan(d, out_proto, flags, offer)
            else:
                # plain RTP towards a party that sent no a=crypto (the usual
                # SIP call): what _sdes_offer/_sdes_answer and _dtls_plan
                # leave then, without their steps
                crypto = None
                if offer:
                    s_media.crypto_candidates = ()
                    d.crypto_offered = ()
                else:
                    s_media.crypto_remote = s_media.crypto_local = None
                    d.crypto_remote = d.crypto_local = None
                d.dtls_role = dtls_lines = None
            if dtls_lines is not None and not offer:
                # answering a DTLS offerer: DTLS wins over its a=crypto (10.5)
                crypto = []
                d.crypto_remote = d.crypto_local = None
            if offer and not (flags.codec_strip or flags.codec_mask or flags.codec_offer
                              or flags.codec_except):
                ops = _NO_CODEC_OPS  # (what _codec_ops gives then)
            else:
                ops = self._codec_ops(flags, section, None if offer else d, info.formats)
            if d.codecs_planned is None:
                d.codec_out_source = (section.kept(), ops)
            mplan = _new(MediaPlan)
            _media_plan(
                mplan, port=d.rtp_port,
                rtcp_port=rtcp_port,
                full_rtcp_attribute=full_rtcp_attribute,
                rtcp_mux=bool(mux),
                protocol=out_proto,
                direction=None if original_sendrecv else direction,
                ice=ice,
                codecs=ops,
                formats=d.codecs_planned,
                ptime=ptime,
                keep_mid=offer or dst.had_mid,
                keep_zero_address=not info.ice,
                crypto=_render_crypto(crypto, flags.sdes) if crypto else [],
                dtls=dtls_lines,
                mid=None if offer else d.mid,
            )
            media_plans.append(mplan)
            if offer:
                src.had_mid = section.has_attribute("mid")
        iface = iface or self.interfaces.pick(dst.interface_name)
        plan = _new(SessionPlan)
        _session_plan(
            plan, family=iface.family,
            address=iface.advertised,
            media=media_plans,
            replace_origin="origin" in flags.replace,
            loop_protect=self.instance_id if loop_protect else None,
            keep_zero_address=not any_ice,
            ice_lite=lite_out and ice_mode == "force",
        )
        return plan

    @staticmethod
    def _ptime_out(flags, offer, s_media, d):
        """The a=ptime of the SDP towards ``d``'s party (``s_media``: the
        sender's media), as rtpengine 10.5 writes it.  The offer's ng
        ``ptime`` is the ptime towards its recipient and ``ptime-reverse``
        the one towards the offerer; both are remembered
        (``Media.ptime_forced``) for the later SDP of the dialogue.  An
        offer carries the recipient's forced ptime, else the offerer's
        a=ptime.  An answer carries the offerer's forced ptime; else, when
        the answerer's was forced, the offerer's own a=ptime (the proxy
        packetises towards each side at its own ptime); else the
        answerer's a=ptime, else the offerer's.  Without any: none."""
        if offer:
            # a ptime of 0 or less is no ptime (rtpengine 10.5 ignores it)
            if flags.ptime and flags.ptime > 0:
                d.ptime_forced = flags.ptime
            if flags.ptime_reverse and flags.ptime_reverse > 0:
                s_media.ptime_forced = flags.ptime_reverse
            return d.ptime_forced or s_media.ptime or d.ptime
        if d.ptime_forced:
            return d.ptime_forced
        if s_media.ptime_forced:
            return d.ptime or s_media.ptime
        return s_media.ptime or d.ptime

    # -- DTLS-SRTP (RFC 5763, 5764, 8842) ---------------------------------------

    def _dtls_plan(self, d, out_proto, flags, offer):
        """``(setup, fingerprint)`` for the SDP towards ``d``'s party, or None.

        As rtpengine 10.5: an offer towards an SRTP profile carries
        ``a=setup:actpass`` and our fingerprint unless ``DTLS=off`` (also with
        ``DTLS=passive``); until the answer we wait as the DTLS server.  An
        answer carries them only towards an offerer that sent a=setup
        (active/passive/actpass) and a valid a=fingerprint (a known hash of
        the right length), with the role :func:`dtls.answer_setup`
        gives (``DTLS=passive`` makes it passive); ``DTLS=off`` does not
        change an answer.  The hash is that of the party's own a=fingerprint,
        else ``DTLS-fingerprint``, else sha-256.
        """
        if not is_srtp_profile(out_proto):
            d.dtls_role = None
            return None
        if offer:
            if flags.dtls == "off":
                d.dtls_role = None
                return None
            setup = dtls.offer_setup()
            if d.dtls_role is None:
                d.dtls_role = dtls.SERVER
        else:
            setup = dtls.answer_setup(d.dtls_setup, passive=flags.dtls == "passive")
            if setup is None or d.dtls_fingerprint is None:
                d.dtls_role = None
                return None
            d.dtls_role = dtls.role_of(setup)
        try:
            hash_ = dtls.fingerprint_hash(d.dtls_fingerprint, flags.dtls_fingerprint)
        except ValueError:
            self.log.warn("[{call_id}] unknown DTLS-fingerprint hash {name!r}, using sha-256",
                          call_id=flags.call_id, name=flags.dtls_fingerprint)
            hash_ = dtls.DEFAULT_HASH
        # our a=fingerprint per hash, made once per certificate
        certificate = self.certificate
        known = self._fingerprints.get(hash_)
        if known is None or known[0] is not certificate:
            known = self._fingerprints[hash_] = (certificate, certificate.fingerprint(hash_))
        return setup, known[1]

    def _ice_lite(self, flags, offer, dst, src):
        """True if we are ICE-lite towards ``dst``'s party.  As 10.5: the
        offer's ``ICE-lite`` says it, ``forward`` towards the offer's
        recipient, ``backward`` towards the offerer (in the answer), ``both``;
        on an answer the key changes nothing."""
        if offer:
            mode = flags.ice_lite
            src.ice_lite_back = mode in ("backward", "both")
            return mode in ("forward", "both")
        return dst.ice_lite_back

    # -- SDES (RFC 4568) -----------------------------------------------------

    def _crypto_lines(self, section, flags):
        """The parseable a=crypto lines of ``section``; bad ones are logged
        and ignored (as rtpengine does).  Raises NGError when the section
        keyed SRTP with MKI lines only: pylibsrtp cannot use MKI."""
        lines, mki = [], False
        for value in section.attributes("crypto"):
            try:
                c = sdes.parse(value)
            except sdes.CryptoError as e:
                self.log.warn("[{call_id}] Failed to parse a=crypto attribute, ignoring: "
                              "{reason}", call_id=flags.call_id, reason=str(e))
                continue
            mki = mki or any(k.mki is not None for k in c.keys)
            lines.append(c)
        if mki and sdes.choose(lines) is None:
            self.log.warn("[{call_id}] refusing SDES with MKI (media {index})",
                          call_id=flags.call_id, index=section.index)
            raise NGError(E_MKI_UNSUPPORTED)
        return lines

    def _log_unusable(self, flags):
        def log(crypto, reason):
            self.log.info("[{call_id}] passing over a=crypto:{tag} {suite}: {reason}",
                          call_id=flags.call_id, tag=crypto.tag, suite=crypto.suite,
                          reason=reason)
        return log

    def _sdes_offer(self, lines, s, d, out_proto, flags):
        """Remember the offerer's SDES lines; our a=crypto lines towards the
        recipient ``d``, in rtpengine 10.5's order: the line already
        negotiated with ``d`` (a re-INVITE keeps it: same tag, same key),
        the offerer's usable lines with their tags and keys (so SRTP can
        pass through), then every other suite with a new key, tags counting
        on from the highest so far.  (Plain RTP both ways, no a=crypto
        and no SRTP profile, does not come here: :meth:`_plan` sets what
        this would leave then.)"""
        log = self._log_unusable(flags)
        usable = []
        for c in lines:
            if not sdes.allowed(c.suite, flags.sdes):
                continue
            reason = c.unusable()
            if reason:
                log(c, reason)
            else:
                usable.append(c)
        s.crypto_candidates = tuple(usable)
        suites = sdes.offer_suites(flags.sdes) if is_srtp_profile(out_proto) else []
        out = []
        kept = d.crypto_local
        if kept is not None and kept.suite in suites:
            out.append(sdes.Crypto(kept.tag, kept.suite, (sdes.KeyParams(kept.key),)))
        for c in s.crypto_candidates:
            if c.suite in suites and all(o.suite != c.suite and o.tag != c.tag for o in out):
                out.append(sdes.Crypto(c.tag, c.suite, (sdes.KeyParams(c.key),), c.params))
        tag = max([c.tag for c in out], default=0)
        # every other suite, tags counting on, the keys from one draw
        new = [suite for suite in suites if all(o.suite != suite for o in out)]
        if new:
            out.extend(sdes.generate_many(tag, new))
        d.crypto_offered = tuple(out)
        return out

    def _sdes_answer(self, lines, s, d, out_proto, flags):
        """Apply the answerer's a=crypto to what we offered it; our line
        towards the offerer ``d``: its first usable suite with our key, or,
        when the answerer took a line we passed through from the offerer,
        that line with the answerer's key (SRTP passes through unchanged)."""
        s.crypto_remote = s.crypto_local = None
        if s.crypto_offered:
            offered = {c.tag: c for c in s.crypto_offered}
            for c in lines:
                mine = offered.get(c.tag)
                if mine is None or mine.suite != c.suite:
                    self.log.info("[{call_id}] answer's a=crypto:{tag} {suite} was not "
                                  "offered, ignoring", call_id=flags.call_id, tag=c.tag,
                                  suite=c.suite)
                    continue
                reason = c.unusable()
                if reason:
                    self._log_unusable(flags)(c, reason)
                    continue
                s.crypto_remote, s.crypto_local = c, mine
                break
        old = d.crypto_local
        d.crypto_remote = d.crypto_local = None
        if not is_srtp_profile(out_proto):
            return []
        candidates = [c for c in d.crypto_candidates if sdes.allowed(c.suite, flags.sdes)]
        chosen, key = None, None
        if s.crypto_local is not None:
            for c in candidates:
                if c.suite == s.crypto_local.suite and c.key == s.crypto_local.key:
                    chosen, key = c, s.crypto_remote.key
                    break
        if chosen is None:
            chosen = sdes.choose(candidates)
            if chosen is None:
                return []
        if key is None:
            if old is not None and old.suite == chosen.suite:
                key = old.key      # a re-INVITE keeps our key for that suite
            else:
                key = sdes.generate(chosen.tag, chosen.suite).key
        d.crypto_remote = chosen
        d.crypto_local = sdes.Crypto(chosen.tag, chosen.suite, (sdes.KeyParams(key),),
                                     chosen.params)
        return [d.crypto_local]

    # -- codecs and transcoding (omnirtp.call.codecstore) -----------------------

    def _negotiate_codecs(self, pairs, flags, offer):
        """Per m= line: an audio m= line of a call that asked for a codec
        operation (in this request or an earlier one) goes through the codec
        stores: ``codecs_planned`` of ``dst``'s media is then the format list
        to write, ``codecs_in``/``codecs_out`` of both sides the formats
        their parties sent and got, ``transcoding`` of each side whether its
        media is transcoded.  Otherwise ``codecs_planned`` is None (the
        request's plain filtering) and nothing is parsed: the sections are
        kept (``codec_source``, ``codec_out_source``, the latter set by
        :meth:`_plan`) in case a later request starts codec handling."""
        requested = codec_ops_requested(flags, offer)
        for info, section, s, d in pairs:
            d.codecs_planned = None
            if info.rejected or d.rtp_port is None:
                continue
            engaged = info.type == "audio" and (
                requested or s.codecs is not None or d.codecs is not None)
            if not engaged:
                s.codec_source, s.codecs_in = section.kept(), None
                # the party's codecs are those of the last SDP it sent or got
                s.codec_last, d.codec_last = "in", "out"
                continue
            available = self.available_codecs
            codecs = codecstore.from_section(section, available)
            s.codec_source, s.codecs_in = None, codecs
            self._codec_lists(s)
            self._codec_lists(d)
            if offer:
                self._offer_codecs(s, d, codecs, flags, available)
            else:
                self._answer_codecs(s, d, codecs, flags)
            d.codecs_planned = list(d.codecs)
            d.codecs_out, d.codec_out_source = d.codecs_planned, None
            s.codec_last, d.codec_last = "in", "out"

    def _prev_store(self, m):
        """``m``'s codec store before this request: its own, or for a call
        that had no codec operation yet, the formats of the last SDP its
        party sent or got (what 10.5's store holds then); None: new media."""
        if m.codecs is not None:
            return m.codecs
        codecs = m.codecs_in if m.codec_last == "in" else m.codecs_out
        return None if codecs is None else codecstore.CodecStore(codecs)

    def _codec_lists(self, m):
        """Parse what a plain request left unparsed for ``m`` (its party's
        last SDP, the formats we last gave it), now that codecs are handled."""
        available = self.available_codecs
        if m.codecs_in is None and m.codec_source is not None:
            m.codecs_in = codecstore.from_section(m.codec_source.section(), available)
            m.codec_source = None
        if m.codec_out_source is not None:
            kept, ops = m.codec_out_source
            section = kept.section()
            rtpmaps = section.rtpmaps()
            kept = [int(c.pt) for c in ops.apply([codec_for(f, rtpmaps)
                                                  for f in section.formats])
                    if c.pt.isdigit()]
            by_pt = {c.pt: c for c in codecstore.from_section(section, available)}
            m.codecs_out = [by_pt[pt] for pt in kept if pt in by_pt]
            m.codec_out_source = None

    def _offer_codecs(self, a, b, codecs, flags, available):
        """The offerer ``a``'s and the recipient ``b``'s codec stores after
        an offer (rtpengine 10.5's order of operations)."""
        cs = codecstore
        accept = list(flags.codec_accept)
        if flags.has("always-transcode"):
            accept.append("all")
        orig = cs.CodecStore(codecs)
        populate = cs.populate_reuse if _reuse_codecs(flags) else cs.populate
        before_a, before_b = self._prev_store(a), self._prev_store(b)
        sa = populate(before_a, codecs)
        cs.strip(sa, flags.codec_strip, flags.codec_except)
        cs.offer(sa, flags.codec_offer, orig)
        if not sa.strip_full:
            cs.offer(sa, flags.codec_transcode, orig)
        cs.check_empty(sa, codecs)
        cs.accept(sa, accept)
        cs.accept(sa, flags.codec_consume, orig)
        cs.track(sa, flags.codec_mask)
        sb = populate(before_b, codecs)
        cs.strip(sb, flags.codec_strip, flags.codec_except)
        cs.strip(sb, flags.codec_consume, flags.codec_except)
        cs.strip(sb, flags.codec_mask, flags.codec_except)
        cs.offer(sb, flags.codec_offer, orig)
        cs.transcode(sb, flags.codec_transcode, orig, available)
        cs.check_empty(sb, codecs)
        cs.tracker_update(sb)
        cs.handlers(sb, sa)          # may drop what we cannot decode
        cs.tracker_update(sb)
        a.codecs, b.codecs = sa, sb
        b.transcoding = cs.handlers(sb, sa).transcoding

    def _answer_codecs(self, b, a, codecs, flags):
        """The answerer ``b``'s store and the answer to the offerer ``a``."""
        cs = codecstore
        before_b = self._prev_store(b) or cs.CodecStore()
        before_a = self._prev_store(a) or cs.CodecStore()
        populate = cs.populate_reuse if _reuse_codecs(flags) else cs.populate
        sb = populate(before_b, codecs, answer_only=True)
        cs.strip(sb, flags.codec_strip, flags.codec_except)
        cs.offer(sb, flags.codec_offer, cs.CodecStore(codecs))
        cs.check_empty(sb, codecs)
        hb = cs.handlers(sb, before_a, second_pass=True)
        sa = cs.answer(before_a, sb, hb, single_codec=flags.has("single-codec"))
        cs.handlers(sa, sb)
        cs.tracker_update(sa)
        cs.tracker_update(sb)
        a.codecs, b.codecs = sa, sb
        a.transcoding = cs.handlers(sa, sb).transcoding
        b.transcoding = cs.handlers(sb, sa, second_pass=True).transcoding

    def _codec_ops(self, flags, section, offerer_media, formats):
        """Codec filtering: the request's strip/mask/offer/except, and in an
        answer whatever the offerer never offered (matched by name/rate)."""
        strip = tuple(flags.codec_strip)
        numbers = False
        if offerer_media is not None and offerer_media.codec_keys:
            keys = offerer_media.codec_keys
            drop = [f for f, key in zip(formats, _section_keys(section, formats)[0])
                    if key not in keys]
            if drop:
                strip += tuple(drop)
                numbers = True
        if not (strip or flags.codec_mask or flags.codec_offer or flags.codec_except
                or numbers):
            return _NO_CODEC_OPS
        return CodecOps(strip=strip, mask=flags.codec_mask, offer=flags.codec_offer,
                        except_=flags.codec_except, match_numbers=numbers)

    def _ice_mode(self, flags, any_ice):
        mode = (flags.ice or "default").lower()
        if mode == "force":
            return "force"
        if any_ice and mode in ("default", "optional"):
            return "force"
        return "remove"

    def _ice_plan(self, m, mux_only):
        cands = self._candidates(m, mux_only)
        if m.ice_ufrag is None:
            m.ice_ufrag, m.ice_pwd = new_ice_credentials()
        plan = _new(IcePlan)
        _ice_plan(plan, ufrag=m.ice_ufrag, pwd=m.ice_pwd, candidates=cands)
        return plan

    def _mux_out(self, info, flags, offer, d, offered_opts):
        """rtcp-mux towards ``d``'s party: None, "both" or "only".

        ``offered_opts`` are the rtcp-mux options of the offer ``d``'s party
        made (relevant when answering it: ``demux`` still accepts mux back).
        """
        opts = flags.rtcp_mux
        if offer:
            if "require" in opts:
                return "only"
            if "demux" in opts:
                return None
            if "offer" in opts or info.rtcp_mux:
                return "both"
            return None
        # answer: d offered; confirm mux if d asked for it and src took it
        back = offered_opts | opts
        if "reject" in back:
            return None
        if d.rtcp_mux and (info.rtcp_mux or "demux" in back or "accept" in back
                           or "require" in back):
            return "only"
        if "require" in opts:
            return "only"
        return None
