/*
 * omnirtp.media._fastsrtp: SRTP (RFC 3711) for AES_CM_128_HMAC_SHA1_80 and
 * AES_CM_128_HMAC_SHA1_32, and AEAD_AES_128_GCM (RFC 7714), RTP packets
 * only, with per-session crypto state kept from packet to packet.
 *
 * Written for omnirtp from RFC 3711 (sections 3.3, 4.1.1, 4.2, 4.3 and
 * appendix A) and RFC 7714 (sections 8 and 11); it produces the same bytes
 * as libsrtp for these suites, which the unit tests check against
 * pylibsrtp.
 *
 * Per session (one master key, one direction):
 *   - an AES-128-ECB context keyed once with the session encryption key; the
 *     counter-mode keystream of a packet is ECB over its counter blocks, so
 *     no cipher context is re-initialised per packet;
 *   - the HMAC-SHA1 inner and outer SHA-1 states after the padded session
 *     authentication key, copied per packet (a plain struct copy);
 *   - for AEAD_AES_128_GCM instead of both: one AES-128-GCM context keyed
 *     once, given each packet's IV;
 *   - per SSRC: the highest extended index received/sent (ROC << 16 | SEQ)
 *     and a 128-packet replay window, as libsrtp keeps them.
 *
 * Python interface (see omnirtp/media/srtp.py for the steps built on it):
 *   Session(master_key, master_salt, tag_length, outbound): tag_length 10
 *       or 4 (AES-CM with HMAC-SHA1, a 14-byte salt), 16 (AES-GCM, a
 *       12-byte salt)
 *   Session.protect(bytes) / Session.unprotect(bytes) -> bytes, or raises
 *       Error(status, text)
 *   Session.streams() -> {ssrc: (roc, highest sequence number)}
 *   Session.indexes() -> {ssrc: extended index ROC << 16 | SEQ}
 *   Session.resume(ssrc, index): start the stream of ssrc at the extended
 *       index (ROC << 16 | SEQ) a former session had reached (a restart,
 *       a takeover), unless it is past that already
 *   bind(cdata, length, view, length_view): the shared native buffer (a
 *       cffi char[] and int *, with writable memoryviews of both)
 *   protect_into(session, cdata, length) / unprotect_into(...) -> status:
 *       in place on the bound buffer, length[0] updated; 0 is success.
 */

#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <Python.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>

/* status codes (Session.protect/unprotect raise Error(status, text)) */
#define ST_OK 0
#define ST_AUTH 1      /* authentication tag mismatch */
#define ST_REPLAY 2    /* index already received (in the window) */
#define ST_OLD 3       /* index older than the window */
#define ST_PARSE 4     /* too short / header longer than the packet */
#define ST_LENGTH 5    /* no room for the tag, or too long */
#define ST_CRYPTO 6    /* OpenSSL failed */

static const char *status_text[] = {
    "ok",
    "authentication failure",
    "replay check failed (bad index)",
    "replay check failed (index too old)",
    "packet too short or malformed",
    "packet too long",
    "cipher failure",
};

#define WINDOW 128          /* replay window, packets (libsrtp's default) */
#define MAX_STREAMS 32      /* SSRCs kept per session; then the least recent goes */
#define KS_BLOCKS 32        /* keystream blocks made per ECB call */
/* the longest packet Session.protect/unprotect take: pylibsrtp's limit
 * (its 1500-byte buffer less libsrtp's largest RTP trailer), so that the
 * steps refuse what they refused on pylibsrtp */
#define MAX_BYTES (1500 - 144)
#define SEQ_MEDIAN 0x8000u
#define SEQ_SPAN 0x10000

typedef struct {
    uint32_t ssrc;
    uint64_t index;     /* highest extended sequence number, 48 bits */
    uint64_t seen_lo;   /* bit k: index - k was received (k 0..63) */
    uint64_t seen_hi;   /* k 64..127 */
    uint64_t used;      /* session clock at the last use (eviction) */
} stream_t;

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *ecb;
    EVP_CIPHER_CTX *gcm;    /* AEAD_AES_128_GCM: in place of ecb and the HMAC */
    SHA_CTX inner;
    SHA_CTX outer;
    unsigned char salt[14];
    int tag_len;
    int outbound;
    int nstreams;
    uint64_t clock;
    stream_t streams[MAX_STREAMS];
} Session;

