/*
 * omnirtp.control._fastbencode: the common cases of omnirtp.control.bencode
 * in C, for the ng control protocol's requests and replies.
 *
 * Written for omnirtp from the bencode format (a string is <length>:<bytes>,
 * an integer i<digits>e, a list l...e, a dictionary d<key><value>...e) and
 * from bencode.py, whose results it must give byte for byte.  It only takes
 * what it can answer exactly and says "not mine" (None) for everything
 * else; bencode.py then runs its pure-Python code, which gives the value or
 * the error text.  So no error text lives here.
 *
 * Python interface:
 *   encode(obj) -> bytes, or None
 *       exact dict/list/tuple/str/bytes/bytearray/int/bool, str or bytes
 *       dictionary keys (insertion order), str as UTF-8 with
 *       surrogateescape, ints within 64-bit signed, at most MAX_DEPTH
 *       nested containers.  None for anything else (subclasses, other
 *       types, an int out of range, a str that cannot be encoded, deeper
 *       nesting): bencode.encode then encodes it or raises.
 *   decode_text_prefix(data) -> (value, end), or None
 *       bytes only; what bencode._fast takes: canonical string lengths
 *       (at most 20 digits, no leading zero) and integers (an optional
 *       '-', 1 to 19 digits, no leading zero, no -0, 64-bit signed),
 *       containers closed before the data ends, at most FAST_DEPTH levels,
 *       no duplicate dictionary keys, every string (keys included)
 *       decoded as UTF-8 with surrogateescape.  None otherwise
 *       (bencode.NotFast: the general decoder gives the value or the error).
 *
 * And the first step after the decode, Flags.from_request's fields
 * (omnirtp/control/flags.py, whose Python it must give object for object):
 *   flags_setup(defaults, kinds, sets)
 *       defaults: Flags' fields and their defaults, in field order (a dict,
 *       copied per request); kinds: request key -> (kind, field) for the
 *       keys taken here (flags.py's _FAST_KINDS: FK_* below); sets: the
 *       fields that get a fresh set.
 *   flags_fields(request) -> dict, or None
 *       The Flags' __dict__ that from_request makes, for an exact dict
 *       whose every key is one of ``kinds`` with a value of its usual
 *       shape: an exact str for a str field; for a set field an exact list
 *       of exact str words that as_list keeps whole (no ',', not empty, no
 *       whitespace at either end) and, where the field's words are made
 *       canonical, that canonical() leaves alone (ASCII 0x21-0x7e, no upper
 *       case letter, so no whitespace either); for ``received from`` an
 *       exact list of two exact str; for ``ICE`` an exact str that
 *       canonical() and the '_' -> '-' leave alone; any value for an
 *       ignored key.  None for anything else, before any effect (flags
 *       words, codecs, directions, numbers, unknown keys: from_request's
 *       Python does the request, and logs what it logs), and on any error
 *       (flags_setup not called included).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 64          /* encode: deeper goes to bencode.py */
#define FAST_DEPTH 16         /* bencode._FAST_DEPTH */
#define LENGTH_DIGITS 20      /* bencode._MAX_LENGTH_DIGITS */
#define INT_DIGITS 19         /* bencode._INT_DIGITS */

/* ---- encoding ---------------------------------------------------------- */

/* "not mine": the value is left to bencode.py (no exception set) */
#define NOT_MINE 1
/* a real failure (MemoryError), exception set */
#define FAILED (-1)

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
    char small[4096];
} Buffer;

