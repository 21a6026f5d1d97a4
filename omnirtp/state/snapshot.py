"""A call's control-plane state as bytes, and back: what a state store keeps.

``encode(call)`` walks the call model (``Call`` -> ``Monologue`` -> ``Media``)
and writes JSON; ``decode(blob, interfaces)`` rebuilds an equal model whose
``Media.interface`` objects are the running daemon's own (looked up by name
and address: a call whose interface is gone cannot be restored and raises
:class:`SnapshotError`).

The encoding is generic over the model's attributes, so a field added to
the model later is kept without touching this module, as long as its value
is plain data: None, bool, int, float, str, bytes, tuples, lists, sets,
frozensets, dicts, the SDES ``Crypto``/``KeyParams`` dataclasses, an
``Interface`` or a reference to another monologue of the call.  Anything
else raises ``TypeError`` at encode time (a test runs every kind of call
through it), never silently drops state.  Only the classes named here are
ever built at decode time: a blob from Redis cannot make the daemon import
or call anything else.
"""

import base64
import dataclasses
import json

from omnirtp.call.model import Call, Interface, Media, Monologue
from omnirtp.sdp.crypto import Crypto, KeyParams

#: bump when a change makes older blobs unreadable
VERSION = 1

_DATACLASSES = {"Crypto": Crypto, "KeyParams": KeyParams}


class SnapshotError(ValueError):
    """A blob that cannot be turned back into a call."""


class _Encoder:

    def __init__(self, monologues):
        self.index = {id(ml): i for i, ml in enumerate(monologues)}

    def value(self, v):
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, bytes):
            return {"b": base64.b64encode(v).decode("ascii")}
        if isinstance(v, tuple):
            return {"t": [self.value(x) for x in v]}
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if isinstance(v, frozenset):
            return {"fs": sorted((self.value(x) for x in v), key=_order)}
        if isinstance(v, set):
            return {"s": sorted((self.value(x) for x in v), key=_order)}
        if isinstance(v, dict):
            return {"d": [[self.value(k), self.value(x)] for k, x in v.items()]}
        if isinstance(v, Interface):
            return {"if": [v.name, v.address]}
        if isinstance(v, Monologue):
            if id(v) not in self.index:
                raise TypeError("a monologue of another call")
            return {"ml": self.index[id(v)]}
        name = type(v).__name__
        if dataclasses.is_dataclass(v) and _DATACLASSES.get(name) is type(v):
            return {"dc": name, "f": {f.name: self.value(getattr(v, f.name))
                                      for f in dataclasses.fields(v)}}
        raise TypeError("cannot keep a %s in a call snapshot" % type(v).__name__)


def _order(encoded):
    return json.dumps(encoded, sort_keys=True)


def _slots(obj):
    names = getattr(type(obj), "__slots__", None)
    if names is not None:
        return {n: getattr(obj, n) for n in names if hasattr(obj, n)}
    return dict(vars(obj))


def to_data(call):
    """The call as plain JSON-able data."""
    enc = _Encoder(call.monologues)
    data = {"v": VERSION}
    for name, value in _slots(call).items():
        if name == "monologues":
            continue
        data[name] = enc.value(value)
    monologues = []
    for ml in call.monologues:
        m = {}
        for name, value in _slots(ml).items():
            if name == "medias":
                m["medias"] = [{k: enc.value(x) for k, x in _slots(media).items()}
                               for media in ml.medias]
            else:
                m[name] = enc.value(value)
        monologues.append(m)
    data["monologues"] = monologues
    return data


def encode(call):
    """The call as bytes (compact JSON)."""
    return json.dumps(to_data(call), separators=(",", ":"), ensure_ascii=True).encode("ascii")


class _Decoder:

    def __init__(self, interfaces, monologues):
        self.interfaces = interfaces
        self.monologues = monologues

    def value(self, v):
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if not isinstance(v, dict) or len(v) not in (1, 2):
            raise SnapshotError("unexpected value %r" % (v,))
        if "b" in v:
            return base64.b64decode(v["b"], validate=True)
        if "t" in v:
            return tuple(self.value(x) for x in v["t"])
        if "fs" in v:
            return frozenset(self.value(x) for x in v["fs"])
        if "s" in v:
            return set(self.value(x) for x in v["s"])
        if "d" in v:
            return {self.value(k): self.value(x) for k, x in v["d"]}
        if "if" in v:
            return self.interface(*v["if"])
        if "ml" in v:
            i = v["ml"]
            if not isinstance(i, int) or not 0 <= i < len(self.monologues):
                raise SnapshotError("monologue reference %r out of range" % (i,))
            return self.monologues[i]
        if "dc" in v:
            cls = _DATACLASSES.get(v["dc"])
            if cls is None:
                raise SnapshotError("unknown class %r" % (v["dc"],))
            return cls(**{k: self.value(x) for k, x in v["f"].items()})
        raise SnapshotError("unexpected value %r" % (v,))

    def interface(self, name, address):
        for iface in self.interfaces.by_name.get(name, ()):
            if iface.address == address:
                return iface
        raise SnapshotError("interface %s/%s is not configured here" % (name, address))


def from_data(data, interfaces):
    """Rebuild a :class:`Call` from :func:`to_data`'s output; ``interfaces``
    is the daemon's :class:`omnirtp.call.negotiate.Interfaces`."""
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise SnapshotError("not a version %d call snapshot" % VERSION)
    try:
        call = Call(data["call_id"], data["created"])
        monologues = [Monologue(m["tag"], m["created"]) for m in data["monologues"]]
        dec = _Decoder(interfaces, monologues)
        for name, value in data.items():
            if name not in ("v", "monologues"):
                setattr(call, name, dec.value(value))
        call.monologues = monologues
        for ml, m in zip(monologues, data["monologues"]):
            for name, value in m.items():
                if name == "medias":
                    ml.medias = [_media(dec, md) for md in value]
                else:
                    setattr(ml, name, dec.value(value))
        return call
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise SnapshotError("broken call snapshot: %s" % (e,))


def _media(dec, md):
    # built as the negotiator builds it, so that a field this blob predates
    # keeps its default; then every kept field is set
    media = Media(md["index"], md["type"], dec.value(md["interface"]))
    slots = set(Media.__slots__)
    for name, value in md.items():
        if name not in slots:
            raise SnapshotError("media has no field %r" % name)
        setattr(media, name, dec.value(value))
    return media


def decode(blob, interfaces):
    try:
        data = json.loads(blob)
    except (ValueError, UnicodeDecodeError) as e:
        raise SnapshotError("not JSON: %s" % (e,))
    return from_data(data, interfaces)


__all__ = ["VERSION", "SnapshotError", "to_data", "from_data", "encode", "decode"]
