"""A call's control-plane state as bytes, and back: what a state store keeps.

``encode(call)`` writes the call model (``Call`` -> ``Monologue`` ->
``Media``, with the codec stores, SDES keys and held SDP sections hanging
off it) as JSON; ``decode(blob, interfaces)`` rebuilds an equal model whose
``Media.interface`` objects are the running daemon's own (looked up by name
and address: a call whose interface is gone cannot be restored and raises
:class:`SnapshotError`).

The encoding is a generic walk of the object graph, so a field added to the
model later is kept without touching this module:

- plain values (None, bool, int, float, str) as they are; bytes, tuples
  and frozensets tagged;
- mutable values (lists, dicts, sets and objects) carry an ``id`` when first
  met and are written as ``{"ref": id}`` after that, so what the model
  shares stays shared (a monologue's ``peer``, a codec store's anchor that
  is one of its own codecs, a list held by two fields);
- objects only of the classes in :data:`CLASSES` (their attributes, or for
  frozen dataclasses their fields); an ``Interface`` by name and address;
  an SDP ``MediaSection`` or ``KeptSection`` by its text (read back as a
  ``KeptSection``, what a call keeps).

Anything else raises ``TypeError`` at encode time (a test runs every call
of the side-by-side corpus through it), never silently dropped.  Only the
classes named here are ever built at decode time: a blob from Redis cannot
make the daemon import or call anything else.
"""

import base64
import dataclasses
import json

from omnirtp.call.codecstore import CodecStore, PayloadType
from omnirtp.call.model import Call, Interface, Media, Monologue
from omnirtp.recording.spool import CallRecording
from omnirtp.sdp.codecs import CodecOps
from omnirtp.sdp.crypto import Crypto, KeyParams
from omnirtp.sdp.model import KeptSection, MediaSection, SessionDescription

#: bump when a change makes older blobs unreadable
VERSION = 2

#: the classes a snapshot may hold, by the name it writes
CLASSES = {cls.__name__: cls for cls in (
    Call, Monologue, Media, CodecStore, PayloadType, CodecOps, Crypto, KeyParams,
    CallRecording)}

#: classes whose missing attributes (a blob older than a new field) take
#: the defaults of a freshly made instance
_DEFAULTS = {
    Call: lambda: Call("", 0),
    Monologue: lambda: Monologue("", 0),
    Media: lambda: Media(0, "audio", None),
}

_SESSION_HEAD = "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"


class SnapshotError(ValueError):
    """A blob that cannot be turned back into a call."""


def _attributes(obj):
    names = []
    for klass in type(obj).__mro__:
        names.extend(getattr(klass, "__slots__", ()))
    values = {n: getattr(obj, n) for n in names if hasattr(obj, n)}
    if hasattr(obj, "__dict__"):
        values.update(vars(obj))
    return values


def _frozen(cls):
    params = getattr(cls, "__dataclass_params__", None)
    return params is not None and params.frozen


class _Encoder:

    def __init__(self):
        self.ids = {}
        self.keep = []  # the objects behind self.ids stay alive while encoding

    def _first(self, v):
        """The id for ``v`` if it is met for the first time, else None."""
        key = id(v)
        if key in self.ids:
            return None
        self.ids[key] = len(self.ids)
        self.keep.append(v)
        return self.ids[key]

    def value(self, v):
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, bytes):
            return {"b": base64.b64encode(v).decode("ascii")}
        if isinstance(v, tuple):
            return {"t": [self.value(x) for x in v]}
        if isinstance(v, frozenset):
            return {"fs": sorted((self.value(x) for x in v), key=_order)}
        if isinstance(v, Interface):
            return {"if": [v.name, v.address]}
        if id(v) in self.ids:
            return {"ref": self.ids[id(v)]}
        if isinstance(v, list):
            n = self._first(v)
            return {"id": n, "l": [self.value(x) for x in v]}
        if isinstance(v, set):
            n = self._first(v)
            return {"id": n, "s": sorted((self.value(x) for x in v), key=_order)}
        if isinstance(v, dict):
            n = self._first(v)
            return {"id": n, "d": [[self.value(k), self.value(x)] for k, x in v.items()]}
        if type(v) is KeptSection:
            n = self._first(v)
            return {"id": n, "sec": v.text, "index": v.index}
        if type(v) is MediaSection:
            n = self._first(v)
            return {"id": n, "sec": v.text(), "index": v.index}
        name = type(v).__name__
        if CLASSES.get(name) is type(v):
            n = self._first(v)
            if dataclasses.is_dataclass(v):
                attrs = {f.name: getattr(v, f.name) for f in dataclasses.fields(v)}
            else:
                attrs = _attributes(v)
            return {"id": n, "o": name, "a": {k: self.value(x) for k, x in attrs.items()}}
        raise TypeError("cannot keep a %s in a call snapshot" % type(v).__name__)


