/*
 * omnirtp.sdp._fastsdp: omnirtp.sdp.model's SessionDescription.parse and
 * inspect, and omnirtp.sdp.rewrite's rewrite, in C, for the usual SDP.
 *
 * Written for omnirtp from model.py and rewrite.py, whose results each
 * function must give object for object (or text for text).  Each only
 * takes what it can answer exactly and says "not mine" (None) for
 * everything else, before it changes anything; model.py or rewrite.py
 * then does the work in Python and gives the parts, the text or the error
 * text.  So no error text lives here.
 *
 * Python interface:
 *   setup(Line, directions)
 *       model.py's Line class (its seven slots are set here at their
 *       member descriptors' offsets, as ``object.__new__(Line)`` and seven
 *       attribute stores do) and the frozenset of direction attribute names.
 *   split(data) -> (session_lines, sections, scans, eol), or None
 *       ``data`` an exact str whose every line ends in the same ending (all
 *       "\r\n", or all "\n" with no "\r" anywhere; the last line may lack
 *       it), every non-empty line "<ASCII letter>=<value>".  What parse's
 *       line pass makes of it: the session's Line list, one list per m=
 *       line (starting with it), one (index, direction, specials) per part,
 *       and the ending; a last line without the ending has eol "".  None
 *       otherwise (other endings, a malformed line, a line whose first
 *       character is not an ASCII letter, setup not called).
 *   setup_parts(...), parts(data) -> (session, media), or None
 *       The whole of parse but making the SessionDescription (see parts).
 *   setup_inspect(...), inspect(sd) -> [MediaInfo], or None
 *       model.py's inspect (see inspect).
 *   setup_rewrite(...), rewrite(sd, plan) -> str, or None
 *       rewrite.py's rewrite for the usual plan (see rewrite).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

/* hold each of ``values`` in its variable of ``vars`` (setup's) */
static void
keep_all(PyObject **vars[], PyObject *values[], int n)
{
    int i;
    for (i = 0; i < n; i++) {
        Py_INCREF(values[i]);
        Py_XSETREF(*vars[i], values[i]);
    }
}

/* Line's slots, in the order they are set */
enum { S_KIND, S_VALUE, S_TEXT, S_EOL, S_NUMBER, S_ATTRIBUTE, S_CONNECTION, N_SLOTS };
static const char *slot_names[N_SLOTS] = {
    "kind", "value", "text", "eol", "number", "attribute", "connection"};

