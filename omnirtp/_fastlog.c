/*
 * omnirtp._fastlog: the line of one of omnirtp's log events in C, for the
 * daemon's usual log (twistd's text observer alone behind install()'s
 * level filter).
 *
 * Written for omnirtp from omnirtp/logging.py's _fast_line, whose effects
 * it must have byte for byte: the same line kept (or written) for the same
 * event.  It only takes what it can do exactly and says "not mine" (False)
 * for everything else, before any effect; the caller then makes the event
 * and sends it the general way (the publisher, the filter, the observer).
 * The rare parts it hands to the Python it copies (a line whose start is
 * not kept yet: ClassicText.line; a line written while not held:
 * TextFile._write_fast), so that there is one copy of each.
 *
 * Python interface:
 *   setup(namespace, pieces)
 *       namespace: omnirtp.logging's globals, read per call for ``_now``,
 *       ``_holding`` and ``_unflushed`` (and once for ``_MAYBE`` and
 *       ``_OWN_KEYS``); pieces: a function giving a format's pieces, a
 *       tuple of (literal, name or None, conversion "" "r" "s" or "a",
 *       spec) per ``string.Formatter().parse`` item, or None for a format
 *       this may not render (logging._fast_pieces).
 *   fast_line(logger, level, fmt, kwargs, installed) -> bool
 *       What logging._fast_line(logger, level, fmt, kwargs, installed)
 *       does and returns.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>

static PyObject *globals = NULL;     /* omnirtp.logging's namespace */
static PyObject *pieces_of = NULL;   /* logging._fast_pieces */
static PyObject *maybe = NULL;       /* PredicateResult.maybe */
static PyObject *own_keys = NULL;    /* logging._OWN_KEYS */
static PyObject *cache = NULL;       /* fmt -> pieces, or Py_None */

#define CACHE_MAX 1024

enum {
    A_OBSERVER, A_OBSERVERS, A_NAMESPACE, A_VERDICTS, A_FORMAT_EVENT, A_SECOND,
    A_PREFIXES, A_HELD, A_LINE, A_WRITE_FAST, A_KEEP, G_NOW, G_HOLDING,
    G_UNFLUSHED, G_MAYBE, G_OWN_KEYS, S_NEWLINE, S_NEWLINE_TAB, S_EMPTY,
    G_FAST_LINE, G_INSTALLED, S_FORMAT, S_SELF,
    N_NAMES
};
static const char *name_texts[N_NAMES] = {
    "observer", "_observers", "namespace", "_verdicts", "formatEvent", "_second",
    "_prefixes", "held", "line", "_write_fast", "_keep", "_now", "_holding",
    "_unflushed", "_MAYBE", "_OWN_KEYS", "\n", "\n\t", "",
    "_fast_line", "_installed", "format", "self",
};
static PyObject *names[N_NAMES];

/* an event's keywords: a dict, or a call's keyword names and values */
typedef struct {
    PyObject *dict;             /* or NULL: */
    PyObject *names;            /* a tuple of str */
    PyObject *const *values;
} keywords;

/* the value of keyword ``name`` (borrowed), NULL when there is none (an
 * error set only for a failed look-up) */
static PyObject *
kw_get(keywords *kw, PyObject *name)
{
    Py_ssize_t i, n;
    if (kw->dict != NULL)
        return PyDict_GetItemWithError(kw->dict, name);
    n = PyTuple_GET_SIZE(kw->names);
    for (i = 0; i < n; i++)   /* (interned names, logging._fast_pieces's too) */
        if (PyTuple_GET_ITEM(kw->names, i) == name)
            return kw->values[i];
    for (i = 0; i < n; i++)
        if (PyUnicode_Compare(PyTuple_GET_ITEM(kw->names, i), name) == 0)
            return kw->values[i];
    if (PyErr_Occurred())
        return NULL;
    return NULL;
}