def _order(encoded):
    return json.dumps(encoded, sort_keys=True)


def to_data(call):
    """The call as plain JSON-able data."""
    return {"v": VERSION, "call": _Encoder().value(call)}


def encode(call):
    """The call as bytes (compact JSON)."""
    return json.dumps(to_data(call), separators=(",", ":"), ensure_ascii=True).encode("ascii")


class _Decoder:

    def __init__(self, interfaces):
        self.interfaces = interfaces
        self.objects = {}

    def _register(self, v, obj):
        n = v.get("id")
        if not isinstance(n, int) or isinstance(n, bool) or n in self.objects:
            raise SnapshotError("bad object id %r" % (n,))
        self.objects[n] = obj
        return obj

    def value(self, v):
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if not isinstance(v, dict):
            raise SnapshotError("unexpected value %r" % (v,))
        if "ref" in v:
            try:
                return self.objects[v["ref"]]
            except (KeyError, TypeError):
                raise SnapshotError("reference %r to nothing decoded before" % (v["ref"],))
        if "b" in v:
            return base64.b64decode(v["b"], validate=True)
        if "t" in v:
            return tuple(self.value(x) for x in v["t"])
        if "fs" in v:
            return frozenset(self.value(x) for x in v["fs"])
        if "if" in v:
            return self.interface(*v["if"])
        if "l" in v:
            out = self._register(v, [])
            out.extend(self.value(x) for x in v["l"])
            return out
        if "s" in v:
            out = self._register(v, set())
            out.update(self.value(x) for x in v["s"])
            return out
        if "d" in v:
            out = self._register(v, {})
            for k, x in v["d"]:
                out[self.value(k)] = self.value(x)
            return out
        if "sec" in v:
            try:
                sd = SessionDescription.parse(_SESSION_HEAD + v["sec"])
            except Exception as e:
                raise SnapshotError("a held SDP section does not parse: %s" % (e,))
            if len(sd.media) != 1:
                raise SnapshotError("a held SDP section is not one m= section")
            if not isinstance(v.get("index"), int) or isinstance(v["index"], bool):
                raise SnapshotError("a held SDP section has no index")
            return self._register(v, KeptSection(v["sec"], v["index"]))
        if "o" in v:
            return self.obj(v)
        raise SnapshotError("unexpected value %r" % (v,))

    def obj(self, v):
        cls = CLASSES.get(v["o"])
        if cls is None:
            raise SnapshotError("unknown class %r" % (v["o"],))
        attrs = v["a"]
        if not isinstance(attrs, dict):
            raise SnapshotError("attributes of a %s are not a dict" % v["o"])
        if _frozen(cls):
            # immutable: nothing inside can refer back to it
            n = v.get("id")
            built = cls(**{k: self.value(x) for k, x in attrs.items()})
            return self._register({"id": n}, built)
        obj = self._register(v, cls.__new__(cls))
        allowed = None
        if dataclasses.is_dataclass(cls):
            allowed = {f.name for f in dataclasses.fields(cls)}
        elif hasattr(cls, "__slots__") and not hasattr(cls, "__dict__"):
            allowed = set(cls.__slots__)
        for name, x in attrs.items():
            if allowed is not None and name not in allowed:
                raise SnapshotError("a %s has no field %r" % (v["o"], name))
            setattr(obj, name, self.value(x))
        make = _DEFAULTS.get(cls)
        if make is not None:
            for name, default in _attributes(make()).items():
                if name not in attrs:
                    setattr(obj, name, default)
        return obj

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
        call = _Decoder(interfaces).value(data["call"])
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise SnapshotError("broken call snapshot: %s" % (e,))
    if not isinstance(call, Call):
        raise SnapshotError("the snapshot holds a %s, not a call" % type(call).__name__)
    return call


def decode(blob, interfaces):
    try:
        data = json.loads(blob)
    except (ValueError, UnicodeDecodeError) as e:
        raise SnapshotError("not JSON: %s" % (e,))
    return from_data(data, interfaces)


__all__ = ["VERSION", "CLASSES", "SnapshotError", "to_data", "from_data", "encode", "decode"]