static PyTypeObject *line_type = NULL;
static PyObject *slot_descr[N_SLOTS];
static Py_ssize_t slot_offsets[N_SLOTS];
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
        if (descr[i] == NULL || Py_TYPE(descr[i]) != &PyMemberDescr_Type
                || ((PyMemberDescrObject *)descr[i])->d_member->type != T_OBJECT_EX
                || (((PyMemberDescrObject *)descr[i])->d_member->flags & READONLY)) {
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
        slot_offsets[i] = ((PyMemberDescrObject *)descr[i])->d_member->offset;
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
    PyObject **where, *old;
    if (value == NULL)
        return -1;
    /* (what the member descriptor's set does: the slot's reference) */
    where = (PyObject **)((char *)line + slot_offsets[i]);
    old = *where;
    *where = value;
    Py_XDECREF(old);
    return 0;
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
    if (kind == PyUnicode_1BYTE_KIND) {
        /* (the usual text: its bytes) */
        const Py_UCS1 *d = data;
        for (i = 0; i < n; i++) {
            Py_UCS1 c = d[i];
            if (c > '\r')
                continue;
            if (c == '\r') {
                cr++;
                if (i + 1 < n && d[i + 1] == '\n')
                    crlf++;
            }
            else if (c == '\n')
                lf++;
        }
    }
    else {
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
        if (kind == PyUnicode_1BYTE_KIND) {
            const Py_UCS1 *hit = memchr((const Py_UCS1 *)data + start,
                                        eol_len == 2 ? '\r' : '\n', n - start);
            end = hit ? hit - (const Py_UCS1 *)data : n;
        }
        else if (eol_len == 2) {
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

/* ------------------------------------------------------------------ */
/*
 * rewrite(sd, plan) -> str, or None: omnirtp.sdp.rewrite's rewrite for the
 * usual description and plan (see setup_rewrite), the same text.  None
 * ("not mine", before anything is changed: rewrite changes nothing) for
 * anything else: a rejected section (port 0), codec filtering or planned
 * formats, a value of another type than rewrite.py's plans and model.py's
 * parse make, a c= line not parsed; rewrite.py then does the work and says
 * every error.
 */

/* the classes and sets setup_rewrite was given */
static PyTypeObject *t_sd, *t_session, *t_section, *t_conn, *t_splan, *t_mplan, *t_iceplan,
    *t_codecops;
static PyObject *session_dropped, *ice_attributes, *media_owned, *static_rtpmaps;
static Py_ssize_t off_kind = -1, off_value, off_text, off_attribute, off_connection;
/* interned names and texts */
static PyObject *n_session, *n_media, *n_lines, *n_formats, *n_proto, *n_family, *n_address,
    *n_replace_origin, *n_loop_protect, *n_ice_lite, *n_keep_zero_address, *n_port,
    *n_rtcp_port, *n_rtcp_mux, *n_full_rtcp_attribute, *n_protocol, *n_direction, *n_ice,
    *n_codecs, *n_ptime, *n_keep_mid, *n_crypto, *n_dtls, *n_mid, *n_ufrag, *n_pwd,
    *n_candidates, *n_trickle, *n_strip, *n_mask, *n_offer, *n_except, *n_rtpmaps_cache,
    *n_attrs;
static PyObject *s_m_eq, *s_space, *s_zero4, *s_zero6, *s_mid, *s_rtpmap, *s_fmtp, *s_rtcp_fb, *s_star;

/* the offset of slot ``name`` of ``cls`` (a member descriptor), or -1
   with TypeError set */
static Py_ssize_t
slot_offset(PyTypeObject *cls, const char *name)
{
    PyObject *descr = PyObject_GetAttrString((PyObject *)cls, name);
    Py_ssize_t offset;
    if (descr == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", cls->tp_name, name);
        }
        return -1;
    }
    if (Py_TYPE(descr) != &PyMemberDescr_Type
            || ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
        Py_DECREF(descr);
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", cls->tp_name, name);
        return -1;
    }
    offset = ((PyMemberDescrObject *)descr)->d_member->offset;
    Py_DECREF(descr);
    return offset;
}

static PyObject *
fast_setup_rewrite(PyObject *self, PyObject *args)
{
    PyTypeObject *classes[9];
    PyObject *sets[3], *statics;
    Py_ssize_t offs[5];
    const char *names[5] = {"kind", "value", "text", "attribute", "connection"};
    int i;

    if (!PyArg_ParseTuple(args, "O!O!O!O!O!O!O!O!O!O!O!O!O!:setup_rewrite",
                          &PyType_Type, &classes[0], &PyType_Type, &classes[1],
                          &PyType_Type, &classes[2], &PyType_Type, &classes[3],
                          &PyType_Type, &classes[4], &PyType_Type, &classes[5],
                          &PyType_Type, &classes[6], &PyType_Type, &classes[7],
                          &PyType_Type, &classes[8],
                          &PyFrozenSet_Type, &sets[0], &PyFrozenSet_Type, &sets[1],
                          &PyFrozenSet_Type, &sets[2], &PyDict_Type, &statics))
        return NULL;
    /* classes[0] is Line: its slots */
    for (i = 0; i < 5; i++) {
        offs[i] = slot_offset(classes[0], names[i]);
        if (offs[i] < 0)
            return NULL;
    }
    off_kind = offs[0];
    off_value = offs[1];
    off_text = offs[2];
    off_attribute = offs[3];
    off_connection = offs[4];
    {
        PyObject **vars[] = {
            (PyObject **)&t_sd, (PyObject **)&t_session, (PyObject **)&t_section,
            (PyObject **)&t_conn, (PyObject **)&t_splan, (PyObject **)&t_mplan,
            (PyObject **)&t_iceplan, (PyObject **)&t_codecops,
            &session_dropped, &ice_attributes, &media_owned, &static_rtpmaps};
        PyObject *values[] = {
            (PyObject *)classes[1], (PyObject *)classes[2], (PyObject *)classes[3],
            (PyObject *)classes[4], (PyObject *)classes[5], (PyObject *)classes[6],
            (PyObject *)classes[7], (PyObject *)classes[8], sets[0], sets[1], sets[2], statics};
        keep_all(vars, values, 12);
    }
    Py_RETURN_NONE;
}

/* the pieces of the text, in order (each one held) */
typedef struct {
    PyObject **items;
    Py_ssize_t n, cap, length;
    Py_UCS4 maxchar;
    PyObject *small[96];
} writer;

/* add the str ``s`` (held here); -1 on failure */
static int
w_add(writer *w, PyObject *s)
{
    if (w->n == w->cap) {
        Py_ssize_t cap = w->cap * 2;
        PyObject **items;
        if (w->items == w->small) {
            items = PyMem_Malloc(cap * sizeof(PyObject *));
            if (items != NULL)
                memcpy(items, w->small, w->n * sizeof(PyObject *));
        }
        else
            items = PyMem_Realloc(w->items, cap * sizeof(PyObject *));
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        w->items = items;
        w->cap = cap;
    }
    Py_INCREF(s);
    w->items[w->n++] = s;
    w->length += PyUnicode_GET_LENGTH(s);
    {
        Py_UCS4 max = PyUnicode_MAX_CHAR_VALUE(s);
        if (max > w->maxchar)
            w->maxchar = max;
    }
    return 0;
}

/* the same with a new reference (NULL: failed already) */
static int
w_steal(writer *w, PyObject *s)
{
    int rc;
    if (s == NULL)
        return -1;
    rc = w_add(w, s);
    Py_DECREF(s);
    return rc;
}

/* the str of each ASCII literal w_ascii was given, made once (the
   literals' addresses as keys: a few dozen) */
static struct { const char *text; PyObject *str; } literals[48];
static int n_literals = 0;

/* add the ASCII literal ``text`` */
static int
w_ascii(writer *w, const char *text)
{
    int i;
    PyObject *str;
    for (i = 0; i < n_literals; i++) {
        if (literals[i].text == text)
            return w_add(w, literals[i].str);
    }
    str = PyUnicode_InternFromString(text);
    if (str == NULL)
        return -1;
    if (n_literals < (int)(sizeof(literals) / sizeof(literals[0]))) {
        literals[n_literals].text = text;
        literals[n_literals++].str = str;  /* (held for good) */
        return w_add(w, str);
    }
    return w_steal(w, str);
}

/* the end of a line */
static int
w_eol(writer *w)
{
    return w_add(w, str_crlf);
}

static void
w_clear(writer *w)
{
    Py_ssize_t i;
    for (i = 0; i < w->n; i++)
        Py_DECREF(w->items[i]);
    if (w->items != w->small)
        PyMem_Free(w->items);
}

static PyObject *
w_finish(writer *w)
{
    PyObject *out = PyUnicode_New(w->length, w->maxchar);
    Py_ssize_t i, at = 0;
    if (out == NULL)
        return NULL;
    if (w->maxchar < 128) {
        /* (all ASCII, the usual text: each piece's bytes) */
        Py_UCS1 *data = PyUnicode_1BYTE_DATA(out);
        for (i = 0; i < w->n; i++) {
            Py_ssize_t len = PyUnicode_GET_LENGTH(w->items[i]);
            memcpy(data + at, PyUnicode_1BYTE_DATA(w->items[i]), len);
            at += len;
        }
        return out;
    }
    for (i = 0; i < w->n; i++) {
        Py_ssize_t len = PyUnicode_GET_LENGTH(w->items[i]);
        if (PyUnicode_CopyCharacters(out, at, w->items[i], 0, len) < 0) {
            Py_DECREF(out);
            return NULL;
        }
        at += len;
    }
    return out;
}

#define NOT_MINE (-2)

/* str(v) of the exact int ``v`` (a new reference) */
static PyObject *
int_text(PyObject *v)
{
    int overflow;
    long long n = PyLong_AsLongLongAndOverflow(v, &overflow);
    char buf[24], *p = buf + sizeof(buf);
    int negative = n < 0;
    unsigned long long u;
    if (overflow || (n == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return PyObject_Str(v);
    }
    u = negative ? 0ULL - (unsigned long long)n : (unsigned long long)n;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (negative)
        *--p = '-';
    return PyUnicode_FromStringAndSize(p, buf + sizeof(buf) - p);
}

/* ``getattr(o, name)`` as a new reference; NULL with nothing set when the
   attribute is missing (not mine), NULL with an exception on failure */
static PyObject *
attr(PyObject *o, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL && PyErr_ExceptionMatches(PyExc_AttributeError))
        PyErr_Clear();
    return v;
}

/* the truth of ``v`` where rewrite.py tests it, for the types the plans
   hold (None, bool, int, str, list, tuple); NOT_MINE for another */
static int
truth(PyObject *v)
{
    if (v == Py_None)
        return 0;
    if (PyBool_Check(v))
        return v == Py_True;
    if (PyLong_CheckExact(v))
        return Py_SIZE(v) != 0;
    if (PyUnicode_CheckExact(v))
        return PyUnicode_GET_LENGTH(v) != 0;
    if (PyList_CheckExact(v))
        return PyList_GET_SIZE(v) != 0;
    if (PyTuple_CheckExact(v))
        return PyTuple_GET_SIZE(v) != 0;
    return NOT_MINE;
}

/* the truth of attribute ``name`` of ``o``: 0/1, NOT_MINE, or -1 on error */
static int
attr_truth(PyObject *o, PyObject *name)
{
    PyObject *v = attr(o, name);
    int rc;
    if (v == NULL)
        return PyErr_Occurred() ? -1 : NOT_MINE;
    rc = truth(v);
    Py_DECREF(v);
    return rc;
}

/* attribute ``name`` of ``o`` as a new reference when it is of exactly
   the type ``type`` (or None with ``none_ok``); else NULL, with an
   exception on failure */
static PyObject *
attr_typed(PyObject *o, PyObject *name, PyTypeObject *type, int none_ok)
{
    PyObject *v = attr(o, name);
    if (v == NULL || Py_TYPE(v) == type || (none_ok && v == Py_None))
        return v;
    Py_DECREF(v);
    return NULL;
}

#define attr_str(o, name, none_ok) attr_typed(o, name, &PyUnicode_Type, none_ok)
#define attr_int(o, name, none_ok) attr_typed(o, name, &PyLong_Type, none_ok)

/* a Line's slot (borrowed; NULL when unset) */
#define SLOT(line, off) (*(PyObject **)((char *)(line) + (off)))

/* a Line's kind letter: 0 for a blank line, -1 when the line is not one
   parse makes (kind not a str of one character or none) */
static Py_UCS4
line_kind(PyObject *line, PyObject **text)
{
    PyObject *kind;
    if (Py_TYPE(line) != line_type)
        return (Py_UCS4)-1;
    kind = SLOT(line, off_kind);
    *text = SLOT(line, off_text);
    if (kind == NULL || !PyUnicode_CheckExact(kind) || *text == NULL
            || !PyUnicode_CheckExact(*text))
        return (Py_UCS4)-1;
    if (PyUnicode_GET_LENGTH(kind) == 0)
        return 0;
    if (PyUnicode_GET_LENGTH(kind) != 1)
        return (Py_UCS4)-1;
    return PyUnicode_READ_CHAR(kind, 0);
}

/* an a= line's (name, value): 0, or NOT_MINE */
static int
line_attribute(PyObject *line, PyObject **name, PyObject **value)
{
    PyObject *a = SLOT(line, off_attribute);
    if (a == NULL || !PyTuple_CheckExact(a) || PyTuple_GET_SIZE(a) != 2)
        return NOT_MINE;
    *name = PyTuple_GET_ITEM(a, 0);
    *value = PyTuple_GET_ITEM(a, 1);
    if (!PyUnicode_CheckExact(*name) || !(*value == Py_None || PyUnicode_CheckExact(*value)))
        return NOT_MINE;
    return 0;
}

/* _rewrite_connection: add the c= line ``line`` (its text ``text``) as
   rewritten; 0, -1 on error, NOT_MINE */
static int
w_connection(writer *w, PyObject *line, PyObject *text, int keep_zero, PyObject *family,
             PyObject *address)
{
    PyObject *conn = SLOT(line, off_connection), *addr;
    int zero;
    if (conn == NULL || Py_TYPE(conn) != t_conn)
        return NOT_MINE;  /* (None: not parsed) */
    addr = attr(conn, n_address);
    if (addr == NULL)
        return PyErr_Occurred() ? -1 : NOT_MINE;
    if (!PyUnicode_CheckExact(addr)) {
        Py_DECREF(addr);
        return NOT_MINE;
    }
    zero = PyUnicode_Compare(addr, s_zero4) == 0 || PyUnicode_Compare(addr, s_zero6) == 0;
    Py_DECREF(addr);
    if (zero && keep_zero)
        return w_add(w, text) < 0 || w_eol(w) < 0 ? -1 : 0;
    if (w_ascii(w, "c=IN ") < 0 || w_add(w, family) < 0 || w_add(w, s_space) < 0
            || w_add(w, address) < 0 || w_eol(w) < 0)
        return -1;
    return 0;
}

/* the session part (_session_lines); 0, -1, NOT_MINE */
static int
w_session(writer *w, PyObject *session, PyObject *plan, PyObject *mplans, PyObject *family,
          PyObject *address)
{
    PyObject *lines = NULL, *v;
    Py_ssize_t i, n = PyList_GET_SIZE(mplans);
    int all_directed = n > 0, any_ice = 0, replace_origin, keep_zero, ice_lite, rc = NOT_MINE;

    for (i = 0; i < n; i++) {
        PyObject *mp = PyList_GET_ITEM(mplans, i);
        v = attr(mp, n_direction);
        if (v == NULL)
            return PyErr_Occurred() ? -1 : NOT_MINE;
        if (v == Py_None)
            all_directed = 0;
        Py_DECREF(v);
        v = attr(mp, n_ice);
        if (v == NULL)
            return PyErr_Occurred() ? -1 : NOT_MINE;
        if (v != Py_None)
            any_ice = 1;
        Py_DECREF(v);
    }
    replace_origin = attr_truth(plan, n_replace_origin);
    if (replace_origin < 0)
        return replace_origin;
    keep_zero = attr_truth(plan, n_keep_zero_address);
    if (keep_zero < 0)
        return keep_zero;
    lines = attr(session, n_lines);
    if (lines == NULL)
        return PyErr_Occurred() ? -1 : NOT_MINE;
    if (!PyList_CheckExact(lines))
        goto done;
    for (i = 0; i < PyList_GET_SIZE(lines); i++) {
        PyObject *line = PyList_GET_ITEM(lines, i), *text, *name, *value;
        Py_UCS4 kind = line_kind(line, &text);
        if (kind == (Py_UCS4)-1)
            goto done;
        if (kind == 0)
            continue;
        if (kind != 'a') {
            if (kind == 'o' && replace_origin) {
                /* "o=%s IN %s %s" % (" ".join(value.split()[:3]), family, address) */
                PyObject *val = SLOT(line, off_value), *fields;
                Py_ssize_t f;
                if (val == NULL || !PyUnicode_CheckExact(val))
                    goto done;
                {
                    /* the usual value: three fields each followed by one
                       space, no whitespace before: its text up to the
                       third space is what the join gives */
                    Py_ssize_t at = 0, len = PyUnicode_GET_LENGTH(val), spaces = 0;
                    int kind = PyUnicode_KIND(val);
                    const void *data = PyUnicode_DATA(val);
                    Py_UCS4 prev = ' ';
                    for (; at < len; at++) {
                        Py_UCS4 c = PyUnicode_READ(kind, data, at);
                        if (c == ' ') {
                            if (prev == ' ')
                                break;  /* (a space first, or two: split's) */
                            if (++spaces == 3)
                                break;
                        }
                        else if (Py_UNICODE_ISSPACE(c))
                            break;
                        prev = c;
                    }
                    if (spaces == 3 && prev != ' ') {
                        if (w_ascii(w, "o=") < 0
                                || w_steal(w, PyUnicode_Substring(val, 0, at)) < 0
                                || w_ascii(w, " IN ") < 0 || w_add(w, family) < 0
                                || w_add(w, s_space) < 0 || w_add(w, address) < 0
                                || w_eol(w) < 0)
                            goto fail;
                        continue;
                    }
                }
                fields = PyUnicode_Split(val, NULL, -1);
                if (fields == NULL || w_ascii(w, "o=") < 0) {
                    Py_XDECREF(fields);
                    goto fail;
                }
                for (f = 0; f < PyList_GET_SIZE(fields) && f < 3; f++) {
                    if ((f && w_add(w, s_space) < 0)
                            || w_add(w, PyList_GET_ITEM(fields, f)) < 0) {
                        Py_DECREF(fields);
                        goto fail;
                    }
                }
                Py_DECREF(fields);
                if (w_ascii(w, " IN ") < 0 || w_add(w, family) < 0 || w_add(w, s_space) < 0
                        || w_add(w, address) < 0 || w_eol(w) < 0)
                    goto fail;
            }
            else if (kind == 'c') {
                int r = w_connection(w, line, text, keep_zero, family, address);
                if (r == -1)
                    goto fail;
                if (r == NOT_MINE)
                    goto done;
            }
            else if (w_add(w, text) < 0 || w_eol(w) < 0)
                goto fail;
            continue;
        }
        if (line_attribute(line, &name, &value) < 0)
            goto done;
        {
            int drop = PySet_Contains(session_dropped, name);
            if (drop < 0)
                goto fail;
            if (!drop && any_ice) {
                drop = PySet_Contains(ice_attributes, name);
                if (drop < 0)
                    goto fail;
            }
            if (!drop && all_directed) {
                drop = PySet_Contains(directions, name);
                if (drop < 0)
                    goto fail;
            }
            if (!drop && (w_add(w, text) < 0 || w_eol(w) < 0))
                goto fail;
        }
    }
    ice_lite = attr_truth(plan, n_ice_lite);
    if (ice_lite < 0) {
        rc = ice_lite;
        goto done;
    }
    if (ice_lite && w_ascii(w, "a=ice-lite\r\n") < 0)
        goto fail;
    v = attr(plan, n_loop_protect);
    if (v == NULL) {
        rc = PyErr_Occurred() ? -1 : NOT_MINE;
        goto done;
    }
    {
        int t = truth(v);
        if (t == 1 && !PyUnicode_CheckExact(v))
            t = NOT_MINE;
        if (t == 1 && (w_ascii(w, "a=rtpengine:") < 0 || w_add(w, v) < 0 || w_eol(w) < 0))
            t = -1;
        Py_DECREF(v);
        if (t < 0) {
            rc = t;
            goto done;
        }
    }
    rc = 0;
    goto done;
fail:
    rc = -1;
done:
    Py_XDECREF(lines);
    return rc;
}

/* append ``text`` to the list under ``pt`` of ``d``; -1 on error */
static int
by_pt_add(PyObject *d, PyObject *pt, PyObject *text)
{
    PyObject *texts = PyDict_GetItemWithError(d, pt);
    if (texts != NULL)
        return PyList_Append(texts, text);
    if (PyErr_Occurred())
        return -1;
    texts = PyList_New(1);
    if (texts == NULL)
        return -1;
    Py_INCREF(text);
    PyList_SET_ITEM(texts, 0, text);
    if (PyDict_SetItem(d, pt, texts) < 0) {
        Py_DECREF(texts);
        return -1;
    }
    Py_DECREF(texts);
    return 0;
}

/* add every text (an exact list of exact str) under ``pt`` of ``d``
   (if any), each a line */
static int
w_by_pt(writer *w, PyObject *d, PyObject *pt)
{
    PyObject *texts = PyDict_GetItemWithError(d, pt);
    Py_ssize_t i;
    if (texts == NULL)
        return PyErr_Occurred() ? -1 : 0;
    for (i = 0; i < PyList_GET_SIZE(texts); i++) {
        if (w_add(w, PyList_GET_ITEM(texts, i)) < 0 || w_eol(w) < 0)
            return -1;
    }
    return 0;
}

/* add "<prefix><each str of the exact list v>" lines; NOT_MINE when v is
   not a list of str */
static int
w_prefixed(writer *w, const char *prefix, PyObject *v)
{
    Py_ssize_t i;
    if (!PyList_CheckExact(v))
        return NOT_MINE;
    for (i = 0; i < PyList_GET_SIZE(v); i++) {
        if (!PyUnicode_CheckExact(PyList_GET_ITEM(v, i)))
            return NOT_MINE;
    }
    for (i = 0; i < PyList_GET_SIZE(v); i++) {
        if (w_ascii(w, prefix) < 0 || w_add(w, PyList_GET_ITEM(v, i)) < 0 || w_eol(w) < 0)
            return -1;
    }
    return 0;
}

/* the a=rtpmap line of format ``pt`` without one in the input (its static
   payload type's, or none); 0, -1, NOT_MINE */
static int
w_static_rtpmap(writer *w, PyObject *pt)
{
    PyObject *text = PyDict_GetItemWithError(static_rtpmaps, pt);
    Py_ssize_t i, n;
    if (text != NULL)
        return w_add(w, text) < 0 || w_eol(w) < 0 ? -1 : 0;
    if (PyErr_Occurred())
        return -1;
    /* none in the table: codec_for gives a Codec without an encoding (no
       line) for a format that is not all decimal digits or is one without
       a leading zero; another (a leading zero, other digits) is not mine */
    if (!PyUnicode_IS_ASCII(pt))
        return NOT_MINE;
    n = PyUnicode_GET_LENGTH(pt);
    for (i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ_CHAR(pt, i);
        if (c < '0' || c > '9')
            return 0;
    }
    if (n > 1 && PyUnicode_READ_CHAR(pt, 0) == '0')
        return NOT_MINE;
    return 0;
}

/* NOT_MINE when the rtpmaps rewrite.py reads of ``media`` (its
   _cached_rtpmaps) may have format ``pt`` though no a=rtpmap line of its
   lines has (lines and attribute index out of step: parse makes them
   together), else 0; -1 on error */
static int
rtpmap_elsewhere(PyObject *media, PyObject *pt)
{
    PyObject *v = attr(media, n_rtpmaps_cache), *values;
    Py_ssize_t i, n;
    int rc = NOT_MINE;
    if (v == NULL)
        return PyErr_Occurred() ? -1 : NOT_MINE;
    if (v != Py_None) {
        if (PyDict_CheckExact(v)) {
            rc = PyDict_Contains(v, pt);
            rc = rc == 1 ? NOT_MINE : rc;
        }
        Py_DECREF(v);
        return rc;
    }
    Py_DECREF(v);
    v = attr(media, n_attrs);
    if (v == NULL)
        return PyErr_Occurred() ? -1 : NOT_MINE;
    if (!PyDict_CheckExact(v))
        goto done;
    values = PyDict_GetItemWithError(v, s_rtpmap);
    if (values == NULL) {
        rc = PyErr_Occurred() ? -1 : 0;
        goto done;
    }
    if (!PyList_CheckExact(values))
        goto done;
    n = PyUnicode_GET_LENGTH(pt);
    for (i = 0; i < PyList_GET_SIZE(values); i++) {
        PyObject *value = PyList_GET_ITEM(values, i);
        if (value == Py_None)
            continue;
        if (!PyUnicode_CheckExact(value))
            goto done;
        /* (value.partition(" ")[0] == pt with something after it) */
        if (PyUnicode_GET_LENGTH(value) > n && PyUnicode_READ_CHAR(value, n) == ' '
                && PyUnicode_Tailmatch(value, pt, 0, n, -1) == 1)
            goto done;
    }
    rc = 0;
done:
    Py_DECREF(v);
    return rc;
}

/* one media section (_media_lines); 0, -1, NOT_MINE */
static int
w_section(writer *w, PyObject *media, PyObject *mp, PyObject *family, PyObject *address)
{
    PyObject *lines = NULL, *formats = NULL, *mtype = NULL, *proto = NULL, *port = NULL;
    PyObject *direction = NULL, *ice = NULL, *v = NULL, *mids = NULL;
    PyObject *rtpmap_d = NULL, *fmtp_d = NULL, *fb_d = NULL, *port_text = NULL;
    Py_ssize_t i, n;
    int rc = NOT_MINE, t, keep_zero, keep_mid;

    if (Py_TYPE(media) != t_section || Py_TYPE(mp) != t_mplan)
        return NOT_MINE;
#define GET(var, expr) do { var = (expr); if (var == NULL) { \
        rc = PyErr_Occurred() ? -1 : NOT_MINE; goto done; } } while (0)
#define TRUTH(var, o, name) do { var = attr_truth(o, name); if (var < 0) { \
        rc = var; goto done; } } while (0)
    /* what is not mine: rejected, planned formats, codec filtering */
    GET(port, attr_int(mp, n_port, 0));
    if (Py_SIZE(port) == 0)
        goto done;
    GET(v, attr(mp, n_formats));
    if (v != Py_None)
        goto done;
    Py_CLEAR(v);
    GET(v, attr(mp, n_codecs));
    if (Py_TYPE(v) != t_codecops)
        goto done;
    {
        PyObject *names[4] = {n_strip, n_mask, n_offer, n_except};
        int k;
        for (k = 0; k < 4; k++) {
            PyObject *list = attr(v, names[k]);
            if (list == NULL) {
                rc = PyErr_Occurred() ? -1 : NOT_MINE;
                goto done;
            }
            t = truth(list);
            Py_DECREF(list);
            if (t != 0) {
                rc = t == -1 ? -1 : NOT_MINE;
                goto done;
            }
        }
    }
    Py_CLEAR(v);
    GET(formats, attr(media, n_formats));
    GET(mtype, attr_str(media, n_media, 0));
    GET(lines, attr(media, n_lines));
    if (!PyList_CheckExact(formats) || !PyList_CheckExact(lines)
            || PyList_GET_SIZE(lines) < 1)
        goto done;
    n = PyList_GET_SIZE(formats);
    for (i = 0; i < n; i++) {
        if (!PyUnicode_CheckExact(PyList_GET_ITEM(formats, i)))
            goto done;
    }
    GET(proto, attr(mp, n_protocol));
    t = truth(proto);
    if (t == NOT_MINE || (t == 1 && !PyUnicode_CheckExact(proto)))
        goto done;
    if (t == 0) {
        Py_CLEAR(proto);
        GET(proto, attr_str(media, n_proto, 0));
    }
    GET(direction, attr_str(mp, n_direction, 1));
    GET(ice, attr(mp, n_ice));
    if (ice != Py_None && Py_TYPE(ice) != t_iceplan && !PyUnicode_CheckExact(ice))
        goto done;
    TRUTH(keep_zero, mp, n_keep_zero_address);
    TRUTH(keep_mid, mp, n_keep_mid);

    /* m=<media> <port> <proto> <formats> */
    port_text = int_text(port);
    if (port_text == NULL)
        goto fail;
    if (w_ascii(w, "m=") < 0 || w_add(w, mtype) < 0 || w_add(w, s_space) < 0
            || w_add(w, port_text) < 0 || w_add(w, s_space) < 0 || w_add(w, proto) < 0
            || w_add(w, s_space) < 0)
        goto fail;
    for (i = 0; i < n; i++) {
        if ((i && w_add(w, s_space) < 0) || w_add(w, PyList_GET_ITEM(formats, i)) < 0)
            goto fail;
    }
    if (w_eol(w) < 0)
        goto fail;
    mids = PyList_New(0);
    rtpmap_d = PyDict_New();
    fmtp_d = PyDict_New();
    fb_d = PyDict_New();
    if (!mids || !rtpmap_d || !fmtp_d || !fb_d)
        goto fail;
    for (i = 1; i < PyList_GET_SIZE(lines); i++) {
        PyObject *line = PyList_GET_ITEM(lines, i), *text, *name, *value;
        Py_UCS4 kind = line_kind(line, &text);
        int in;
        if (kind == (Py_UCS4)-1)
            goto done;
        if (kind != 'a') {
            if (kind == 'c') {
                int r = w_connection(w, line, text, keep_zero, family, address);
                if (r == -1)
                    goto fail;
                if (r == NOT_MINE)
                    goto done;
            }
            else if (kind && (w_add(w, text) < 0 || w_eol(w) < 0))
                goto fail;
            continue;
        }
        if (line_attribute(line, &name, &value) < 0)
            goto done;
        in = PySet_Contains(media_owned, name);
        if (in < 0)
            goto fail;
        if (in)
            continue;
        if (PyUnicode_Compare(name, s_mid) == 0) {
            if (PyList_Append(mids, text) < 0)
                goto fail;
            continue;
        }
        {
            PyObject *d = NULL;
            if (PyUnicode_Compare(name, s_rtpmap) == 0)
                d = rtpmap_d;
            else if (PyUnicode_Compare(name, s_fmtp) == 0)
                d = fmtp_d;
            else if (PyUnicode_Compare(name, s_rtcp_fb) == 0)
                d = fb_d;
            if (d != NULL) {
                /* pt = (value or "").split(" ", 1)[0] */
                PyObject *pt;
                Py_ssize_t len = value == Py_None ? 0 : PyUnicode_GET_LENGTH(value), sp;
                if (len == 0) {
                    pt = str_empty;
                    Py_INCREF(pt);
                }
                else {
                    sp = PyUnicode_FindChar(value, ' ', 0, len, 1);
                    if (sp == -2)
                        goto fail;
                    if (sp < 0) {
                        pt = value;
                        Py_INCREF(pt);
                    }
                    else {
                        pt = PyUnicode_Substring(value, 0, sp);
                        if (pt == NULL)
                            goto fail;
                    }
                }
                if (d == fb_d) {
                    /* rtcp-fb:* lines stay among the others; "*" goes to
                       no format */
                    int star = PyUnicode_Compare(pt, s_star) == 0;
                    if (star && len > 1 && PyUnicode_READ_CHAR(value, 1) == ' '
                            && (w_add(w, text) < 0 || w_eol(w) < 0)) {
                        Py_DECREF(pt);
                        goto fail;
                    }
                    if (star) {
                        Py_DECREF(pt);
                        continue;
                    }
                }
                if (by_pt_add(d, pt, text) < 0) {
                    Py_DECREF(pt);
                    goto fail;
                }
                Py_DECREF(pt);
                continue;
            }
        }
        {
            /* a direction line stays without a planned direction, an ICE
               line without an ICE plan, any other line always */
            int keep = 1;
            in = PySet_Contains(directions, name);
            if (in == 0) {
                in = PySet_Contains(ice_attributes, name);
                if (in == 1)
                    keep = ice == Py_None;
            }
            else if (in == 1)
                keep = direction == Py_None;
            if (in < 0 || (keep && (w_add(w, text) < 0 || w_eol(w) < 0)))
                goto fail;
        }
    }
    if (keep_mid) {
        if (PyList_GET_SIZE(mids)) {
            for (i = 0; i < PyList_GET_SIZE(mids); i++) {
                if (w_add(w, PyList_GET_ITEM(mids, i)) < 0 || w_eol(w) < 0)
                    goto fail;
            }
        }
        else {
            GET(v, attr(mp, n_mid));
            t = truth(v);
            if (t == NOT_MINE || (t == 1 && !PyUnicode_CheckExact(v)))
                goto done;
            if (t == 1 && (w_ascii(w, "a=mid:") < 0 || w_add(w, v) < 0 || w_eol(w) < 0))
                goto fail;
            Py_CLEAR(v);
        }
    }
    /* the codec lines of every format, in m= order */
    for (i = 0; i < n; i++) {
        PyObject *pt = PyList_GET_ITEM(formats, i);
        PyObject *texts = PyDict_GetItemWithError(rtpmap_d, pt);
        if (texts != NULL) {
            if (w_add(w, PyList_GET_ITEM(texts, 0)) < 0 || w_eol(w) < 0)
                goto fail;
        }
        else if (PyErr_Occurred())
            goto fail;
        else {
            int r = rtpmap_elsewhere(media, pt);
            if (r == 0)
                r = w_static_rtpmap(w, pt);
            if (r == -1)
                goto fail;
            if (r == NOT_MINE)
                goto done;
        }
        if (w_by_pt(w, fmtp_d, pt) < 0 || w_by_pt(w, fb_d, pt) < 0)
            goto fail;
    }
    if (direction != Py_None
            && (w_ascii(w, "a=") < 0 || w_add(w, direction) < 0 || w_eol(w) < 0))
        goto fail;
    GET(v, attr_int(mp, n_rtcp_port, 1));
    if (v != Py_None) {
        PyObject *text = int_text(v);
        int full = attr_truth(mp, n_full_rtcp_attribute);
        if (text == NULL || full == -1) {
            Py_XDECREF(text);
            goto fail;
        }
        if (full == NOT_MINE) {
            Py_DECREF(text);
            goto done;
        }
        if (w_ascii(w, "a=rtcp:") < 0 || w_steal(w, text) < 0)
            goto fail;
        if (full && (w_ascii(w, " IN ") < 0 || w_add(w, family) < 0 || w_add(w, s_space) < 0
                     || w_add(w, address) < 0))
            goto fail;
        if (w_eol(w) < 0)
            goto fail;
    }
    Py_CLEAR(v);
    TRUTH(t, mp, n_rtcp_mux);
    if (t && w_ascii(w, "a=rtcp-mux\r\n") < 0)
        goto fail;
    GET(v, attr(mp, n_crypto));
    t = w_prefixed(w, "a=crypto:", v);
    if (t < 0) {
        rc = t;
        goto done;
    }
    Py_CLEAR(v);
    GET(v, attr(mp, n_dtls));
    if (v != Py_None) {
        if (!PyTuple_CheckExact(v) || PyTuple_GET_SIZE(v) < 2
                || !PyUnicode_CheckExact(PyTuple_GET_ITEM(v, 0))
                || !PyUnicode_CheckExact(PyTuple_GET_ITEM(v, 1)))
            goto done;
        if (w_ascii(w, "a=setup:") < 0 || w_add(w, PyTuple_GET_ITEM(v, 0)) < 0
                || w_eol(w) < 0 || w_ascii(w, "a=fingerprint:") < 0
                || w_add(w, PyTuple_GET_ITEM(v, 1)) < 0 || w_eol(w) < 0)
            goto fail;
    }
    Py_CLEAR(v);
    GET(v, attr_int(mp, n_ptime, 1));
    if (v != Py_None && Py_SIZE(v) != 0) {
        PyObject *text = int_text(v);
        if (w_ascii(w, "a=ptime:") < 0 || w_steal(w, text) < 0 || w_eol(w) < 0)
            goto fail;
    }
    Py_CLEAR(v);
    if (Py_TYPE(ice) == t_iceplan) {
        PyObject *ufrag, *pwd;
        int trickle;
        GET(ufrag, attr_str(ice, n_ufrag, 0));
        pwd = attr_str(ice, n_pwd, 0);
        if (pwd == NULL) {
            Py_DECREF(ufrag);
            rc = PyErr_Occurred() ? -1 : NOT_MINE;
            goto done;
        }
        trickle = attr_truth(ice, n_trickle);
        t = trickle < 0 ? trickle : 0;
        if (t == 0 && (w_ascii(w, "a=ice-ufrag:") < 0 || w_add(w, ufrag) < 0
                       || w_eol(w) < 0 || w_ascii(w, "a=ice-pwd:") < 0
                       || w_add(w, pwd) < 0 || w_eol(w) < 0
                       || (trickle && w_ascii(w, "a=ice-options:trickle\r\n") < 0)))
            t = -1;
        Py_DECREF(ufrag);
        Py_DECREF(pwd);
        if (t < 0) {
            rc = t;
            goto done;
        }
        GET(v, attr(ice, n_candidates));
        t = w_prefixed(w, "a=candidate:", v);
        if (t < 0) {
            rc = t;
            goto done;
        }
        if (trickle && w_ascii(w, "a=end-of-candidates\r\n") < 0)
            goto fail;
    }
    rc = 0;
    goto done;
