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
    N_NAMES
};
static const char *name_texts[N_NAMES] = {
    "observer", "_observers", "namespace", "_verdicts", "formatEvent", "_second",
    "_prefixes", "held", "line", "_write_fast", "_keep", "_now", "_holding",
    "_unflushed", "_MAYBE", "_OWN_KEYS", "\n", "\n\t", "",
};
static PyObject *names[N_NAMES];

/* the text of fmt's pieces from kwargs (str.format_map's), NULL with an
 * error set when a name is missing or a value does not format */
static PyObject *
render(PyObject *pieces, PyObject *kwargs)
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
            PyObject *value = PyDict_GetItemWithError(kwargs, name), *shown, *formatted;
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
fast_text(PyObject *fmt, PyObject *kwargs, PyObject **text)
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

static PyObject *
fast_line(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *logger, *level, *fmt, *kwargs, *installed;
    PyObject *publisher, *observers, *levels, *target;
    PyObject *o = NULL, *namespace = NULL, *text = NULL, *classic = NULL;
    PyObject *now, *when = NULL, *line = NULL, *holding;
    PyObject *result = Py_False;
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    int r;

    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "fast_line takes 5 arguments");
        return NULL;
    }
    if (globals == NULL)
        Py_RETURN_FALSE;
    logger = args[0], level = args[1], fmt = args[2], kwargs = args[3], installed = args[4];
    if (!PyTuple_CheckExact(installed) || PyTuple_GET_SIZE(installed) != 4
            || !PyUnicode_CheckExact(fmt) || !PyDict_CheckExact(kwargs))
        Py_RETURN_FALSE;
    publisher = PyTuple_GET_ITEM(installed, 0);
    observers = PyTuple_GET_ITEM(installed, 1);
    levels = PyTuple_GET_ITEM(installed, 2);
    target = PyTuple_GET_ITEM(installed, 3);

    /* logger.observer is publisher */
    o = PyObject_GetAttr(logger, names[A_OBSERVER]);
    if (o == NULL)
        return NULL;
    r = o == publisher;
    Py_DECREF(o);
    if (!r)
        Py_RETURN_FALSE;
    /* publisher._observers == observers */
    o = PyObject_GetAttr(publisher, names[A_OBSERVERS]);
    if (o == NULL)
        return NULL;
    r = PyObject_RichCompareBool(o, observers, Py_EQ);
    Py_DECREF(o);
    if (r <= 0)
        return r < 0 ? NULL : (Py_INCREF(Py_False), Py_False);
    /* none of the event's own keys */
    while (PyDict_Next(kwargs, &pos, &k, &v)) {
        r = PySet_Contains(own_keys, k);
        if (r != 0)
            return r < 0 ? NULL : (Py_INCREF(Py_False), Py_False);
    }
    /* the levels' verdict for (namespace, level) is "maybe" */
    namespace = PyObject_GetAttr(logger, names[A_NAMESPACE]);
    if (namespace == NULL)
        return NULL;
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
    result = Py_True;
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
    result = Py_False;
done:
    Py_XDECREF(namespace);
    Py_XDECREF(text);
    Py_XDECREF(classic);
    Py_XDECREF(when);
    Py_XDECREF(line);
    Py_INCREF(result);
    return result;
error:
    Py_XDECREF(namespace);
    Py_XDECREF(text);
    Py_XDECREF(classic);
    Py_XDECREF(when);
    Py_XDECREF(line);
    return NULL;
}

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
    return PyModule_Create(&module);
}
