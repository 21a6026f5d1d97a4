/*
 * omnirtp.media._fastpark: the test of a parked call's configure entries
 * (omnirtp/media/park.py's checked) in C.
 *
 * Written for omnirtp from park.py's checked, whose result it must give.
 * It only takes what it can answer exactly and says "not mine" (None) for
 * anything else, errors included; park.py then runs its pure-Python
 * checked, which gives the result or raises its error.  It changes
 * nothing: it reads the entries and the set and makes new lists.
 *
 * Python interface:
 *   setup(codes, forms, learning_modes)
 *       ``codes``: an exact dict of every key a plain entry may have (str)
 *       to its kind (an int, the K_ values below); ``forms``: park.py's
 *       exact dict of key tuple -> _Form (read, never written here);
 *       ``learning_modes``: the learning words taken (``in`` is asked).
 *   checked(entries, held) -> list, False or None
 *       For ``entries`` an exact list and ``held`` an exact set: False if
 *       an entry is not plain for ``held`` (park.checked's tests),
 *       else ``[(form, values)]`` (each entry's _Form, found in ``forms``
 *       by its key tuple, and a new list of its values).  None when an
 *       entry's key tuple is not in ``forms`` yet, on any error, and before
 *       setup.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* the kinds of a plain entry's keys */
enum {
    K_ANY = 0,       /* any value (strict, handover, asymmetric, reset) */
    K_NONE = 1,      /* None only (ice, dtls, srtp_in, srtp_out) */
    K_LOCAL = 2,     /* a socket key in held */
    K_PEER = 3,      /* None or a socket key in held */
    K_RTCP_PEER = 4, /* the same */
    K_ENDPOINT = 5,  /* None or an exact (str, int) tuple */
    K_LEARNING = 6,  /* None or one of the learning words */
    K_TOS = 7,       /* None or an exact int 0..255 */
    N_KINDS = 8
};

/* entries with more keys than this are not taken (a plain one has 14) */
#define MAX_KEYS 32

static PyObject *codes = NULL;
static PyObject *forms = NULL;
static PyObject *learning = NULL;

static PyObject *
fast_setup(PyObject *self, PyObject *args)
{
    PyObject *c, *f, *l;
    if (!PyArg_ParseTuple(args, "O!O!O", &PyDict_Type, &c, &PyDict_Type, &f, &l))
        return NULL;
    Py_INCREF(c);
    Py_INCREF(f);
    Py_INCREF(l);
    Py_XSETREF(codes, c);
    Py_XSETREF(forms, f);
    Py_XSETREF(learning, l);
    Py_RETURN_NONE;
}

/* 1: the value passes its kind's test, 0: it does not, -1: error */
static int
value_ok(int kind, PyObject *value, PyObject *held)
{
    switch (kind) {
    case K_LOCAL:
        return PySet_Contains(held, value);
    case K_PEER:
    case K_RTCP_PEER:
        return value == Py_None ? 1 : PySet_Contains(held, value);
    case K_ENDPOINT:
        if (value == Py_None)
            return 1;
        return PyTuple_CheckExact(value) && PyTuple_GET_SIZE(value) == 2
               && PyUnicode_CheckExact(PyTuple_GET_ITEM(value, 0))
               && PyLong_CheckExact(PyTuple_GET_ITEM(value, 1));
    case K_LEARNING:
        return value == Py_None ? 1 : PySequence_Contains(learning, value);
    case K_TOS: {
        int overflow;
        long tos;
        if (value == Py_None)
            return 1;
        if (!PyLong_CheckExact(value))
            return 0;
        tos = PyLong_AsLongAndOverflow(value, &overflow);
        return !overflow && tos >= 0 && tos <= 255;
    }
    }
    return 1;
}

/* one entry: 1 and *pair set (a new (form, values) tuple), 0 (not
 * plain), -1 (not mine, or an error: the caller gives None).  The tests
 * in checked's order (the keys, then local, peer, rtcp_peer, endpoint,
 * learning, tos), so an error is met where checked meets it. */