static int
buf_reserve(Buffer *b, Py_ssize_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap * 2;
    while (cap < b->len + more)
        cap *= 2;
    char *data;
    if (b->data == b->small) {
        data = PyMem_Malloc(cap);
        if (data != NULL)
            memcpy(data, b->small, b->len);
    } else {
        data = PyMem_Realloc(b->data, cap);
    }
    if (data == NULL) {
        PyErr_NoMemory();
        return FAILED;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

/* the decimal digits of v at out (no sign, no terminator): their count */
static int
put_digits(char *out, unsigned long long v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (int i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

static int
put_string(Buffer *b, const char *s, Py_ssize_t n)
{
    /* up to 20 digits and the colon */
    if (buf_reserve(b, n + 24) < 0)
        return FAILED;
    b->len += put_digits(b->data + b->len, (unsigned long long)n);
    b->data[b->len++] = ':';
    memcpy(b->data + b->len, s, n);
    b->len += n;
    return 0;
}

static int
put_text(Buffer *b, PyObject *text)
{
    if (PyUnicode_READY(text) < 0) {
        PyErr_Clear();
        return NOT_MINE;
    }
    if (PyUnicode_IS_ASCII(text))
        return put_string(b, (const char *)PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text));
    /* not PyUnicode_AsUTF8AndSize: it keeps the UTF-8 copy on the str,
       which may live as long as its call.  surrogateescape gives back the
       bytes lone surrogates stand for; what it cannot encode is
       bencode.py's to refuse */
    PyObject *data = PyUnicode_AsEncodedString(text, "utf-8", "surrogateescape");
    if (data == NULL) {
        PyErr_Clear();
        return NOT_MINE;
    }
    int r = put_string(b, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data));
    Py_DECREF(data);
    return r;
}

static int put_value(Buffer *b, PyObject *value, int depth);

static int
put_int(Buffer *b, PyObject *value)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow)
        return NOT_MINE;   /* bencode.py raises its ValueError */
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return NOT_MINE;
    }
    if (buf_reserve(b, 24) < 0)
        return FAILED;
    char *out = b->data + b->len;
    int n = 0;
    out[n++] = 'i';
    if (v < 0) {
        out[n++] = '-';
        /* the magnitude, INT64_MIN's included */
        n += put_digits(out + n, 0ULL - (unsigned long long)v);
    } else {
        n += put_digits(out + n, (unsigned long long)v);
    }
    out[n++] = 'e';
    b->len += n;
    return 0;
}

static int
put_value(Buffer *b, PyObject *value, int depth)
{
    int r;
    if (PyUnicode_CheckExact(value))
        return put_text(b, value);
    if (PyLong_CheckExact(value) || PyBool_Check(value))
        return put_int(b, value);
    if (PyDict_CheckExact(value)) {
        if (depth >= MAX_DEPTH)
            return NOT_MINE;
        if (buf_reserve(b, 1) < 0)
            return FAILED;
        b->data[b->len++] = 'd';
        Py_ssize_t pos = 0;
        PyObject *key, *item;
        while (PyDict_Next(value, &pos, &key, &item)) {
            if (PyUnicode_CheckExact(key))
                r = put_text(b, key);
            else if (PyBytes_CheckExact(key))
                r = put_string(b, PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key));
            else
                r = NOT_MINE;
            if (r)
                return r;
            if ((r = put_value(b, item, depth + 1)))
                return r;
        }
        if (buf_reserve(b, 1) < 0)
            return FAILED;
        b->data[b->len++] = 'e';
        return 0;
    }
    if (PyList_CheckExact(value) || PyTuple_CheckExact(value)) {
        if (depth >= MAX_DEPTH)
            return NOT_MINE;
        if (buf_reserve(b, 1) < 0)
            return FAILED;
        b->data[b->len++] = 'l';
        /* a list's length is read on every turn: nothing here runs Python
           code, but it costs nothing to be safe */
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(value); i++) {
            if ((r = put_value(b, PySequence_Fast_GET_ITEM(value, i), depth + 1)))
                return r;
        }
        if (buf_reserve(b, 1) < 0)
            return FAILED;
        b->data[b->len++] = 'e';
        return 0;
    }
    if (PyBytes_CheckExact(value))
        return put_string(b, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value));
    if (PyByteArray_CheckExact(value))
        return put_string(b, PyByteArray_AS_STRING(value), PyByteArray_GET_SIZE(value));
    return NOT_MINE;
}

static PyObject *
fb_encode(PyObject *self, PyObject *obj)
{
    Buffer b;
    b.data = b.small;
    b.len = 0;
    b.cap = sizeof(b.small);
    PyObject *result = NULL;
    int r = put_value(&b, obj, 0);
    if (r == 0)
        result = PyBytes_FromStringAndSize(b.data, b.len);
    else if (r == NOT_MINE)
        result = Py_NewRef(Py_None);
    if (b.data != b.small)
        PyMem_Free(b.data);
    return result;
}

/* ---- decoding ---------------------------------------------------------- */

typedef struct {
    const unsigned char *data;
    Py_ssize_t n;
} Input;

#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')

/* A string at *pos (a digit there or not): its text, *pos past it.
   NULL without an exception: not mine; NULL with one: failure. */
