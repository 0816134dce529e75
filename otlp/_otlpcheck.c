/*
 * Strict check of OTLP protobuf bytes against tables made from the message descriptors.
 *
 * Why not protobuf's own parser: upb (and protobuf in general) reads a known field sent with
 * another wire type as an unknown field, keeps the low 64 bits of a ten-byte varint whose last
 * byte is over 1, and the low 32 bits of an over-wide int32/sint32/enum. Go's pdata (the
 * Collector, Jaeger) refuses a known field with the wrong wire type, and the stores would get
 * values the client never meant. So the edge refuses all of these, and every sink decodes what
 * it accepted alike. It also checks UTF-8 of string fields (proto3 requires it; upb and Go
 * refuse it), tags and lengths of at most 5 bytes (upb refuses longer ones) and bounds the
 * nesting of AnyValue arrays/kvlists, without allocating anything: about 0.17 ms of CPU for a
 * 512-span request (230 KB) on the reference machine.
 *
 * Tables (set once by setup()): a flat int32 array
 *   [n_messages, then per message: max_field, nests (1 if entering it is a level of AnyValue
 *   nesting), then kind | REPEATED for each field number 0..max_field, then the sub-message
 *   index for each]
 * Field numbers not in a table are unknown fields: accepted with any valid wire format, as
 * protobuf requires, so data from a newer OTLP version passes.
 *
 * check(buffer, message index, max nesting, max items) -> the number of items (fields flagged ITEM:
 * spans, log records, data points), or (code, message index, field number, offset).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum {
    K_NONE = 0, K_MSG = 1, K_STRING = 2, K_BYTES = 3, K_INT64 = 4, K_INT32 = 5, K_UINT32 = 6,
    K_SINT32 = 7, K_SINT64 = 8, K_BOOL = 9, K_FIXED64 = 10, K_FIXED32 = 11, K_UINT64 = 12,
    K_ID = 13 /* bytes of exactly subs[field] bytes, or empty: trace and span ids (pdata refuses others) */
};
#define REPEATED 0x100
#define ITEM 0x200 /* a span, log record or data point: counted, up to a limit */

enum {
    E_OK = 0, E_TRUNCATED = 1, E_VARINT_TOO_LONG = 2, E_VARINT_OVERFLOW = 3, E_WIRE_TYPE = 4,
    E_GROUP = 5, E_FIELD_NUMBER = 6, E_UTF8 = 7, E_DEPTH = 8, E_RANGE = 9, E_PACKED = 10,
    E_TOO_MANY = 11, E_ID_LENGTH = 12
};

typedef struct {
    int32_t max_field;
    int32_t nests; /* 1 for ArrayValue and KeyValueList: entering one is a level of value nesting */
    const int32_t *kinds; /* max_field + 1 entries */
    const int32_t *subs;
} Msg;

static int32_t *table_ints = NULL;
static Msg *msgs = NULL;
static int32_t n_msgs = 0;

typedef struct {
    const uint8_t *base; /* start of the buffer, for offsets in errors */
    int code;
    int32_t msg;
    uint32_t field;
    Py_ssize_t offset;
    long long items; /* ITEM fields seen */
    long long limit; /* more is E_TOO_MANY */
} Err;

static int fail(Err *err, int code, int32_t msg, uint32_t field, const uint8_t *at) {
    err->code = code;
    err->msg = msg;
    err->field = field;
    err->offset = at - err->base;
    return 0;
}

/* Reads a varint of at most ``max_bytes`` (10 for values; 5 for tags and lengths, as upb
   requires); 0 on error with *code set (msg/field filled by the caller's fail). */
static inline int read_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out, int *code,
                              int max_bytes) {
    const uint8_t *p = *pp;
    if (p < end && *p < 0x80) { /* most tags, lengths and values are one byte */
        *out = *p;
        *pp = p + 1;
        return 1;
    }
    uint64_t r = 0;
    for (int i = 0; i < 10; i++) {
        if (i == max_bytes) {
            *code = E_VARINT_TOO_LONG;
            return 0;
        }
        if (p >= end) {
            *code = E_TRUNCATED;
            return 0;
        }
        uint8_t b = *p++;
        if (i == 9) {
            if (b & 0x80) {
                *code = E_VARINT_TOO_LONG;
                return 0;
            }
            if (b > 1) {
                *code = E_VARINT_OVERFLOW;
                return 0;
            }
            r |= (uint64_t)b << 63;
            break;
        }
        r |= (uint64_t)(b & 0x7F) << (7 * i);
        if (b < 0x80)
            break;
    }
    *out = r;
    *pp = p;
    return 1;
}