static int
check_entry(PyObject *entry, PyObject *held, PyObject **pair)
{
    Py_ssize_t size, pos = 0, i = 0, at[N_KINDS];
    PyObject *key, *value, *names, *values, *form;
    int kind, result = -1;

    if (!PyDict_CheckExact(entry))
        return 0;
    size = PyDict_GET_SIZE(entry);
    if (size > MAX_KEYS)
        return -1;
    for (kind = 0; kind < N_KINDS; kind++)
        at[kind] = -1;
    names = PyTuple_New(size);
    values = PyList_New(size);
    if (names == NULL || values == NULL)
        goto done;
    /* (exact str keys: nothing here runs Python code, the dict stays as
     * it is while it is read) */
    while (PyDict_Next(entry, &pos, &key, &value)) {
        PyObject *code;
        if (i >= size || !PyUnicode_CheckExact(key))
            goto done;
        Py_INCREF(key);
        PyTuple_SET_ITEM(names, i, key);
        Py_INCREF(value);
        PyList_SET_ITEM(values, i, value);
        code = PyDict_GetItemWithError(codes, key);
        if (code == NULL) {
            if (!PyErr_Occurred())
                result = 0;  /* not a plain key */
            goto done;
        }
        kind = (int)PyLong_AsLong(code);
        if (kind < 0 || kind >= N_KINDS)
            goto done;
        if (kind == K_NONE && value != Py_None) {
            result = 0;
            goto done;
        }
        at[kind] = i;
        i++;
    }
    if (i != size)
        goto done;
    if (at[K_LOCAL] < 0) {
        result = 0;
        goto done;
    }
    for (kind = K_LOCAL; kind < N_KINDS; kind++) {
        int ok;
        if (at[kind] < 0)
            continue;
        ok = value_ok(kind, PyList_GET_ITEM(values, at[kind]), held);
        if (ok < 0)
            goto done;
        if (!ok) {
            result = 0;
            goto done;
        }
    }
    form = PyDict_GetItemWithError(forms, names);
    if (form == NULL)
        goto done;  /* (a new key tuple: park.py makes its form) */
    *pair = PyTuple_Pack(2, form, values);
    result = *pair == NULL ? -1 : 1;
done:
    Py_XDECREF(names);
    Py_XDECREF(values);
    return result;
}

static PyObject *
fast_checked(PyObject *self, PyObject *args)
{
    PyObject *entries, *held, *out;
    Py_ssize_t i, n;

    if (!PyArg_ParseTuple(args, "OO", &entries, &held))
        return NULL;
    if (codes == NULL || !PyList_CheckExact(entries) || !PySet_CheckExact(held))
        Py_RETURN_NONE;
    n = PyList_GET_SIZE(entries);
    out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        PyObject *pair = NULL, *entry;
        int r;
        if (i >= PyList_GET_SIZE(entries))
            goto not_mine;  /* (shortened by a value's __eq__) */
        entry = PyList_GET_ITEM(entries, i);
        Py_INCREF(entry);
        r = check_entry(entry, held, &pair);
        Py_DECREF(entry);
        if (r < 0)
            goto not_mine;
        if (r == 0) {
            Py_DECREF(out);
            Py_RETURN_FALSE;
        }
        PyList_SET_ITEM(out, i, pair);
    }
    return out;
not_mine:
    PyErr_Clear();
    Py_DECREF(out);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"setup", fast_setup, METH_VARARGS,
     "setup(codes, forms, learning_modes): the tables checked reads."},
    {"checked", fast_checked, METH_VARARGS,
     "checked(entries, held) -> [(form, values)], False (not plain) or None (not mine)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "omnirtp.media._fastpark",
    "The test of a parked call's entries in C (see park.py's checked).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__fastpark(void)
{
    return PyModule_Create(&module);
}