static PyObject *
take_string(const Input *in, Py_ssize_t *pos)
{
    Py_ssize_t p = *pos, start = p;
    Py_ssize_t length = 0;
    /* the length: 1 to 20 digits, then ':' (bencode._fast looks for the
       colon in the 21 bytes from here and wants digits before it) */
    while (p < in->n && IS_DIGIT(in->data[p])) {
        if (p - start >= LENGTH_DIGITS)
            return NULL;
        if (length <= in->n)          /* past n it only matters that it is */
            length = length * 10 + (in->data[p] - '0');
        p++;
    }
    if (p == start || p >= in->n || in->data[p] != ':')
        return NULL;
    if (in->data[start] == '0' && p - start > 1)
        return NULL;
    p++;
    if (length > in->n - p)
        return NULL;
    *pos = p + length;
    return PyUnicode_DecodeUTF8((const char *)in->data + p, length, "surrogateescape");
}

static PyObject *
take_int(const Input *in, Py_ssize_t *pos)
{
    Py_ssize_t p = *pos + 1;          /* past the 'i' */
    int negative = 0;
    if (p < in->n && in->data[p] == '-') {
        negative = 1;
        p++;
    }
    Py_ssize_t start = p;
    unsigned long long v = 0;
    while (p < in->n && IS_DIGIT(in->data[p])) {
        if (p - start >= INT_DIGITS)
            return NULL;
        v = v * 10 + (in->data[p] - '0');
        p++;
    }
    if (p == start || p >= in->n || in->data[p] != 'e')
        return NULL;
    if (in->data[start] == '0' && (p - start > 1 || negative))
        return NULL;
    *pos = p + 1;
    if (negative) {
        if (v > (unsigned long long)INT64_MAX + 1)
            return NULL;
        if (v == (unsigned long long)INT64_MAX + 1)
            return PyLong_FromLongLong(INT64_MIN);
        return PyLong_FromLongLong(-(long long)v);
    }
    if (v > (unsigned long long)INT64_MAX)
        return NULL;
    return PyLong_FromLongLong((long long)v);
}

static PyObject *
take_value(const Input *in, Py_ssize_t *pos, int depth)
{
    if (*pos >= in->n)
        return NULL;
    unsigned char c = in->data[*pos];
    if (IS_DIGIT(c))
        return take_string(in, pos);
    if (c == 'i')
        return take_int(in, pos);
    if (c == 'd') {
        if (depth >= FAST_DEPTH)
            return NULL;
        PyObject *out = PyDict_New();
        if (out == NULL)
            return NULL;
        Py_ssize_t p = *pos + 1;
        for (;;) {
            if (p >= in->n)
                goto dict_fail;
            if (in->data[p] == 'e')
                break;
            PyObject *key = take_string(in, &p);
            if (key == NULL)
                goto dict_fail;
            int known = PyDict_Contains(out, key);
            if (known != 0) {         /* a duplicate (or a failure) */
                Py_DECREF(key);
                goto dict_fail;
            }
            PyObject *item = take_value(in, &p, depth + 1);
            if (item == NULL) {
                Py_DECREF(key);
                goto dict_fail;
            }
            int r = PyDict_SetItem(out, key, item);
            Py_DECREF(key);
            Py_DECREF(item);
            if (r < 0)
                goto dict_fail;
        }
        *pos = p + 1;
        return out;
    dict_fail:
        Py_DECREF(out);
        return NULL;
    }
    if (c == 'l') {
        if (depth >= FAST_DEPTH)
            return NULL;
        PyObject *out = PyList_New(0);
        if (out == NULL)
            return NULL;
        Py_ssize_t p = *pos + 1;
        for (;;) {
            if (p >= in->n)
                goto list_fail;
            if (in->data[p] == 'e')
                break;
            PyObject *item = take_value(in, &p, depth + 1);
            if (item == NULL)
                goto list_fail;
            int r = PyList_Append(out, item);
            Py_DECREF(item);
            if (r < 0)
                goto list_fail;
        }
        *pos = p + 1;
        return out;
    list_fail:
        Py_DECREF(out);
        return NULL;
    }
    return NULL;
}

static PyObject *
fb_decode_text_prefix(PyObject *self, PyObject *data)
{
    if (!PyBytes_CheckExact(data))
        Py_RETURN_NONE;
    Input in = {(const unsigned char *)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data)};
    Py_ssize_t pos = 0;
    PyObject *value = take_value(&in, &pos, 0);
    if (value == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    PyObject *result = Py_BuildValue("(Nn)", value, pos);
    return result;
}

/* ---- Flags.from_request's fields --------------------------------------- */

enum { FK_STR = 0, FK_CANON_SET = 1, FK_PLAIN_SET = 2, FK_RECEIVED_FROM = 3,
       FK_IGNORED = 4, FK_ICE = 5, FK_KINDS };