/* 1 when a keyword is one of the event's own keys, 0 when none, -1 error */
static int
kw_own(keywords *kw)
{
    Py_ssize_t pos = 0, i, n;
    PyObject *k, *v;
    int r;
    if (kw->dict != NULL) {
        while (PyDict_Next(kw->dict, &pos, &k, &v)) {
            r = PySet_Contains(own_keys, k);
            if (r != 0)
                return r;
        }
        return 0;
    }
    n = PyTuple_GET_SIZE(kw->names);
    for (i = 0; i < n; i++) {
        r = PySet_Contains(own_keys, PyTuple_GET_ITEM(kw->names, i));
        if (r != 0)
            return r;
    }
    return 0;
}

/* the text of fmt's pieces from the keywords (str.format_map's), NULL with
 * an error set when a name is missing or a value does not format */
static PyObject *
render(PyObject *pieces, keywords *kwargs)
{
    Py_ssize_t n = PyTuple_GET_SIZE(pieces), i, k = 0, count = n;
    PyObject *parts, *text;
    for (i = 0; i < n; i++)
        count += PyTuple_GET_ITEM(PyTuple_GET_ITEM(pieces, i), 1) != Py_None;
    parts = PyList_New(count);
    if (parts == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        PyObject *piece = PyTuple_GET_ITEM(pieces, i);
        PyObject *literal = PyTuple_GET_ITEM(piece, 0);
        PyObject *name = PyTuple_GET_ITEM(piece, 1);
        Py_INCREF(literal);
        PyList_SET_ITEM(parts, k++, literal);
        if (name != Py_None) {
            PyObject *conversion = PyTuple_GET_ITEM(piece, 2);
            PyObject *spec = PyTuple_GET_ITEM(piece, 3);
            PyObject *value = kw_get(kwargs, name), *shown, *formatted;
            if (value == NULL) {
                if (!PyErr_Occurred())
                    PyErr_SetObject(PyExc_KeyError, name);
                goto fail;
            }
            Py_INCREF(value);
            if (PyUnicode_GET_LENGTH(conversion) == 0) {
                shown = value;
            } else {
                Py_UCS4 c = PyUnicode_READ_CHAR(conversion, 0);
                shown = c == 'r' ? PyObject_Repr(value)
                      : c == 's' ? PyObject_Str(value) : PyObject_ASCII(value);
                Py_DECREF(value);
                if (shown == NULL)
                    goto fail;
            }
            formatted = PyObject_Format(shown, spec);
            Py_DECREF(shown);
            if (formatted == NULL)
                goto fail;
            PyList_SET_ITEM(parts, k++, formatted);
        }
    }
    text = PyUnicode_Join(names[S_EMPTY], parts);
    Py_DECREF(parts);
    return text;
fail:
    /* (the unused slots are still NULL: list_dealloc skips them) */
    Py_DECREF(parts);
    return NULL;
}

/* the format's pieces (cached), a new reference to Py_None when this may
 * not render it, NULL on an error */
static PyObject *
pieces_for(PyObject *fmt)
{
    PyObject *pieces = PyDict_GetItemWithError(cache, fmt);
    if (pieces != NULL) {
        Py_INCREF(pieces);
        return pieces;
    }
    if (PyErr_Occurred())
        return NULL;
    pieces = PyObject_CallOneArg(pieces_of, fmt);
    if (pieces == NULL)
        return NULL;
    if (pieces != Py_None) {
        /* checked once here: a tuple of 4-tuples of the kinds render takes */
        Py_ssize_t i;
        int good = PyTuple_CheckExact(pieces);
        for (i = 0; good && i < PyTuple_GET_SIZE(pieces); i++) {
            PyObject *p = PyTuple_GET_ITEM(pieces, i);
            good = PyTuple_CheckExact(p) && PyTuple_GET_SIZE(p) == 4
                && PyUnicode_CheckExact(PyTuple_GET_ITEM(p, 0))
                && (PyTuple_GET_ITEM(p, 1) == Py_None
                    || PyUnicode_CheckExact(PyTuple_GET_ITEM(p, 1)))
                && PyUnicode_CheckExact(PyTuple_GET_ITEM(p, 2))
                && PyUnicode_GET_LENGTH(PyTuple_GET_ITEM(p, 2)) <= 1
                && PyUnicode_CheckExact(PyTuple_GET_ITEM(p, 3));
        }
        if (!good) {
            Py_DECREF(pieces);
            pieces = Py_None;
            Py_INCREF(pieces);
        }
    }
    if (PyDict_GET_SIZE(cache) >= CACHE_MAX)
        PyDict_Clear(cache);
    if (PyDict_SetItem(cache, fmt, pieces) < 0) {
        Py_DECREF(pieces);
        return NULL;
    }
    return pieces;
}