static PyObject *Error;

/* the bound native buffer */
static PyObject *bound_cdata = NULL;
static Py_buffer bound_view;
static Py_buffer bound_len;
static int bound = 0;

/* ---- crypto ---------------------------------------------------------- */

/* XOR len bytes at data with the AES-CM keystream of counter block iv
 * (the low 16 bits count blocks from 0). */
static int
keystream_xor(EVP_CIPHER_CTX *ecb, const unsigned char iv[16],
              unsigned char *data, size_t len)
{
    unsigned char ctr[KS_BLOCKS * 16];
    unsigned char ks[KS_BLOCKS * 16];
    unsigned int block = 0;
    while (len > 0) {
        size_t chunk = len < sizeof(ks) ? len : sizeof(ks);
        size_t nblocks = (chunk + 15) / 16;
        int outl = 0;
        for (size_t b = 0; b < nblocks; b++, block++) {
            unsigned char *c = ctr + 16 * b;
            memcpy(c, iv, 14);
            c[14] = (unsigned char)(iv[14] ^ (block >> 8));
            c[15] = (unsigned char)(iv[15] ^ block);
        }
        if (!EVP_EncryptUpdate(ecb, ks, &outl, ctr, (int)(nblocks * 16))
                || outl != (int)(nblocks * 16))
            return -1;
        size_t i = 0;
        for (; i + 8 <= chunk; i += 8) {
            uint64_t a, k;
            memcpy(&a, data + i, 8);
            memcpy(&k, ks + i, 8);
            a ^= k;
            memcpy(data + i, &a, 8);
        }
        for (; i < chunk; i++)
            data[i] ^= ks[i];
        data += chunk;
        len -= chunk;
    }
    return 0;
}

static EVP_CIPHER_CTX *
ecb_context(const unsigned char key[16])
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        return NULL;
    if (!EVP_EncryptInit_ex(ctx, EVP_aes_128_ecb(), NULL, key, NULL)
            || !EVP_CIPHER_CTX_set_padding(ctx, 0)) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* RFC 3711 4.3.1 with key_derivation_rate 0 (r = 0): the keystream of
 * AES-CM under the master key at IV (master_salt XOR label) * 2^16. */
static int
derive(EVP_CIPHER_CTX *master, const unsigned char salt[14], int label,
       unsigned char *out, size_t len)
{
    unsigned char iv[16];
    memcpy(iv, salt, 14);
    iv[14] = iv[15] = 0;
    iv[7] ^= (unsigned char)label;
    memset(out, 0, len);
    return keystream_xor(master, iv, out, len);
}

static void
hmac_tag(Session *s, const unsigned char *data, size_t len, uint32_t roc,
         unsigned char out[SHA_DIGEST_LENGTH])
{
    SHA_CTX c;
    unsigned char r[4] = {roc >> 24, roc >> 16, roc >> 8, roc};
    c = s->inner;
    SHA1_Update(&c, data, len);
    SHA1_Update(&c, r, 4);
    SHA1_Final(out, &c);
    c = s->outer;
    SHA1_Update(&c, out, SHA_DIGEST_LENGTH);
    SHA1_Final(out, &c);
}

/* ---- streams and the replay window (RFC 3711 3.3.1, appendix A) ------- */

static stream_t *
find_stream(Session *s, uint32_t ssrc)
{
    for (int i = 0; i < s->nstreams; i++)
        if (s->streams[i].ssrc == ssrc)
            return &s->streams[i];
    return NULL;
}

static stream_t *
new_stream(Session *s, uint32_t ssrc)
{
    stream_t *st;
    if (s->nstreams < MAX_STREAMS) {
        st = &s->streams[s->nstreams++];
    } else {
        st = &s->streams[0];
        for (int i = 1; i < MAX_STREAMS; i++)
            if (s->streams[i].used < st->used)
                st = &s->streams[i];
    }
    memset(st, 0, sizeof(*st));
    st->ssrc = ssrc;
    return st;
}

/* The extended index of sequence number seq against the highest one seen
 * (index); *delta = guess - index.  While the highest index is at most
 * half the sequence space, the rollover counter is taken to be 0. */