static PyObject *fl_defaults = NULL;  /* dict: field -> default */
static PyObject *fl_kinds = NULL;     /* dict: key -> (kind, field) */
static PyObject *fl_sets = NULL;      /* tuple: the fields made fresh sets */
static PyObject *fl_raw = NULL;       /* "raw" */
static PyObject *fl_unknown = NULL;   /* "unknown" */

/* 1: a word that canonical() gives back unchanged and as_list keeps whole:
   ASCII 0x21-0x7e but ',' and upper case (and '_' when no_underscore) */
static int
canonical_word(PyObject *word, int no_underscore)
{
    Py_ssize_t i, n;
    const Py_UCS1 *p;
    if (PyUnicode_READY(word) < 0 || !PyUnicode_IS_ASCII(word))
        return 0;
    n = PyUnicode_GET_LENGTH(word);
    if (n == 0)
        return 0;
    p = PyUnicode_1BYTE_DATA(word);
    for (i = 0; i < n; i++) {
        Py_UCS1 c = p[i];
        if (c <= 0x20 || c >= 0x7f || c == ',' || (c >= 'A' && c <= 'Z')
                || (no_underscore && c == '_'))
            return 0;
    }
    return 1;
}

/* 1: a word as_list keeps whole and unchanged: no ',', not empty, no
   whitespace (str.strip()'s) at either end */
static int
plain_word(PyObject *word)
{
    Py_ssize_t n;
    if (PyUnicode_READY(word) < 0)
        return 0;
    n = PyUnicode_GET_LENGTH(word);
    if (n == 0)
        return 0;
    if (Py_UNICODE_ISSPACE(PyUnicode_READ_CHAR(word, 0))
            || Py_UNICODE_ISSPACE(PyUnicode_READ_CHAR(word, n - 1)))
        return 0;
    return PyUnicode_FindChar(word, ',', 0, n, 1) == -1;
}

/* add a list's words to a set field; 1 done, 0 not mine, -1 error */
static int
add_words(PyObject *fields, PyObject *field, PyObject *value, int canon)
{
    Py_ssize_t i, n;
    PyObject *target;
    if (!PyList_CheckExact(value))
        return 0;
    n = PyList_GET_SIZE(value);
    for (i = 0; i < n; i++) {
        PyObject *word = PyList_GET_ITEM(value, i);
        if (!PyUnicode_CheckExact(word)
                || !(canon ? canonical_word(word, 0) : plain_word(word)))
            return 0;
    }
    target = PyDict_GetItemWithError(fields, field);  /* borrowed */
    if (target == NULL || !PyAnySet_CheckExact(target))
        return PyErr_Occurred() ? -1 : 0;
    for (i = 0; i < n; i++) {
        if (PySet_Add(target, PyList_GET_ITEM(value, i)) < 0)
            return -1;
    }
    return 1;
}

static PyObject *
fb_flags_setup(PyObject *self, PyObject *args)
{
    PyObject *defaults, *kinds, *sets, *key, *value;
    Py_ssize_t pos = 0, i;
    if (!PyArg_ParseTuple(args, "O!O!O!:flags_setup", &PyDict_Type, &defaults,
                          &PyDict_Type, &kinds, &PyTuple_Type, &sets))
        return NULL;
    while (PyDict_Next(kinds, &pos, &key, &value)) {
        long kind;
        if (!PyTuple_CheckExact(value) || PyTuple_GET_SIZE(value) != 2
                || !PyLong_CheckExact(PyTuple_GET_ITEM(value, 0))
                || !PyUnicode_CheckExact(PyTuple_GET_ITEM(value, 1))) {
            PyErr_SetString(PyExc_TypeError, "flags_setup: kinds maps keys to (int, str)");
            return NULL;
        }
        kind = PyLong_AsLong(PyTuple_GET_ITEM(value, 0));
        if (kind < 0 || kind >= FK_KINDS) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "flags_setup: unknown kind");
            return NULL;
        }
    }
    for (i = 0; i < PyTuple_GET_SIZE(sets); i++) {
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(sets, i))) {
            PyErr_SetString(PyExc_TypeError, "flags_setup: sets holds field names");
            return NULL;
        }
    }
    if (fl_raw == NULL) {
        fl_raw = PyUnicode_InternFromString("raw");
        fl_unknown = PyUnicode_InternFromString("unknown");
        if (fl_raw == NULL || fl_unknown == NULL)
            return NULL;
    }
    Py_INCREF(defaults);
    Py_XSETREF(fl_defaults, defaults);
    Py_INCREF(kinds);
    Py_XSETREF(fl_kinds, kinds);
    Py_INCREF(sets);
    Py_XSETREF(fl_sets, sets);
    Py_RETURN_NONE;
}

