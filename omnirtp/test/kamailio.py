"""Test helper: the ng dictionary Kamailio 5.6's rtpengine module builds.

``kamailio_dict`` reproduces, for tests, what ``rtpengine_manage("FLAGS")``
(1-argument form, module-side parsing) sends to the daemon: see
shared/docs/ng-spec.md §2.2.  Written independently of
``omnirtp.control.flags`` so that tests comparing the two mean something.

Key order follows the module: ``supports``, ``sdp``, entries produced while
parsing the words (``key=value`` strings, ``SDES``/``T.38`` lists and the
``codec`` dict at their first use), then ``direction``, ``flags``,
``replace``, ``transport-protocol``, ``rtcp-mux``, ``call-id``,
``received-from``, ``from-tag``, ``to-tag`` and ``command``.  Empty lists
are omitted.
"""

_TRANSPORT = {
    "RTP/AVP": 0x100, "RTP/SAVP": 0x101, "RTP/AVPF": 0x102, "RTP/SAVPF": 0x103,
    "UDP/TLS/RTP/SAVP": 0x105, "UDP/TLS/RTP/SAVPF": 0x107,
}
_TRANSPORT_NAME = {
    0: "RTP/AVP", 1: "RTP/SAVP", 2: "RTP/AVPF", 3: "RTP/SAVPF",
    4: "UDP/TLS/RTP/SAVP", 5: "UDP/TLS/RTP/SAVP",
    6: "UDP/TLS/RTP/SAVPF", 7: "UDP/TLS/RTP/SAVPF",
}
_MODIFIERS = {
    "RTP": (~0x001, 0), "AVP": (~0x002, 0),
    "SRTP": (~0, 0x101), "AVPF": (~0, 0x102), "DTLS": (~0, 0x104),
}
# prefix lists: word "X-rest" or "X=rest" -> list key
_PREFIX_LISTS = (("replace", "replace"), ("SDES", "SDES"), ("T38", "T.38"),
                 ("T.38", "T.38"), ("rtcp-mux", "rtcp-mux"))
_CODEC_WORDS = (
    ("codec-transcode", "transcode"), ("transcode", "transcode"),
    ("codec-strip", "strip"), ("codec-offer", "offer"), ("codec-mask", "mask"),
    ("codec-set", "set"), ("codec-except", "except"),
)


def kamailio_dict(flag_string, command, call_id, from_tag, to_tag=None,
                  sdp=None, received_from=None):
    """The request dict Kamailio 5.6 sends for ``rtpengine_manage(flag_string)``.

    ``received_from`` is the SIP source: an address string (family guessed
    from it) or an ``(family, address)`` pair; default ``127.0.0.1``.
    Returns a plain dict with str values, in Kamailio's key order.
    """
    d = {"supports": ["load limit"]}
    if sdp is not None and command in ("offer", "answer"):
        d["sdp"] = sdp
    direction, flags, replace, rtcp_mux = [], [], [], []
    transport = 0
    include_to_tag = command != "delete"
    for word in flag_string.split():
        key, eq, value = word.partition("=")
        done = False
        for prefix, list_key in _PREFIX_LISTS:
            if (eq and key == prefix) or word.startswith(prefix + "-"):
                rest = value if eq and key == prefix else word[len(prefix) + 1:]
                if list_key == "replace":
                    replace.append(rest)
                elif list_key == "rtcp-mux":
                    rtcp_mux.append(rest)
                else:
                    d.setdefault(list_key, []).append(rest)
                done = True
                break
        if done:
            continue
        for prefix, part in _CODEC_WORDS:
            if (eq and key == prefix) or (not eq and word.startswith(prefix + "-")):
                rest = value if eq else word[len(prefix) + 1:]
                d.setdefault("codec", {}).setdefault(part, []).append(rest)
                done = True
                break
        if done:
            continue
        if word in _TRANSPORT:
            transport = _TRANSPORT[word]
        elif word in _MODIFIERS:
            mask, bits = _MODIFIERS[word]
            transport = (transport & mask) | bits | 0x100
        elif word in ("internal", "external"):
            direction.append(word)
        elif key == "direction" and eq:
            direction.append(value)
        elif key == "to-tag":
            include_to_tag = True
            if eq:
                to_tag = value
        elif key == "from-tag" and eq:
            from_tag = value
            flags.append("directional")
        elif key == "call-id" and eq:
            call_id = value
        elif key == "via-branch" and eq:
            pass  # needs the SIP message; not modelled
        elif key == "TOS" and eq:
            d["TOS"] = int(value)
        elif key == "delete-delay" and eq:
            d["delete delay"] = int(value)
        elif key == "repacketize" and eq:
            d["repacketize"] = int(value)
        elif word == "force-answer":
            command = "answer"
        elif eq:
            d[key] = value
        else:
            flags.append(word)
    if direction:
        d["direction"] = direction
    if flags:
        d["flags"] = flags
    if replace:
        d["replace"] = replace
    if transport & 0x100:
        d["transport-protocol"] = _TRANSPORT_NAME[transport & 0x007]
    if rtcp_mux:
        d["rtcp-mux"] = rtcp_mux
    d["call-id"] = call_id
    if received_from is None:
        received_from = "127.0.0.1"
    if isinstance(received_from, str):
        received_from = ("IP6" if ":" in received_from else "IP4", received_from)
    d["received-from"] = list(received_from)
    d["from-tag"] = from_tag
    if include_to_tag and to_tag is not None:
        d["to-tag"] = to_tag
    d["command"] = command
    return d
