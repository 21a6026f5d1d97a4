/*
 * omnirtp.control._fasttree: the statistics tree of one call (the
 * ``query``/``delete`` reply's part, Dispatcher.call_tree) in C.
 *
 * Written for omnirtp from commands.py's _call_tree, whose result it must
 * give object for object.  It only takes what it can answer exactly and
 * says "not mine" (None) for everything else; commands.py then runs its
 * pure-Python tree, which gives the result or raises its error.  Nothing it
 * does before that has an effect: it reads attributes and dictionaries and
 * makes new objects, so the Python tree starts from the same state.
 *
 * Python interface:
 *   setup(Media)
 *       omnirtp.call.model's Media class: a medium of another class is not
 *       taken (its ``srtp_in`` property is read here as its two slots,
 *       ``crypto_remote`` and ``crypto_local``).
 *   call_tree(call, stats) -> dict, or None
 *       What _call_tree(call, stats) returns, for ``stats`` an exact dict,
 *       ``call.monologues`` and each monologue's ``medias`` exact lists of
 *       Media with no SDES in use (``srtp_in`` None), whose ``rtp_port`` is
 *       None or an exact int, ``direction`` None or an exact str,
 *       ``rtp_endpoint``/``rtcp_endpoint`` None or exact tuples (of at least
 *       two items, the first an exact str, when not empty); each counter
 *       found in ``stats`` an exact dict with exact int ``packets``,
 *       ``bytes`` and ``errors``, a ``last_packet``, an ``endpoint`` that is
 *       false or such a tuple, an ``ice`` that is false or an exact dict
 *       with ``state`` and ``counters``, and no ``ssrc``, ``rtcp ssrc`` or ``payload types``
 *       (a stream that received media: its SSRC and the medium's codec are
 *       the Python tree's, which names the codec from the call's formats).  None otherwise, and on any error
 *       (setup not called included).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyTypeObject *media_type = NULL;

/* interned names: attributes, keys and the fixed str values */
enum {
    A_MONOLOGUES, A_MEDIAS, A_CRYPTO_REMOTE, A_CRYPTO_LOCAL, A_MUX, A_RTP_PORT,
    A_INTERFACE, A_ADDRESS, A_RTP_ENDPOINT, A_RTCP_ENDPOINT, A_LAST_SIGNAL,
    A_DIRECTION, A_INDEX, A_TYPE, A_PROTOCOL, A_TAG, A_CREATED, A_VIA_BRANCH,
    A_ALIASES, A_PEER,
    K_PACKETS, K_BYTES, K_ERRORS, K_LAST_PACKET, K_ENDPOINT, K_CONFIRMED,
    K_TRANSFORMS, K_ICE, K_RTCP, K_STATE, K_COUNTERS, K_SSRC, K_RTCP_SSRC, K_PAYLOAD_TYPES,
    K_RTP_UP, K_RTCP_UP, K_FAMILY, K_PORT, K_LOCAL_PORT, K_LOCAL_ADDRESS,
    K_ADVERTISED_ENDPOINT, K_LAST_PACKET_SP, K_FLAGS, K_STATS, K_TRANSFORMS_OUT,
    K_ICE_UP, K_RTCP_REPORT, K_STREAMS, K_VIA_BRANCH_OUT, K_TAG_ALIASES,
    K_IN_DIALOGUE, K_SUBSCRIPTIONS, K_SUBSCRIBERS, K_CREATED_US, K_LAST_SIGNAL_SP,
    K_TAGS, K_TOTALS,
    V_IPV4, V_IPV6, V_FALLBACK_RTCP, V_FILLED, V_CONFIRMED, V_INITIALIZED,
    V_SEND, V_RECV, V_SENDRECV, V_SENDONLY, V_RECVONLY, V_RTCP_MUX,
    V_OFFER_ANSWER, V_EMPTY,
    N_NAMES
};
static const char *name_texts[N_NAMES] = {
    "monologues", "medias", "crypto_remote", "crypto_local", "mux", "rtp_port",
    "interface", "address", "rtp_endpoint", "rtcp_endpoint", "last_signal",
    "direction", "index", "type", "protocol", "tag", "created", "via_branch",
    "aliases", "peer",
    "packets", "bytes", "errors", "last_packet", "endpoint", "confirmed",
    "transforms", "ice", "rtcp", "state", "counters", "ssrc", "rtcp ssrc", "payload types",
    "RTP", "RTCP", "family", "port", "local port", "local address",
    "advertised endpoint", "last packet", "flags", "stats", "transforms",
    "ICE", "RTCP report", "streams", "via-branch", "tag-aliases",
    "in dialogue with", "subscriptions", "subscribers", "created_us", "last signal",
    "tags", "totals",
    "IPv4", "IPv6", "fallback RTCP", "filled", "confirmed", "initialized",
    "send", "recv", "sendrecv", "sendonly", "recvonly", "rtcp-mux",
    "offer/answer", "",
};
static PyObject *N[N_NAMES];
static PyObject *int_one = NULL, *int_million = NULL, *int_zero = NULL;