/* the fields, or NULL: not mine (no exception) or an error (exception) */
static PyObject *
flags_fields(PyObject *request)
{
    PyObject *fields, *key, *value, *item;
    Py_ssize_t pos = 0, i;
    fields = PyDict_Copy(fl_defaults);
    if (fields == NULL)
        return NULL;
    for (i = 0; i < PyTuple_GET_SIZE(fl_sets); i++) {
        PyObject *fresh = PySet_New(NULL);
        if (fresh == NULL || PyDict_SetItem(fields, PyTuple_GET_ITEM(fl_sets, i), fresh) < 0) {
            Py_XDECREF(fresh);
            goto failed;
        }
        Py_DECREF(fresh);
    }
    if (PyDict_SetItem(fields, fl_raw, request) < 0)
        goto failed;
    item = PyList_New(0);
    if (item == NULL || PyDict_SetItem(fields, fl_unknown, item) < 0) {
        Py_XDECREF(item);
        goto failed;
    }
    Py_DECREF(item);
    while (PyDict_Next(request, &pos, &key, &value)) {
        PyObject *spec, *field;
        int done;
        if (!PyUnicode_CheckExact(key))
            goto not_mine;
        spec = PyDict_GetItemWithError(fl_kinds, key);  /* borrowed */
        if (spec == NULL) {
            if (PyErr_Occurred())
                goto failed;
            goto not_mine;  /* a key only the Python knows (or nobody) */
        }
        field = PyTuple_GET_ITEM(spec, 1);
        switch (PyLong_AsLong(PyTuple_GET_ITEM(spec, 0))) {
        case FK_STR:
            if (!PyUnicode_CheckExact(value))
                goto not_mine;
            if (PyDict_SetItem(fields, field, value) < 0)
                goto failed;
            break;
        case FK_CANON_SET:
        case FK_PLAIN_SET:
            done = add_words(fields, field, value,
                             PyLong_AsLong(PyTuple_GET_ITEM(spec, 0)) == FK_CANON_SET);
            if (done < 0)
                goto failed;
            if (done == 0)
                goto not_mine;
            break;
        case FK_RECEIVED_FROM:
            if (!PyList_CheckExact(value) || PyList_GET_SIZE(value) != 2
                    || !PyUnicode_CheckExact(PyList_GET_ITEM(value, 0))
                    || !PyUnicode_CheckExact(PyList_GET_ITEM(value, 1)))
                goto not_mine;
            item = PyTuple_Pack(2, PyList_GET_ITEM(value, 0), PyList_GET_ITEM(value, 1));
            if (item == NULL || PyDict_SetItem(fields, field, item) < 0) {
                Py_XDECREF(item);
                goto failed;
            }
            Py_DECREF(item);
            break;
        case FK_IGNORED:
            break;
        case FK_ICE:
            if (!PyUnicode_CheckExact(value) || !canonical_word(value, 1))
                goto not_mine;
            if (PyDict_SetItem(fields, field, value) < 0)
                goto failed;
            break;
        default:
            goto not_mine;
        }
    }
    return fields;
not_mine:  /* (no exception set) */
failed:    /* (an exception set) */
    Py_DECREF(fields);
    return NULL;
}

static PyObject *
fb_flags_fields(PyObject *self, PyObject *request)
{
    PyObject *fields;
    if (fl_defaults == NULL || !PyDict_CheckExact(request))
        Py_RETURN_NONE;
    fields = flags_fields(request);
    if (fields == NULL) {
        PyErr_Clear();  /* not mine: from_request's Python does it (and says any error) */
        Py_RETURN_NONE;
    }
    return fields;
}

static PyMethodDef module_methods[] = {
    {"flags_setup", fb_flags_setup, METH_VARARGS,
     "flags_setup(defaults, kinds, sets): the tables of flags_fields (flags.py)"},
    {"flags_fields", fb_flags_fields, METH_O,
     "flags_fields(request) -> Flags.from_request's fields, or None (not mine)"},
    {"encode", fb_encode, METH_O,
     "encode(obj) -> bytes, or None when bencode.py's own encoder must run"},
    {"decode_text_prefix", fb_decode_text_prefix, METH_O,
     "decode_text_prefix(bytes) -> (value, end), or None (bencode.NotFast)"},
    {NULL}
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "omnirtp.control._fastbencode",
    .m_doc = "the common cases of omnirtp.control.bencode, in C",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__fastbencode(void)
{
    return PyModule_Create(&moduledef);
}