#undef GET
#undef TRUTH
fail:
    rc = -1;
done:
    Py_XDECREF(lines);
    Py_XDECREF(formats);
    Py_XDECREF(mtype);
    Py_XDECREF(proto);
    Py_XDECREF(port);
    Py_XDECREF(port_text);
    Py_XDECREF(direction);
    Py_XDECREF(ice);
    Py_XDECREF(v);
    Py_XDECREF(mids);
    Py_XDECREF(rtpmap_d);
    Py_XDECREF(fmtp_d);
    Py_XDECREF(fb_d);
    return rc;
}

static PyObject *
fast_rewrite(PyObject *self, PyObject *args)
{
    PyObject *sd, *plan, *session = NULL, *media = NULL, *mplans = NULL;
    PyObject *family = NULL, *address = NULL, *result = NULL;
    writer w;
    Py_ssize_t i;
    int rc = NOT_MINE;

    if (!PyArg_ParseTuple(args, "OO:rewrite", &sd, &plan))
        return NULL;
    if (off_kind < 0 || line_type == NULL || Py_TYPE(sd) != t_sd || Py_TYPE(plan) != t_splan)
        Py_RETURN_NONE;
    w.items = w.small;
    w.n = 0;
    w.cap = sizeof(w.small) / sizeof(w.small[0]);
    w.length = 0;
    w.maxchar = 127;
#define GET(var, expr) do { var = (expr); if (var == NULL) { \
        rc = PyErr_Occurred() ? -1 : NOT_MINE; goto done; } } while (0)
    GET(session, attr(sd, n_session));
    GET(media, attr(sd, n_media));
    GET(mplans, attr(plan, n_media));
    GET(family, attr_str(plan, n_family, 0));
    GET(address, attr_str(plan, n_address, 0));
