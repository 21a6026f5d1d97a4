"""The side-by-side corpus: offer/answer/delete cases as data.

Each :class:`Case` is a list of ng requests in the dictionary form Kamailio
5.6's ``rtpengine_manage()`` produces (``supports``, ``received-from``,
``replace``, ``ICE``, ``transport-protocol``, ``flags``, ``codec`` ...).
``call-id`` values are prefixed with a run-unique string by the runner so
that one daemon can serve the whole corpus.

``setup`` names the daemon configuration a case needs (:data:`SETUPS`).
``needs`` names a later issue when omnirtp cannot match rtpengine yet (e.g.
``"srtp"``: rtpengine emits crypto/fingerprint lines); ``reason`` says why.
When only some lines of some steps need it (``needs_lines``), the rest of
the case is compared today and only the whole-reply comparison waits.

Command line (runs Debian's rtpengine on 127.0.0.1; ng port and media range
as given, defaults 23201 and 41100-41499)::

    python -m omnirtp.test.corpus record [NAME...]   # store expected fixtures
    python -m omnirtp.test.corpus show NAME          # print raw replies
"""

import copy
import json
import os
import sys
from dataclasses import dataclass

from omnirtp.errors import E_MKI_UNSUPPORTED
from omnirtp.test.kamailio import kamailio_dict
from omnirtp.test.sdpnorm import Normaliser

FIXTURE_DIR = os.path.join(os.path.dirname(__file__), "fixtures", "corpus")

#: daemon configurations: name -> list of --interface values
SETUPS = {
    "single": ["127.0.0.1"],
    "named": ["priv/127.0.0.1", "pub/127.0.0.2!203.0.113.1"],
    # one interface name, two addresses: with ICE a host candidate on each
    # (the normaliser names ports per address: whether the two candidates
    # have the same number is not compared)
    "multi": ["127.0.0.1", "127.0.0.2"],
}


def sdp(*lines):
    return "".join(line + "\r\n" for line in lines)


# -- SDP bodies (written for this corpus) --------------------------------------

SIP_OFFER = sdp(
    "v=0",
    "o=alice 2890844526 2890844526 IN IP4 192.0.2.10",
    "s=-",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0 8 101",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
)

SIP_OFFER_REINVITE = SIP_OFFER.replace("2890844526 IN", "2890844527 IN")

SIP_ANSWER = sdp(
    "v=0",
    "o=bob 3344556677 1 IN IP4 198.51.100.20",
    "s=Talk",
    "c=IN IP4 198.51.100.20",
    "t=0 0",
    "m=audio 30000 RTP/AVP 0 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=sendrecv",
)

SIP_ANSWER_PTIME40 = SIP_ANSWER.replace("a=sendrecv", "a=sendrecv\r\na=ptime:40")

SIP_ANSWER_B = SIP_ANSWER.replace("198.51.100.20", "198.51.100.30").replace(
    "30000", "32000").replace("o=bob", "o=carol")

SIP_OFFER_OPUS = sdp(
    "v=0",
    "o=alice 100 1 IN IP4 192.0.2.10",
    "s=-",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
    "m=audio 49172 RTP/AVP 111 9 0 8 101",
    "a=rtpmap:111 opus/48000/2",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=rtcp-fb:111 transport-cc",
    "a=sendrecv",
)

SIP_OFFER_MEDIA_C = sdp(
    "v=0",
    "o=alice 2890844526 2890844526 IN IP4 192.0.2.10",
    "s=-",
    "t=0 0",
    "m=audio 49170 RTP/AVP 8 0",
    "c=IN IP4 192.0.2.11",
    "a=rtpmap:8 PCMA/8000",
)

SIP_OFFER_IPV6 = sdp(
    "v=0",
    "o=alice 2890844526 2890844526 IN IP6 2001:db8::10",
    "s=-",
    "c=IN IP6 2001:db8::10",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0 8",
    "a=rtcp:49171 IN IP6 2001:db8::10",
)

SIP_OFFER_SENDONLY = SIP_OFFER_REINVITE.replace("a=ptime:20\r\n", "a=ptime:20\r\na=sendonly\r\n")

SIP_OFFER_ZERO_HOLD = SIP_OFFER_REINVITE.replace("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0")

SIP_OFFER_INACTIVE = SIP_OFFER_REINVITE.replace("a=ptime:20\r\n", "a=inactive\r\n")

SIP_OFFER_RTCP_MUX = sdp(
    "v=0",
    "o=alice 1 1 IN IP4 192.0.2.10",
    "s=-",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0 101",
    "a=rtpmap:101 telephone-event/8000",
    "a=rtcp:49170",
    "a=rtcp-mux",
    "a=sendrecv",
)

SIP_ANSWER_RTCP_MUX = sdp(
    "v=0",
    "o=bob 2 2 IN IP4 198.51.100.20",
    "s=-",
    "c=IN IP4 198.51.100.20",
    "t=0 0",
    "m=audio 30000 RTP/AVP 0 101",
    "a=rtpmap:101 telephone-event/8000",
    "a=rtcp-mux",
    "a=sendrecv",
)

SIP_OFFER_AUDIO_VIDEO = sdp(
    "v=0",
    "o=alice 5 5 IN IP4 192.0.2.10",
    "s=-",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0 8",
    "a=sendrecv",
    "m=video 51372 RTP/AVP 96 97",
    "a=rtpmap:96 H264/90000",
    "a=fmtp:96 profile-level-id=42e01f;packetization-mode=1",
    "a=rtpmap:97 VP8/90000",
    "a=rtcp-fb:96 nack pli",
    "a=sendrecv",
)

SIP_ANSWER_VIDEO_REJECTED = sdp(
    "v=0",
    "o=bob 6 6 IN IP4 198.51.100.20",
    "s=-",
    "c=IN IP4 198.51.100.20",
    "t=0 0",
    "m=audio 30000 RTP/AVP 0",
    "a=sendrecv",
    "m=video 0 RTP/AVP 96",
)

SIP_OFFER_VIDEO_REJECTED = SIP_OFFER_AUDIO_VIDEO.replace("m=video 51372", "m=video 0")

SIP_OFFER_THREE = sdp(
    "v=0",
    "o=alice 7 7 IN IP4 192.0.2.10",
    "s=-",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0",
    "a=sendrecv",
    "m=video 51372 RTP/AVP 96",
    "a=rtpmap:96 H264/90000",
    "a=recvonly",
    "m=audio 49180 RTP/AVP 8",
    "c=IN IP4 192.0.2.12",
    "a=sendonly",
)

SIP_OFFER_ICE = sdp(
    "v=0",
    "o=alice 9 9 IN IP4 192.0.2.10",
    "s=-",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
    "a=ice-ufrag:F7gI",
    "a=ice-pwd:x9cml/YzichV2+XlhiMu8g",
    "m=audio 49170 RTP/AVP 0 8",
    "a=candidate:1 1 UDP 2130706431 192.0.2.10 49170 typ host",
    "a=candidate:1 2 UDP 2130706430 192.0.2.10 49171 typ host",
    "a=candidate:2 1 UDP 1694498815 203.0.113.77 45664 typ srflx raddr 192.0.2.10 rport 49170",
)

SIP_OFFER_SDES = sdp(
    "v=0",
    "o=alice 11 11 IN IP4 192.0.2.10",
    "s=-",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
    "m=audio 49170 RTP/SAVP 0 8",
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20",
    "a=sendrecv",
)

SIP_OFFER_SDES_MKI = SIP_OFFER_SDES.replace("|2^20", "|2^20|1:4")

SIP_OFFER_SDES_MKI_MIXED = SIP_OFFER_SDES_MKI.replace(
    "a=sendrecv", "a=crypto:2 AES_CM_128_HMAC_SHA1_32 "
    "inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk\r\na=sendrecv")

SIP_OFFER_SDES_TWO = sdp(
    "v=0",
    "o=alice 12 12 IN IP4 192.0.2.10",
    "s=-",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
    "m=audio 49170 RTP/SAVP 0 8",
    "a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk|2^31",
    "a=crypto:5 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
    "a=sendrecv",
)

SIP_OFFER_SDES_NEW_KEY = SIP_OFFER_SDES.replace("11 11", "11 12").replace(
    "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz", "c2Vjb25kIGtleSBmb3IgdGhlIHJlLUlOVklURSEh")

SIP_ANSWER_SDES = SIP_ANSWER.replace("RTP/AVP 0 101", "RTP/SAVP 0 101").replace(
    "a=sendrecv", "a=crypto:2 AES_CM_128_HMAC_SHA1_80 "
    "inline:ZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZm\r\na=sendrecv")

SIP_ANSWER_SDES_PASS = SIP_ANSWER_SDES.replace("a=crypto:2 ", "a=crypto:5 ")