/* RFC 3629 UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF. */
static int valid_utf8(const uint8_t *s, const uint8_t *end) {
    while (s < end) {
        /* ASCII runs, eight bytes at a time */
        while (end - s >= 8) {
            uint64_t w;
            memcpy(&w, s, 8);
            if (w & 0x8080808080808080ULL)
                break;
            s += 8;
        }
        if (s >= end)
            break;
        uint8_t c = *s;
        if (c < 0x80) {
            s++;
        } else if (c >= 0xC2 && c <= 0xDF) {
            if (end - s < 2 || (s[1] & 0xC0) != 0x80)
                return 0;
            s += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (end - s < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
                return 0;
            if (c == 0xE0 && s[1] < 0xA0)
                return 0; /* overlong */
            if (c == 0xED && s[1] > 0x9F)
                return 0; /* surrogate */
            s += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (end - s < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
                return 0;
            if (c == 0xF0 && s[1] < 0x90)
                return 0; /* overlong */
            if (c == 0xF4 && s[1] > 0x8F)
                return 0; /* past U+10FFFF */
            s += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

static inline int is_varint_kind(int kind) {
    return kind == K_INT64 || kind == K_INT32 || kind == K_UINT32 || kind == K_SINT32 ||
           kind == K_SINT64 || kind == K_BOOL || kind == K_UINT64;
}

/* Whether a varint value is what a canonical writer of this kind produces. */
static inline int in_range(int kind, uint64_t v) {
    switch (kind) {
    case K_INT32: /* non-negative, or a negative int32 sign-extended to 64 bits */
        return v <= 0x7FFFFFFFULL || v >= 0xFFFFFFFF80000000ULL;
    case K_UINT32:
    case K_SINT32:
        return v <= 0xFFFFFFFFULL;
    default:
        return 1;
    }
}

static int check_msg(const uint8_t *p, const uint8_t *end, int32_t mi, int depth, int max_nesting, Err *err) {
    const Msg *m = &msgs[mi];
    int code = 0;
    while (p < end) {
        const uint8_t *at = p;
        uint64_t tag;
        if (!read_varint(&p, end, &tag, &code, 5))
            return fail(err, code, mi, 0, at);
        if (tag > 0xFFFFFFFFULL || (tag >> 3) == 0)
            return fail(err, E_FIELD_NUMBER, mi, (uint32_t)(tag >> 3), at);
        uint32_t field = (uint32_t)(tag >> 3);
        int wt = (int)(tag & 7);
        int32_t entry = field <= (uint32_t)m->max_field ? m->kinds[field] : K_NONE;
        int kind = entry & 0xFF;
        int repeated = (entry & REPEATED) != 0;
        switch (wt) {
        case 0: {
            uint64_t v;
            if (!read_varint(&p, end, &v, &code, 10))
                return fail(err, code, mi, field, at);
            if (kind != K_NONE && !is_varint_kind(kind))
                return fail(err, E_WIRE_TYPE, mi, field, at);
            if (!in_range(kind, v))
                return fail(err, E_RANGE, mi, field, at);
            break;
        }
        case 1:
            if (end - p < 8)
                return fail(err, E_TRUNCATED, mi, field, at);
            if (kind != K_NONE && kind != K_FIXED64)
                return fail(err, E_WIRE_TYPE, mi, field, at);
            p += 8;
            break;
        case 5:
            if (end - p < 4)
                return fail(err, E_TRUNCATED, mi, field, at);
            if (kind != K_NONE && kind != K_FIXED32)
                return fail(err, E_WIRE_TYPE, mi, field, at);
            p += 4;
            break;
        case 2: {
            uint64_t len;
            if (!read_varint(&p, end, &len, &code, 5))
                return fail(err, code, mi, field, at);
            if (len > (uint64_t)(end - p))
                return fail(err, E_TRUNCATED, mi, field, at);
            const uint8_t *vs = p, *ve = p + len;
            p = ve;
            switch (kind) {
            case K_NONE:
            case K_BYTES:
                break;
            case K_ID:
                if (len != 0 && len != (uint64_t)m->subs[field])
                    return fail(err, E_ID_LENGTH, mi, field, at);
                break;
            case K_STRING:
                if (!valid_utf8(vs, ve))
                    return fail(err, E_UTF8, mi, field, at);
                break;
            case K_MSG: {
                if ((entry & ITEM) && ++err->items > err->limit)
                    return fail(err, E_TOO_MANY, mi, field, at);
                /* OTLP's messages nest only through AnyValue's arrays and kvlists, so counting
                   those bounds the recursion too. */
                int32_t sub = m->subs[field];
                int nested = depth + msgs[sub].nests;
                if (nested > max_nesting)
                    return fail(err, E_DEPTH, mi, field, at);
                if (!check_msg(vs, ve, sub, nested, max_nesting, err))
                    return 0;
                break;
            }
            case K_FIXED64:
                if (!repeated)
                    return fail(err, E_WIRE_TYPE, mi, field, at);
                if (len % 8)
                    return fail(err, E_PACKED, mi, field, at);
                break;
            case K_FIXED32:
                if (!repeated)
                    return fail(err, E_WIRE_TYPE, mi, field, at);
                if (len % 4)
                    return fail(err, E_PACKED, mi, field, at);
                break;
            default: /* packed varints */
                if (!repeated)
                    return fail(err, E_WIRE_TYPE, mi, field, at);
                while (vs < ve) {
                    uint64_t v;
                    if (!read_varint(&vs, ve, &v, &code, 10))
                        return fail(err, code == E_TRUNCATED ? E_PACKED : code, mi, field, at);
                    if (!in_range(kind, v))
                        return fail(err, E_RANGE, mi, field, at);
                }
            }
            break;
        }
        case 3:
        case 4:
            return fail(err, E_GROUP, mi, field, at);
        default:
            return fail(err, E_WIRE_TYPE, mi, field, at);
        }
    }
    return 1;
}

static PyObject *setup(PyObject *self, PyObject *args) {
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "y*", &view))
        return NULL;
    Py_ssize_t n = view.len / 4;
    int32_t *ints = malloc(view.len ? view.len : 4);
    if (ints == NULL) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    memcpy(ints, view.buf, view.len);
    PyBuffer_Release(&view);
    if (n < 1 || ints[0] < 1) {
        free(ints);
        PyErr_SetString(PyExc_ValueError, "empty table");
        return NULL;
    }
    int32_t count = ints[0];
    Msg *ms = calloc((size_t)count, sizeof(Msg));
    if (ms == NULL) {
        free(ints);
        return PyErr_NoMemory();
    }
    Py_ssize_t pos = 1;
    for (int32_t i = 0; i < count; i++) {
        if (pos + 1 >= n || ints[pos] < 0 || pos + 2 + 2 * ((Py_ssize_t)ints[pos] + 1) > n) {
            free(ints);
            free(ms);
            PyErr_SetString(PyExc_ValueError, "truncated table");
            return NULL;
        }
        int32_t max_field = ints[pos++];
        ms[i].max_field = max_field;
        ms[i].nests = ints[pos++];
        ms[i].kinds = &ints[pos];
        ms[i].subs = &ints[pos + max_field + 1];
        pos += 2 * ((Py_ssize_t)max_field + 1);
        for (int32_t f = 0; f <= max_field; f++) {
            if ((ms[i].kinds[f] & 0xFF) == K_MSG && (ms[i].subs[f] < 0 || ms[i].subs[f] >= count)) {
                free(ints);
                free(ms);
                PyErr_SetString(PyExc_ValueError, "sub-message index out of range");
                return NULL;
            }
        }
    }
    free(table_ints);
    free(msgs);
    table_ints = ints;
    msgs = ms;
    n_msgs = count;
    Py_RETURN_NONE;
}

static PyObject *check(PyObject *self, PyObject *args) {
    Py_buffer view;
    int32_t mi;
    int max_nesting;
    long long limit;
    if (!PyArg_ParseTuple(args, "y*iiL", &view, &mi, &max_nesting, &limit))
        return NULL;
    if (msgs == NULL || mi < 0 || mi >= n_msgs) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "no table, or message index out of range");
        return NULL;
    }
    const uint8_t *buf = (const uint8_t *)view.buf;
    Err err = {buf, 0, 0, 0, 0, 0, limit};
    int ok;
    if (view.len < (1 << 20)) {
        /* Short work keeps the GIL: giving it up can cost a wait of a whole switch interval (5 ms)
           to get it back while another thread runs. */
        ok = check_msg(buf, buf + view.len, mi, 0, max_nesting, &err);
    } else {
        /* Megabytes take milliseconds: let the event loop run meanwhile (large requests are
           checked in a worker thread). The buffer is held by the view; tables change only in
           setup(). */
        Py_BEGIN_ALLOW_THREADS
        ok = check_msg(buf, buf + view.len, mi, 0, max_nesting, &err);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&view);
    if (ok)
        return PyLong_FromLongLong(err.items);
    return Py_BuildValue("(iiIn)", err.code, err.msg, err.field, err.offset);
}

static PyMethodDef methods[] = {
    {"setup", setup, METH_VARARGS, "setup(table: bytes) -> None: install the descriptor tables."},
    {"check", check, METH_VARARGS,
     "check(buffer, message_index, max_nesting, max_items) -> items | (code, message_index, field, offset)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_otlpcheck", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__otlpcheck(void) { return PyModule_Create(&module); }