#undef GET
    if (Py_TYPE(session) != t_session || !PyList_CheckExact(media)
            || !PyList_CheckExact(mplans) || PyList_GET_SIZE(media) != PyList_GET_SIZE(mplans))
        goto done;
    rc = w_session(&w, session, plan, mplans, family, address);
    for (i = 0; rc == 0 && i < PyList_GET_SIZE(media); i++)
        rc = w_section(&w, PyList_GET_ITEM(media, i), PyList_GET_ITEM(mplans, i), family,
                       address);
    if (rc == 0)
        result = w_finish(&w);
done:
    w_clear(&w);
    Py_XDECREF(session);
    Py_XDECREF(media);
    Py_XDECREF(mplans);
    Py_XDECREF(family);
    Py_XDECREF(address);
    if (rc == NOT_MINE)
        Py_RETURN_NONE;
    return result;
}

/* ------------------------------------------------------------------ */
/*
 * parts(data) -> (session, media), or None: what SessionDescription.parse
 * makes of ``data`` (its Session and the list of its MediaSections, each
 * made as their __init__ makes them, with the spans parse sets), for the
 * text split takes whose first line is v=, whose m= lines are
 * "<media> <port> <proto> <formats>" with a port of at most five ASCII
 * digits (no port count), and whose o= line (the first) has six fields.
 * Each c= line's Connection comes from model.py's cache of them, else from
 * its parse_connection, each a=rtcp line's of a media section from its
 * parse_rtcp; an SDPError of theirs is not mine (model.py's parse then
 * says it).  None for everything else.
 */