/* 1: the line's text made (*text, maybe empty); 0: not this way (no
 * error set); -1: an error that must go out */
static int
fast_text(PyObject *fmt, keywords *kwargs, PyObject **text)
{
    PyObject *pieces = pieces_for(fmt);
    if (pieces == NULL)
        return -1;
    if (pieces == Py_None) {
        Py_DECREF(pieces);
        return 0;
    }
    *text = render(pieces, kwargs);
    Py_DECREF(pieces);
    if (*text == NULL) {
        /* a missing key, a value that cannot format: the general way
         * (Exception's kinds only, as the Python's except) */
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return -1;
        PyErr_Clear();
        return 0;
    }
    return 1;
}

/* the line of ClassicText ``classic`` for text (not empty) at ``when``:
 * its kept start within the second of its stamp, else its own line() */
static PyObject *
classic_line(PyObject *classic, PyObject *when, PyObject *namespace, PyObject *level,
             PyObject *text)
{
    if (PyFloat_CheckExact(when)) {
        PyObject *second = PyObject_GetAttr(classic, names[A_SECOND]);
        if (second == NULL)
            return NULL;
        if (PyLong_CheckExact(second)) {
            double s = PyLong_AsDouble(second), d;
            Py_DECREF(second);
            if (s == -1.0 && PyErr_Occurred())
                return NULL;
            d = PyFloat_AS_DOUBLE(when) - s;
            if (0.0 <= d && d < 0.9999995) {
                /* classic._prefixes[level][namespace] */
                PyObject *prefixes = PyObject_GetAttr(classic, names[A_PREFIXES]);
                PyObject *prefix = NULL;
                if (prefixes == NULL)
                    return NULL;
                if (PyDict_CheckExact(prefixes)) {
                    prefix = PyDict_GetItemWithError(prefixes, level);
                    if (prefix != NULL && PyDict_CheckExact(prefix))
                        prefix = PyDict_GetItemWithError(prefix, namespace);
                    else if (prefix != NULL)
                        prefix = NULL;
                    if (prefix == NULL && PyErr_Occurred()) {
                        Py_DECREF(prefixes);
                        return NULL;
                    }
                }
                if (prefix != NULL && PyUnicode_CheckExact(prefix)) {
                    PyObject *shown, *line, *whole;
                    Py_INCREF(prefix);
                    Py_DECREF(prefixes);
                    if (PyUnicode_FindChar(text, '\n', 0, PyUnicode_GET_LENGTH(text), 1) >= 0)
                        shown = PyUnicode_Replace(text, names[S_NEWLINE],
                                                  names[S_NEWLINE_TAB], -1);
                    else {
                        shown = text;
                        Py_INCREF(shown);
                    }
                    if (shown == NULL) {
                        Py_DECREF(prefix);
                        return NULL;
                    }
                    line = PyUnicode_Concat(prefix, shown);
                    Py_DECREF(prefix);
                    Py_DECREF(shown);
                    if (line == NULL)
                        return NULL;
                    whole = PyUnicode_Concat(line, names[S_NEWLINE]);
                    Py_DECREF(line);
                    return whole;
                }
                Py_DECREF(prefixes);
            }
        } else {
            Py_DECREF(second);
        }
    }
    return PyObject_CallMethodObjArgs(classic, names[A_LINE], when, namespace, level, text,
                                      NULL);
}