WEBRTC_OFFER = sdp(
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0",
    "a=extmap-allow-mixed",
    "a=msid-semantic: WMS stream0",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8 101",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=candidate:3471623853 1 udp 2122260223 198.51.100.7 53871 typ host generation 0",
    "a=ice-ufrag:Yk3d",
    "a=ice-pwd:Pq0wR4mZc7nLs2vT8kJx1hBf",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 7A:1C:44:0B:93:5E:D2:6F:08:AA:31:C9:5D:E4:72:19:B6:0F:8E:23:DD:41:9A:57:C0:3E:6B:F1:28:84:A5:0D",
    "a=setup:actpass",
    "a=mid:0",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=sendrecv",
    "a=msid:stream0 track0",
    "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2",
    "a=rtcp-fb:111 transport-cc",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=ssrc:2712458374 cname:Jq2vT0mWc8rLs4pX",
)

WEBRTC_ANSWER = sdp(
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0",
    "a=msid-semantic: WMS",
    "m=audio 9 UDP/TLS/RTP/SAVPF 0 101",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=candidate:1467250027 1 udp 2122260223 198.51.100.7 53871 typ host generation 0",
    "a=ice-ufrag:Yk3d",
    "a=ice-pwd:Pq0wR4mZc7nLs2vT8kJx1hBf",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 7A:1C:44:0B:93:5E:D2:6F:08:AA:31:C9:5D:E4:72:19:B6:0F:8E:23:DD:41:9A:57:C0:3E:6B:F1:28:84:A5:0D",
    "a=setup:active",
    "a=mid:0",
    "a=sendrecv",
    "a=msid:- 2f1a6c0e",
    "a=rtcp-mux",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=ssrc:2712458374 cname:Jq2vT0mWc8rLs4pX",
)

WEBRTC_OFFER_ACTIVE = WEBRTC_OFFER.replace("a=setup:actpass", "a=setup:active")
WEBRTC_OFFER_PASSIVE = WEBRTC_OFFER.replace("a=setup:actpass", "a=setup:passive")
WEBRTC_OFFER_NO_FINGERPRINT = "".join(
    line + "\r\n" for line in WEBRTC_OFFER.split("\r\n")[:-1]
    if not line.startswith("a=fingerprint:"))
WEBRTC_OFFER_BAD_FINGERPRINT = WEBRTC_OFFER.replace(":84:A5:0D\r\n", "\r\n")
WEBRTC_OFFER_SDES = WEBRTC_OFFER.replace("UDP/TLS/RTP/SAVPF", "RTP/SAVPF").replace(
    "a=setup:actpass", "a=setup:actpass\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 "
    "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz")

#: a browser's audio+video offer: BUNDLE, rtcp-mux, ICE, DTLS, VP8
WEBRTC_OFFER_AV = sdp(
    "v=0",
    "o=- 1717171717171717171 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0 1",
    "a=msid-semantic: WMS stream0",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 0 101",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=candidate:3471623853 1 udp 2122260223 198.51.100.7 53871 typ host generation 0",
    "a=ice-ufrag:Zq9k",
    "a=ice-pwd:b7Vn2mX0cLp4Rs8tQw1yHj6K",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 5B:20:31:6C:8F:14:A7:E2:99:0D:3B:C4:58:71:AE:06:F3:2D:94:1B:C7:60:8A:E5:"
    "12:4F:D9:3C:76:B0:21:E8",
    "a=setup:actpass",
    "a=mid:0",
    "a=sendrecv",
    "a=msid:stream0 audio0",
    "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=ssrc:1001 cname:Jq2vT0mWc8rLs4pX",
    "m=video 9 UDP/TLS/RTP/SAVPF 96",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=candidate:3471623853 1 udp 2122260223 198.51.100.7 53871 typ host generation 0",
    "a=ice-ufrag:Zq9k",
    "a=ice-pwd:b7Vn2mX0cLp4Rs8tQw1yHj6K",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 5B:20:31:6C:8F:14:A7:E2:99:0D:3B:C4:58:71:AE:06:F3:2D:94:1B:C7:60:8A:E5:"
    "12:4F:D9:3C:76:B0:21:E8",
    "a=setup:actpass",
    "a=mid:1",
    "a=sendrecv",
    "a=msid:stream0 video0",
    "a=rtcp-mux",
    "a=rtcp-rsize",
    "a=rtpmap:96 VP8/90000",
    "a=rtcp-fb:96 nack",
    "a=rtcp-fb:96 nack pli",
    "a=ssrc:2002 cname:Jq2vT0mWc8rLs4pX",
)

SIP_ANSWER_AV = sdp(
    "v=0",
    "o=bob 7 7 IN IP4 198.51.100.20",
    "s=-",
    "c=IN IP4 198.51.100.20",
    "t=0 0",
    "m=audio 30000 RTP/AVP 0 101",
    "a=rtpmap:101 telephone-event/8000",
    "a=sendrecv",
    "m=video 30002 RTP/AVP 96",
    "a=rtpmap:96 VP8/90000",
    "a=sendrecv",
)

SIP_ANSWER_AV_NO_VIDEO = sdp(
    "v=0",
    "o=bob 8 8 IN IP4 198.51.100.20",
    "s=-",
    "c=IN IP4 198.51.100.20",
    "t=0 0",
    "m=audio 30000 RTP/AVP 0 101",
    "a=rtpmap:101 telephone-event/8000",
    "a=sendrecv",
    "m=video 0 RTP/AVP 96",
)

# codec negotiation and transcoding (issue 7): one-codec offers and answers
SIP_OFFER_PCMU = SIP_OFFER.replace("RTP/AVP 0 8 101", "RTP/AVP 0 101")
SIP_OFFER_OPUS_ONLY = SIP_OFFER_OPUS.replace("RTP/AVP 111 9 0 8 101", "RTP/AVP 111 101").replace(
    "a=rtpmap:9 G722/8000\r\n", "")
SIP_ANSWER_PCMA = SIP_ANSWER.replace("RTP/AVP 0 101", "RTP/AVP 8 101").replace(
    "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000")