static PyTypeObject *t_part_session = NULL, *t_part_section = NULL;
static PyObject *connections = NULL, *parse_connection = NULL, *parse_rtcp = NULL,
    *sdp_error = NULL, *empty_tuple = NULL;
static PyObject *n_index, *n_port_count, *n_kept, *n_rtcp_attr, *n_span,
    *n_connection_attr;

static PyObject *
fast_setup_parts(PyObject *self, PyObject *args)
{
    PyTypeObject *session, *section;
    PyObject *cache, *pc, *pr, *err;
    if (!PyArg_ParseTuple(args, "O!O!O!OOO!:setup_parts", &PyType_Type, &session,
                          &PyType_Type, &section, &PyDict_Type, &cache, &pc, &pr,
                          &PyType_Type, &err))
        return NULL;
    if (!PyCallable_Check(pc) || !PyCallable_Check(pr)) {
        PyErr_SetString(PyExc_TypeError, "setup_parts: parse_connection and parse_rtcp "
                        "must be callable");
        return NULL;
    }
    {
        PyObject **vars[] = {(PyObject **)&t_part_session, (PyObject **)&t_part_section,
                             &connections, &parse_connection, &parse_rtcp, &sdp_error};
        PyObject *values[] = {(PyObject *)session, (PyObject *)section, cache, pc, pr, err};
        keep_all(vars, values, 6);
    }
    Py_RETURN_NONE;
}