/* TextFile ``target`` keeps ``line`` (TextFile._keep) */
static int
keep(PyObject *target, PyObject *line)
{
    PyObject *held = PyObject_GetAttr(target, names[A_HELD]);
    int r;
    if (held == NULL)
        return -1;
    if (PyList_CheckExact(held)) {
        r = PyList_Append(held, line);
        Py_DECREF(held);
        return r;
    }
    if (held == Py_None) {
        PyObject *unflushed = PyDict_GetItemWithError(globals, names[G_UNFLUSHED]);
        Py_DECREF(held);
        if (unflushed == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_RuntimeError, "omnirtp.logging._unflushed is gone");
            return -1;
        }
        if (PyList_CheckExact(unflushed)) {
            PyObject *list = PyList_New(1);
            if (list == NULL)
                return -1;
            Py_INCREF(line);
            PyList_SET_ITEM(list, 0, line);
            r = PyObject_SetAttr(target, names[A_HELD], list);
            Py_DECREF(list);
            if (r < 0)
                return -1;
            return PyList_Append(unflushed, target);
        }
    } else {
        Py_DECREF(held);
    }
    held = PyObject_CallMethodOneArg(target, names[A_KEEP], line);
    if (held == NULL)
        return -1;
    Py_DECREF(held);
    return 0;
}

/* logging._fast_line: 1 done, 0 not this way (no effect), -1 error */
static int
fast_core(PyObject *logger, PyObject *level, PyObject *fmt, keywords *kwargs,
          PyObject *installed)
{
    PyObject *publisher, *observers, *levels, *target;
    PyObject *o = NULL, *namespace = NULL, *text = NULL, *classic = NULL;
    PyObject *now, *when = NULL, *line = NULL, *holding;
    int result = 0;
    PyObject *v;
    int r;

    if (globals == NULL || !PyTuple_CheckExact(installed) || PyTuple_GET_SIZE(installed) != 4
            || PyTuple_GET_ITEM(installed, 3) == Py_None || !PyUnicode_CheckExact(fmt))
        return 0;
    publisher = PyTuple_GET_ITEM(installed, 0);
    observers = PyTuple_GET_ITEM(installed, 1);
    levels = PyTuple_GET_ITEM(installed, 2);
    target = PyTuple_GET_ITEM(installed, 3);

    /* logger.observer is publisher */
    o = PyObject_GetAttr(logger, names[A_OBSERVER]);
    if (o == NULL)
        return -1;
    r = o == publisher;
    Py_DECREF(o);
    if (!r)
        return 0;
    /* publisher._observers == observers */
    o = PyObject_GetAttr(publisher, names[A_OBSERVERS]);
    if (o == NULL)
        return -1;
    r = PyObject_RichCompareBool(o, observers, Py_EQ);
    Py_DECREF(o);
    if (r <= 0)
        return r;
    /* none of the event's own keys */
    r = kw_own(kwargs);
    if (r != 0)
        return r < 0 ? -1 : 0;
    /* the levels' verdict for (namespace, level) is "maybe" */
    namespace = PyObject_GetAttr(logger, names[A_NAMESPACE]);
    if (namespace == NULL)
        return -1;
    o = PyObject_GetAttr(levels, names[A_VERDICTS]);
    if (o == NULL)
        goto error;
    if (!PyDict_CheckExact(o)) {
        Py_DECREF(o);
        goto no;
    }
    /* levels._verdicts[level][namespace] */
    v = PyDict_GetItemWithError(o, level);
    if (v != NULL && PyDict_CheckExact(v))
        v = PyDict_GetItemWithError(v, namespace);
    else if (v != NULL)
        v = NULL;  /* (not a dict: not this way) */
    Py_DECREF(o);
    if (v != maybe) {
        if (v == NULL && PyErr_Occurred())
            goto error;
        goto no;
    }
    r = fast_text(fmt, kwargs, &text);
    if (r <= 0) {
        if (r < 0)
            goto error;
        goto no;
    }
    result = 1;
    if (PyUnicode_GET_LENGTH(text) == 0)
        goto done;
    classic = PyObject_GetAttr(target, names[A_FORMAT_EVENT]);
    if (classic == NULL)
        goto error;
    now = PyDict_GetItemWithError(globals, names[G_NOW]);
    if (now == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "omnirtp.logging._now is gone");
        goto error;
    }
    when = PyObject_CallNoArgs(now);
    if (when == NULL)
        goto error;
    line = classic_line(classic, when, namespace, level, text);
    if (line == NULL)
        goto error;
    holding = PyDict_GetItemWithError(globals, names[G_HOLDING]);
    if (holding == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "omnirtp.logging._holding is gone");
        goto error;
    }
    r = PyObject_IsTrue(holding);
    if (r < 0)
        goto error;
    if (r) {
        if (keep(target, line) < 0)
            goto error;
    } else {
        o = PyObject_CallMethodOneArg(target, names[A_WRITE_FAST], line);
        if (o == NULL)
            goto error;
        Py_DECREF(o);
    }
    goto done;
