/*
 * omnirtp.media._fastrelay: the hot part of MediaPoller (omnirtp/media/
 * relay.py) in C: the epoll wait and the inline relay of plain streams.
 *
 * Written for omnirtp from relay.py's MediaPoller._serve and .run, whose
 * results it must give exactly.  A media worker under a steady load wakes
 * for nearly every datagram; in Python each wake-up runs the interpreter
 * over the loop and _serve (bytecode, frames, dicts, all of it cold again
 * when the other worker ran meanwhile).  Here a wake-up whose datagrams all
 * take the inline path (a connected companion with relay._out >= 0 and an
 * RTP/RTCP-looking datagram) runs no Python at all: read, write to the
 * peer's companion, count, wait again.
 *
 * Everything else is Python's, called from here in the order of the round
 * exactly as _serve calls it: a handler of MediaPoller.add (other sockets,
 * the reactor's fd, a worker's pipe), RelaySocket.connected (the full
 * path), a recording tap's sink.  A round that called any Python code ends
 * the wait: MediaPoller.run then runs what add_after queued, and its timer
 * rules, as it does without this module.
 *
 * Counters.  The inline path counts in C, per file descriptor (packets,
 * bytes, errors, the time of the last datagram), and folds those pending
 * counts into the RelaySocket's attributes before any Python code runs on
 * this thread (a handler, connected, a tap) and before wait/rounds return.
 * So whatever Python reads (counters(), the sweep's last_packets, stats,
 * Redis snapshots) is exact, and the per-datagram path allocates nothing
 * (no int or float objects, no attribute writes): the fold costs a few
 * objects per socket that had datagrams since the last fold, not per
 * datagram.  Another thread would see counts of the current wait pending;
 * no other thread reads a RelaySocket (Twisted's objects belong to the
 * reactor's thread).
 *
 * Streams' SSRCs and payload types.  What query and ``list sessions`` show
 * of a stream (the SSRC of its last RTP datagram, the sender SSRC of its
 * last RTCP one, RTP datagrams per payload type) is kept in a Track, a
 * small C object a RelaySocket gets (``track``) at its first counted
 * datagram.  The inline path reads the slot and writes into the Track
 * directly: a few loads and stores per datagram, nothing to fold, no
 * object made, nothing more per file descriptor.  The Python paths note their datagrams in the same
 * Track (``note``); relay.py has a Python Track for where this module is
 * not built.
 *
 * Python interface:
 *   setup(RelaySocket)
 *       The inline path reads the class's ``_out``, ``_tap`` and ``track``
 *       slots (of its instances, subclasses' included) at their offsets
 *       instead of by name; before it, or for another class, by name.
 *   Loop(epfd, conns, handlers, seconds, maxevents)
 *       epfd: MediaPoller's epoll; conns: its list (fd -> RelaySocket or
 *       None); handlers: its dict (fd -> handler(now)); seconds: the clock
 *       (None: the wall clock, time.time's); maxevents: per epoll_wait.
 *   wait(t, deadline, coalesce) -> now
 *       Waits t seconds at most (< 0: no limit, 0: do not block) and
 *       serves the ready sockets; keeps waiting while rounds need no
 *       Python, until ``deadline`` (a reactor time, < 0: none) passes.
 *       Returns the time of the last wake-up.  ``called`` then says
 *       whether the last round called Python (MediaPoller.run sleeps
 *       ``coalesce`` after such a round itself; after the others this
 *       does).
 *   rounds(now, limit)
 *       Up to ``limit`` rounds without waiting (MediaPoller.doRead).
 *   fold()
 *       Folds the pending counters now (nothing is pending between calls).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "structmember.h"

#include <errno.h>
#include <stdint.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define RECV_SIZE 8192 /* relay.RECV_SIZE */
#define RTP_MIN 12     /* relay.RTP_MIN */
#define MS_MAX 2147483000.0 /* epoll_wait's int milliseconds (relay.TIMEOUT_MAX) */
#define TRACK_PTS 8    /* payload types a Track counts (more are not counted) */

/* ---- Track --------------------------------------------------------------- */