/* the result of parse_connection/parse_rtcp(line) (a new reference), or
   NULL: with an exception on failure, without when it raised SDPError
   (not mine) */
static PyObject *
call_checked(PyObject *function, PyObject *line)
{
    PyObject *v = PyObject_CallOneArg(function, line);
    if (v == NULL && PyErr_ExceptionMatches(sdp_error))
        PyErr_Clear();
    return v;
}

/* _Part.__init__'s work on a new part ``obj``: its lines, scan, the
   Connection of its first c= line (each c= line's parsed), the Rtcp of
   a media section's first a=rtcp line; 0, -1, NOT_MINE */
static int
init_part(PyObject *obj, PyObject *lines, PyObject *scan, int media)
{
    PyObject *specials = PyTuple_GET_ITEM(scan, 2);
    PyObject *connection = Py_None, *rtcp = Py_None;
    Py_ssize_t i;
    int rc = -1;

    Py_INCREF(connection);
    Py_INCREF(rtcp);
    for (i = 0; i < PyList_GET_SIZE(specials); i++) {
        PyObject *line = PyList_GET_ITEM(specials, i), *parsed;
        PyObject *kind = SLOT(line, off_kind);
        if (PyUnicode_READ_CHAR(kind, 0) == 'c') {
            parsed = SLOT(line, off_connection);
            if (parsed == Py_None) {
                parsed = PyDict_GetItemWithError(connections, SLOT(line, off_value));
                if (parsed != NULL) {
                    Py_INCREF(parsed);
                    if (set_slot(line, S_CONNECTION, ref(parsed)) < 0) {
                        Py_DECREF(parsed);
                        goto done;
                    }
                }
                else if (PyErr_Occurred())
                    goto done;
                else {
                    parsed = call_checked(parse_connection, line);
                    if (parsed == NULL) {
                        rc = PyErr_Occurred() ? -1 : NOT_MINE;
                        goto done;
                    }
                }
            }
            else
                Py_INCREF(parsed);
            if (connection == Py_None)
                Py_SETREF(connection, parsed);
            else
                Py_DECREF(parsed);
        }
        else if (media) {
            parsed = call_checked(parse_rtcp, line);
            if (parsed == NULL) {
                rc = PyErr_Occurred() ? -1 : NOT_MINE;
                goto done;
            }
            if (rtcp == Py_None)
                Py_SETREF(rtcp, parsed);
            else
                Py_DECREF(parsed);
        }
    }
    /* (in __init__'s order: the instances share their keys) */
    if (PyObject_SetAttr(obj, n_lines, lines) < 0
            || PyObject_SetAttr(obj, n_attrs, PyTuple_GET_ITEM(scan, 0)) < 0
            || PyObject_SetAttr(obj, n_direction, PyTuple_GET_ITEM(scan, 1)) < 0
            || PyObject_SetAttr(obj, n_connection_attr, connection) < 0
            || PyObject_SetAttr(obj, n_rtcp_attr, rtcp) < 0
            || PyObject_SetAttr(obj, n_rtpmaps_cache, Py_None) < 0
            || PyObject_SetAttr(obj, n_span, Py_None) < 0)
        goto done;
    rc = 0;
done:
    Py_DECREF(connection);
    Py_DECREF(rtcp);
    return rc;
}

/* the number of fields str.split() gives of ``s`` */
static Py_ssize_t
count_fields(PyObject *s)
{
    Py_ssize_t i, n = PyUnicode_GET_LENGTH(s), fields = 0;
    int kind = PyUnicode_KIND(s), in_field = 0;
    const void *data = PyUnicode_DATA(s);
    for (i = 0; i < n; i++) {
        if (Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, i)))
            in_field = 0;
        else if (!in_field) {
            in_field = 1;
            fields++;
        }
    }
    return fields;
}

/* setattr(obj, name, value) of an int; -1 on failure */
static int
set_int(PyObject *obj, PyObject *name, Py_ssize_t value)
{
    PyObject *v = PyLong_FromSsize_t(value);
    int rc;
    if (v == NULL)
        return -1;
    rc = PyObject_SetAttr(obj, name, v);
    Py_DECREF(v);
    return rc;
}

/* a MediaSection of ``lines`` (its m= line first); a new reference, NULL
   with an exception, or NULL without one: not mine */
static PyObject *
make_section(PyObject *lines, PyObject *scan, Py_ssize_t index)
{
    PyObject *line = PyList_GET_ITEM(lines, 0), *fields, *obj = NULL, *port_text;
    PyObject *formats = NULL;
    Py_ssize_t i, n, len, port = 0;

    fields = PyUnicode_Split(SLOT(line, off_value), s_space, -1);
    if (fields == NULL)
        return NULL;
    n = PyList_GET_SIZE(fields);
    if (n < 3 || PyUnicode_GET_LENGTH(PyList_GET_ITEM(fields, 0)) == 0
            || PyUnicode_GET_LENGTH(PyList_GET_ITEM(fields, 2)) == 0)
        goto done;
    port_text = PyList_GET_ITEM(fields, 1);
    len = PyUnicode_GET_LENGTH(port_text);
    if (len == 0 || len > 5)
        goto done;
    for (i = 0; i < len; i++) {
        Py_UCS4 c = PyUnicode_READ_CHAR(port_text, i);
        if (c < '0' || c > '9')
            goto done;
        port = port * 10 + (c - '0');
    }
    if (port > 65535)
        goto done;
    formats = PyList_New(0);
    if (formats == NULL)
        goto fail;
    for (i = 3; i < n; i++) {
        PyObject *f = PyList_GET_ITEM(fields, i);
        if (PyUnicode_GET_LENGTH(f) && PyList_Append(formats, f) < 0)
            goto fail;
    }
    obj = PyBaseObject_Type.tp_new(t_part_section, empty_tuple, NULL);
    if (obj == NULL)
        goto fail;
    /* (in __init__'s order) */
    if (set_int(obj, n_index, index) < 0
            || PyObject_SetAttr(obj, n_media, PyList_GET_ITEM(fields, 0)) < 0
            || set_int(obj, n_port, port) < 0 || set_int(obj, n_port_count, 1) < 0
            || PyObject_SetAttr(obj, n_proto, PyList_GET_ITEM(fields, 2)) < 0
            || PyObject_SetAttr(obj, n_formats, formats) < 0
            || PyObject_SetAttr(obj, n_kept, Py_None) < 0)
        goto fail;
    switch (init_part(obj, lines, scan, 1)) {
    case 0:
        goto done;
    case NOT_MINE:
        Py_CLEAR(obj);
        goto done;
    default:
        goto fail;
    }
fail:
    Py_CLEAR(obj);
    Py_DECREF(fields);
    Py_XDECREF(formats);
    return NULL;
done:
    Py_DECREF(fields);
    Py_XDECREF(formats);
    return obj;
}