static uint64_t
guess_index(uint64_t index, uint16_t seq, int64_t *delta)
{
    uint32_t roc = (uint32_t)(index >> 16);
    uint32_t s_l = (uint32_t)(index & 0xffff);
    uint32_t v = roc;
    if (index <= SEQ_MEDIAN) {
        *delta = (int64_t)seq - (int64_t)index;
        return seq;
    }
    if (s_l < SEQ_MEDIAN) {
        if ((int64_t)seq - (int64_t)s_l > SEQ_MEDIAN)
            v = roc - 1;
    } else if (s_l - SEQ_MEDIAN > seq) {
        v = roc + 1;
    }
    uint64_t guess = ((uint64_t)v << 16) | seq;
    if (v == roc)
        *delta = (int64_t)seq - (int64_t)s_l;
    else if (v == roc - 1)
        *delta = (int64_t)seq - (int64_t)s_l - SEQ_SPAN;
    else
        *delta = (int64_t)seq - (int64_t)s_l + SEQ_SPAN;
    return guess;
}

static int
window_check(const stream_t *st, int64_t delta)
{
    if (delta > 0)
        return ST_OK;
    if (delta <= -WINDOW)
        return ST_OLD;
    uint64_t k = (uint64_t)(-delta);
    uint64_t bit = k < 64 ? (st->seen_lo >> k) & 1 : (st->seen_hi >> (k - 64)) & 1;
    return bit ? ST_REPLAY : ST_OK;
}

static void
window_add(stream_t *st, int64_t delta)
{
    if (delta > 0) {
        if (delta >= 128) {
            st->seen_hi = st->seen_lo = 0;
        } else if (delta >= 64) {
            st->seen_hi = st->seen_lo << (delta - 64);
            st->seen_lo = 0;
        } else {
            st->seen_hi = (st->seen_hi << delta) | (st->seen_lo >> (64 - delta));
            st->seen_lo <<= delta;
        }
        st->seen_lo |= 1;
        st->index += (uint64_t)delta;
    } else {
        uint64_t k = (uint64_t)(-delta);
        if (k < 64)
            st->seen_lo |= (uint64_t)1 << k;
        else
            st->seen_hi |= (uint64_t)1 << (k - 64);
    }
}

/* ---- packets --------------------------------------------------------- */

static inline uint32_t
be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Length of the RTP header (fixed part, CSRCs, extension), or -1 if it
 * does not fit in len bytes. */
static Py_ssize_t
header_length(const unsigned char *p, Py_ssize_t len)
{
    if (len < 12)
        return -1;
    Py_ssize_t h = 12 + 4 * (p[0] & 0x0f);
    if (p[0] & 0x10) {
        if (h + 4 > len)
            return -1;
        h += 4 + 4 * (((Py_ssize_t)p[h + 2] << 8) | p[h + 3]);
    }
    return h <= len ? h : -1;
}

static void
packet_iv(const Session *s, uint32_t ssrc, uint64_t index, unsigned char iv[16])
{
    memcpy(iv, s->salt, 14);
    iv[14] = iv[15] = 0;
    iv[4] ^= ssrc >> 24;
    iv[5] ^= ssrc >> 16;
    iv[6] ^= ssrc >> 8;
    iv[7] ^= ssrc;
    for (int i = 0; i < 6; i++)
        iv[8 + i] ^= (unsigned char)(index >> (40 - 8 * i));
}

/* RFC 7714 8.1: 00 00 || SSRC || ROC || SEQ, XOR the session salt. */
static void
gcm_iv(const Session *s, uint32_t ssrc, uint64_t index, unsigned char iv[12])
{
    uint32_t roc = (uint32_t)(index >> 16);
    unsigned char raw[12] = {0, 0, ssrc >> 24, ssrc >> 16, ssrc >> 8, ssrc,
                             roc >> 24, roc >> 16, roc >> 8, roc, index >> 8, index};
    for (int i = 0; i < 12; i++)
        iv[i] = raw[i] ^ s->salt[i];
}

/* AES-GCM over one packet in place: the header (h bytes) authenticated,
 * the payload (to body) encrypted or decrypted; the tag written after the
 * payload (protect) or checked against the one there (unprotect).
 * 0, or -status. */