/* what a stream showed of its RTP headers (see the module's doc) */
typedef struct {
    PyObject_HEAD
    uint32_t ssrc;      /* the last RTP datagram's SSRC (an RTCP socket's:
                         * the last RTCP sender SSRC) */
    uint32_t rtcp_ssrc; /* the last RTCP sender SSRC an RTP socket got */
    unsigned char seen; /* TRACK_ bits */
    unsigned char n;    /* payload types counted */
    unsigned char rtcp_socket; /* an RTCP socket's Track (Track(True)) */
    unsigned char pt[TRACK_PTS];
    unsigned long long count[TRACK_PTS];
} Track;

#define TRACK_RTP 1
#define TRACK_RTCP 2

static PyTypeObject TrackType;

static inline uint32_t
be32(const unsigned char *b)
{
    return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
}

/* an RTP datagram (at least 12 bytes) */
static inline void
track_rtp(Track *t, const unsigned char *b)
{
    t->ssrc = be32(b + 8);
    t->seen |= TRACK_RTP;
    unsigned char pt = b[1] & 0x7F;
    int i = 0;
    while (i < t->n && t->pt[i] != pt)
        i++;
    if (i == t->n) {
        if (i == TRACK_PTS)
            return; /* a ninth payload type: not counted */
        t->pt[i] = pt;
        t->n++;
    }
    t->count[i]++;
}

/* a datagram an RTP socket's inline path counted (at least 12 bytes):
 * RTCP (PT 192-223) gives its sender SSRC */
static inline void
track_datagram(Track *t, const unsigned char *b)
{
    if ((unsigned char)(b[1] - 192) < 32) {
        t->rtcp_ssrc = be32(b + 4);
        t->seen |= TRACK_RTCP;
    } else {
        track_rtp(t, b);
    }
}

/* Track.note(datagram): what the Python paths counted (bytes, or a buffer
 * such as the native SRTP path's memoryview) */
static PyObject *
Track_note(Track *self, PyObject *data)
{
    Py_buffer view;
    const unsigned char *b;
    Py_ssize_t len;
    int release = 0;
    if (PyBytes_CheckExact(data)) {
        b = (const unsigned char *)PyBytes_AS_STRING(data);
        len = PyBytes_GET_SIZE(data);
    } else if (PyMemoryView_Check(data) && PyBuffer_IsContiguous(
                   PyMemoryView_GET_BUFFER(data), 'C')) {
        /* (the native SRTP path's view of its buffer: read in place) */
        b = PyMemoryView_GET_BUFFER(data)->buf;
        len = PyMemoryView_GET_BUFFER(data)->len;
    } else {
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
            return NULL;
        b = view.buf;
        len = view.len;
        release = 1;
    }
    if (len >= 8 && (self->rtcp_socket || (unsigned char)(b[1] - 192) < 32)) {
        if (self->rtcp_socket) {
            self->ssrc = be32(b + 4);
            self->seen |= TRACK_RTP;
        } else {
            self->rtcp_ssrc = be32(b + 4);
            self->seen |= TRACK_RTCP;
        }
    } else if (len >= 12) {
        track_rtp(self, b);
    }
    if (release)
        PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static int
Track_init(Track *self, PyObject *args, PyObject *kwds)
{
    int rtcp_socket = 0;
    if (!PyArg_ParseTuple(args, "|p:Track", &rtcp_socket))
        return -1;
    self->rtcp_socket = (unsigned char)rtcp_socket;
    return 0;
}

static PyObject *
Track_state(Track *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *pts = PyDict_New();
    if (pts == NULL)
        return NULL;
    for (int i = 0; i < self->n; i++) {
        PyObject *k = PyLong_FromLong(self->pt[i]);
        PyObject *v = k ? PyLong_FromUnsignedLongLong(self->count[i]) : NULL;
        int r = v ? PyDict_SetItem(pts, k, v) : -1;
        Py_XDECREF(k);
        Py_XDECREF(v);
        if (r < 0) {
            Py_DECREF(pts);
            return NULL;
        }
    }
    PyObject *ssrc = (self->seen & TRACK_RTP) ? PyLong_FromUnsignedLong(self->ssrc)
                                              : Py_NewRef(Py_None);
    PyObject *rtcp = (self->seen & TRACK_RTCP) ? PyLong_FromUnsignedLong(self->rtcp_ssrc)
                                               : Py_NewRef(Py_None);
    PyObject *r = (ssrc && rtcp) ? PyTuple_Pack(3, ssrc, rtcp, pts) : NULL;
    Py_XDECREF(ssrc);
    Py_XDECREF(rtcp);
    Py_DECREF(pts);
    return r;
}

static PyMethodDef Track_methods[] = {
    {"note", (PyCFunction)Track_note, METH_O,
     "note(datagram): keep a counted datagram's SSRC and payload type"},
    {"state", (PyCFunction)Track_state, METH_NOARGS,
     "state() -> (ssrc or None, rtcp_ssrc or None, {payload type: packets})"},
    {NULL}
};

static PyTypeObject TrackType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "omnirtp.media._fastrelay.Track",
    .tp_basicsize = sizeof(Track),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A stream's last SSRCs and packets per payload type (see the module's doc)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Track_init,
    .tp_methods = Track_methods,
};