static PyObject *
fast_parts(PyObject *self, PyObject *data)
{
    PyObject *passed, *session_lines, *sections, *scans, *eol, *first = NULL;
    PyObject *session = NULL, *media = NULL, *result = NULL;
    Py_ssize_t i, n;

    if (t_part_session == NULL || off_kind < 0)
        Py_RETURN_NONE;
    passed = fast_split(self, data);
    if (passed == NULL || passed == Py_None)
        return passed;
    session_lines = PyTuple_GET_ITEM(passed, 0);
    sections = PyTuple_GET_ITEM(passed, 1);
    scans = PyTuple_GET_ITEM(passed, 2);
    eol = PyTuple_GET_ITEM(passed, 3);
    /* the first line (not blank) is v= */
    for (i = 0; i < PyList_GET_SIZE(session_lines); i++) {
        PyObject *line = PyList_GET_ITEM(session_lines, i);
        if (PyUnicode_GET_LENGTH(SLOT(line, off_kind))) {
            first = line;
            break;
        }
    }
    if (first == NULL && PyList_GET_SIZE(sections))
        first = PyList_GET_ITEM(PyList_GET_ITEM(sections, 0), 0);
    if (first == NULL || PyUnicode_READ_CHAR(SLOT(first, off_kind), 0) != 'v')
        goto not_mine;
    session = PyBaseObject_Type.tp_new(t_part_session, empty_tuple, NULL);
    if (session == NULL)
        goto fail;
    switch (init_part(session, session_lines, PyList_GET_ITEM(scans, 0), 0)) {
    case 0:
        break;
    case NOT_MINE:
        goto not_mine;
    default:
        goto fail;
    }
    /* Session.origin: the first o= line has six fields */
    for (i = 0; i < PyList_GET_SIZE(session_lines); i++) {
        PyObject *line = PyList_GET_ITEM(session_lines, i), *kind = SLOT(line, off_kind);
        if (PyUnicode_GET_LENGTH(kind) && PyUnicode_READ_CHAR(kind, 0) == 'o') {
            if (count_fields(SLOT(line, off_value)) != 6)
                goto not_mine;
            break;
        }
    }
    n = PyList_GET_SIZE(sections);
    media = PyList_New(n);
    if (media == NULL)
        goto fail;
    for (i = 0; i < n; i++) {
        PyObject *m = make_section(PyList_GET_ITEM(sections, i),
                                   PyList_GET_ITEM(scans, i + 1), i + 1);
        if (m == NULL) {
            if (PyErr_Occurred())
                goto fail;
            goto not_mine;
        }
        PyList_SET_ITEM(media, i, m);
    }
    if (n) {
        /* each section's text: from its m= line to the next one's (every
           line ends in eol; a line starting "m=" after eol is an m= line) */
        Py_ssize_t len = PyUnicode_GET_LENGTH(data), skip = PyUnicode_GET_LENGTH(eol);
        Py_ssize_t start, end;
        PyObject *mark = PyUnicode_Concat(eol, s_m_eq);
        if (mark == NULL)
            goto fail;
        start = PyUnicode_Find(data, mark, 0, len, 1);
        if (start < -1) {
            Py_DECREF(mark);
            goto fail;
        }
        start += skip;
        for (i = 0; i < n; i++) {
            PyObject *span;
            end = PyUnicode_Find(data, mark, start, len, 1);
            if (end < -1) {
                Py_DECREF(mark);
                goto fail;
            }
            end = end < 0 ? len : end + skip;
            span = Py_BuildValue("(Onn)", data, start, end);
            if (span == NULL || PyObject_SetAttr(PyList_GET_ITEM(media, i), n_span, span) < 0) {
                Py_XDECREF(span);
                Py_DECREF(mark);
                goto fail;
            }
            Py_DECREF(span);
            start = end;
        }
        Py_DECREF(mark);
    }
    result = PyTuple_Pack(2, session, media);
    goto done;
not_mine:
    result = Py_None;
    Py_INCREF(result);
    goto done;
fail:
    result = NULL;
done:
    Py_DECREF(passed);
    Py_XDECREF(session);
    Py_XDECREF(media);
    return result;
}

/* ------------------------------------------------------------------ */
/*
 * inspect(sd) -> [MediaInfo], or None: model.py's inspect for a
 * description as parse makes it (each value of the types parse gives),
 * the same MediaInfo values with their fields set in the same order.
 * None for anything else and where inspect raises (a section that is not
 * rejected without any c= line): model.py's _inspect then says it.  The
 * payload types of the formats come from model.py's cache of them, else
 * from its _payload_types.
 */

static PyTypeObject *i_sd = NULL, *i_session, *i_section, *i_conn, *i_rtcp, *i_info;
static PyObject *i_ice = NULL, *i_pts_cache = NULL, *i_pts = NULL, *long_one = NULL;
static PyObject *n_type, *n_rtp, *n_rtcp_ep, *n_rejected, *n_zero_address, *n_payload_types,
    *s_rtcp_mux;

static PyObject *
fast_setup_inspect(PyObject *self, PyObject *args)
{
    PyTypeObject *t[6];
    PyObject *ice, *cache, *pts;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!O!O!O!O:setup_inspect",
                          &PyType_Type, &t[0], &PyType_Type, &t[1], &PyType_Type, &t[2],
                          &PyType_Type, &t[3], &PyType_Type, &t[4], &PyType_Type, &t[5],
                          &PyFrozenSet_Type, &ice, &PyDict_Type, &cache, &pts))
        return NULL;
    if (!PyCallable_Check(pts)) {
        PyErr_SetString(PyExc_TypeError, "setup_inspect: _payload_types must be callable");
        return NULL;
    }
    {
        PyObject **vars[] = {(PyObject **)&i_sd, (PyObject **)&i_session,
                             (PyObject **)&i_section, (PyObject **)&i_conn,
                             (PyObject **)&i_rtcp, (PyObject **)&i_info,
                             &i_ice, &i_pts_cache, &i_pts};
        PyObject *values[] = {(PyObject *)t[0], (PyObject *)t[1], (PyObject *)t[2],
                              (PyObject *)t[3], (PyObject *)t[4], (PyObject *)t[5],
                              ice, cache, pts};
        keep_all(vars, values, 9);
    }
    Py_RETURN_NONE;
}

/* 1 when a key of the exact dict ``attrs`` is an ICE attribute, 0 if
   none, -1 on error */
static int
has_ice(PyObject *attrs)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(attrs, &pos, &key, &value)) {
        int in = PySet_Contains(i_ice, key);
        if (in != 0)
            return in;
    }
    return 0;
}

/* a MediaInfo of the given fields (references borrowed), set in the
   order inspect sets them; a new reference or NULL */
static PyObject *
make_info(PyObject **values)
{
    PyObject *names[14] = {n_index, n_type, n_proto, n_family, n_rtp, n_rtcp_ep, n_rtcp_mux,
                           n_direction, n_rejected, n_zero_address, n_formats,
                           n_payload_types, n_port_count, n_ice};
    PyObject *info = PyBaseObject_Type.tp_new(i_info, empty_tuple, NULL);
    int i;
    if (info == NULL)
        return NULL;
    /* (object.__setattr__'s: the class's frozen __setattr__ is not run,
       as inspect's __dict__.update does not run it) */
    for (i = 0; i < 14; i++) {
        if (PyObject_GenericSetAttr(info, names[i], values[i]) < 0) {
            Py_DECREF(info);
            return NULL;
        }
    }
    return info;
}