#define NOT_MINE(label) goto label

static PyObject *
fast_setup(PyObject *self, PyObject *arg)
{
    if (!PyType_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "setup(Media): a class");
        return NULL;
    }
    Py_INCREF(arg);
    Py_XSETREF(media_type, (PyTypeObject *)arg);
    Py_RETURN_NONE;
}

/* "IPv6" if ":" in text else "IPv4" (borrowed); text an exact str */
static PyObject *
family_of(PyObject *text)
{
    Py_ssize_t at = PyUnicode_FindChar(text, ':', 0, PyUnicode_GET_LENGTH(text), 1);
    if (at == -2)
        return NULL;
    return at >= 0 ? N[V_IPV6] : N[V_IPV4];
}

/* {"family", "address", "port"} of an endpoint tuple (new), NULL: not mine */
static PyObject *
endpoint_dict(PyObject *ep)
{
    PyObject *a0, *family, *d;

    if (!PyTuple_CheckExact(ep) || PyTuple_GET_SIZE(ep) < 2)
        return NULL;
    a0 = PyTuple_GET_ITEM(ep, 0);
    if (!PyUnicode_CheckExact(a0))
        return NULL;
    family = family_of(a0);
    if (family == NULL)
        return NULL;
    d = PyDict_New();
    if (d == NULL)
        return NULL;
    if (PyDict_SetItem(d, N[K_FAMILY], family) < 0
            || PyDict_SetItem(d, N[A_ADDRESS], a0) < 0
            || PyDict_SetItem(d, N[K_PORT], PyTuple_GET_ITEM(ep, 1)) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

/* ``o``'s attribute ``name`` (new), NULL on error */
static PyObject *
attr(PyObject *o, int name)
{
    return PyObject_GetAttr(o, N[name]);
}

/* ``value or ""`` (new), NULL on error */
static PyObject *
or_empty(PyObject *value)
{
    int t = PyObject_IsTrue(value);
    if (t < 0)
        return NULL;
    if (t) {
        Py_INCREF(value);
        return value;
    }
    Py_INCREF(N[V_EMPTY]);
    return N[V_EMPTY];
}

/* a dict of three items (new) */
static PyObject *
dict3(int k1, PyObject *v1, int k2, PyObject *v2, int k3, PyObject *v3)
{
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    if (PyDict_SetItem(d, N[k1], v1) < 0 || PyDict_SetItem(d, N[k2], v2) < 0
            || PyDict_SetItem(d, N[k3], v3) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

/* t[key] += value (t: a totals dict, its values ints) */
static int
add_to(PyObject *t, int key, PyObject *value)
{
    PyObject *old = PyDict_GetItemWithError(t, N[key]), *sum;
    int r;
    if (old == NULL)
        return -1;
    sum = PyNumber_Add(old, value);
    if (sum == NULL)
        return -1;
    r = PyDict_SetItem(t, N[key], sum);
    Py_DECREF(sum);
    return r;
}

/*
 * One stream (the RTP or RTCP socket of a medium with ports), appended to
 * ``streams``; its counts added to ``t``.  0, or -1: not mine (an error
 * perhaps set).
 */
static int
one_stream(PyObject *streams, PyObject *t, int kind, PyObject *address,
           PyObject *port, PyObject *adv, int mux, PyObject *stats,
           PyObject *last_signal)
{
    PyObject *key = NULL, *c = NULL, *sflags = NULL, *advertised = NULL, *endpoint_out = NULL;
    PyObject *stream = NULL, *counts = NULL, *last = NULL, *endpoint = NULL, *v = NULL;
    PyObject *packets = NULL, *nbytes = NULL, *errors = NULL, *last_packet = NULL;
    PyObject *transforms = NULL, *ice = NULL, *rtcp = NULL, *family;
    int found, filled = 0, confirmed = 0, r = -1;

    key = PyTuple_Pack(2, address, port);
    if (key == NULL)
        goto done;
    /* (each value read is held: a value's __bool__ could change its dict) */
    c = PyDict_GetItemWithError(stats, key);
    if (c == NULL && PyErr_Occurred())
        goto done;
    Py_XINCREF(c);
    found = 0;
    if (c != NULL) {
        found = PyObject_IsTrue(c);
        if (found < 0)
            goto done;
    }
    if (found) {
        if (!PyDict_CheckExact(c))
            NOT_MINE(done);
        endpoint = PyDict_GetItemWithError(c, N[K_ENDPOINT]);
        if (endpoint == NULL && PyErr_Occurred())
            goto done;
        Py_XINCREF(endpoint);
        if (endpoint != NULL) {
            filled = PyObject_IsTrue(endpoint);
            if (filled < 0)
                goto done;
        }
        v = PyDict_GetItemWithError(c, N[K_CONFIRMED]);
        if (v == NULL && PyErr_Occurred())
            goto done;
        Py_XINCREF(v);
        if (v != NULL) {
            confirmed = PyObject_IsTrue(v);
            if (confirmed < 0)
                goto done;
        }
        packets = PyDict_GetItemWithError(c, N[K_PACKETS]);
        nbytes = packets ? PyDict_GetItemWithError(c, N[K_BYTES]) : NULL;
        errors = nbytes ? PyDict_GetItemWithError(c, N[K_ERRORS]) : NULL;
        last_packet = errors ? PyDict_GetItemWithError(c, N[K_LAST_PACKET]) : NULL;
        if (last_packet == NULL) {
            packets = nbytes = errors = NULL;
            NOT_MINE(done);
        }
        Py_INCREF(packets);
        Py_INCREF(nbytes);
        Py_INCREF(errors);
        Py_INCREF(last_packet);
        if (!PyLong_CheckExact(packets) || !PyLong_CheckExact(nbytes)
                || !PyLong_CheckExact(errors))
            NOT_MINE(done);
        /* the extras, read now: taken only when true */
        transforms = PyDict_GetItemWithError(c, N[K_TRANSFORMS]);
        if (transforms == NULL && PyErr_Occurred())
            goto done;
        Py_XINCREF(transforms);
        ice = PyDict_GetItemWithError(c, N[K_ICE]);
        if (ice == NULL && PyErr_Occurred())
            goto done;
        Py_XINCREF(ice);
        rtcp = PyDict_GetItemWithError(c, N[K_RTCP]);
        if (rtcp == NULL && PyErr_Occurred())
            goto done;
        Py_XINCREF(rtcp);
        /* a stream that received media (its SSRC, the medium's codec
         * named from the call's formats): the Python tree's */
        int seen = PyDict_Contains(c, N[K_SSRC]);
        if (seen == 0)
            seen = PyDict_Contains(c, N[K_RTCP_SSRC]);
        if (seen == 0)
            seen = PyDict_Contains(c, N[K_PAYLOAD_TYPES]);
        if (seen < 0)
            goto done;
        if (seen)
            NOT_MINE(done);
    } else {
        /* the default counter: zeros, the call's last signal, no endpoint */
        packets = nbytes = errors = int_zero;
        Py_INCREF(int_zero);
        Py_INCREF(int_zero);
        Py_INCREF(int_zero);
        last_packet = last_signal;
        Py_INCREF(last_packet);
    }
    sflags = PyList_New(0);
    if (sflags == NULL || PyList_Append(sflags, N[kind]) < 0)
        goto done;
    if (mux && kind == K_RTCP_UP && PyList_Append(sflags, N[V_FALLBACK_RTCP]) < 0)
        goto done;
    if (filled && PyList_Append(sflags, N[V_FILLED]) < 0)
        goto done;
    if (confirmed && PyList_Append(sflags, N[V_CONFIRMED]) < 0)
        goto done;
    if (adv == Py_None || (PyTuple_CheckExact(adv) && PyTuple_GET_SIZE(adv) == 0)) {
        advertised = PyDict_New();
    } else {
        advertised = endpoint_dict(adv);
        if (advertised == NULL)
            NOT_MINE(done);
    }
    if (advertised == NULL)
        goto done;
    if (filled) {
        endpoint_out = endpoint_dict(endpoint);
        if (endpoint_out == NULL)
            NOT_MINE(done);
    } else {
        endpoint_out = PyDict_Copy(advertised);
        if (endpoint_out == NULL)
            goto done;
    }
    last = PyNumber_Long(last_packet);
    if (last == NULL)
        goto done;
    counts = dict3(K_PACKETS, packets, K_BYTES, nbytes, K_ERRORS, errors);
    if (counts == NULL)
        goto done;
    family = family_of(address);
    if (family == NULL)
        goto done;
    stream = _PyDict_NewPresized(12);  /* (as a dict display: no resize) */
    if (stream == NULL
            || PyDict_SetItem(stream, N[K_LOCAL_PORT], port) < 0
            || PyDict_SetItem(stream, N[K_LOCAL_ADDRESS], address) < 0
            || PyDict_SetItem(stream, N[K_FAMILY], family) < 0
            || PyDict_SetItem(stream, N[K_ENDPOINT], endpoint_out) < 0
            || PyDict_SetItem(stream, N[K_ADVERTISED_ENDPOINT], advertised) < 0
            || PyDict_SetItem(stream, N[K_LAST_PACKET_SP], last) < 0
            || PyDict_SetItem(stream, N[K_FLAGS], sflags) < 0
            || PyDict_SetItem(stream, N[K_STATS], counts) < 0)
        goto done;
    if (transforms != NULL) {
        int t = PyObject_IsTrue(transforms);
        if (t < 0 || (t && PyDict_SetItem(stream, N[K_TRANSFORMS_OUT], transforms) < 0))
            goto done;
    }
    if (ice != NULL) {
        int t = PyObject_IsTrue(ice);
        if (t < 0)
            goto done;
        if (t) {
            PyObject *state, *counters, *d;
            if (!PyDict_CheckExact(ice))
                NOT_MINE(done);
            /* (borrowed: nothing runs before they are stored) */
            state = PyDict_GetItemWithError(ice, N[K_STATE]);
            counters = state ? PyDict_GetItemWithError(ice, N[K_COUNTERS]) : NULL;
            if (counters == NULL)
                NOT_MINE(done);
            d = PyDict_New();
            if (d == NULL)
                goto done;
            if (PyDict_SetItem(d, N[K_STATE], state) < 0
                    || PyDict_SetItem(d, N[K_COUNTERS], counters) < 0
                    || PyDict_SetItem(stream, N[K_ICE_UP], d) < 0) {
                Py_DECREF(d);
                goto done;
            }
            Py_DECREF(d);
        }
    }
    if (rtcp != NULL) {
        int t = PyObject_IsTrue(rtcp);
        if (t < 0 || (t && PyDict_SetItem(stream, N[K_RTCP_REPORT], rtcp) < 0))
            goto done;
    }
    if (PyList_Append(streams, stream) < 0)
        goto done;
    if (add_to(t, K_PACKETS, packets) < 0 || add_to(t, K_BYTES, nbytes) < 0
            || add_to(t, K_ERRORS, errors) < 0)
        goto done;
    r = 0;
done:
    Py_XDECREF(key);
    Py_XDECREF(c);
    Py_XDECREF(endpoint);
    Py_XDECREF(v);
    Py_XDECREF(packets);
    Py_XDECREF(nbytes);
    Py_XDECREF(errors);
    Py_XDECREF(last_packet);
    Py_XDECREF(transforms);
    Py_XDECREF(ice);
    Py_XDECREF(rtcp);
    Py_XDECREF(sflags);
    Py_XDECREF(advertised);
    Py_XDECREF(endpoint_out);
    Py_XDECREF(last);
    Py_XDECREF(counts);
    Py_XDECREF(stream);
    return r;
}

/* append ``word`` (a name) to ``list``; -1 on error */
static int
add_word(PyObject *list, int word)
{
    return PyList_Append(list, N[word]);
}

/* One medium's dict (new), NULL: not mine */
static PyObject *
one_media(PyObject *m, PyObject *stats, PyObject *last_signal, PyObject *rtp_totals,
          PyObject *rtcp_totals)
{
    PyObject *v = NULL, *port = NULL, *interface = NULL, *address = NULL;
    PyObject *adv = NULL, *port2 = NULL, *direction = NULL;
    PyObject *streams = NULL, *mflags = NULL, *out = NULL, *index = NULL, *type = NULL;
    PyObject *protocol = NULL;
    int mux;

    if (Py_TYPE(m) != media_type)
        return NULL;
    /* srtp_in: None unless both crypto_remote and crypto_local are set */
    v = attr(m, A_CRYPTO_REMOTE);
    if (v == NULL)
        goto fail;
    if (v != Py_None) {
        Py_DECREF(v);
        v = attr(m, A_CRYPTO_LOCAL);
        if (v == NULL || v != Py_None)
            goto fail;  /* SDES in use: not mine */
    }
    Py_CLEAR(v);
    v = attr(m, A_MUX);
    if (v == NULL)
        goto fail;
    mux = PyObject_IsTrue(v);
    Py_CLEAR(v);
    if (mux < 0)
        goto fail;
    port = attr(m, A_RTP_PORT);
    if (port == NULL)
        goto fail;
    streams = PyList_New(0);
    mflags = PyList_New(0);
    if (streams == NULL || mflags == NULL)
        goto fail;
    if (port != Py_None) {
        if (!PyLong_CheckExact(port))
            goto fail;
        interface = attr(m, A_INTERFACE);
        if (interface == NULL)
            goto fail;
        address = attr(interface, A_ADDRESS);
        if (address == NULL || !PyUnicode_CheckExact(address))
            goto fail;
        adv = attr(m, A_RTP_ENDPOINT);
        if (adv == NULL)
            goto fail;
        if (one_stream(streams, rtp_totals, K_RTP_UP, address, port, adv, mux, stats,
                       last_signal) < 0)
            goto fail;
        Py_CLEAR(adv);
        port2 = PyNumber_Add(port, int_one);
        if (port2 == NULL)
            goto fail;
        adv = attr(m, A_RTCP_ENDPOINT);
        if (adv == NULL)
            goto fail;
        if (one_stream(streams, rtcp_totals, K_RTCP_UP, address, port2, adv, mux, stats,
                       last_signal) < 0)
            goto fail;
        if (add_word(mflags, V_INITIALIZED) < 0)
            goto fail;
    }
    direction = attr(m, A_DIRECTION);
    if (direction == NULL)
        goto fail;
    if (direction == Py_None) {
        if (add_word(mflags, V_SEND) < 0 || add_word(mflags, V_RECV) < 0)
            goto fail;
    } else {
        if (!PyUnicode_CheckExact(direction))
            goto fail;
        if (PyUnicode_GET_LENGTH(direction) == 0
                || PyUnicode_CompareWithASCIIString(direction, "sendrecv") == 0) {
            if (add_word(mflags, V_SEND) < 0 || add_word(mflags, V_RECV) < 0)
                goto fail;
        } else if (PyUnicode_CompareWithASCIIString(direction, "sendonly") == 0) {
            if (add_word(mflags, V_SEND) < 0)
                goto fail;
        } else if (PyUnicode_CompareWithASCIIString(direction, "recvonly") == 0) {
            if (add_word(mflags, V_RECV) < 0)
                goto fail;
        }
    }
    if (mux && add_word(mflags, V_RTCP_MUX) < 0)
        goto fail;
    index = attr(m, A_INDEX);
    type = index ? attr(m, A_TYPE) : NULL;
    v = type ? attr(m, A_PROTOCOL) : NULL;
    if (v == NULL)
        goto fail;
    protocol = or_empty(v);
    if (protocol == NULL)
        goto fail;
    out = _PyDict_NewPresized(5);
    if (out == NULL
            || PyDict_SetItem(out, N[A_INDEX], index) < 0
            || PyDict_SetItem(out, N[A_TYPE], type) < 0
            || PyDict_SetItem(out, N[A_PROTOCOL], protocol) < 0
            || PyDict_SetItem(out, N[K_FLAGS], mflags) < 0
            || PyDict_SetItem(out, N[K_STREAMS], streams) < 0)
        goto fail;
    goto done;
fail:
    Py_CLEAR(out);
done:
    Py_XDECREF(v);
    Py_XDECREF(port);
    Py_XDECREF(interface);
    Py_XDECREF(address);
    Py_XDECREF(adv);
    Py_XDECREF(port2);
    Py_XDECREF(direction);
    Py_XDECREF(streams);
    Py_XDECREF(mflags);
    Py_XDECREF(index);
    Py_XDECREF(type);
    Py_XDECREF(protocol);
    return out;
}

/* {"tag": tag or "", "type": "offer/answer"} (new) */
static PyObject *
subscription(PyObject *tag)
{
    PyObject *t = or_empty(tag), *d;
    if (t == NULL)
        return NULL;
    d = PyDict_New();
    if (d != NULL && (PyDict_SetItem(d, N[A_TAG], t) < 0
                      || PyDict_SetItem(d, N[A_TYPE], N[V_OFFER_ANSWER]) < 0))
        Py_CLEAR(d);
    Py_DECREF(t);
    return d;
}

/* a one-item list holding ``item`` (stolen; new), NULL on error */
static PyObject *
list_of(PyObject *item)
{
    PyObject *list;
    if (item == NULL)
        return NULL;
    list = PyList_New(1);
    if (list == NULL) {
        Py_DECREF(item);
        return NULL;
    }
    PyList_SET_ITEM(list, 0, item);
    return list;
}

/* One monologue's entry, set in ``tags`` (0), -1: not mine */
static int
one_monologue(PyObject *ml, PyObject *monologues, PyObject *tags, Py_ssize_t *untagged,
              PyObject *stats, PyObject *last_signal, PyObject *rtp_totals,
              PyObject *rtcp_totals)
{
    PyObject *medias_in = NULL, *medias = NULL, *entry = NULL, *v = NULL, *w = NULL;
    PyObject *tag = NULL, *peer = NULL, *subscribers = NULL, *key = NULL;
    Py_ssize_t i, n;
    int t, r = -1;

    medias_in = attr(ml, A_MEDIAS);
    if (medias_in == NULL || !PyList_CheckExact(medias_in))
        goto done;
    medias = PyList_New(0);
    if (medias == NULL)
        goto done;
    for (i = 0; i < PyList_GET_SIZE(medias_in); i++) {
        PyObject *m = PyList_GET_ITEM(medias_in, i), *d;
        Py_INCREF(m);
        d = one_media(m, stats, last_signal, rtp_totals, rtcp_totals);
        Py_DECREF(m);
        if (d == NULL)
            goto done;
        t = PyList_Append(medias, d);
        Py_DECREF(d);
        if (t < 0)
            goto done;
    }
    entry = _PyDict_NewPresized(8);
    if (entry == NULL)
        goto done;
    tag = attr(ml, A_TAG);
    if (tag == NULL)
        goto done;
    v = or_empty(tag);
    if (v == NULL || PyDict_SetItem(entry, N[A_TAG], v) < 0)
        goto done;
    Py_CLEAR(v);
    w = attr(ml, A_CREATED);
    if (w == NULL)
        goto done;
    v = PyNumber_Long(w);
    if (v == NULL || PyDict_SetItem(entry, N[A_CREATED], v) < 0)
        goto done;
    Py_CLEAR(v);
    Py_CLEAR(w);
    w = attr(ml, A_VIA_BRANCH);
    if (w == NULL || (t = PyObject_IsTrue(w)) < 0)
        goto done;
    if (t && PyDict_SetItem(entry, N[K_VIA_BRANCH_OUT], w) < 0)
        goto done;
    Py_CLEAR(w);
    w = attr(ml, A_ALIASES);
    if (w == NULL || (t = PyObject_IsTrue(w)) < 0)
        goto done;
    if (t) {
        v = PySequence_List(w);
        if (v == NULL || PyDict_SetItem(entry, N[K_TAG_ALIASES], v) < 0)
            goto done;
        Py_CLEAR(v);
    }
    Py_CLEAR(w);
    peer = attr(ml, A_PEER);
    if (peer == NULL)
        goto done;
    if (peer != Py_None) {
        w = attr(peer, A_TAG);
        if (w == NULL)
            goto done;
        v = or_empty(w);
        if (v == NULL || PyDict_SetItem(entry, N[K_IN_DIALOGUE], v) < 0)
            goto done;
        Py_CLEAR(v);
        v = list_of(subscription(w));
        if (v == NULL || PyDict_SetItem(entry, N[K_SUBSCRIPTIONS], v) < 0)
            goto done;
        Py_CLEAR(v);
        Py_CLEAR(w);
    } else {
        v = PyList_New(0);
        if (v == NULL || PyDict_SetItem(entry, N[K_SUBSCRIPTIONS], v) < 0)
            goto done;
        Py_CLEAR(v);
    }
    subscribers = PyList_New(0);
    if (subscribers == NULL)
        goto done;
    n = PyList_GET_SIZE(monologues);
    for (i = 0; i < n && i < PyList_GET_SIZE(monologues); i++) {
        PyObject *other = PyList_GET_ITEM(monologues, i), *other_peer, *other_tag;
        Py_INCREF(other);
        other_peer = attr(other, A_PEER);
        if (other_peer == NULL) {
            Py_DECREF(other);
            goto done;
        }
        Py_DECREF(other_peer);  /* (compared by identity only) */
        if (other_peer == ml) {
            other_tag = attr(other, A_TAG);
            Py_DECREF(other);
            if (other_tag == NULL)
                goto done;
            v = subscription(other_tag);
            Py_DECREF(other_tag);
            if (v == NULL || PyList_Append(subscribers, v) < 0)
                goto done;
            Py_CLEAR(v);
        } else {
            Py_DECREF(other);
        }
    }
    if (n != PyList_GET_SIZE(monologues))
        goto done;  /* (changed under us: not mine) */
    if (PyDict_SetItem(entry, N[K_SUBSCRIBERS], subscribers) < 0
            || PyDict_SetItem(entry, N[A_MEDIAS], medias) < 0)
        goto done;
    t = PyObject_IsTrue(tag);
    if (t < 0)
        goto done;
    if (t) {
        Py_INCREF(tag);
        key = tag;
    } else {
        key = PyUnicode_FromFormat("<untagged %zd>", *untagged);
        if (key == NULL)
            goto done;
        (*untagged)++;
    }
    if (PyDict_SetItem(tags, key, entry) < 0)
        goto done;
    r = 0;
done:
    Py_XDECREF(medias_in);
    Py_XDECREF(medias);
    Py_XDECREF(entry);
    Py_XDECREF(v);
    Py_XDECREF(w);
    Py_XDECREF(tag);
    Py_XDECREF(peer);
    Py_XDECREF(subscribers);
    Py_XDECREF(key);
    return r;
}

static PyObject *
fast_call_tree(PyObject *self, PyObject *args)
{
    PyObject *call, *stats;
    PyObject *rtp_totals = NULL, *rtcp_totals = NULL, *totals = NULL, *tags = NULL;
    PyObject *monologues = NULL, *last_signal = NULL, *created = NULL;
    PyObject *v = NULL, *w = NULL, *out = NULL;
    Py_ssize_t i, untagged = 0;

    if (!PyArg_UnpackTuple(args, "call_tree", 2, 2, &call, &stats))
        return NULL;
    if (media_type == NULL || !PyDict_CheckExact(stats))
        Py_RETURN_NONE;
    rtp_totals = dict3(K_PACKETS, int_zero, K_BYTES, int_zero, K_ERRORS, int_zero);
    rtcp_totals = dict3(K_PACKETS, int_zero, K_BYTES, int_zero, K_ERRORS, int_zero);
    if (rtp_totals == NULL || rtcp_totals == NULL)
        goto fail;
    totals = PyDict_New();
    if (totals == NULL || PyDict_SetItem(totals, N[K_RTP_UP], rtp_totals) < 0
            || PyDict_SetItem(totals, N[K_RTCP_UP], rtcp_totals) < 0)
        goto fail;
    tags = PyDict_New();
    if (tags == NULL)
        goto fail;
    monologues = attr(call, A_MONOLOGUES);
    if (monologues == NULL || !PyList_CheckExact(monologues))
        goto fail;
    last_signal = attr(call, A_LAST_SIGNAL);
    if (last_signal == NULL)
        goto fail;
    for (i = 0; i < PyList_GET_SIZE(monologues); i++) {
        PyObject *ml = PyList_GET_ITEM(monologues, i);
        int r;
        Py_INCREF(ml);
        r = one_monologue(ml, monologues, tags, &untagged, stats, last_signal, rtp_totals,
                          rtcp_totals);
        Py_DECREF(ml);
        if (r < 0)
            goto fail;
    }
    created = attr(call, A_CREATED);
    if (created == NULL)
        goto fail;
    out = _PyDict_NewPresized(5);
    if (out == NULL)
        goto fail;
    v = PyNumber_Long(created);
    if (v == NULL || PyDict_SetItem(out, N[A_CREATED], v) < 0)
        goto fail;
    Py_CLEAR(v);
    w = PyNumber_Remainder(created, int_one);
    if (w == NULL)
        goto fail;
    v = PyNumber_Multiply(w, int_million);
    Py_CLEAR(w);
    if (v == NULL)
        goto fail;
    w = PyNumber_Long(v);
    Py_CLEAR(v);
    if (w == NULL || PyDict_SetItem(out, N[K_CREATED_US], w) < 0)
        goto fail;
    Py_CLEAR(w);
    /* (read again, as the Python tree does after the monologues) */
    w = attr(call, A_LAST_SIGNAL);
    if (w == NULL)
        goto fail;
    v = PyNumber_Long(w);
    if (v == NULL || PyDict_SetItem(out, N[K_LAST_SIGNAL_SP], v) < 0
            || PyDict_SetItem(out, N[K_TAGS], tags) < 0
            || PyDict_SetItem(out, N[K_TOTALS], totals) < 0)
        goto fail;
    goto done;
fail:
    Py_CLEAR(out);
done:
    Py_XDECREF(rtp_totals);
    Py_XDECREF(rtcp_totals);
    Py_XDECREF(totals);
    Py_XDECREF(tags);
    Py_XDECREF(monologues);
    Py_XDECREF(last_signal);
    Py_XDECREF(created);
    Py_XDECREF(v);
    Py_XDECREF(w);
    if (out == NULL) {
        PyErr_Clear();  /* not mine: the Python tree does it (and says any error) */
        Py_RETURN_NONE;
    }
    return out;
}

static PyMethodDef methods[] = {
    {"setup", fast_setup, METH_O,
     "setup(Media): the Media class whose instances call_tree takes."},
    {"call_tree", fast_call_tree, METH_VARARGS,
     "call_tree(call, stats) -> the call's statistics tree, or None (not mine)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "omnirtp.control._fasttree",
    "The statistics tree of one call in C (see commands.py's _call_tree).", -1, methods,
};

PyMODINIT_FUNC
PyInit__fasttree(void)
{
    int i;
    for (i = 0; i < N_NAMES; i++) {
        if (N[i] == NULL) {
            N[i] = PyUnicode_InternFromString(name_texts[i]);
            if (N[i] == NULL)
                return NULL;
        }
    }
    if (int_one == NULL) {
        int_zero = PyLong_FromLong(0);
        int_one = PyLong_FromLong(1);
        int_million = PyLong_FromLong(1000000);
        if (int_zero == NULL || int_one == NULL || int_million == NULL)
            return NULL;
    }
    return PyModule_Create(&module);
}