SIP_ANSWER_PCMU_ONLY = SIP_ANSWER.replace("RTP/AVP 0 101", "RTP/AVP 0").replace(
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n", "")
SIP_ANSWER_G722 = SIP_ANSWER.replace("RTP/AVP 0 101", "RTP/AVP 9 101").replace(
    "a=rtpmap:0 PCMU/8000", "a=rtpmap:9 G722/8000")
SIP_ANSWER_OPUS = SIP_ANSWER.replace("RTP/AVP 0 101", "RTP/AVP 96 101").replace(
    "a=rtpmap:0 PCMU/8000", "a=rtpmap:96 opus/48000/2\r\na=fmtp:96 useinbandfec=1")


NO_SDP_BODY = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
BAD_SDP = SIP_OFFER.replace("m=audio 49170", "m=audio abc")
INCOMPLETE_SDP = SIP_OFFER.replace("c=IN IP4 192.0.2.10\r\n", "")


# -- request builders (Kamailio 5.6 key order) ---------------------------------------

SUPPORTS = ["load limit"]
SEED_REPLACE = ["origin", "session-connection"]


def offer(body, call_id="c1", from_tag="ft1", to_tag=None, src="192.0.2.10", **extra):
    msg = {"supports": SUPPORTS, "sdp": body}
    msg.update(extra)
    msg["call-id"] = call_id
    msg["received-from"] = ["IP4", src]
    msg["from-tag"] = from_tag
    if to_tag is not None:
        msg["to-tag"] = to_tag
    msg["command"] = "offer"
    return msg


def answer(body, call_id="c1", from_tag="ft1", to_tag="tt1", src="198.51.100.20", **extra):
    msg = {"supports": SUPPORTS, "sdp": body}
    msg.update(extra)
    msg["call-id"] = call_id
    msg["received-from"] = ["IP4", src]
    msg["from-tag"] = from_tag
    msg["to-tag"] = to_tag
    msg["command"] = "answer"
    return msg


def delete(call_id="c1", from_tag="ft1", src="192.0.2.10", **extra):
    msg = {"supports": SUPPORTS, "call-id": call_id, "received-from": ["IP4", src],
           "from-tag": from_tag}
    msg.update(extra)
    msg["command"] = "delete"
    return msg


#: rtpengine 10.5 offers twelve SDES suites; omnirtp only those its media
#: engine implements (omnirtp.sdp.crypto.SUPPORTED).  With these options
#: rtpengine offers exactly omnirtp's three (tags 1-3), so SDES cases that
#: answer our offer compare line by line.
SDES_ENGINE_SUITES = ["no-" + s for s in (
    "AEAD_AES_256_GCM", "AES_256_CM_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_32",
    "AES_192_CM_HMAC_SHA1_80", "AES_192_CM_HMAC_SHA1_32", "F8_128_HMAC_SHA1_80",
    "F8_128_HMAC_SHA1_32", "NULL_HMAC_SHA1_80", "NULL_HMAC_SHA1_32")]


def sdes_offer(body=SIP_OFFER, sdes=(), **kw):
    """An offer towards RTP/SAVP with DTLS off (DTLS-SRTP is a later increment)
    and rtpengine restricted to omnirtp's suites."""
    kw.setdefault("transport-protocol", "RTP/SAVP")
    return offer(body, DTLS="off", SDES=SDES_ENGINE_SUITES + list(sdes), **kw)


def seed_offer(body=SIP_OFFER, **kw):
    """The seed INVITE flags: replace-origin replace-session-connection ICE=force RTP/AVP RTP/SAVPF."""
    return offer(body, ICE="force", replace=SEED_REPLACE, **{"transport-protocol": "RTP/SAVPF"}, **kw)


def seed_answer(body=WEBRTC_ANSWER, **kw):
    """The seed 200 OK flags: ... ICE=remove RTP/SAVPF RTP/AVP."""
    return answer(body, ICE="remove", replace=SEED_REPLACE, **{"transport-protocol": "RTP/AVP"}, **kw)


def webrtc_offer(body=WEBRTC_OFFER, **kw):
    """A browser's offer towards a SIP phone: ICE=remove RTP/AVP rtcp-mux-demux."""
    return offer(body, ICE="remove", replace=SEED_REPLACE,
                 **{"transport-protocol": "RTP/AVP", "rtcp-mux": ["demux"]}, **kw)


def webrtc_answer(body=SIP_ANSWER, **kw):
    """The SIP phone's answer towards the browser: ICE=force UDP/TLS/RTP/SAVPF rtcp-mux-require."""
    kw.setdefault("transport-protocol", "UDP/TLS/RTP/SAVPF")
    return answer(body, ICE="force", replace=SEED_REPLACE, **{"rtcp-mux": ["require"]}, **kw)


#: the Kamailio 5.6 rtpengine_manage() flag strings of README.md, (offer, answer)
KAMAILIO_SIP_TO_BROWSER = (
    "replace-origin replace-session-connection ICE=force RTP/AVP RTP/SAVPF",
    "replace-origin replace-session-connection ICE=remove RTP/SAVPF RTP/AVP")
KAMAILIO_BROWSER_TO_SIP = (
    "replace-origin replace-session-connection ICE=remove RTP/AVP rtcp-mux-demux",
    "replace-origin replace-session-connection ICE=force UDP/TLS/RTP/SAVPF rtcp-mux-require")


@dataclass
class Case:
    name: str
    requests: list
    setup: str = "single"
    needs: str = None        # a later omnirtp issue this case depends on
    reason: str = ""         # why omnirtp differs until then
    doc: str = ""
    # where omnirtp differs from rtpengine 10.5 on purpose: {step index:
    # [(text in rtpengine's normalised line, text omnirtp emits instead)]};
    # ``reason`` says why.  The omnirtp test asserts the changed lines.
    differs: dict = None
    # when only part of the case needs ``needs``: {step index: (line prefix,
    # ...)}, the lines of rtpengine's normalised reply that wait for it.  The
    # omnirtp test compares every step today without those lines; the
    # ``<name>_<needs>`` test compares the whole replies once ``needs`` is gone.
    needs_lines: dict = None

    def expected_today(self, want):
        """:meth:`expected_for_omnirtp` without the ``needs_lines`` lines."""
        want = self.expected_for_omnirtp(want)
        if not self.needs_lines:
            return want
        want = copy.deepcopy(want)
        for step, prefixes in self.needs_lines.items():
            lines = want[step]["sdp"]
            for prefix in prefixes:
                if not any(line.startswith(prefix) for line in lines):
                    raise ValueError("%s step %d: no %r line in rtpengine's reply"
                                     % (self.name, step, prefix))
            want[step]["sdp"] = [line for line in lines if not line.startswith(prefixes)]
        return want

    def expected_for_omnirtp(self, want):
        """rtpengine's normalised replies with this case's deliberate differences.

        A change ``(old, None)`` drops the lines containing ``old``; a step
        given as a dict (not a list of changes) is omnirtp's whole reply."""
        if not self.differs:
            return want
        want = copy.deepcopy(want)
        for step, changes in self.differs.items():
            if isinstance(changes, dict):
                want[step] = changes
                continue
            lines = want[step]["sdp"]
            for old, new in changes:
                hits = [i for i, line in enumerate(lines) if old in line]
                if not hits:
                    raise ValueError("%s step %d: %r not in rtpengine's reply"
                                     % (self.name, step, old))
                for i in reversed(hits):
                    if new is None:
                        del lines[i]
                    else:
                        lines[i] = lines[i].replace(old, new)
        return want


SRTP_REASON = ("rtpengine emits a=setup/a=fingerprint (DTLS-SRTP) for an SRTP profile; "
               "omnirtp generates no DTLS lines before the DTLS increment (and offers "
               "3 SDES suites where 10.5 offers 12)")

DTLS_LINES = ("a=setup:", "a=fingerprint:")

SDES_SUITES_REASON = ("omnirtp offers only the SDES suites its media engine implements "
                      "(AEAD_AES_128_GCM, AES_CM_128_HMAC_SHA1_80/_32, tags 1-3); 10.5 offers "
                      "twelve (ng-spec 3.5 allows the smaller set)")


def _suites_differs(*steps):
    """``differs`` for an offer where rtpengine wrote its twelve default suites."""
    keep = {2: ("AEAD_AES_128_GCM", 1), 7: ("AES_CM_128_HMAC_SHA1_80", 2),
            8: ("AES_CM_128_HMAC_SHA1_32", 3)}
    changes = []
    for tag in range(1, 13):
        if tag in keep:
            suite, new = keep[tag]
            changes.append(("a=crypto:%d %s inline:{KEY%d}" % (tag, suite, tag),
                            "a=crypto:%d %s inline:{KEY%d}" % (new, suite, new)))
        else:
            changes.append(("a=crypto:%d " % tag, None))
    # drop first: "a=crypto:1 " must not hit the renamed lines
    changes.sort(key=lambda c: c[1] is not None)
    return {step: changes for step in steps}


CASES = [
    Case("plain_offer_answer", [offer(SIP_OFFER), answer(SIP_ANSWER)],
         doc="no flags: c= rewritten, o= kept, rtpmap added for static PTs, sendrecv, rtcp"),
    Case("replace_origin", [offer(SIP_OFFER, replace=["origin"]),
                            answer(SIP_ANSWER, replace=["origin"])]),
    Case("seed_offer_answer", [seed_offer(), seed_answer(), delete()],
         reason=SDES_SUITES_REASON, differs=_suites_differs(0),
         doc="the seed's exact flags, SIP caller to WebRTC callee"),
    Case("seed_flags_avp", [offer(SIP_OFFER, ICE="force", replace=SEED_REPLACE,
                                  **{"transport-protocol": "RTP/AVP"}),
                            answer(SIP_ANSWER, ICE="remove", replace=SEED_REPLACE,
                                   **{"transport-protocol": "RTP/AVP"})],
         doc="seed flags with plain RTP both ways: ICE=force on the offer"),
    Case("ice_force_answer", [offer(SIP_OFFER), answer(SIP_ANSWER, ICE="force")]),
    Case("ice_remove_input_ice", [offer(SIP_OFFER_ICE, ICE="remove"), answer(SIP_ANSWER)]),
    Case("ice_default_input_ice", [offer(SIP_OFFER_ICE), answer(SIP_ANSWER)],
         doc="no ICE key, peer spoke ICE: rtpengine replaces it with its own"),
    Case("ice_force_rtcp_mux", [offer(SIP_OFFER_RTCP_MUX, ICE="force"),
                                answer(SIP_ANSWER_RTCP_MUX, ICE="force")]),
    Case("webrtc_to_sip", [
        offer(WEBRTC_OFFER, ICE="remove", replace=SEED_REPLACE,
              **{"transport-protocol": "RTP/AVP", "rtcp-mux": ["demux"]}),
        answer(SIP_ANSWER, ICE="force", replace=SEED_REPLACE,
               **{"transport-protocol": "UDP/TLS/RTP/SAVPF", "rtcp-mux": ["require"]})],
        doc="a browser calls a SIP phone: a=mid, rtcp-mux, DTLS and trickle ICE towards it"),
    Case("dtls_passive", [webrtc_offer(), webrtc_answer(DTLS="passive")],
         doc="DTLS=passive answering an actpass offer: a=setup:passive"),
    Case("dtls_active", [webrtc_offer(), webrtc_answer(DTLS="active")],
         doc="DTLS=active answering an actpass offer: a=setup:active (the default)"),
    Case("dtls_off_answer", [webrtc_offer(), webrtc_answer(DTLS="off")],
         doc="DTLS=off on the answer towards a DTLS offerer"),
    Case("dtls_off_offer", [seed_offer(DTLS="off", SDES=SDES_ENGINE_SUITES), seed_answer()],
         doc="DTLS=off on an offer towards RTP/SAVPF: a=crypto only"),
    Case("dtls_passive_offer", [seed_offer(DTLS="passive", SDES=["off"]), seed_answer()],
         doc="DTLS=passive on an offer: 10.5 still offers actpass"),
    Case("dtls_offer_setup_active", [webrtc_offer(WEBRTC_OFFER_ACTIVE), webrtc_answer()],
         doc="the browser offers a=setup:active: we answer passive"),
    Case("dtls_offer_setup_passive", [webrtc_offer(WEBRTC_OFFER_PASSIVE),
                                      webrtc_answer(DTLS="passive")],
         doc="the browser offers a=setup:passive: we answer active (also with DTLS=passive)"),
    Case("dtls_offer_no_fingerprint", [webrtc_offer(WEBRTC_OFFER_NO_FINGERPRINT),
                                       webrtc_answer()],
         doc="an offer with a=setup but no a=fingerprint: no DTLS lines in the answer"),
    Case("dtls_offer_bad_fingerprint", [webrtc_offer(WEBRTC_OFFER_BAD_FINGERPRINT),
                                        webrtc_answer()],
         differs={0: [("a=fingerprint:sha-256 {FINGERPRINT1}", None)]},
         reason="10.5 passes an a=fingerprint it cannot parse on to the other side as an "
                "unknown attribute (here towards RTP/AVP); omnirtp drops it like every "
                "fingerprint line of the input",
         doc="an a=fingerprint too short for its hash: ignored, no DTLS lines in the answer"),
    Case("dtls_fingerprint_sha1", [seed_offer(SDES=["off"], **{"DTLS-fingerprint": "sha-1"}),
                                   seed_answer()],
         doc="DTLS-fingerprint=sha-1 on an offer: our a=fingerprint uses SHA-1"),
    Case("dtls_and_sdes_offer", [webrtc_offer(WEBRTC_OFFER_SDES),
                                 webrtc_answer(**{"transport-protocol": "RTP/SAVPF"})],
         doc="an offer with a=crypto and a=fingerprint: what 10.5 answers"),
    Case("ice_lite_forward", [seed_offer(SDES=["off"], **{"ICE-lite": "forward"}),
                              seed_answer()],
         doc="ICE-lite=forward on the offer: a=ice-lite towards the offer's recipient"),
    Case("ice_lite_backward", [webrtc_offer(**{"ICE-lite": "backward"}), webrtc_answer()],
         doc="ICE-lite=backward on the offer: a=ice-lite in the answer to the offerer"),
    Case("ice_lite_on_answer", [webrtc_offer(), webrtc_answer(**{"ICE-lite": "both"})],
         doc="ICE-lite on an answer changes nothing in 10.5"),
    Case("browser_to_browser", [
        offer(WEBRTC_OFFER, ICE="force", **{"transport-protocol": "UDP/TLS/RTP/SAVPF"}),
        answer(WEBRTC_ANSWER.replace("a=setup:active", "a=setup:passive"), ICE="force",
               **{"transport-protocol": "UDP/TLS/RTP/SAVPF"})],
         differs=_suites_differs(0), reason=SDES_SUITES_REASON,
         doc="ICE and DTLS on both legs; the offerer's trickle option is not passed on"),
    Case("webrtc_video_both", [webrtc_offer(WEBRTC_OFFER_AV), webrtc_answer(SIP_ANSWER_AV)],
         doc="a browser's BUNDLEd audio+VP8 offer to a SIP side with video"),
    Case("webrtc_video_rejected", [webrtc_offer(WEBRTC_OFFER_AV),
                                   webrtc_answer(SIP_ANSWER_AV_NO_VIDEO)],
         doc="the SIP side rejects the video: port 0 towards the browser, audio unaffected"),
    Case("kamailio_sip_calls_browser", [
        kamailio_dict(KAMAILIO_SIP_TO_BROWSER[0], "offer", "c1", "ft1", sdp=SIP_OFFER),
        kamailio_dict(KAMAILIO_SIP_TO_BROWSER[1], "answer", "c1", "ft1", "tt1",
                      sdp=WEBRTC_ANSWER),
        delete()],
        differs=_suites_differs(0), reason=SDES_SUITES_REASON,
        doc="the seed's Kamailio 5.6 flag strings, SIP phone calls a browser"),
    Case("kamailio_browser_calls_sip", [
        kamailio_dict(KAMAILIO_BROWSER_TO_SIP[0], "offer", "c1", "ft1", sdp=WEBRTC_OFFER),
        kamailio_dict(KAMAILIO_BROWSER_TO_SIP[1], "answer", "c1", "ft1", "tt1", sdp=SIP_ANSWER),
        delete()],
        doc="Kamailio 5.6 flag strings, a browser calls a SIP phone"),
    Case("webrtc_offer_plain_out", [offer(WEBRTC_OFFER, ICE="remove",
                                          **{"transport-protocol": "RTP/AVP"})],
         doc="only the offer: what is dropped when the output is plain RTP/AVP"),
    Case("sdes_offer_plain_out", [offer(SIP_OFFER_SDES, **{"transport-protocol": "RTP/AVP"}),
                                  answer(SIP_ANSWER)],
         doc="RTP/SAVP offer -> RTP/AVP; the answer to the SDES offerer carries our key"),
    Case("sdes_avp_to_savp", [sdes_offer(), answer(SIP_ANSWER_SDES)],
         doc="RTP/AVP -> RTP/SAVP: our 3 suites; the SRTP answerer picks tag 2"),
    Case("sdes_default_suites", [offer(SIP_OFFER, DTLS="off",
                                       **{"transport-protocol": "RTP/SAVP"})],
         differs=_suites_differs(0), reason=SDES_SUITES_REASON),
    Case("sdes_savpf_ice_mux", [sdes_offer(ICE="force", **{"transport-protocol": "RTP/SAVPF",
                                                           "rtcp-mux": ["offer"]})],
         doc="where a=crypto goes among rtcp-mux, ptime and ICE lines"),
    Case("sdes_no_suite", [sdes_offer(sdes=["no-AEAD_AES_128_GCM"],
                                      flags=["SDES-no-AES_CM_128_HMAC_SHA1_32"]),
                           answer(SIP_ANSWER_SDES.replace("crypto:2 ", "crypto:1 "))],
         doc="SDES key and SDES-no- flag: only AES_CM_128_HMAC_SHA1_80 is left (tag 1)"),
    Case("sdes_only_suite", [sdes_offer(flags=["SDES-only-AES_CM_128_HMAC_SHA1_32"])],
         differs={0: [("a=crypto:1 ", None), ("a=crypto:2 ", None),
                      ("a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:{KEY3}",
                       "a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{KEY1}")]},
         reason="rtpengine 10.5 does not know SDES-only- (it logs \"Unknown 'SDES' flag\" "
                "and offers every suite); omnirtp offers only the named suite, as later "
                "rtpengine versions and ng-spec do"),
    Case("sdes_pad_lifetime", [sdes_offer(sdes=["pad", "lifetime"])],
         doc="SDES=pad keeps base64 '=' padding, SDES=lifetime adds |2^31"),
    Case("sdes_off", [sdes_offer(flags=["SDES-off"]), answer(SIP_ANSWER)],
         doc="SDES-off: an RTP/SAVP offer without a=crypto"),
    Case("sdes_offerer_no_suite", [offer(SIP_OFFER_SDES_TWO, SDES=["no-AES_CM_128_HMAC_SHA1_32"],
                                         **{"transport-protocol": "RTP/AVP"}),
                                   answer(SIP_ANSWER)],
         doc="the offerer's first suite is excluded: the answer takes tag 5, echoes no lifetime"),
    Case("sdes_passthrough", [sdes_offer(SIP_OFFER_SDES_TWO, **{"transport-protocol": "RTP/SAVP"}),
                              answer(SIP_ANSWER_SDES_PASS)],
         doc="RTP/SAVP both sides: the offerer's lines (tags, keys) first, then ours; the "
             "answerer's key goes back to the offerer"),
    Case("sdes_reinvite_keeps_keys", [sdes_offer(), answer(SIP_ANSWER_SDES),
                                      sdes_offer(SIP_OFFER_REINVITE, to_tag="tt1"),
                                      answer(SIP_ANSWER_SDES)],
         doc="the re-offer repeats the negotiated line (tag 2, same key) first, new keys "
             "for the others"),
    Case("sdes_reinvite_new_keys", [offer(SIP_OFFER_SDES, **{"transport-protocol": "RTP/AVP"}),
                                    answer(SIP_ANSWER),
                                    offer(SIP_OFFER_SDES_NEW_KEY, to_tag="tt1",
                                          **{"transport-protocol": "RTP/AVP"}),
                                    answer(SIP_ANSWER)],
         doc="the SDES offerer changes its key: we keep ours"),
    Case("sdes_reinvite_from_srtp_callee", [
        sdes_offer(), answer(SIP_ANSWER_SDES),
        offer(SIP_ANSWER_SDES.replace("3344556677 1", "3344556677 2"), from_tag="tt1",
              to_tag="ft1", src="198.51.100.20"),
        answer(SIP_OFFER_REINVITE, from_tag="tt1", to_tag="ft1", src="192.0.2.10")],
         doc="the SRTP callee re-INVITEs without flags: plain RTP/AVP towards the caller, "
             "and the answer gives the callee our key of the first answer again"),
    Case("sdes_passthrough_off", [sdes_offer(SIP_OFFER_SDES_TWO, sdes=["off"])],
         doc="RTP/SAVP both sides with SDES-off: no a=crypto at all"),
    Case("sdes_passthrough_no_suite", [sdes_offer(SIP_OFFER_SDES_TWO,
                                                  sdes=["no-AES_CM_128_HMAC_SHA1_32"])],
         doc="the offerer's excluded suite is not passed on; ours follow from tag 6"),
    Case("sdes_off_srtp_offerer", [offer(SIP_OFFER_SDES, SDES=["off"],
                                         **{"transport-protocol": "RTP/AVP"}),
                                   answer(SIP_ANSWER)],
         doc="SDES-off is about what we offer: the SDES offerer is still answered with a key"),
    Case("sdes_bad_lines", [offer(SIP_OFFER_SDES.replace(
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:short\r\n"
        "a=crypto:2 FOO_SUITE inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
        "a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:!!notb64!!notb64!!notb64!!notb64!!notb"),
        **{"transport-protocol": "RTP/AVP"}), answer(SIP_ANSWER)],
         doc="unparseable a=crypto lines are ignored; nothing left: RTP/SAVP without a=crypto"),
    Case("sdes_offer_mki", [offer(SIP_OFFER_SDES_MKI, **{"transport-protocol": "RTP/AVP"})],
         differs={0: {"result": "error", "error-reason": E_MKI_UNSUPPORTED}},
         reason="omnirtp's SRTP (pylibsrtp) has no MKI: an offer keyed only with MKI is "
                "refused with an error (rtpengine 10.5 accepts it)"),
    Case("sdes_offer_mki_mixed", [offer(SIP_OFFER_SDES_MKI_MIXED,
                                        **{"transport-protocol": "RTP/AVP"}),
                                  answer(SIP_ANSWER)],
         differs={1: [("a=crypto:1 AES_CM_128_HMAC_SHA1_80",
                       "a=crypto:2 AES_CM_128_HMAC_SHA1_32")]},
         reason="omnirtp passes over the line with MKI and answers the next one; "
                "rtpengine 10.5 takes the first"),
    Case("rtcp_mux_passthrough", [offer(SIP_OFFER_RTCP_MUX), answer(SIP_ANSWER_RTCP_MUX)]),
    Case("rtcp_mux_answer_declines", [offer(SIP_OFFER_RTCP_MUX), answer(SIP_ANSWER)]),
    Case("rtcp_mux_offer", [offer(SIP_OFFER, **{"rtcp-mux": ["offer"]}),
                            answer(SIP_ANSWER_RTCP_MUX)]),
    Case("rtcp_mux_demux", [offer(SIP_OFFER_RTCP_MUX, **{"rtcp-mux": ["demux"]}),
                            answer(SIP_ANSWER)]),
    Case("rtcp_mux_require", [offer(SIP_OFFER, **{"rtcp-mux": ["require"]}),
                              answer(SIP_ANSWER_RTCP_MUX)]),
    Case("rtcp_mux_accept", [offer(SIP_OFFER_RTCP_MUX, **{"rtcp-mux": ["accept"]}),
                             answer(SIP_ANSWER_RTCP_MUX, **{"rtcp-mux": ["accept"]})]),
    Case("rtcp_mux_reject", [offer(SIP_OFFER_RTCP_MUX, **{"rtcp-mux": ["reject"]}),
                             answer(SIP_ANSWER)]),
    Case("codec_strip_dict", [offer(SIP_OFFER, codec={"strip": ["PCMU"]}), answer(SIP_ANSWER)],
         doc="the answer picks a stripped codec: rtpengine 10.5 writes an m= line without "
             "formats"),
    Case("codec_strip_dict_offer", [offer(SIP_OFFER, codec={"strip": ["PCMU"]})]),
    Case("codec_strip_all_offer", [offer(SIP_OFFER_OPUS, codec={"strip": ["all"],
                                                               "offer": ["PCMA", "opus"]})]),
    Case("codec_strip_word", [offer(SIP_OFFER, flags=["codec-strip-PCMA"]), answer(SIP_ANSWER)],
         doc="the answer to the offerer carries the offerer's own telephone-event fmtp"),
    Case("codec_strip_pt_number", [offer(SIP_OFFER_OPUS, codec={"strip": ["9", "101"]})]),
    Case("codec_strip_name_rate", [offer(SIP_OFFER_OPUS, codec={"strip": ["opus/48000",
                                                                          "g722/8000/1"]})]),
    Case("codec_strip_case", [offer(SIP_OFFER_OPUS, codec={"strip": ["OPUS", "pcma"]})]),
    Case("codec_strip_all_reverts", [offer(SIP_OFFER, codec={"strip": ["all"]})]),
    Case("codec_mask", [offer(SIP_OFFER_OPUS, codec={"mask": ["opus"]})]),
    Case("codec_offer_reorder", [offer(SIP_OFFER_OPUS, codec={"offer": ["PCMA", "opus"]})]),
    Case("codec_offer_word", [offer(SIP_OFFER_OPUS, flags=["codec-offer-PCMU"])]),
    Case("codec_except", [offer(SIP_OFFER_OPUS, codec={"strip": ["all"], "except": ["PCMA",
                                                                                     "telephone-event"]})]),
    Case("codec_except_word", [offer(SIP_OFFER_OPUS, flags=["codec-strip-all",
                                                            "codec-except-G722"])]),
    # transcoding: the answer transcodes only where the two sides share no codec
    Case("codec_transcode_pcma", [offer(SIP_OFFER_PCMU, codec={"transcode": ["PCMA"]}),
                                  answer(SIP_ANSWER_PCMA)],
         doc="PCMA added (RFC 3551 number 8); the answerer's PCMA is transcoded to the "
             "offerer's PCMU, with the offerer's telephone-event"),
    Case("codec_transcode_present", [offer(SIP_OFFER, codec={"transcode": ["PCMA"]}),
                                     answer(SIP_ANSWER)],
         doc="a codec the offer has is not added again; a shared codec is passed through"),
    Case("codec_transcode_word_mask", [offer(SIP_OFFER_PCMU, flags=["codec-mask-PCMU",
                                                                    "codec-transcode-PCMA"]),
                                       answer(SIP_ANSWER_PCMA)]),
    Case("codec_mask_answer_masked", [offer(SIP_OFFER, codec={"mask": ["PCMU"]}),
                                      answer(SIP_ANSWER)],
         doc="the answer picks the masked codec: no format is left"),
    Case("codec_consume", [offer(SIP_OFFER, codec={"consume": ["PCMU"]}),
                           answer(SIP_ANSWER_PCMA)]),
    Case("codec_accept", [offer(SIP_OFFER, codec={"accept": ["PCMA"]}), answer(SIP_ANSWER)]),
    Case("codec_always_transcode", [offer(SIP_OFFER, flags=["always-transcode"]),
                                    answer(SIP_ANSWER_PCMA)]),
    Case("codec_always_transcode_stray", [offer(SIP_OFFER_PCMU, flags=["always-transcode"]),
                                          answer(SIP_ANSWER_PCMA)],
         doc="always-transcode adds nothing: an answer with a codec never offered has "
             "no format left"),
    Case("codec_strip_all_transcode", [offer(SIP_OFFER, codec={"strip": ["all"],
                                                             "transcode": ["PCMA"]}),
                                       answer(SIP_ANSWER_PCMA)]),
    Case("codec_answer_strip", [offer(SIP_OFFER), answer(SIP_ANSWER, codec={"strip": ["PCMU"]})]),
    Case("codec_single_codec", [offer(SIP_OFFER), answer(SIP_OFFER.replace("49170", "30000"),
                                                         flags=["single-codec"])]),
    Case("codec_transcode_reinvite", [
        offer(SIP_OFFER_PCMU, codec={"transcode": ["PCMA"]}), answer(SIP_ANSWER_PCMA),
        offer(SIP_OFFER_PCMU.replace("2890844526 IN", "2890844527 IN"), to_tag="tt1"),
        answer(SIP_ANSWER)],
        doc="a re-INVITE without flags keeps the transcoding codecs; the new answer "
            "shares PCMU: passed through"),
    Case("codec_transcode_reinvite_callee", [
        offer(SIP_OFFER_PCMU, codec={"transcode": ["PCMA"]}), answer(SIP_ANSWER_PCMA),
        offer(SIP_ANSWER_PCMA, from_tag="tt1", to_tag="ft1", src="198.51.100.20"),
        answer(SIP_OFFER_PCMU, from_tag="tt1", to_tag="ft1", src="192.0.2.10")],
        doc="the callee's re-INVITE offers PCMA again; the caller answers PCMU"),
    Case("codec_reuse_reinvite", [
        offer(SIP_OFFER), answer(SIP_ANSWER),
        offer(SIP_OFFER_REINVITE.replace("RTP/AVP 0 8 101", "RTP/AVP 8 0 9 101"), to_tag="tt1",
              flags=["reuse-codecs"]),
        answer(SIP_ANSWER)],
        doc="reuse-codecs keeps the callee's answered codecs first, new ones after"),
    Case("codec_reuse_reinvite_callee", [
        offer(SIP_OFFER), answer(SIP_ANSWER),
        offer(SIP_ANSWER.replace("RTP/AVP 0 101", "RTP/AVP 8 0 101"), from_tag="tt1",
              to_tag="ft1", src="198.51.100.20", flags=["reuse-codecs"]),
        answer(SIP_OFFER, from_tag="tt1", to_tag="ft1", src="192.0.2.10")]),
    Case("transcode_opus", [offer(SIP_OFFER, codec={"transcode": ["opus"]}),
                            answer(SIP_ANSWER_OPUS)]),
    Case("transcode_opus_answer_shared", [offer(SIP_OFFER, flags=["codec-transcode-opus"]),
                                          answer(SIP_ANSWER)]),
    Case("transcode_opus_mono_fmtp", [offer(SIP_OFFER, codec={"transcode": [
        "opus/48000/1", "opus/48000/2///useinbandfec=1"]})]),
    Case("transcode_opus_present", [offer(SIP_OFFER_OPUS, codec={"transcode": ["opus"]})]),
    Case("transcode_opus_to_g711", [offer(SIP_OFFER_OPUS_ONLY, codec={"transcode": ["PCMU", "PCMA"]}),
                                    answer(SIP_ANSWER_PCMA)]),
    Case("transcode_mask_opus", [offer(SIP_OFFER, codec={"mask": ["PCMU"], "transcode": ["opus"]}),
                                 answer(SIP_ANSWER_OPUS)]),
    Case("transcode_consume_opus", [offer(SIP_OFFER_OPUS, codec={"consume": ["PCMA"]}),
                                    answer(SIP_ANSWER_OPUS)]),
    Case("transcode_accept_opus", [offer(SIP_OFFER_OPUS, codec={"accept": ["PCMA"]}),
                                   answer(SIP_ANSWER_OPUS)]),
    Case("transcode_always_opus", [offer(SIP_OFFER_OPUS_ONLY, flags=["always-transcode"]),
                                   answer(SIP_ANSWER_PCMA)]),
    Case("transcode_strip_all_except", [offer(SIP_OFFER_OPUS_ONLY, codec={
        "strip": ["all"], "except": ["telephone-event"], "transcode": ["PCMU", "PCMA"]}),
        answer(SIP_ANSWER_PCMU_ONLY)]),
    Case("transcode_except_word", [offer(SIP_OFFER_OPUS_ONLY, flags=[
        "codec-strip-all", "codec-except-opus", "codec-transcode-PCMA"]),
        answer(SIP_ANSWER_PCMA)]),
    Case("transcode_opus_reinvite", [
        offer(SIP_OFFER, codec={"transcode": ["opus"]}), answer(SIP_ANSWER_OPUS),
        offer(SIP_OFFER_REINVITE, to_tag="tt1"), answer(SIP_ANSWER)]),
    Case("transcode_opus_reinvite_callee", [
        offer(SIP_OFFER_OPUS_ONLY, codec={"transcode": ["PCMU"]}), answer(SIP_ANSWER_PCMU_ONLY),
        offer(SIP_ANSWER_PCMU_ONLY, from_tag="tt1", to_tag="ft1", src="198.51.100.20"),
        answer(SIP_OFFER_OPUS_ONLY, from_tag="tt1", to_tag="ft1", src="192.0.2.10")]),
    Case("codec_webrtc_transcode_pcma", [webrtc_offer(codec={"transcode": ["PCMA"]}),
                                         webrtc_answer(SIP_ANSWER_PCMA)],
         doc="a browser's offer towards a SIP phone that answers PCMA only"),
    Case("transcode_webrtc_opus_to_pcmu", [
        webrtc_offer(WEBRTC_OFFER.replace("SAVPF 111 0 8 101", "SAVPF 111 101"),
                     codec={"transcode": ["PCMU"]}),
        webrtc_answer(SIP_ANSWER)],
        doc="the seed's case: a browser offering Opus only, a SIP phone answering PCMU"),
    Case("transcode_opus_cn", [offer(SIP_OFFER.replace("RTP/AVP 0 8 101", "RTP/AVP 0 8 13 101"),
                                     codec={"transcode": ["opus"]}),
                               answer(SIP_ANSWER_OPUS)],
         doc="CN and telephone-event both get a 48 kHz entry, before the offer's own"),
    Case("transcode_two_dtmf_mask_opus", [
        offer(SIP_OFFER_OPUS.replace("RTP/AVP 111 9 0 8 101", "RTP/AVP 111 9 0 8 110 101").replace(
            "a=fmtp:101 0-16", "a=fmtp:101 0-16\r\na=rtpmap:110 telephone-event/48000\r\n"
            "a=fmtp:110 0-15"), codec={"mask": ["opus"]}),
        answer(SIP_ANSWER_OPUS)],
        doc="telephone-event at 48 kHz goes with the masked Opus"),
    Case("transcode_audio_video", [
        offer(SIP_OFFER_AUDIO_VIDEO, codec={"transcode": ["opus"]}),
        answer(SIP_ANSWER_AV.replace("m=audio 30000 RTP/AVP 0 101\r\n",
                                     "m=audio 30000 RTP/AVP 96 101\r\na=rtpmap:96 opus/48000/2\r\n"))],
        doc="video is never transcoded; the audio answer's Opus becomes the offerer's PCMU"),
    Case("transcode_reuse_codecs", [
        offer(SIP_OFFER, codec={"transcode": ["opus"]}), answer(SIP_ANSWER_OPUS),
        offer(SIP_OFFER_REINVITE.replace("RTP/AVP 0 8 101", "RTP/AVP 8 0 9 101"), to_tag="tt1",
              flags=["reuse-codecs"]),
        answer(SIP_ANSWER_OPUS)]),
    Case("transcode_no_codec_renegotiation", [
        offer(SIP_OFFER, codec={"transcode": ["opus"]}), answer(SIP_ANSWER_OPUS),
        offer(SIP_OFFER_REINVITE.replace("RTP/AVP 0 8 101", "RTP/AVP 8 0 9 101"), to_tag="tt1",
              flags=["no-codec-renegotiation"]),
        answer(SIP_ANSWER_OPUS, flags=["no-codec-renegotiation"])]),
    Case("transcode_g722", [offer(SIP_OFFER, codec={"transcode": ["G722"]})]),
    Case("transcode_opus_to_g722", [offer(SIP_OFFER_OPUS_ONLY, codec={"transcode": ["G722"]}),
                                    answer(SIP_ANSWER_G722)]),
    Case("transcode_order", [offer(SIP_OFFER, codec={"transcode": ["G722", "opus", "PCMA"]})]),
    Case("direction_priv_pub", [offer(SIP_OFFER, direction=["priv", "pub"], replace=["origin"]),
                                answer(SIP_ANSWER, replace=["origin"])], setup="named"),
    Case("direction_pub_priv", [offer(SIP_OFFER, direction=["pub", "priv"], ICE="force"),
                                answer(SIP_ANSWER, ICE="force")], setup="named"),
    Case("direction_default", [offer(SIP_OFFER), answer(SIP_ANSWER)], setup="named"),
    # `interface = 127.0.0.1;127.0.0.2`: without ICE the first address only;
    # with ICE a port pair on each address, component 1 on each, then 2
    Case("multi_address_plain", [offer(SIP_OFFER), answer(SIP_ANSWER)], setup="multi"),
    Case("multi_address_ice", [offer(SIP_OFFER, ICE="force"), answer(SIP_ANSWER), delete()],
         setup="multi"),
    Case("multi_address_ice_mux", [offer(SIP_OFFER, ICE="force", **{"rtcp-mux": ["require"]}),
                                   answer(SIP_ANSWER)], setup="multi"),
    Case("direction_unknown", [offer(SIP_OFFER, direction=["nope", "pub"])], setup="named"),
    Case("direction_remembered_reinvite", [
        offer(SIP_OFFER, direction=["priv", "pub"]), answer(SIP_ANSWER),
        offer(SIP_OFFER_REINVITE, to_tag="tt1")], setup="named"),
    Case("ipv6_input", [offer(SIP_OFFER_IPV6, replace=["origin"]), answer(SIP_ANSWER)],
         doc="IPv6 SDP, IPv4-only interface: output is IP4"),
    Case("media_level_connection", [offer(SIP_OFFER_MEDIA_C), answer(SIP_ANSWER)]),
    Case("hold_sendonly_reinvite", [offer(SIP_OFFER), answer(SIP_ANSWER),
                                    offer(SIP_OFFER_SENDONLY, to_tag="tt1")]),
    Case("hold_zero_address", [offer(SIP_OFFER), answer(SIP_ANSWER),
                               offer(SIP_OFFER_ZERO_HOLD, to_tag="tt1")]),
    Case("hold_inactive", [offer(SIP_OFFER), answer(SIP_ANSWER),
                           offer(SIP_OFFER_INACTIVE, to_tag="tt1")]),
    Case("rejected_video_in_answer", [offer(SIP_OFFER_AUDIO_VIDEO),
                                      answer(SIP_ANSWER_VIDEO_REJECTED)]),
    Case("rejected_video_in_offer", [offer(SIP_OFFER_VIDEO_REJECTED),
                                     answer(SIP_ANSWER_VIDEO_REJECTED)]),
    Case("two_media", [offer(SIP_OFFER_AUDIO_VIDEO, replace=["origin"])]),
    Case("three_media", [offer(SIP_OFFER_THREE, ICE="force")]),
    Case("reinvite_same_ports", [offer(SIP_OFFER), answer(SIP_ANSWER),
                                 offer(SIP_OFFER_REINVITE, to_tag="tt1"),
                                 answer(SIP_ANSWER)]),
    Case("reinvite_from_callee", [offer(SIP_OFFER), answer(SIP_ANSWER),
                                  offer(SIP_ANSWER, from_tag="tt1", to_tag="ft1",
                                        src="198.51.100.20"),
                                  answer(SIP_OFFER_REINVITE, from_tag="tt1", to_tag="ft1",
                                         src="192.0.2.10")]),
    Case("late_offer_swapped_tags", [
        offer(SIP_ANSWER, from_tag="tt1", to_tag="ft1", src="198.51.100.20"),
        answer(SIP_OFFER, from_tag="tt1", to_tag="ft1", src="192.0.2.10")],
        doc="offer in the 200 OK (Kamailio swaps the tags), answer in the ACK"),
    Case("answer_183_then_200", [offer(SIP_OFFER), answer(SIP_ANSWER), answer(SIP_ANSWER)]),
    Case("fork_two_to_tags", [offer(SIP_OFFER), answer(SIP_ANSWER),
                              answer(SIP_ANSWER_B, to_tag="tt2", src="198.51.100.30")],
         differs={2: [("{PORT3}", "{PORT2}"), ("{PORT3+1}", "{PORT2+1}")]},
         reason="a second to-tag becomes an alias of the answering side (ng-spec 3.1, "
                "rtpengine's current behaviour) and keeps the caller's port; 10.5 opened "
                "a new port towards the caller for the new branch"),
    Case("delete_call", [offer(SIP_OFFER), answer(SIP_ANSWER), delete(),
                         answer(SIP_ANSWER)],
         doc="delete lingers (delete-delay): a late answer still finds the call"),
    Case("delete_now", [offer(SIP_OFFER), delete(**{"delete delay": 0}),
                        answer(SIP_ANSWER)]),
    Case("delete_unknown", [delete(call_id="nosuchcall"),
                            delete(call_id="nosuchcall", flags=["fatal"])]),
    Case("loop_protect", [offer(SIP_OFFER, flags=["loop protect"])],
         doc="the output carries a=rtpengine:<id>"),
    Case("no_rtcp_attribute", [offer(SIP_OFFER, flags=["no rtcp attribute"]),
                               answer(SIP_ANSWER, flags=["no-rtcp-attribute"])]),
    Case("full_rtcp_attribute", [offer(SIP_OFFER, flags=["full rtcp attribute"]),
                                 answer(SIP_ANSWER, flags=["full-rtcp-attribute"])]),
    Case("original_sendrecv", [offer(SIP_OFFER, flags=["original sendrecv"]),
                               answer(SIP_ANSWER, flags=["original-sendrecv"])]),
    Case("ptime_string", [offer(SIP_OFFER, ptime="30")],
         doc="integer option given as a string"),
    # ptime (issue 7): the ng ptime / ptime-reverse keys, with and without
    # transcoding; the transcoder packetises towards each side at its ptime
    Case("ptime_offer_answer", [offer(SIP_OFFER, ptime=30), answer(SIP_ANSWER_PTIME40)],
         doc="ptime towards the answerer; the answer then carries the offerer's own a=ptime"),
    Case("ptime_answer_passes", [offer(SIP_OFFER), answer(SIP_ANSWER_PTIME40)],
         doc="without ptime keys the answerer's a=ptime reaches the offerer"),
    Case("ptime_reverse", [offer(SIP_OFFER, **{"ptime-reverse": 40}), answer(SIP_ANSWER),
                           offer(SIP_OFFER_REINVITE), answer(SIP_ANSWER)],
         doc="ptime-reverse: the answer's a=ptime, kept for the re-INVITE's answer"),
    Case("ptime_reverse_spelling", [offer(SIP_OFFER, **{"reverse ptime": "40"}),
                                    answer(SIP_ANSWER, **{"ptime-reverse": 30})],
         doc="another spelling, a string value; the keys of an answer change nothing"),
    Case("ptime_reinvite_kept", [offer(SIP_OFFER, ptime=40), answer(SIP_ANSWER),
                                 offer(SIP_OFFER_REINVITE), answer(SIP_ANSWER)],
         doc="the offer's ptime is kept for the re-offer without the key"),
    Case("ptime_transcode", [offer(SIP_OFFER_PCMU, ptime=40, codec={"transcode": ["PCMA"]}),
                             answer(SIP_ANSWER_PCMA)],
         doc="PCMU 20 ms <-> PCMA 40 ms, repacketised by the transcoder"),
    Case("ptime_out_of_range_transcode", [
        offer(SIP_OFFER_PCMU, ptime=5000, codec={"transcode": ["PCMA"]}),
        answer(SIP_ANSWER_PCMA.replace("a=sendrecv", "a=sendrecv\r\na=ptime:5000"))],
         doc="a ptime beyond what is packetised (1-1000 ms) is written as given, not refused"),
    Case("ptime_negative", [offer(SIP_OFFER, ptime=-5, **{"ptime-reverse": 0}),
                            answer(SIP_ANSWER)],
         doc="a ptime of 0 or less is ignored"),
    Case("ptime_transcode_both", [offer(SIP_OFFER_PCMU, ptime=30, codec={"transcode": ["PCMA"]},
                                        **{"ptime-reverse": 40}),
                                  answer(SIP_ANSWER_PCMA)]),
    Case("ptime_transcode_answer_ptime", [
        offer(SIP_OFFER_PCMU, ptime=30, codec={"transcode": ["PCMA"]}),
        answer(SIP_ANSWER_PCMA.replace("a=sendrecv", "a=sendrecv\r\na=ptime:40"))],
         doc="the answerer's own a=ptime does not reach the offerer once ptime was forced"),
    Case("ptime_transcode_reinvite_callee", [
        offer(SIP_OFFER_PCMU, ptime=40, codec={"transcode": ["PCMA"]}), answer(SIP_ANSWER_PCMA),
        offer(SIP_ANSWER_PCMA.replace("1 IN IP4", "2 IN IP4"), from_tag="tt1", to_tag="ft1",
              src="198.51.100.20"),
        answer(SIP_OFFER_PCMU, from_tag="tt1", to_tag="ft1", src="192.0.2.10")],
         doc="the callee's re-INVITE: its forced ptime comes back in the caller's answer"),
    Case("ptime_transcode_opus", [offer(SIP_OFFER_OPUS_ONLY, ptime=40,
                                        codec={"transcode": ["PCMU"]}),
                                  answer(SIP_ANSWER_PCMU_ONLY)],
         doc="Opus (no a=ptime) -> PCMU at 40 ms"),
    Case("ptime_reverse_transcode_opus", [
        offer(SIP_OFFER_OPUS_ONLY, codec={"transcode": ["PCMU"]}, **{"ptime-reverse": 40}),
        answer(SIP_ANSWER_PCMU_ONLY)],
         doc="PCMU -> Opus at 40 ms towards the offerer"),
    Case("ptime_transcode_opus_fmtp", [
        offer(SIP_OFFER, codec={"transcode": ["opus/48000/2///ptime=40"]}),
        answer(SIP_ANSWER_OPUS.replace("useinbandfec=1", "ptime=40"))],
         doc="an added Opus with fmtp ptime (the transcoder packetises Opus at it)"),
    Case("unsorted_keys", [
        {"command": "offer", "from-tag": "ft1", "ICE": "remove", "call-id": "c1",
         "sdp": SIP_OFFER, "replace": ["origin"], "supports": SUPPORTS},
        {"to-tag": "tt1", "sdp": SIP_ANSWER, "command": "answer", "call-id": "c1",
         "from-tag": "ft1", "TOS": "184", "delete delay": "5"}]),
    Case("error_no_sdp", [{"command": "offer", "call-id": "c1", "from-tag": "ft1"}]),
    Case("error_bad_sdp", [offer(BAD_SDP)]),
    Case("error_incomplete_sdp", [offer(INCOMPLETE_SDP)]),
    Case("error_no_media", [offer(NO_SDP_BODY)]),
    Case("error_answer_unknown_call", [answer(SIP_ANSWER, call_id="nosuchcall")]),
    Case("error_no_to_tag", [offer(SIP_OFFER), {"command": "answer", "sdp": SIP_ANSWER,
                                                "call-id": "c1", "from-tag": "ft1"}]),
    Case("error_unknown_command", [{"command": "bogus", "call-id": "c1"}]),
    Case("error_no_command", [{"call-id": "c1", "from-tag": "ft1"}]),
    Case("error_offer_no_call_id", [{"command": "offer", "sdp": SIP_OFFER, "from-tag": "ft1"}]),
    Case("error_offer_no_from_tag", [{"command": "offer", "sdp": SIP_OFFER, "call-id": "c1"}]),
    Case("error_query", [{"command": "query"}, {"command": "query", "call-id": "nosuchcall"}]),
    Case("error_list_negative_limit", [{"command": "list", "limit": -1}]),
    Case("error_delete_no_call_id", [{"command": "delete", "from-tag": "ft1"}]),
    # the current upstream's newer flag words and keys (issue 12): 10.5 ignores
    # them, omnirtp maps the aliases and ignores the rest; the same SDP results
    Case("upstream_flag_words_and_keys", [
        offer(SIP_OFFER, replace=["origin"], flags=[
            "mirror-RTCP", "mixed", "debugging", "block short packets", "audio player",
            "recording-vsc", "allow empty codec media", "T.38-decode"],
            **{"DTMF-delay": "100", "inbound-peer": "x", "sip-response-code": "200",
               "recording-media-slots": "1", "T.38-version": "0"}),
        answer(SIP_ANSWER, flags=["no-audio-player", "allow asymmetric codec"],
               **{"source-tag": "x", "DTLS-reverse": "passive"}),
        delete()]),
]

CASES_BY_NAME = {c.name: c for c in CASES}


# -- malformed ng datagrams --------------------------------------------------------------

@dataclass
class BadInput:
    """One malformed ng request: ``payload`` follows ``<cookie> ``.

    omnirtp's reply must be byte-identical to the live rtpengine 10.5's
    reply to the same datagram, except where ``like`` names another case:
    then omnirtp answers as rtpengine answers that one, on purpose
    (docs/compat.md), and ``reason`` says why.  ``rtpengine_crashes``: 10.5
    dies on it, so it is never sent to the shared reference daemon."""
    name: str
    payload: bytes
    like: str = None
    rtpengine_crashes: bool = False
    reason: str = ""


CRASH_REASON = ("rtpengine 10.5 crashes (SIGSEGV) on tens of thousands of nesting levels; "
                "omnirtp stops at depth 64 and answers as to any undecodable request")

BAD_INPUT = [
    BadInput("not_bencode", b"garbage"),
    BadInput("truncated_dict", b"d7:command4:pi"),
    BadInput("string_past_end", b"d7:command5:offer3:sdp99999:xx"),
    BadInput("nested_list", b"l" * 32000 + b"e" * 32000),
    BadInput("nested_json_list", b"[" * 32000 + b"]" * 32000),
    BadInput("truncated_json", b'{"command": '),
    BadInput("no_command", b"d3:sdp60000:" + b"x" * 60000 + b"e"),
    BadInput("nested_list_in_dict", b"d1:x" + b"l" * 32000 + b"e" * 32000 + b"e",
             like="truncated_dict", rtpengine_crashes=True, reason=CRASH_REASON),
    BadInput("nested_dicts", b"d1:x" + b"d1:x" * 16000),
    BadInput("nested_json_in_dict", b'{"command": ' + b"[" * 30000 + b"]" * 30000 + b"}",
             like="truncated_json", rtpengine_crashes=True, reason=CRASH_REASON),
    BadInput("nested_json_dicts", b'{"a":' * 6000),
    BadInput("binary_noise", b"d" + bytes(range(1, 200)) * 329),
    BadInput("negative_zero", b"d7:command4:ping1:xi-0ee", like="truncated_dict",
             reason="i-0e is not a valid bencode integer; 10.5 accepts it"),
]

BAD_INPUT_BY_NAME = {b.name: b for b in BAD_INPUT}


# -- running a case ------------------------------------------------------------------

def prepare(request, prefix):
    """Copy ``request`` with its call-id prefixed by ``prefix``."""
    msg = dict(request)
    for key in ("call-id",):
        if key in msg:
            msg[key] = "%s-%s" % (prefix, msg[key])
    return msg


def summarise(reply, normaliser):
    """The comparable part of one reply: result, error/warning text, normalised SDP."""
    out = {"result": reply.get("result")}
    for key in ("error-reason", "warning", "message"):
        if key in reply:
            out[key] = reply[key]
    if "sdp" in reply:
        out["sdp"] = normaliser.normalise(reply["sdp"]).splitlines()
    return out


def run_case(case, request, prefix):
    """Run ``case`` with ``request(dict) -> dict``; return the list of summaries."""
    normaliser = Normaliser()
    prefix = "%s-%s" % (prefix, case.name)
    out = []
    for r in case.requests:
        normaliser.keep_input(r.get("sdp"))   # a peer's own SDES keys stay visible
        out.append(summarise(request(prepare(r, prefix)), normaliser))
    return out


def fixture_path(name):
    return os.path.join(FIXTURE_DIR, name + ".json")


def load_expected(name):
    """The stored rtpengine 10.5 summaries of case ``name`` (None if not recorded)."""
    path = fixture_path(name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)["steps"]


def store_expected(case, steps):
    with open(fixture_path(case.name), "w") as f:
        json.dump({"case": case.name, "reference": "rtpengine 10.5 (Debian 12)",
                   "setup": SETUPS[case.setup], "needs": case.needs, "steps": steps},
                  f, indent=1)
        f.write("\n")


def _main(argv):
    from omnirtp.test.integration.reference import rtpengine_daemon
    if not argv or argv[0] not in ("record", "show"):
        sys.stderr.write(__doc__)
        return 2
    mode, names = argv[0], argv[1:]
    ng_port = int(os.environ.get("CORPUS_NG_PORT", "23201"))
    port_min = int(os.environ.get("CORPUS_PORT_MIN", "41100"))
    port_max = int(os.environ.get("CORPUS_PORT_MAX", "41499"))
    cases = [CASES_BY_NAME[n] for n in names] if names else CASES
    prefix = "corpus%d" % os.getpid()
    for setup in SETUPS:
        todo = [c for c in cases if c.setup == setup]
        if not todo:
            continue
        daemon = rtpengine_daemon(ng_port, port_min, port_max, SETUPS[setup]).start()
        try:
            for case in todo:
                if mode == "record":
                    store_expected(case, run_case(case, daemon.request, prefix))
                    print("recorded", case.name)
                else:
                    for r in case.requests:
                        reply = daemon.request(prepare(r, prefix + "-" + case.name))
                        print("=== %s %s" % (r.get("command"), {k: v for k, v in reply.items()
                                                              if k != "sdp"}))
                        sys.stdout.write(reply.get("sdp", "").replace("\r\n", "\n"))
        finally:
            daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