static int
gcm_packet(Session *s, unsigned char *p, Py_ssize_t h, Py_ssize_t body, uint32_t ssrc,
           uint64_t index, int protect)
{
    unsigned char iv[12];
    int outl;
    EVP_CIPHER_CTX *c = s->gcm;
    gcm_iv(s, ssrc, index, iv);
    if (!EVP_CipherInit_ex(c, NULL, NULL, NULL, iv, -1)
            || !EVP_CipherUpdate(c, NULL, &outl, p, (int)h))
        return -ST_CRYPTO;
    if (!protect && !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, p + body))
        return -ST_CRYPTO;
    if (body > h && !EVP_CipherUpdate(c, p + h, &outl, p + h, (int)(body - h)))
        return -ST_CRYPTO;
    if (EVP_CipherFinal_ex(c, p + body, &outl) <= 0)
        return protect ? -ST_CRYPTO : -ST_AUTH;
    if (protect && !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, p + body))
        return -ST_CRYPTO;
    return 0;
}

/* SRTP -> RTP in place: returns the new length, or -status. */
static Py_ssize_t
do_unprotect(Session *s, unsigned char *p, Py_ssize_t len)
{
    Py_ssize_t h = header_length(p, len);
    if (h < 0)
        return -ST_PARSE;
    uint32_t ssrc = be32(p + 8);
    uint16_t seq = (uint16_t)((p[2] << 8) | p[3]);
    stream_t *st = find_stream(s, ssrc);
    uint64_t index;
    int64_t delta;
    if (st != NULL) {
        index = guess_index(st->index, seq, &delta);
        int r = window_check(st, delta);
        if (r)
            return -r;
    } else {
        index = seq;
        delta = seq;
    }
    Py_ssize_t body = len - s->tag_len;
    if (body < h)
        return -ST_PARSE;
    if (s->gcm != NULL) {
        int r = gcm_packet(s, p, h, body, ssrc, index, 0);
        if (r < 0)
            return r;
    } else {
        unsigned char mac[SHA_DIGEST_LENGTH];
        hmac_tag(s, p, (size_t)body, (uint32_t)(index >> 16), mac);
        if (CRYPTO_memcmp(mac, p + body, (size_t)s->tag_len) != 0)
            return -ST_AUTH;
        unsigned char iv[16];
        packet_iv(s, ssrc, index, iv);
        if (keystream_xor(s->ecb, iv, p + h, (size_t)(body - h)) < 0)
            return -ST_CRYPTO;
    }
    if (st == NULL)
        st = new_stream(s, ssrc);
    st->used = ++s->clock;
    window_add(st, delta);
    return body;
}

/* RTP -> SRTP in place (cap bytes of room): the new length, or -status.
 * A repeated index is protected again as it was (libsrtp's
 * allow_repeat_tx); one older than the window is refused. */
static Py_ssize_t
do_protect(Session *s, unsigned char *p, Py_ssize_t len, Py_ssize_t cap)
{
    Py_ssize_t h = header_length(p, len);
    if (h < 0)
        return -ST_PARSE;
    if (len + s->tag_len > cap)
        return -ST_LENGTH;
    uint32_t ssrc = be32(p + 8);
    uint16_t seq = (uint16_t)((p[2] << 8) | p[3]);
    stream_t *st = find_stream(s, ssrc);
    if (st == NULL)
        st = new_stream(s, ssrc);
    st->used = ++s->clock;
    int64_t delta;
    uint64_t index = guess_index(st->index, seq, &delta);
    int r = window_check(st, delta);
    if (r == ST_OLD)
        return -r;
    if (r == ST_OK)
        window_add(st, delta);
    if (s->gcm != NULL) {
        int g = gcm_packet(s, p, h, len, ssrc, index, 1);
        return g < 0 ? g : len + s->tag_len;
    }
    unsigned char iv[16];
    packet_iv(s, ssrc, index, iv);
    if (keystream_xor(s->ecb, iv, p + h, (size_t)(len - h)) < 0)
        return -ST_CRYPTO;
    unsigned char mac[SHA_DIGEST_LENGTH];
    hmac_tag(s, p, (size_t)len, (uint32_t)(index >> 16), mac);
    memcpy(p + len, mac, (size_t)s->tag_len);
    return len + s->tag_len;
}

/* ---- Python ---------------------------------------------------------- */

static PyObject *
raise_status(Py_ssize_t status)
{
    if (status < 0 || status >= (Py_ssize_t)(sizeof(status_text) / sizeof(*status_text)))
        status = ST_CRYPTO;
    PyObject *args = Py_BuildValue("(ns)", status, status_text[status]);
    if (args != NULL) {
        PyErr_SetObject(Error, args);
        Py_DECREF(args);
    }
    return NULL;
}

