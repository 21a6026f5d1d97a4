/*
 * omnirtp.sdp._fastsdp: the line pass of omnirtp.sdp.model's
 * SessionDescription.parse in C, for the usual SDP.
 *
 * Written for omnirtp from model.py (_split_texts and the loop of parse),
 * whose results it must give object for object.  It only takes what it can
 * answer exactly and says "not mine" (None) for everything else; model.py
 * then runs its pure-Python pass, which gives the parts or the error text.
 * So no error text lives here.
 *
 * Python interface:
 *   setup(Line, directions)
 *       model.py's Line class (its seven slots are set here through their
 *       member descriptors, as ``object.__new__(Line)`` and seven attribute
 *       stores do) and the frozenset of direction attribute names.
 *   split(data) -> (session_lines, sections, scans, eol), or None
 *       ``data`` an exact str whose every line ends in the same ending (all
 *       "\r\n", or all "\n" with no "\r" anywhere; the last line may lack
 *       it), every non-empty line "<ASCII letter>=<value>".  What parse's
 *       loop makes of it: the session's Line list, one list per m= line
 *       (starting with it), one (index, direction, specials) per part, and
 *       the ending; a last line without the ending has eol "".  None
 *       otherwise (other endings, a malformed line, a line whose first
 *       character is not an ASCII letter, setup not called).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Line's slots, in the order they are set */
enum { S_KIND, S_VALUE, S_TEXT, S_EOL, S_NUMBER, S_ATTRIBUTE, S_CONNECTION, N_SLOTS };
static const char *slot_names[N_SLOTS] = {
    "kind", "value", "text", "eol", "number", "attribute", "connection"};

static PyTypeObject *line_type = NULL;
static PyObject *slot_descr[N_SLOTS];
static PyObject *directions = NULL;
static PyObject *str_crlf = NULL, *str_lf = NULL, *str_empty = NULL, *str_rtcp = NULL;

static PyObject *
fast_setup(PyObject *self, PyObject *args)
{
    PyObject *cls, *dirs;
    PyObject *descr[N_SLOTS];
    int i;

    if (!PyArg_ParseTuple(args, "O!O!:setup", &PyType_Type, &cls, &PyFrozenSet_Type, &dirs))
        return NULL;
    for (i = 0; i < N_SLOTS; i++) {
        descr[i] = PyObject_GetAttrString(cls, slot_names[i]);
        if (descr[i] == NULL && PyErr_ExceptionMatches(PyExc_AttributeError))
            PyErr_Clear();  /* (said below: not a slot) */
        if (descr[i] == NULL || Py_TYPE(descr[i]) != &PyMemberDescr_Type) {
            int j;
            for (j = 0; j <= i; j++)
                Py_XDECREF(descr[j]);
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "%s.%s is not a slot",
                             ((PyTypeObject *)cls)->tp_name, slot_names[i]);
            return NULL;
        }
    }
    for (i = 0; i < N_SLOTS; i++) {
        Py_XSETREF(slot_descr[i], descr[i]);
    }
    Py_INCREF(cls);
    Py_XSETREF(line_type, (PyTypeObject *)cls);
    Py_INCREF(dirs);
    Py_XSETREF(directions, dirs);
    Py_RETURN_NONE;
}

/* store ``value`` (a new reference, stolen) in slot ``i`` of ``line``;
   -1 with an exception set on failure */
static int
set_slot(PyObject *line, int i, PyObject *value)
{
    int rc;
    if (value == NULL)
        return -1;
    rc = Py_TYPE(slot_descr[i])->tp_descr_set(slot_descr[i], line, value);
    Py_DECREF(value);
    return rc;
}

/* a new reference to ``o`` (for set_slot) */
static PyObject *
ref(PyObject *o)
{
    Py_INCREF(o);
    return o;
}

/* a new (index, direction, specials) tuple; steals nothing */
static PyObject *
scan_tuple(PyObject *index, PyObject *direction, PyObject *specials)
{
    return PyTuple_Pack(3, index, direction, specials);
}

static PyObject *
fast_split(PyObject *self, PyObject *arg)
{
    Py_ssize_t n, i, start, number, crlf = 0, cr = 0, lf = 0, eol_len;
    int kind;
    const void *data;
    PyObject *eol, *session = NULL, *sections = NULL, *scans = NULL, *current;
    PyObject *index = NULL, *direction = Py_None, *specials = NULL, *last = NULL;
    PyObject *result = NULL;

    if (line_type == NULL || !PyUnicode_CheckExact(arg))
        Py_RETURN_NONE;
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(arg) < 0)
        return NULL;
