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

static PyMethodDef module_methods[] = {
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