static int
Session_init(Session *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"master_key", "master_salt", "tag_length", "outbound", NULL};
    Py_buffer key, salt;
    int tag_len, outbound;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*ip", kwlist, &key, &salt,
                                     &tag_len, &outbound))
        return -1;
    int ret = -1;
    EVP_CIPHER_CTX *master = NULL;
    unsigned char k_e[16], k_a[20], pad[64], salt14[14];
    int gcm = tag_len == 16;
    if (tag_len != 10 && tag_len != 4 && !gcm) {
        PyErr_SetString(PyExc_ValueError, "tag_length must be 10, 4 or 16");
        goto done;
    }
    if (key.len != 16 || salt.len != (gcm ? 12 : 14)) {
        PyErr_SetString(PyExc_ValueError, gcm
                        ? "master key must be 16 bytes and master salt 12"
                        : "master key must be 16 bytes and master salt 14");
        goto done;
    }
    /* RFC 7714 11: the 96-bit salt of AES-GCM in the AES-CM key derivation */
    memset(salt14, 0, sizeof(salt14));
    memcpy(salt14, salt.buf, (size_t)salt.len);
    master = ecb_context(key.buf);
    if (master == NULL
            || derive(master, salt14, 0, k_e, sizeof(k_e)) < 0
            || derive(master, salt14, 1, k_a, sizeof(k_a)) < 0
            || derive(master, salt14, 2, self->salt, gcm ? 12 : sizeof(self->salt)) < 0) {
        PyErr_SetString(Error, "cannot derive the SRTP session keys");
        goto done;
    }
    if (self->ecb != NULL)
        EVP_CIPHER_CTX_free(self->ecb);
    if (self->gcm != NULL)
        EVP_CIPHER_CTX_free(self->gcm);
    self->ecb = self->gcm = NULL;
    if (gcm) {
        self->gcm = EVP_CIPHER_CTX_new();
        if (self->gcm == NULL || !EVP_CipherInit_ex(self->gcm, EVP_aes_128_gcm(), NULL, k_e,
                                                    NULL, outbound ? 1 : 0)) {
            PyErr_SetString(Error, "cannot make an AES-128-GCM context");
            goto done;
        }
    }
    /* (the ECB context also marks the session initialised) */
    self->ecb = ecb_context(k_e);
    if (self->ecb == NULL) {
        PyErr_SetString(Error, "cannot make an AES-128 context");
        goto done;
    }
    memset(pad, 0x36, sizeof(pad));
    for (int i = 0; i < 20; i++)
        pad[i] ^= k_a[i];
    SHA1_Init(&self->inner);
    SHA1_Update(&self->inner, pad, sizeof(pad));
    memset(pad, 0x5c, sizeof(pad));
    for (int i = 0; i < 20; i++)
        pad[i] ^= k_a[i];
    SHA1_Init(&self->outer);
    SHA1_Update(&self->outer, pad, sizeof(pad));
    self->tag_len = tag_len;
    self->outbound = outbound;
    self->nstreams = 0;
    self->clock = 0;
    ret = 0;
done:
    OPENSSL_cleanse(k_e, sizeof(k_e));
    OPENSSL_cleanse(k_a, sizeof(k_a));
    OPENSSL_cleanse(pad, sizeof(pad));
    OPENSSL_cleanse(salt14, sizeof(salt14));
    if (master != NULL)
        EVP_CIPHER_CTX_free(master);
    PyBuffer_Release(&key);
    PyBuffer_Release(&salt);
    return ret;
}