/* what the inline path counted for one fd since the last fold */
typedef struct {
    PyObject *relay; /* the RelaySocket counted for (a reference), or NULL */
    long long packets;
    long long bytes;
    long long errors;
    double last; /* the time of its last datagram */
} Pending;

typedef struct {
    PyObject_HEAD
    int epfd;
    int maxevents;
    int called;         /* the last round called Python */
    PyObject *conns;    /* list */
    PyObject *handlers; /* dict */
    PyObject *seconds;  /* callable, or NULL: clock_gettime(CLOCK_REALTIME) */
    struct epoll_event *events;
    Pending *pending; /* indexed by fd, grown as fds grow */
    int cap;
    int *dirty; /* the fds with pending counts */
    int ndirty;
    unsigned char buf[RECV_SIZE];
} Loop;

static PyObject *s_out, *s_tap, *s_connected, *s_sink, *s_inline_flow;

/* RelaySocket's slots the inline path reads, read at their offsets (see
 * setup): a slot read is a load, where PyObject_GetAttr looks the name up
 * in the type and calls the member descriptor */
static PyTypeObject *relay_type = NULL;
static Py_ssize_t off_out = -1, off_tap = -1, off_track = -1;

/* relay.name (a new reference): the slot's value at its offset for an
 * instance of the class given to setup, else (or unset) PyObject_GetAttr */
static inline PyObject *
slot_get(PyObject *relay, Py_ssize_t off, PyObject *name)
{
    if (off >= 0 && PyObject_TypeCheck(relay, relay_type)) {
        PyObject *v = *(PyObject **)((char *)relay + off);
        if (v != NULL) {
            Py_INCREF(v);
            return v;
        }
    }
    return PyObject_GetAttr(relay, name);
}
static PyObject *s_packets, *s_bytes, *s_errors, *s_last_packet, *s_track;

/* ---- counters ------------------------------------------------------------ */

/* relay's Track (borrowed: relay holds it, and no Python runs while the
 * caller uses it), made and set at its first datagram; NULL with an
 * exception on an error, NULL without one if its ``track`` is another
 * kind of object (not kept here) */
static Track *
track_of(PyObject *relay)
{
    if (off_track >= 0 && PyObject_TypeCheck(relay, relay_type)) {
        PyObject *t = *(PyObject **)((char *)relay + off_track);
        if (t != NULL && Py_IS_TYPE(t, &TrackType))
            return (Track *)t;
    }
    PyObject *t = PyObject_GetAttr(relay, s_track);
    if (t == NULL)
        return NULL;
    if (t == Py_None) {
        Py_DECREF(t);
        t = PyObject_CallNoArgs((PyObject *)&TrackType);
        if (t == NULL)
            return NULL;
        if (PyObject_SetAttr(relay, s_track, t) < 0) {
            Py_DECREF(t);
            return NULL;
        }
    }
    int mine = PyObject_TypeCheck(t, &TrackType);
    Py_DECREF(t); /* (relay holds it) */
    return mine ? (Track *)t : NULL;
}

/* obj.name += delta */
static int
add_to(PyObject *obj, PyObject *name, long long delta)
{
    PyObject *old = PyObject_GetAttr(obj, name);
    if (old == NULL)
        return -1;
    PyObject *d = PyLong_FromLongLong(delta);
    if (d == NULL) {
        Py_DECREF(old);
        return -1;
    }
    PyObject *sum = PyNumber_Add(old, d);
    Py_DECREF(old);
    Py_DECREF(d);
    if (sum == NULL)
        return -1;
    int r = PyObject_SetAttr(obj, name, sum);
    Py_DECREF(sum);
    return r;
}