#endif
    n = PyUnicode_GET_LENGTH(arg);
    kind = PyUnicode_KIND(arg);
    data = PyUnicode_DATA(arg);
    /* the endings (_split_texts): all CRLF, or LF with no CR at all */
    for (i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c == '\r') {
            cr++;
            if (i + 1 < n && PyUnicode_READ(kind, data, i + 1) == '\n')
                crlf++;
        }
        else if (c == '\n')
            lf++;
    }
    if (cr == crlf && lf == crlf) {
        eol = str_crlf;
        eol_len = 2;
    }
    else if (cr == 0) {
        eol = str_lf;
        eol_len = 1;
    }
    else
        Py_RETURN_NONE;

    session = PyList_New(0);
    sections = PyList_New(0);
    scans = PyList_New(0);
    index = PyDict_New();
    specials = PyList_New(0);
    if (!session || !sections || !scans || !index || !specials)
        goto fail;
    Py_INCREF(direction);
    current = session;  /* borrowed: held by session or sections */
    number = 0;
    start = 0;
    while (start < n) {
        Py_ssize_t end, stop;
        PyObject *line;
        Py_UCS4 k;

        /* this line's end (its ending's start), and where the next starts */
        end = start;
        if (eol_len == 2) {
            while (end < n && PyUnicode_READ(kind, data, end) != '\r')
                end++;
        }
        else {
            while (end < n && PyUnicode_READ(kind, data, end) != '\n')
                end++;
        }
        stop = end < n ? end + eol_len : n;
        number++;
        line = line_type->tp_alloc(line_type, 0);
        if (line == NULL)
            goto fail;
        if (end == start) {
            /* Line("", "", eol, number) */
            if (set_slot(line, S_KIND, ref(str_empty)) < 0
                    || set_slot(line, S_VALUE, ref(str_empty)) < 0
                    || set_slot(line, S_TEXT, ref(str_empty)) < 0
                    || set_slot(line, S_EOL, ref(eol)) < 0
                    || set_slot(line, S_NUMBER, PyLong_FromSsize_t(number)) < 0
                    || set_slot(line, S_ATTRIBUTE, ref(Py_None)) < 0
                    || set_slot(line, S_CONNECTION, ref(Py_None)) < 0
                    || PyList_Append(current, line) < 0) {
                Py_DECREF(line);
                goto fail;
            }
        }
        else {
            PyObject *value;
            k = PyUnicode_READ(kind, data, start);
            if (end - start < 2 || PyUnicode_READ(kind, data, start + 1) != '='
                    || !((k >= 'a' && k <= 'z') || (k >= 'A' && k <= 'Z'))) {
                /* malformed, or a kind only model.py judges: not mine */
                Py_DECREF(line);
                goto not_mine;
            }
            if (set_slot(line, S_KIND, PyUnicode_Substring(arg, start, start + 1)) < 0)
                goto fail_line;
            value = PyUnicode_Substring(arg, start + 2, end);
            if (value == NULL)
                goto fail_line;
            Py_INCREF(value);
            if (set_slot(line, S_VALUE, value) < 0
                    || set_slot(line, S_TEXT, PyUnicode_Substring(arg, start, end)) < 0
                    || set_slot(line, S_EOL, ref(eol)) < 0
                    || set_slot(line, S_NUMBER, PyLong_FromSsize_t(number)) < 0
                    || set_slot(line, S_CONNECTION, ref(Py_None)) < 0) {
                Py_DECREF(value);
                goto fail_line;
            }
            if (k == 'a') {
                /* name, colon, rest = value.partition(":") */
                Py_ssize_t colon = PyUnicode_FindChar(value, ':', 0,
                                                      PyUnicode_GET_LENGTH(value), 1);
                PyObject *name, *rest, *values;
                int is_dir;
                if (colon == -2) {
                    Py_DECREF(value);
                    goto fail_line;
                }
                if (colon < 0) {
                    name = value;
                    Py_INCREF(name);
                    rest = Py_None;
                    Py_INCREF(rest);
                }
                else {
                    name = PyUnicode_Substring(value, 0, colon);
                    rest = name ? PyUnicode_Substring(value, colon + 1,
                                                      PyUnicode_GET_LENGTH(value)) : NULL;
                    if (rest == NULL) {
                        Py_XDECREF(name);
                        Py_DECREF(value);
                        goto fail_line;
                    }
                }
                Py_DECREF(value);
                if (set_slot(line, S_ATTRIBUTE, PyTuple_Pack(2, name, rest)) < 0
                        || PyList_Append(current, line) < 0) {
                    Py_DECREF(name);
                    Py_DECREF(rest);
                    goto fail_line;
                }
                values = PyDict_GetItemWithError(index, name);
                if (values == NULL) {
                    if (PyErr_Occurred()) {
                        Py_DECREF(name);
                        Py_DECREF(rest);
                        goto fail_line;
                    }
                    values = PyList_New(1);
                    if (values == NULL) {
                        Py_DECREF(name);
                        Py_DECREF(rest);
                        goto fail_line;
                    }
                    Py_INCREF(rest);
                    PyList_SET_ITEM(values, 0, rest);
                    if (PyDict_SetItem(index, name, values) < 0) {
                        Py_DECREF(values);
                        Py_DECREF(name);
                        Py_DECREF(rest);
                        goto fail_line;
                    }
                    Py_DECREF(values);
                }
                else if (PyList_Append(values, rest) < 0) {
                    Py_DECREF(name);
                    Py_DECREF(rest);
                    goto fail_line;
                }
                if (PyUnicode_Compare(name, str_rtcp) == 0) {
                    if (PyList_Append(specials, line) < 0) {
                        Py_DECREF(name);
                        Py_DECREF(rest);
                        goto fail_line;
                    }
                }
                else if (rest == Py_None) {
                    is_dir = PySet_Contains(directions, name);
                    if (is_dir < 0) {
                        Py_DECREF(name);
                        Py_DECREF(rest);
                        goto fail_line;
                    }
                    if (is_dir) {
                        Py_INCREF(name);
                        Py_SETREF(direction, name);
                    }
                }
                Py_DECREF(name);
                Py_DECREF(rest);
            }
            else {
                Py_DECREF(value);
                if (set_slot(line, S_ATTRIBUTE, ref(Py_None)) < 0)
                    goto fail_line;
                if (k == 'm') {
                    /* the part before ends: its scan; a new section */
                    PyObject *scan = scan_tuple(index, direction, specials);
                    PyObject *section;
                    if (scan == NULL || PyList_Append(scans, scan) < 0) {
                        Py_XDECREF(scan);
                        goto fail_line;
                    }
                    Py_DECREF(scan);
                    Py_SETREF(index, PyDict_New());
                    Py_SETREF(specials, PyList_New(0));
                    Py_INCREF(Py_None);
                    Py_SETREF(direction, Py_None);
                    if (index == NULL || specials == NULL)
                        goto fail_line;
                    section = PyList_New(1);
                    if (section == NULL)
                        goto fail_line;
                    Py_INCREF(line);
                    PyList_SET_ITEM(section, 0, line);
                    if (PyList_Append(sections, section) < 0) {
                        Py_DECREF(section);
                        goto fail_line;
                    }
                    Py_DECREF(section);  /* held by sections */
                    current = section;
                }
                else {
                    if (k == 'c' && PyList_Append(specials, line) < 0)
                        goto fail_line;
                    if (PyList_Append(current, line) < 0)
                        goto fail_line;
                }
            }
        }
        Py_XSETREF(last, line);  /* (the reference from tp_alloc) */
        start = stop;
        continue;
    fail_line:
        Py_DECREF(line);
        goto fail;
    }
    {
        PyObject *scan = scan_tuple(index, direction, specials);
        if (scan == NULL || PyList_Append(scans, scan) < 0) {
            Py_XDECREF(scan);
            goto fail;
        }
        Py_DECREF(scan);
    }
    /* the last line, unterminated: no ending */
    if (last != NULL && !(n >= eol_len && PyUnicode_READ(kind, data, n - 1) == '\n')) {
        if (set_slot(last, S_EOL, ref(str_empty)) < 0)
            goto fail;
    }
    result = PyTuple_Pack(4, session, sections, scans, eol);
    goto done;
not_mine:
    result = Py_None;
    Py_INCREF(result);
    goto done;
fail:
    result = NULL;
done:
    Py_XDECREF(last);
    Py_XDECREF(session);
    Py_XDECREF(sections);
    Py_XDECREF(scans);
    Py_XDECREF(index);
    Py_XDECREF(specials);
    Py_XDECREF(direction);
    return result;
}

static PyMethodDef methods[] = {
    {"setup", fast_setup, METH_VARARGS,
     "setup(Line, directions): the Line class and the direction attribute names."},
    {"split", fast_split, METH_O,
     "split(data) -> (session_lines, sections, scans, eol), or None: parse's line pass."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "omnirtp.sdp._fastsdp",
    "The line pass of omnirtp.sdp.model's parse in C (see model.py).", -1, methods};

PyMODINIT_FUNC
PyInit__fastsdp(void)
{
    str_crlf = PyUnicode_InternFromString("\r\n");
    str_lf = PyUnicode_InternFromString("\n");
    str_empty = PyUnicode_InternFromString("");
    str_rtcp = PyUnicode_InternFromString("rtcp");
    if (!str_crlf || !str_lf || !str_empty || !str_rtcp)
        return NULL;
    return PyModule_Create(&module);
}