no:
    result = 0;
done:
    Py_XDECREF(namespace);
    Py_XDECREF(text);
    Py_XDECREF(classic);
    Py_XDECREF(when);
    Py_XDECREF(line);
    return result;
error:
    Py_XDECREF(namespace);
    Py_XDECREF(text);
    Py_XDECREF(classic);
    Py_XDECREF(when);
    Py_XDECREF(line);
    return -1;
}

static PyObject *
fast_line(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    keywords kw = {NULL, NULL, NULL};
    int r;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "fast_line takes 5 arguments");
        return NULL;
    }
    if (!PyDict_CheckExact(args[3]))
        Py_RETURN_FALSE;
    kw.dict = args[3];
    r = fast_core(args[0], args[1], args[2], &kw, args[4]);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

/* -- Logger's level methods ------------------------------------------------ */

/* LevelMethod(level, general, event): a Logger level method (``info``,
 * ...) that takes the fast way when logging._fast_line is this module's
 * fast_line and the call is (self, format) with keywords only, calling
 * fast_core with the call's keyword names and values (no dict made), and
 * when that is not taken, ``event(self, format, **kwargs)`` (the Python
 * method without its fast line: it was asked); any other call is
 * ``general(self, *args, **kwargs)``, the Python method, as before. */
typedef struct {
    PyObject_HEAD
    PyObject *level;
    PyObject *general;
    PyObject *event;
    vectorcallfunc vectorcall;
} LevelMethod;

static PyObject *fast_line_function = NULL;   /* this module's fast_line */

static PyObject *
level_call(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    LevelMethod *self = (LevelMethod *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs == 2 && globals != NULL) {
        PyObject *chosen = PyDict_GetItemWithError(globals, names[G_FAST_LINE]);
        PyObject *installed = chosen == NULL ? NULL
            : PyDict_GetItemWithError(globals, names[G_INSTALLED]);
        if (chosen == fast_line_function && installed != NULL && installed != Py_None) {
            keywords kw = {NULL, NULL, NULL};
            static PyObject *empty = NULL;
            int r;
            if (empty == NULL) {
                empty = PyTuple_New(0);
                if (empty == NULL)
                    return NULL;
            }
            kw.names = kwnames == NULL ? empty : kwnames;
            kw.values = args + 2;
            /* (a keyword "format" or "self" with both given: the general
             * way's TypeError) */
            r = PySequence_Contains(kw.names, names[S_FORMAT]);
            if (r == 0)
                r = PySequence_Contains(kw.names, names[S_SELF]);
            if (r < 0)
                return NULL;
            if (r == 0) {
                /* (held: the line's own Python could rebind _installed) */
                Py_INCREF(installed);
                r = fast_core(args[0], self->level, args[1], &kw, installed);
                Py_DECREF(installed);
                if (r < 0)
                    return NULL;
                if (r > 0)
                    Py_RETURN_NONE;
                /* not this way: the event, without asking again */
                return PyObject_Vectorcall(self->event, args, nargsf, kwnames);
            }
        } else if (PyErr_Occurred()) {
            return NULL;
        }
    }
    return PyObject_Vectorcall(self->general, args, nargsf, kwnames);
}