/* Moves every pending count onto its RelaySocket.  Keeps going past a
 * failing socket (its counts are lost, as they would be in Python) and
 * reports the first error; an exception already set is kept. */
static int
fold(Loop *self)
{
    int failed = 0;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    for (int i = 0; i < self->ndirty; i++) {
        Pending *p = &self->pending[self->dirty[i]];
        PyObject *relay = p->relay;
        if (relay == NULL)
            continue;
        p->relay = NULL;
        if (!failed) {
            PyObject *last = PyFloat_FromDouble(p->last);
            if (last == NULL
                    || (p->packets && add_to(relay, s_packets, p->packets) < 0)
                    || (p->bytes && add_to(relay, s_bytes, p->bytes) < 0)
                    || (p->errors && add_to(relay, s_errors, p->errors) < 0)
                    || (p->packets && PyObject_SetAttr(relay, s_last_packet, last) < 0))
                failed = 1;
            Py_XDECREF(last);
        }
        p->packets = p->bytes = p->errors = 0;
        Py_DECREF(relay);
    }
    self->ndirty = 0;
    if (et != NULL) {
        if (failed)
            PyErr_Clear();
        PyErr_Restore(et, ev, tb);
    }
    return failed ? -1 : 0;
}

/* the pending entry of fd for relay (grows the table for a new, higher fd:
 * the only allocation on the inline path, once per fd number) */
static Pending *
pending_for(Loop *self, int fd, PyObject *relay)
{
    if (fd >= self->cap) {
        int cap = self->cap ? self->cap : 256;
        while (cap <= fd)
            cap *= 2;
        Pending *p = PyMem_Realloc(self->pending, sizeof(Pending) * (size_t)cap);
        if (p == NULL)
            return NULL;
        memset(p + self->cap, 0, sizeof(Pending) * (size_t)(cap - self->cap));
        self->pending = p;
        int *d = PyMem_Realloc(self->dirty, sizeof(int) * (size_t)cap);
        if (d == NULL)
            return NULL;
        self->dirty = d;
        self->cap = cap;
    }
    Pending *p = &self->pending[fd];
    if (p->relay != relay) {
        if (p->relay != NULL && fold(self) < 0)  /* another socket on this fd */
            return NULL;
        Py_INCREF(relay);
        p->relay = relay;
        self->dirty[self->ndirty++] = fd;
    }
    return p;
}

/* ---- the clock and the wait ---------------------------------------------- */