static PyObject *
fast_inspect(PyObject *self, PyObject *sd)
{
    PyObject *session = NULL, *media = NULL, *session_conn = NULL, *session_dir = NULL;
    PyObject *session_attrs = NULL, *infos = NULL, *result = NULL;
    Py_ssize_t i, n;
    int session_ice = -1;

    if (i_sd == NULL || Py_TYPE(sd) != i_sd)
        Py_RETURN_NONE;
#define GET(var, o, name) do { var = attr(o, name); if (var == NULL) { \
        if (PyErr_Occurred()) { goto fail; } goto not_mine; } } while (0)
    GET(session, sd, n_session);
    GET(media, sd, n_media);
    if (Py_TYPE(session) != i_session || !PyList_CheckExact(media))
        goto not_mine;
    GET(session_conn, session, n_connection_attr);
    GET(session_dir, session, n_direction);
    if (!(session_conn == Py_None || Py_TYPE(session_conn) == i_conn)
            || !(session_dir == Py_None || PyUnicode_CheckExact(session_dir)))
        goto not_mine;
    n = PyList_GET_SIZE(media);
    infos = PyList_New(0);
    if (infos == NULL)
        goto fail;
    for (i = 0; i < n; i++) {
        PyObject *m = PyList_GET_ITEM(media, i);
        PyObject *index = NULL, *mtype = NULL, *proto = NULL, *conn = NULL, *port = NULL;
        PyObject *rtcp = NULL, *attrs = NULL, *direction = NULL, *formats = NULL;
        PyObject *port_count = NULL, *family = Py_None, *address = Py_None;
        PyObject *rtp_ep = NULL, *rtcp_ep = NULL, *pts = NULL, *tuple = NULL, *info;
        PyObject *values[14];
        int zero = 0, ice, ok = 0;

        if (Py_TYPE(m) != i_section)
            goto not_mine;
#define MGET(var, name) do { var = attr(m, name); if (var == NULL) goto section_done; } \
        while (0)
        MGET(index, n_index);
        MGET(mtype, n_media);
        MGET(proto, n_proto);
        MGET(conn, n_connection_attr);
        MGET(port, n_port);
        MGET(rtcp, n_rtcp_attr);
        MGET(attrs, n_attrs);
        MGET(direction, n_direction);
        MGET(formats, n_formats);
        MGET(port_count, n_port_count);
#undef MGET
        if (!PyLong_CheckExact(port) || !PyDict_CheckExact(attrs) || !PyList_CheckExact(formats)
                || !(conn == Py_None || Py_TYPE(conn) == i_conn)
                || !(rtcp == Py_None || Py_TYPE(rtcp) == i_rtcp)
                || !(direction == Py_None || PyUnicode_CheckExact(direction)))
            goto section_done;
        if (conn == Py_None) {
            Py_INCREF(session_conn);
            Py_SETREF(conn, session_conn);
        }
        if (conn == Py_None) {
            if (Py_SIZE(port) != 0)
                goto section_done;  /* (SDPIncomplete: model.py's) */
            Py_INCREF(family);
            Py_INCREF(address);
        }
        else {
            family = attr(conn, n_family);
            if (family == NULL)
                goto section_done;
            address = attr(conn, n_address);
            if (address == NULL)
                goto section_done;
            if (!PyUnicode_CheckExact(address))
                goto section_done;
            zero = PyUnicode_Compare(address, s_zero4) == 0
                || PyUnicode_Compare(address, s_zero6) == 0;
        }
        rtp_ep = PyTuple_Pack(2, address, port);
        if (rtp_ep == NULL)
            goto section_done;
        if (rtcp == Py_None) {
            PyObject *p;
            if (Py_SIZE(port) != 0)
                p = PyNumber_Add(port, long_one);
            else {
                p = PyLong_FromLong(0);
            }
            if (p == NULL)
                goto section_done;
            rtcp_ep = PyTuple_Pack(2, address, p);
            Py_DECREF(p);
        }
        else {
            PyObject *raddr = attr(rtcp, n_address), *rport;
            if (raddr == NULL)
                goto section_done;
            rport = attr(rtcp, n_port);
            if (rport == NULL) {
                Py_DECREF(raddr);
                goto section_done;
            }
            {
                int t = truth(raddr);
                if (t == NOT_MINE) {
                    Py_DECREF(raddr);
                    Py_DECREF(rport);
                    goto section_done;
                }
                rtcp_ep = PyTuple_Pack(2, t ? raddr : address, rport);
            }
            Py_DECREF(raddr);
            Py_DECREF(rport);
        }
        if (rtcp_ep == NULL)
            goto section_done;
        ice = has_ice(attrs);
        if (ice < 0)
            goto section_done;
        if (!ice) {
            if (session_ice < 0) {
                if (session_attrs == NULL) {
                    session_attrs = attr(session, n_attrs);
                    if (session_attrs == NULL)
                        goto section_done;
                }
                if (!PyDict_CheckExact(session_attrs))
                    goto section_done;
                session_ice = has_ice(session_attrs);
                if (session_ice < 0) {
                    goto section_done;
                }
            }
            ice = session_ice;
        }
        tuple = PyList_AsTuple(formats);
        if (tuple == NULL)
            goto section_done;
        pts = PyDict_GetItemWithError(i_pts_cache, tuple);
        if (pts != NULL)
            Py_INCREF(pts);
        else if (PyErr_Occurred())
            goto section_done;
        else {
            pts = PyObject_CallOneArg(i_pts, tuple);
            if (pts == NULL) {
                PyErr_Clear();  /* (model.py's _inspect says it) */
                goto section_done;
            }
        }
        {
            int mux = PyDict_Contains(attrs, s_rtcp_mux);
            if (mux < 0)
                goto section_done;
            values[0] = index;
            values[1] = mtype;
            values[2] = proto;
            values[3] = family;
            values[4] = rtp_ep;
            values[5] = rtcp_ep;
            values[6] = mux ? Py_True : Py_False;
            values[7] = direction != Py_None && PyUnicode_GET_LENGTH(direction)
                ? direction : session_dir;
            values[8] = Py_SIZE(port) == 0 ? Py_True : Py_False;
            values[9] = zero ? Py_True : Py_False;
            values[10] = tuple;
            values[11] = pts;
            values[12] = port_count;
            values[13] = ice ? Py_True : Py_False;
        }
        info = make_info(values);
        if (info == NULL)
            goto section_done;
        if (PyList_Append(infos, info) < 0) {
            Py_DECREF(info);
            goto section_done;
        }
        Py_DECREF(info);
        ok = 1;
section_done:
        Py_XDECREF(index);
        Py_XDECREF(mtype);
        Py_XDECREF(proto);
        Py_XDECREF(conn);
        Py_XDECREF(port);
        Py_XDECREF(rtcp);
        Py_XDECREF(attrs);
        Py_XDECREF(direction);
        Py_XDECREF(formats);
        Py_XDECREF(port_count);
        Py_XDECREF(family);
        Py_XDECREF(address);
        Py_XDECREF(rtp_ep);
        Py_XDECREF(rtcp_ep);
        Py_XDECREF(pts);
        Py_XDECREF(tuple);
        if (!ok) {
            if (PyErr_Occurred())
                goto fail;
            goto not_mine;
        }
    }
#undef GET
    result = infos;
    infos = NULL;
    goto done;
not_mine:
    result = Py_None;
    Py_INCREF(result);
    goto done;
fail:
    result = NULL;
done:
    Py_XDECREF(session);
    Py_XDECREF(media);
    Py_XDECREF(session_conn);
    Py_XDECREF(session_dir);
    Py_XDECREF(session_attrs);
    Py_XDECREF(infos);
    return result;
}

static PyMethodDef methods[] = {
    {"setup", fast_setup, METH_VARARGS,
     "setup(Line, directions): the Line class and the direction attribute names."},
    {"split", fast_split, METH_O,
     "split(data) -> (session_lines, sections, scans, eol), or None: parse's line pass."},
    {"setup_parts", fast_setup_parts, METH_VARARGS,
     "setup_parts(Session, MediaSection, connections, parse_connection, parse_rtcp, SDPError):"
     " what parts makes and reads."},
    {"parts", fast_parts, METH_O,
     "parts(data) -> (session, media), or None: SessionDescription.parse's parts."},
    {"setup_inspect", fast_setup_inspect, METH_VARARGS,
     "setup_inspect(SessionDescription, Session, MediaSection, Connection, Rtcp, MediaInfo,"
     " ice_attributes, payload_types_cache, payload_types): what inspect reads and makes."},
    {"inspect", fast_inspect, METH_O,
     "inspect(sd) -> [MediaInfo], or None: omnirtp.sdp.model's inspect."},
    {"setup_rewrite", fast_setup_rewrite, METH_VARARGS,
     "setup_rewrite(Line, SessionDescription, Session, MediaSection, Connection, SessionPlan,"
     " MediaPlan, IcePlan, CodecOps, session_dropped, ice_attributes, media_owned,"
     " static_rtpmaps): what rewrite reads."},
    {"rewrite", fast_rewrite, METH_VARARGS,
     "rewrite(sd, plan) -> str, or None: omnirtp.sdp.rewrite.rewrite for the usual plan."},
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
    {
        struct { PyObject **var; const char *text; } names[] = {
            {&n_session, "session"}, {&n_media, "media"}, {&n_lines, "lines"},
            {&n_formats, "formats"}, {&n_proto, "proto"}, {&n_family, "family"},
            {&n_address, "address"}, {&n_replace_origin, "replace_origin"},
            {&n_loop_protect, "loop_protect"}, {&n_ice_lite, "ice_lite"},
            {&n_keep_zero_address, "keep_zero_address"}, {&n_port, "port"},
            {&n_rtcp_port, "rtcp_port"}, {&n_rtcp_mux, "rtcp_mux"},
            {&n_full_rtcp_attribute, "full_rtcp_attribute"}, {&n_protocol, "protocol"},
            {&n_direction, "direction"}, {&n_ice, "ice"}, {&n_codecs, "codecs"},
            {&n_ptime, "ptime"}, {&n_keep_mid, "keep_mid"}, {&n_crypto, "crypto"},
            {&n_dtls, "dtls"}, {&n_mid, "mid"}, {&n_ufrag, "ufrag"}, {&n_pwd, "pwd"},
            {&n_candidates, "candidates"}, {&n_trickle, "trickle"}, {&n_strip, "strip"},
            {&n_mask, "mask"}, {&n_offer, "offer"}, {&n_except, "except_"},
            {&n_rtpmaps_cache, "_rtpmaps"}, {&n_attrs, "_attrs"}, {&n_index, "index"},
            {&n_port_count, "port_count"}, {&n_kept, "_kept"}, {&n_rtcp_attr, "_rtcp"},
            {&n_span, "_span"}, {&n_connection_attr, "connection"}, {&s_m_eq, "m="},
            {&n_type, "type"}, {&n_rtp, "rtp"}, {&n_rtcp_ep, "rtcp"}, {&n_rejected, "rejected"},
            {&n_zero_address, "zero_address"}, {&n_payload_types, "payload_types"},
            {&s_rtcp_mux, "rtcp-mux"},
            {&s_space, " "}, {&s_zero4, "0.0.0.0"}, {&s_zero6, "::"}, {&s_mid, "mid"},
            {&s_rtpmap, "rtpmap"}, {&s_fmtp, "fmtp"}, {&s_rtcp_fb, "rtcp-fb"}, {&s_star, "*"}};
        size_t i;
        empty_tuple = PyTuple_New(0);
        long_one = PyLong_FromLong(1);
        if (empty_tuple == NULL || long_one == NULL)
            return NULL;
        for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            *names[i].var = PyUnicode_InternFromString(names[i].text);
            if (*names[i].var == NULL)
                return NULL;
        }
    }
    return PyModule_Create(&module);
}