static void
Session_dealloc(Session *self)
{
    if (self->ecb != NULL)
        EVP_CIPHER_CTX_free(self->ecb);
    if (self->gcm != NULL)
        EVP_CIPHER_CTX_free(self->gcm);
    OPENSSL_cleanse(&self->inner, sizeof(self->inner));
    OPENSSL_cleanse(&self->outer, sizeof(self->outer));
    OPENSSL_cleanse(self->salt, sizeof(self->salt));
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
transform_bytes(Session *self, PyObject *arg, int protect)
{
    Py_buffer in;
    if (self->ecb == NULL) {
        PyErr_SetString(PyExc_ValueError, "session not initialised");
        return NULL;
    }
    if (PyObject_GetBuffer(arg, &in, PyBUF_SIMPLE) < 0)
        return NULL;
    if (in.len > MAX_BYTES) {
        PyBuffer_Release(&in);
        return raise_status(ST_LENGTH);
    }
    Py_ssize_t cap = in.len + (protect ? self->tag_len : 0);
    PyObject *out = PyBytes_FromStringAndSize(NULL, cap);
    if (out == NULL) {
        PyBuffer_Release(&in);
        return NULL;
    }
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    memcpy(p, in.buf, (size_t)in.len);
    Py_ssize_t n = protect ? do_protect(self, p, in.len, cap) : do_unprotect(self, p, in.len);
    PyBuffer_Release(&in);
    if (n < 0) {
        Py_DECREF(out);
        return raise_status(-n);
    }
    if (n != cap && _PyBytes_Resize(&out, n) < 0)
        return NULL;
    return out;
}

static PyObject *
Session_protect(Session *self, PyObject *arg)
{
    return transform_bytes(self, arg, 1);
}

static PyObject *
Session_unprotect(Session *self, PyObject *arg)
{
    return transform_bytes(self, arg, 0);
}

/* {ssrc: (roc, highest sequence number)}, or with extended set
 * {ssrc: ROC << 16 | SEQ} */
static PyObject *
stream_dict(Session *self, int extended)
{
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    for (int i = 0; i < self->nstreams; i++) {
        stream_t *st = &self->streams[i];
        PyObject *k = PyLong_FromUnsignedLong(st->ssrc);
        PyObject *v = extended
            ? PyLong_FromUnsignedLongLong(st->index)
            : Py_BuildValue("(kk)", (unsigned long)(st->index >> 16),
                            (unsigned long)(st->index & 0xffff));
        if (k == NULL || v == NULL || PyDict_SetItem(d, k, v) < 0) {
            Py_XDECREF(k);
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(k);
        Py_DECREF(v);
    }
    return d;
}

static PyObject *
Session_streams(Session *self, PyObject *Py_UNUSED(ignored))
{
    /* for tests and query */
    return stream_dict(self, 0);
}

static PyObject *
Session_indexes(Session *self, PyObject *Py_UNUSED(ignored))
{
    /* what resume() takes */
    return stream_dict(self, 1);
}

static PyObject *
Session_resume(Session *self, PyObject *args)
{
    unsigned long ssrc;
    unsigned long long index;
    if (!PyArg_ParseTuple(args, "kK", &ssrc, &index))
        return NULL;
    if (ssrc > 0xffffffffUL || index >= ((unsigned long long)1 << 48)) {
        PyErr_SetString(PyExc_ValueError,
                        "ssrc must fit in 32 bits and the index in 48 bits");
        return NULL;
    }
    stream_t *st = find_stream(self, (uint32_t)ssrc);
    if (st == NULL) {
        st = new_stream(self, (uint32_t)ssrc);
    } else if (st->index >= index) {
        Py_RETURN_NONE;  /* already there or past it */
    }
    st->index = index;
    /* the kept index was used: a packet carrying it again is a replay */
    st->seen_lo = 1;
    st->seen_hi = 0;
    st->used = ++self->clock;
    Py_RETURN_NONE;
}

static PyMethodDef Session_methods[] = {
    {"protect", (PyCFunction)Session_protect, METH_O,
     "protect(rtp) -> srtp bytes; raises Error(status, text)"},
    {"unprotect", (PyCFunction)Session_unprotect, METH_O,
     "unprotect(srtp) -> rtp bytes; raises Error(status, text)"},
    {"streams", (PyCFunction)Session_streams, METH_NOARGS,
     "streams() -> {ssrc: (roc, highest sequence number)}"},
    {"indexes", (PyCFunction)Session_indexes, METH_NOARGS,
     "indexes() -> {ssrc: ROC << 16 | highest sequence number}"},
    {"resume", (PyCFunction)Session_resume, METH_VARARGS,
     "resume(ssrc, index): go on from extended index ROC << 16 | SEQ"},
    {NULL}
};

static PyTypeObject SessionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "omnirtp.media._fastsrtp.Session",
    .tp_doc = "Session(master_key, master_salt, tag_length, outbound): one SRTP "
              "direction of AES_CM_128_HMAC_SHA1_80 (tag_length 10), _32 (4) or "
              "AEAD_AES_128_GCM (16)",
    .tp_basicsize = sizeof(Session),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Session_init,
    .tp_dealloc = (destructor)Session_dealloc,
    .tp_methods = Session_methods,
};

static PyObject *
fs_bind(PyObject *module, PyObject *args)
{
    PyObject *cdata, *length, *view, *lview;
    Py_buffer b, l;
    if (!PyArg_ParseTuple(args, "OOOO", &cdata, &length, &view, &lview))
        return NULL;
    if (PyObject_GetBuffer(view, &b, PyBUF_WRITABLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(lview, &l, PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&b);
        return NULL;
    }
    if (l.len != (Py_ssize_t)sizeof(int)) {
        PyBuffer_Release(&b);
        PyBuffer_Release(&l);
        PyErr_SetString(PyExc_ValueError, "the length buffer must hold one int");
        return NULL;
    }
    if (bound) {
        PyBuffer_Release(&bound_view);
        PyBuffer_Release(&bound_len);
        Py_CLEAR(bound_cdata);
    }
    bound_view = b;
    bound_len = l;
    Py_INCREF(cdata);
    bound_cdata = cdata;
    bound = 1;
    Py_RETURN_NONE;
}

static PyObject *
native(PyObject *const *args, Py_ssize_t nargs, int protect)
{
    if (nargs != 3 || Py_TYPE(args[0]) != &SessionType || args[1] != bound_cdata || !bound) {
        PyErr_SetString(PyExc_TypeError,
                        "expected (Session, the bound buffer, its length)");
        return NULL;
    }
    Session *s = (Session *)args[0];
    if (s->ecb == NULL)
        return PyLong_FromLong(ST_CRYPTO);  /* never initialised */
    int *lenp = (int *)bound_len.buf;
    Py_ssize_t len = *lenp;
    if (len < 0 || len > bound_view.len)
        return PyLong_FromLong(ST_LENGTH);
    Py_ssize_t n = protect ? do_protect(s, bound_view.buf, len, bound_view.len)
                           : do_unprotect(s, bound_view.buf, len);
    if (n < 0)
        return PyLong_FromLong((long)-n);
    *lenp = (int)n;
    return PyLong_FromLong(0);
}

static PyObject *
fs_protect_into(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return native(args, nargs, 1);
}

static PyObject *
fs_unprotect_into(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return native(args, nargs, 0);
}

static PyMethodDef module_methods[] = {
    {"bind", fs_bind, METH_VARARGS,
     "bind(cdata, length, view, length_view): the buffer *_into work on"},
    {"protect_into", (PyCFunction)(void (*)(void))fs_protect_into, METH_FASTCALL,
     "protect_into(session, cdata, length) -> status (0: done, length updated)"},
    {"unprotect_into", (PyCFunction)(void (*)(void))fs_unprotect_into, METH_FASTCALL,
     "unprotect_into(session, cdata, length) -> status (0: done, length updated)"},
    {NULL}
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "omnirtp.media._fastsrtp",
    .m_doc = "SRTP AES_CM_128_HMAC_SHA1_80/_32 and AEAD_AES_128_GCM with per-session "
             "crypto state",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__fastsrtp(void)
{
    if (PyType_Ready(&SessionType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    Error = PyErr_NewException("omnirtp.media._fastsrtp.Error", NULL, NULL);
    if (Error == NULL || PyModule_AddObject(m, "Error", Error) < 0) {
        Py_XDECREF(Error);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(Error);
    Py_INCREF(&SessionType);
    if (PyModule_AddObject(m, "Session", (PyObject *)&SessionType) < 0) {
        Py_DECREF(&SessionType);
        Py_DECREF(m);
        return NULL;
    }
    static const struct { const char *name; long value; } constants[] = {
        {"OK", ST_OK}, {"AUTH", ST_AUTH}, {"REPLAY", ST_REPLAY}, {"OLD", ST_OLD},
        {"PARSE", ST_PARSE}, {"LENGTH", ST_LENGTH}, {"CRYPTO", ST_CRYPTO},
        {"MAX_STREAMS", MAX_STREAMS}, {"WINDOW", WINDOW},
    };
    for (size_t i = 0; i < sizeof(constants) / sizeof(*constants); i++)
        if (PyModule_AddIntConstant(m, constants[i].name, constants[i].value) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    return m;
}