static PyObject *
level_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    LevelMethod *self;
    PyObject *level, *general, *event;
    if (!PyArg_ParseTuple(args, "OOO:LevelMethod", &level, &general, &event))
        return NULL;
    self = (LevelMethod *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    Py_INCREF(level);
    self->level = level;
    Py_INCREF(general);
    self->general = general;
    Py_INCREF(event);
    self->event = event;
    self->vectorcall = level_call;
    return (PyObject *)self;
}

static void
level_dealloc(LevelMethod *self)
{
    Py_XDECREF(self->level);
    Py_XDECREF(self->general);
    Py_XDECREF(self->event);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
level_get(PyObject *self, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None) {
        Py_INCREF(self);
        return self;
    }
    return PyMethod_New(self, obj);
}

static PyObject *
level_getattro(PyObject *self, PyObject *name)
{
    /* __name__, __doc__ & co: the Python method's */
    PyObject *r = PyObject_GenericGetAttr(self, name);
    if (r == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        return PyObject_GetAttr(((LevelMethod *)self)->general, name);
    }
    return r;
}

static PyTypeObject LevelMethodType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "omnirtp._fastlog.LevelMethod",
    .tp_basicsize = sizeof(LevelMethod),
    .tp_dealloc = (destructor)level_dealloc,
    .tp_vectorcall_offset = offsetof(LevelMethod, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_getattro = level_getattro,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_doc = "LevelMethod(level, general, event): a Logger level method, the fast line first.",
    .tp_descr_get = level_get,
    .tp_new = level_new,
};

static PyObject *
fast_setup(PyObject *module, PyObject *args)
{
    PyObject *namespace, *pieces, *m, *keys;
    if (!PyArg_ParseTuple(args, "O!O:setup", &PyDict_Type, &namespace, &pieces))
        return NULL;
    m = PyDict_GetItemWithError(namespace, names[G_MAYBE]);
    keys = m == NULL ? NULL : PyDict_GetItemWithError(namespace, names[G_OWN_KEYS]);
    if (keys == NULL || !PyAnySet_CheckExact(keys)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "not omnirtp.logging's namespace");
        return NULL;
    }
    Py_INCREF(namespace);
    Py_XSETREF(globals, namespace);
    Py_INCREF(pieces);
    Py_XSETREF(pieces_of, pieces);
    Py_INCREF(m);
    Py_XSETREF(maybe, m);
    Py_INCREF(keys);
    Py_XSETREF(own_keys, keys);
    PyDict_Clear(cache);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"setup", fast_setup, METH_VARARGS,
     "setup(namespace, pieces): omnirtp.logging's globals and _fast_pieces."},
    {"fast_line", (PyCFunction)(void (*)(void))fast_line, METH_FASTCALL,
     "fast_line(logger, level, fmt, kwargs, installed) -> bool: logging._fast_line."},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "omnirtp._fastlog",
    "The line of one of omnirtp's log events in C (omnirtp/logging.py's _fast_line).",
    -1, methods
};

PyMODINIT_FUNC
PyInit__fastlog(void)
{
    int i;
    for (i = 0; i < N_NAMES; i++) {
        if (names[i] == NULL) {
            names[i] = PyUnicode_InternFromString(name_texts[i]);
            if (names[i] == NULL)
                return NULL;
        }
    }
    if (cache == NULL) {
        cache = PyDict_New();
        if (cache == NULL)
            return NULL;
    }
    if (PyType_Ready(&LevelMethodType) < 0)
        return NULL;
    {
        PyObject *m = PyModule_Create(&module);
        if (m == NULL)
            return NULL;
        Py_INCREF(&LevelMethodType);
        if (PyModule_AddObject(m, "LevelMethod", (PyObject *)&LevelMethodType) < 0) {
            Py_DECREF(&LevelMethodType);
            Py_DECREF(m);
            return NULL;
        }
        fast_line_function = PyObject_GetAttrString(m, "fast_line");
        if (fast_line_function == NULL) {
            Py_DECREF(m);
            return NULL;
        }
        return m;
    }
}