static int
clock_now(Loop *self, double *now)
{
    if (self->seconds == NULL) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        *now = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
        return 0;
    }
    PyObject *r = PyObject_CallNoArgs(self->seconds);
    if (r == NULL)
        return -1;
    *now = PyFloat_AsDouble(r);
    Py_DECREF(r);
    return (*now == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

/* seconds to epoll_wait's milliseconds, rounded up as select.epoll.poll
 * rounds them (< 0: no limit) */
static int
to_ms(double t)
{
    if (t < 0)
        return -1;
    double ms = ceil(t * 1e3);
    return ms > MS_MAX ? (int)MS_MAX : (int)ms;
}

/* ---- one round ----------------------------------------------------------- */

/* Calls Python: handler(now), relay.connected(data, now), tap.sink(...);
 * pending counts are folded first.  *nowobj is made once per round. */
static int
prepare_call(Loop *self, PyObject **nowobj, double now)
{
    self->called = 1;
    if (fold(self) < 0)
        return -1;
    if (*nowobj == NULL && (*nowobj = PyFloat_FromDouble(now)) == NULL)
        return -1;
    return 0;
}

/* Serves n ready events as MediaPoller._serve does; -1 with an exception
 * (the rest of the round is left: level-triggered, it is reported again). */
static int
serve(Loop *self, int n, double now)
{
    PyObject *nowobj = NULL;
    int r = -1;
    for (int i = 0; i < n; i++) {
        int fd = self->events[i].data.fd;
        /* looked up per event: a handler earlier in the round may have
         * removed or replaced sockets */
        PyObject *relay = NULL;
        if (fd < PyList_GET_SIZE(self->conns))
            relay = PyList_GET_ITEM(self->conns, fd);
        if (relay == NULL || relay == Py_None) {
            PyObject *key = PyLong_FromLong(fd);
            if (key == NULL)
                goto done;
            PyObject *handler = PyDict_GetItemWithError(self->handlers, key);
            Py_DECREF(key);
            if (handler == NULL) {
                if (PyErr_Occurred())
                    goto done;
                continue;
            }
            Py_INCREF(handler);
            PyObject *res = NULL;
            if (prepare_call(self, &nowobj, now) == 0)
                res = PyObject_CallOneArg(handler, nowobj);
            Py_DECREF(handler);
            if (res == NULL)
                goto done;
            Py_DECREF(res);
            continue;
        }
        /* a companion's datagram: the common case here, the rest through
         * RelaySocket.connected */
        ssize_t len = read(fd, self->buf, RECV_SIZE);
        if (len < 0)
            continue; /* EAGAIN, or an ICMP error consumed by the read */
        Py_INCREF(relay); /* held while Python may run */
        PyObject *outobj = slot_get(relay, off_out, s_out);
        if (outobj == NULL) {
            Py_DECREF(relay);
            goto done;
        }
        long out = PyLong_AsLong(outobj);
        Py_DECREF(outobj);
        if (out == -1 && PyErr_Occurred()) {
            Py_DECREF(relay);
            goto done;
        }
        if (out < 0 || len < RTP_MIN || (self->buf[0] & 0xC0) != 0x80) {
            PyObject *res = NULL;
            if (prepare_call(self, &nowobj, now) == 0) {
                PyObject *data = PyBytes_FromStringAndSize((char *)self->buf, len);
                if (data != NULL) {
                    res = PyObject_CallMethodObjArgs(relay, s_connected, data, nowobj, NULL);
                    Py_DECREF(data);
                }
            }
            Py_DECREF(relay);
            if (res == NULL)
                goto done;
            Py_DECREF(res);
            continue;
        }
        Pending *p = pending_for(self, fd, relay);
        if (p == NULL) {
            Py_DECREF(relay);
            if (!PyErr_Occurred())
                PyErr_NoMemory();
            goto done;
        }
        p->packets++;
        p->bytes += len;
        p->last = now;
        Track *track = track_of(relay);
        if (track != NULL) {
            track_datagram(track, self->buf);
        } else if (PyErr_Occurred()) {
            Py_DECREF(relay);
            goto done;
        }
        PyObject *tap = slot_get(relay, off_tap, s_tap);
        if (tap == NULL) {
            Py_DECREF(relay);
            goto done;
        }
        if (tap != Py_None) {
            /* a recorded socket: (time, flow, datagram) to the call's
             * recorder, as _serve hands it, then the write below */
            PyObject *res = NULL;
            if (prepare_call(self, &nowobj, now) == 0) {
                PyObject *flow = PyObject_GetAttr(tap, s_inline_flow);
                PyObject *data = PyBytes_FromStringAndSize((char *)self->buf, len);
                PyObject *item = (flow && data) ? PyTuple_Pack(3, nowobj, flow, data) : NULL;
                if (item != NULL)
                    res = PyObject_CallMethodOneArg(tap, s_sink, item);
                Py_XDECREF(flow);
                Py_XDECREF(data);
                Py_XDECREF(item);
            }
            Py_DECREF(tap);
            if (res == NULL) {
                Py_DECREF(relay);
                goto done;
            }
            Py_DECREF(res);
            /* the sink ran Python: count the write's outcome afresh */
            p = pending_for(self, fd, relay);
            if (p == NULL) {
                Py_DECREF(relay);
                if (!PyErr_Occurred())
                    PyErr_NoMemory();
                goto done;
            }
        } else {
            Py_DECREF(tap);
        }
        Py_DECREF(relay);
        ssize_t w;
        do {
            w = write((int)out, self->buf, (size_t)len);
        } while (w < 0 && errno == EINTR);
        if (w < 0)
            p->errors++;
    }
    r = 0;
done:
    Py_XDECREF(nowobj);
    return r;
}

/* ---- methods --------------------------------------------------------------- */

static int
ready(Loop *self)
{
    if (self->events == NULL || self->conns == NULL || self->handlers == NULL) {
        PyErr_SetString(PyExc_ValueError, "Loop is not initialised");
        return 0;
    }
    return 1;
}

static PyObject *
Loop_wait(Loop *self, PyObject *args)
{
    double t, deadline, coalesce;
    if (!ready(self) || !PyArg_ParseTuple(args, "ddd:wait", &t, &deadline, &coalesce))
        return NULL;
    double now = 0;
    int ms = to_ms(t);
    for (;;) {
        int n;
        self->called = 0;
        if (ms == 0) {
            n = epoll_wait(self->epfd, self->events, self->maxevents, 0);
        } else {
            Py_BEGIN_ALLOW_THREADS
            n = epoll_wait(self->epfd, self->events, self->maxevents, ms);
            Py_END_ALLOW_THREADS
        }
        if (n < 0) {
            if (errno != EINTR) {
                PyErr_SetFromErrno(PyExc_OSError);
                goto failed;
            }
            /* a signal: its Python handler runs now, and the loop in
             * Python looks at the reactor again.  One that arrives while
             * a round is served (no EINTR then) writes to Python's wakeup
             * fd, which Twisted sets to a waker in the reactor's epoll:
             * that makes the reactor's fd ready, and its handler returns
             * the loop to Python, as with select.epoll's poll */
            if (PyErr_CheckSignals() < 0 || clock_now(self, &now) < 0)
                goto failed;
            break;
        }
        if (clock_now(self, &now) < 0)
            goto failed;
        if (n == 0)
            break; /* the wait ran out: a timer is due */
        if (serve(self, n, now) < 0)
            goto failed;
        if (self->called)
            break; /* Python ran: MediaPoller.run takes over */
        if (coalesce > 0) {
            struct timespec ts;
            ts.tv_sec = (time_t)coalesce;
            ts.tv_nsec = (long)((coalesce - (double)ts.tv_sec) * 1e9);
            Py_BEGIN_ALLOW_THREADS
            nanosleep(&ts, NULL);
            Py_END_ALLOW_THREADS
        }
        if (ms == 0)
            break; /* one round only */
        if (deadline >= 0) {
            if (now >= deadline)
                break; /* a timer is due */
            ms = to_ms(deadline - now);
        } else {
            ms = -1;
        }
    }
    /* every way out folds: Python reads the counters next */
    if (fold(self) < 0)
        return NULL;
    return PyFloat_FromDouble(now);
failed:
    fold(self); /* keeps the exception set */
    return NULL;
}

static PyObject *
Loop_rounds(Loop *self, PyObject *args)
{
    double now;
    int limit;
    if (!ready(self) || !PyArg_ParseTuple(args, "di:rounds", &now, &limit))
        return NULL;
    self->called = 0;
    for (int i = 0; i < limit; i++) {
        int n = epoll_wait(self->epfd, self->events, self->maxevents, 0);
        if (n <= 0)
            break; /* nothing ready (or an error, as select.epoll's poll
                    * would raise: the next poll reports it) */
        if (serve(self, n, now) < 0) {
            fold(self);
            return NULL;
        }
    }
    if (fold(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Loop_fold(Loop *self, PyObject *Py_UNUSED(ignored))
{
    if (fold(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ---- the type ---------------------------------------------------------------- */

static int
Loop_init(Loop *self, PyObject *args, PyObject *kwds)
{
    int epfd, maxevents;
    PyObject *conns, *handlers, *seconds;
    static char *kwlist[] = {"epfd", "conns", "handlers", "seconds", "maxevents", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iO!O!Oi:Loop", kwlist, &epfd,
                                     &PyList_Type, &conns, &PyDict_Type, &handlers,
                                     &seconds, &maxevents))
        return -1;
    if (maxevents < 1) {
        PyErr_SetString(PyExc_ValueError, "maxevents must be at least 1");
        return -1;
    }
    if (self->events != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Loop is initialised already");
        return -1;
    }
    self->events = PyMem_Calloc((size_t)maxevents, sizeof(struct epoll_event));
    if (self->events == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->epfd = epfd;
    self->maxevents = maxevents;
    Py_INCREF(conns);
    self->conns = conns;
    Py_INCREF(handlers);
    self->handlers = handlers;
    if (seconds != Py_None) {
        Py_INCREF(seconds);
        self->seconds = seconds;
    }
    return 0;
}

/* A Loop is part of a cycle (poller -> Loop -> handlers -> a socket's bound
 * method -> socket -> poller): the garbage collector must see through it. */
static int
Loop_traverse(Loop *self, visitproc visit, void *arg)
{
    Py_VISIT(self->conns);
    Py_VISIT(self->handlers);
    Py_VISIT(self->seconds);
    for (int i = 0; i < self->ndirty; i++)
        Py_VISIT(self->pending[self->dirty[i]].relay);
    return 0;
}

static int
Loop_clear(Loop *self)
{
    for (int i = 0; i < self->ndirty; i++)
        Py_CLEAR(self->pending[self->dirty[i]].relay);
    self->ndirty = 0;
    Py_CLEAR(self->conns);
    Py_CLEAR(self->handlers);
    Py_CLEAR(self->seconds);
    return 0;
}

static void
Loop_dealloc(Loop *self)
{
    PyObject_GC_UnTrack(self);
    Loop_clear(self);
    PyMem_Free(self->pending);
    PyMem_Free(self->dirty);
    PyMem_Free(self->events);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Loop_methods[] = {
    {"wait", (PyCFunction)Loop_wait, METH_VARARGS,
     "wait(t, deadline, coalesce) -> now: wait and serve until Python is needed"},
    {"rounds", (PyCFunction)Loop_rounds, METH_VARARGS,
     "rounds(now, limit): serve up to limit rounds without waiting"},
    {"fold", (PyCFunction)Loop_fold, METH_NOARGS,
     "fold(): move pending counts onto the sockets"},
    {NULL}
};

static PyMemberDef Loop_members[] = {
    {"called", T_INT, offsetof(Loop, called), READONLY,
     "whether the last round called Python"},
    {NULL}
};

static PyTypeObject LoopType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "omnirtp.media._fastrelay.Loop",
    .tp_basicsize = sizeof(Loop),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "MediaPoller's wait and inline relay (see the module's doc)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Loop_init,
    .tp_dealloc = (destructor)Loop_dealloc,
    .tp_traverse = (traverseproc)Loop_traverse,
    .tp_clear = (inquiry)Loop_clear,
    .tp_methods = Loop_methods,
    .tp_members = Loop_members,
};

/* the offset of slot ``name`` of class ``cls`` (an object member
 * descriptor), or -1 */
static Py_ssize_t
slot_offset(PyObject *cls, const char *name)
{
    PyObject *d = PyObject_GetAttrString(cls, name);
    Py_ssize_t off = -1;
    if (d == NULL) {
        PyErr_Clear();
        return -1;
    }
    if (Py_IS_TYPE(d, &PyMemberDescr_Type)) {
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type == T_OBJECT_EX && !(m->flags & READONLY))
            off = m->offset;
    }
    Py_DECREF(d);
    return off;
}

static PyObject *
fast_setup(PyObject *module, PyObject *cls)
{
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "setup(RelaySocket): a class");
        return NULL;
    }
    Py_INCREF(cls);
    Py_XSETREF(relay_type, (PyTypeObject *)cls);
    off_out = slot_offset(cls, "_out");
    off_tap = slot_offset(cls, "_tap");
    off_track = slot_offset(cls, "track");
    return Py_BuildValue("(nnn)", off_out, off_tap, off_track);
}

static PyMethodDef module_methods[] = {
    {"setup", (PyCFunction)fast_setup, METH_O,
     "setup(RelaySocket) -> offsets: read its _out, _tap and track slots at their "
     "offsets (-1: by name)"},
    {NULL}
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT,
    "omnirtp.media._fastrelay",
    "MediaPoller's epoll wait and inline relay of plain streams in C.",
    -1,
    module_methods,
};

PyMODINIT_FUNC
PyInit__fastrelay(void)
{
    struct { PyObject **slot; const char *text; } names[] = {
        {&s_out, "_out"}, {&s_tap, "_tap"}, {&s_connected, "connected"},
        {&s_sink, "sink"}, {&s_inline_flow, "inline_flow"}, {&s_packets, "packets"},
        {&s_bytes, "bytes"}, {&s_errors, "errors"}, {&s_last_packet, "last_packet"},
        {&s_track, "track"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*names[i].slot == NULL
                && (*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL)
            return NULL;
    }
    if (PyType_Ready(&LoopType) < 0 || PyType_Ready(&TrackType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    Py_INCREF(&LoopType);
    if (PyModule_AddObject(m, "Loop", (PyObject *)&LoopType) < 0) {
        Py_DECREF(&LoopType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&TrackType);
    if (PyModule_AddObject(m, "Track", (PyObject *)&TrackType) < 0) {
        Py_DECREF(&TrackType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
