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
 *
 * span_buckets(payload, partitions): the traces split of otlp/partitioning.py (see below).
 * metric_buckets(payload, partitions): its metrics split (see below).
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

/* ---- span_buckets: the traces case of otlp/wire.py group_spans, over bytes ------------------
 *
 * span_buckets(payload, partitions) -> {bucket: ExportTraceServiceRequest} | None, byte for byte
 * what wire.group_spans(payload, lambda t: zlib.crc32(t) % partitions) returns (wire.py is the
 * reference: same grouping, same order of resources, scopes and spans, resource and scope
 * headers repeated once per bucket before their scopes / spans). None for any payload the
 * Python walk would refuse (the caller then runs it, which raises WireError with a path), and
 * for partitions outside 1..65536. CRC-32 is zlib's (IEEE, reflected 0xEDB88320).
 */

static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

/* zlib.crc32(p[:n], crc): the CRC-32 of what crc covered followed by p[:n]. */
static uint32_t crc32_more(uint32_t crc, const uint8_t *p, size_t n) {
    uint32_t c = crc ^ 0xFFFFFFFFu;
    while (n--)
        c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static uint32_t crc32_ieee(const uint8_t *p, size_t n) {
    return crc32_more(0, p, n);
}

/* wire.read_varint: at most 10 bytes, the 10th without a continuation bit. *big when the value
   needs more than 64 bits (Python keeps it whole: such a tag is some huge field number, such a
   length is past any end). 0, or -1 for a truncated or too long varint. */
static int sb_varint(const uint8_t *b, size_t pos, size_t end, uint64_t *val, int *big, size_t *after) {
    uint64_t v = 0;
    int shift = 0;
    *big = 0;
    while (pos < end) {
        uint8_t c = b[pos++];
        if (shift == 63 && (c & 0x7F) > 1)
            *big = 1;
        v |= (uint64_t)(c & 0x7F) << shift;
        if (c < 0x80) {
            *val = v;
            *after = pos;
            return 0;
        }
        shift += 7;
        if (shift >= 70)
            return -1;
    }
    return -1;
}

/* One field as wire._fields reads it: num (SB_BIG for a tag over 64 bits), wire type, value
   start and end. -1 where _fields raises WireError. */
#define SB_BIG UINT64_MAX
static int sb_field(const uint8_t *b, size_t pos, size_t end, uint64_t *num, int *wt, size_t *vstart,
                    size_t *after) {
    uint64_t tag, v;
    int big;
    if (sb_varint(b, pos, end, &tag, &big, &pos) < 0)
        return -1;
    *num = big ? SB_BIG : tag >> 3;
    *wt = (int)(tag & 7);
    if (*num == 0)
        return -1;
    switch (*wt) {
    case 0:
        if (sb_varint(b, pos, end, &v, &big, &pos) < 0)
            return -1;
        *vstart = *after = pos;
        return 0;
    case 1:
    case 5: {
        size_t n = *wt == 1 ? 8 : 4;
        if (n > end - pos)
            return -1;
        *vstart = pos;
        *after = pos + n;
        return 0;
    }
    case 2:
        if (sb_varint(b, pos, end, &v, &big, &pos) < 0 || big || v > end - pos)
            return -1;
        *vstart = pos;
        *after = pos + (size_t)v;
        return 0;
    default:
        return -1;
    }
}

typedef struct { size_t s, e; } SbRange;
typedef struct { size_t s, e; int32_t scope, group, next; } SbSpan;
typedef struct { int32_t res; size_t head_first, head_count, head_len; } SbScope;
typedef struct { size_t head_first, head_count, head_len; } SbRes;

typedef struct {
    SbRange *heads; size_t n_heads, cap_heads;
    SbSpan *spans; size_t n_spans, cap_spans;
    SbScope *scopes; size_t n_scopes, cap_scopes;
    SbRes *res; size_t n_res, cap_res;
} SbParse;

/* Grow *arr (of *cap elements of size sz) to hold one more; 0 or -1 (no memory). */
static int sb_grow(void **arr, size_t *cap, size_t n, size_t sz) {
    if (n < *cap)
        return 0;
    size_t nc = *cap ? *cap * 2 : 64;
    void *p = realloc(*arr, nc * sz);
    if (p == NULL)
        return -1;
    *arr = p;
    *cap = nc;
    return 0;
}
#define SB_PUSH(P, ARR, N, CAP) (sb_grow((void **)&(P)->ARR, &(P)->CAP, (P)->N, sizeof(*(P)->ARR)) < 0 ? -1 : 0)

/* A header field [s, e) of a resource or scope, counted in its *count and *len (which are not in
   the heads array, so growing it leaves them in place); 0, or -1 (no memory). */
static int sb_add_head(SbParse *p, size_t s, size_t e, size_t *count, size_t *len) {
    if (SB_PUSH(p, heads, n_heads, cap_heads) < 0)
        return -1;
    p->heads[p->n_heads].s = s;
    p->heads[p->n_heads++].e = e;
    (*count)++;
    *len += e - s;
    return 0;
}

static size_t sb_varint_len(size_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *sb_put_varint(uint8_t *o, size_t v) {
    while (v >= 0x80) {
        *o++ = (uint8_t)((v & 0x7F) | 0x80);
        v >>= 7;
    }
    *o++ = (uint8_t)v;
    return o;
}

/* Walk a message as wire._fields does: -1 where it raises, else 0 with [*vs, *ve) the value of the
   last length-delimited field numbered `want` (left as it was when there is none). */
static int sb_walk(const uint8_t *b, size_t pos, size_t end, uint64_t want, size_t *vs, size_t *ve) {
    while (pos < end) {
        uint64_t num;
        int wt;
        size_t fvs, after;
        if (sb_field(b, pos, end, &num, &wt, &fvs, &after) < 0)
            return -1;
        if (num == want && wt == 2) {
            *vs = fvs;
            *ve = after;
        }
        pos = after;
    }
    return 0;
}

/* wire._trace_id: field 1 (length-delimited) of a span body, the last occurrence; empty when
   the body cannot be walked. Returns its CRC-32. */
static uint32_t sb_trace_crc(const uint8_t *b, size_t pos, size_t end) {
    size_t vs = 0, ve = 0;
    if (sb_walk(b, pos, end, 1, &vs, &ve) < 0)
        return 0; /* crc32(b"") */
    return crc32_ieee(b + vs, ve - vs);
}

/* The next length-delimited field numbered `want` from *pos in a message already walked without
   fault: 1 with its value [*vs, *ve) and *pos after it, or 0 at the end. */
static int sb_next_len(const uint8_t *b, size_t *pos, size_t end, uint64_t want, size_t *vs, size_t *ve) {
    while (*pos < end) {
        uint64_t num;
        int wt;
        sb_field(b, *pos, end, &num, &wt, vs, ve);
        *pos = *ve;
        if (num == want && wt == 2)
            return 1;
    }
    return 0;
}

/* The walk of group_spans: -1 where it raises WireError, -2 when out of memory. */
static int sb_parse(const uint8_t *b, size_t len, uint64_t partitions, int32_t *slot, int32_t *n_groups,
                    int32_t *group_bucket, int32_t *last_span, int32_t *first_span, SbParse *p) {
    size_t pos = 0, unused_s = 0, unused_e = 0;
    /* The whole top level is walked before anything, as group_spans does (field 0 is never one). */
    if (sb_walk(b, 0, len, 0, &unused_s, &unused_e) < 0)
        return -1;
    size_t rvs, rve;
    while (sb_next_len(b, &pos, len, 1, &rvs, &rve)) {
        uint64_t num;
        int wt;
        /* Resource fields: all walked first; every one but scope_spans is the header. */
        if (SB_PUSH(p, res, n_res, cap_res) < 0)
            return -2;
        SbRes *r = &p->res[p->n_res];
        r->head_first = p->n_heads;
        r->head_count = 0;
        r->head_len = 0;
        int32_t ri = (int32_t)p->n_res++;
        size_t q = rvs;
        while (q < rve) {
            size_t vs, after;
            if (sb_field(b, q, rve, &num, &wt, &vs, &after) < 0)
                return -1;
            if (!(num == 2 && wt == 2) && sb_add_head(p, q, after, &p->res[ri].head_count, &p->res[ri].head_len) < 0)
                return -2;
            q = after;
        }
        q = rvs;
        size_t svs, sve;
        while (sb_next_len(b, &q, rve, 2, &svs, &sve)) {
            if (SB_PUSH(p, scopes, n_scopes, cap_scopes) < 0)
                return -2;
            int32_t si = (int32_t)p->n_scopes++;
            SbScope *sc = &p->scopes[si];
            sc->res = ri;
            sc->head_first = p->n_heads;
            sc->head_count = 0;
            sc->head_len = 0;
            size_t s = svs;
            while (s < sve) {
                size_t start = s, after, vs;
                if (b[s] != 0x12) { /* not a span: part of the scope's header */
                    if (sb_field(b, s, sve, &num, &wt, &vs, &after) < 0)
                        return -1;
                    if (sb_add_head(p, start, after, &p->scopes[si].head_count, &p->scopes[si].head_len) < 0)
                        return -2;
                    s = after;
                    continue;
                }
                uint64_t length;
                int big;
                if (start + 1 >= sve || sb_varint(b, start + 1, sve, &length, &big, &s) < 0 || big ||
                    length > sve - s)
                    return -1;
                size_t body = s;
                s += (size_t)length;
                uint32_t crc;
                if (length >= 18 && b[body] == 0x0A && b[body + 1] == 16)
                    crc = crc32_ieee(b + body + 2, 16); /* SDKs write trace_id first */
                else
                    crc = sb_trace_crc(b, body, s);
                int32_t bucket = (int32_t)((uint64_t)crc % partitions);
                int32_t g = slot[bucket];
                if (g < 0) {
                    g = slot[bucket] = (*n_groups)++;
                    group_bucket[g] = bucket;
                    first_span[g] = -1;
                    last_span[g] = -1;
                }
                if (SB_PUSH(p, spans, n_spans, cap_spans) < 0)
                    return -2;
                int32_t k = (int32_t)p->n_spans++;
                SbSpan *sp = &p->spans[k];
                sp->s = start;
                sp->e = s;
                sp->scope = si;
                sp->group = g;
                sp->next = -1;
                if (last_span[g] < 0)
                    first_span[g] = k;
                else
                    p->spans[last_span[g]].next = k;
                last_span[g] = k;
            }
        }
    }
    return 0;
}

/* Size of the scope_spans field of scope si holding the spans of one group from span k on
   (while they are in scope si); *next_k is the first span after them. */
static size_t sb_scope_size(const SbParse *p, int32_t k, int32_t *next_k, size_t *body_len) {
    int32_t si = p->spans[k].scope;
    size_t n = p->scopes[si].head_len;
    while (k >= 0 && p->spans[k].scope == si) {
        n += p->spans[k].e - p->spans[k].s;
        k = p->spans[k].next;
    }
    *next_k = k;
    *body_len = n;
    return 1 + sb_varint_len(n) + n;
}

/* Size of the resource_spans body for the group's spans from k on (while in the resource). */
static size_t sb_res_body(const SbParse *p, int32_t k, int32_t *next_k) {
    int32_t ri = p->scopes[p->spans[k].scope].res;
    size_t n = p->res[ri].head_len, body;
    while (k >= 0 && p->scopes[p->spans[k].scope].res == ri)
        n += sb_scope_size(p, k, &k, &body);
    *next_k = k;
    return n;
}

static uint8_t *sb_put_heads(uint8_t *o, const uint8_t *b, const SbParse *p, size_t first, size_t count) {
    for (size_t i = first; i < first + count; i++) {
        memcpy(o, b + p->heads[i].s, p->heads[i].e - p->heads[i].s);
        o += p->heads[i].e - p->heads[i].s;
    }
    return o;
}

static PyObject *sb_group_bytes(const uint8_t *b, const SbParse *p, int32_t first) {
    size_t total = 0;
    int32_t k = first;
    while (k >= 0) {
        size_t body = sb_res_body(p, k, &k);
        total += 1 + sb_varint_len(body) + body;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (out == NULL)
        return NULL;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    k = first;
    while (k >= 0) {
        int32_t end_k;
        const SbRes *r = &p->res[p->scopes[p->spans[k].scope].res];
        size_t body = sb_res_body(p, k, &end_k);
        *o++ = 0x0A;
        o = sb_put_varint(o, body);
        o = sb_put_heads(o, b, p, r->head_first, r->head_count);
        while (k != end_k) {
            const SbScope *sc = &p->scopes[p->spans[k].scope];
            int32_t si = p->spans[k].scope, after;
            size_t sbody;
            sb_scope_size(p, k, &after, &sbody);
            *o++ = 0x12;
            o = sb_put_varint(o, sbody);
            o = sb_put_heads(o, b, p, sc->head_first, sc->head_count);
            while (k >= 0 && p->spans[k].scope == si) {
                memcpy(o, b + p->spans[k].s, p->spans[k].e - p->spans[k].s);
                o += p->spans[k].e - p->spans[k].s;
                k = p->spans[k].next;
            }
        }
    }
    return out;
}

#define SB_MAX_PARTITIONS 65536

/* dict[bucket] = val, taking val's reference (NULL: an error already set); 0, or -1 on error. */
static int sb_dict_put(PyObject *dict, int32_t bucket, PyObject *val) {
    if (val == NULL)
        return -1;
    PyObject *key = PyLong_FromLong(bucket);
    int rc = key == NULL ? -1 : PyDict_SetItem(dict, key, val);
    Py_XDECREF(key);
    Py_DECREF(val);
    return rc;
}

static PyObject *span_buckets(PyObject *self, PyObject *args) {
    Py_buffer view;
    long long partitions;
    if (!PyArg_ParseTuple(args, "y*L", &view, &partitions))
        return NULL;
    if (partitions < 1 || partitions > SB_MAX_PARTITIONS || view.len > INT32_MAX / 2) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    const uint8_t *b = (const uint8_t *)view.buf;
    size_t len = (size_t)view.len;
    SbParse p;
    memset(&p, 0, sizeof p);
    int32_t *ints = malloc(sizeof(int32_t) * (size_t)partitions * 4);
    PyObject *result = NULL;
    if (ints == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    int32_t *slot = ints, *group_bucket = ints + partitions, *first_span = ints + 2 * partitions,
            *last_span = ints + 3 * partitions;
    for (long long i = 0; i < partitions; i++)
        slot[i] = -1;
    int32_t n_groups = 0;
    int rc = sb_parse(b, len, (uint64_t)partitions, slot, &n_groups, group_bucket, last_span, first_span, &p);
    if (rc == -2) {
        PyErr_NoMemory();
        goto done;
    }
    if (rc < 0) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    result = PyDict_New();
    if (result == NULL)
        goto done;
    for (int32_t g = 0; g < n_groups; g++) {
        if (sb_dict_put(result, group_bucket[g], sb_group_bytes(b, &p, first_span[g])) < 0) {
            Py_CLEAR(result);
            goto done;
        }
    }
done:
    free(ints);
    free(p.heads);
    free(p.spans);
    free(p.scopes);
    free(p.res);
    PyBuffer_Release(&view);
    return result;
}

/* ---- metric_buckets: the metrics case of otlp/wire.py group_resources, over bytes -------------
 *
 * metric_buckets(payload, partitions) -> {bucket: ExportMetricsServiceRequest} | None, byte for
 * byte what wire.group_resources(payload, partitioning.METRIC_IDENTITY_KEYS,
 * lambda a: partitioning.metric_bucket(a, partitions)) returns (the Python is the reference):
 * each ResourceMetrics whole, in order, in the bucket crc32(job NUL instance) % partitions, with
 * job = service.namespace "/" service.name (service.name alone when the namespace is empty) and
 * instance = service.instance.id, each the text of a string AnyValue (else its bytes), the last
 * occurrence winning; top-level fields other than resource_metrics go first in the first bucket.
 * None where the Python walk raises WireError and for partitions outside 1..65536.
 */

typedef struct { size_t s, e; int32_t next; } MbRes;

enum { MB_NAME = 0, MB_NAMESPACE = 1, MB_INSTANCE = 2, MB_KEYS = 3 };
static const char *const mb_keys[MB_KEYS] = {"service.name", "service.namespace", "service.instance.id"};

/* Index in mb_keys of the key b[s, e), or -1. */
static int mb_key_index(const uint8_t *b, size_t s, size_t e) {
    for (int k = 0; k < MB_KEYS; k++) {
        size_t n = strlen(mb_keys[k]);
        if (e - s == n && memcmp(b + s, mb_keys[k], n) == 0)
            return k;
    }
    return -1;
}

static int mb_contains(const uint8_t *h, size_t n, const char *needle) {
    size_t m = strlen(needle);
    const uint8_t *end = h + n;
    while (m <= (size_t)(end - h)) {
        const uint8_t *at = memchr(h, needle[0], (size_t)(end - h) - m + 1);
        if (at == NULL)
            return 0;
        if (memcmp(at, needle, m) == 0)
            return 1;
        h = at + 1;
    }
    return 0;
}

/* wire._resource_attributes over one ResourceMetrics body [pos, end): the AnyValue body of each
   identity key into vs/ve (left as they were when absent); -1 where the Python walk raises. */
static int mb_attributes(const uint8_t *b, size_t len, size_t pos, size_t end, size_t *vs, size_t *ve) {
    while (pos < end) {
        uint64_t num;
        int wt;
        size_t rvs, rve;
        if (sb_field(b, pos, end, &num, &wt, &rvs, &rve) < 0)
            return -1;
        pos = rve;
        if (num != 1 || wt != 2)
            continue;
        /* Resources without the text of any key are not walked (service.name covers namespace). */
        if (!mb_contains(b + rvs, rve - rvs, "service.name") && !mb_contains(b + rvs, rve - rvs, "service.instance.id"))
            continue;
        size_t q = rvs;
        while (q < rve) {
            size_t avs, ave;
            if (sb_field(b, q, rve, &num, &wt, &avs, &ave) < 0)
                return -1;
            q = ave;
            if (num != 1 || wt != 2)
                continue;
            if (ave - avs > 2 && b[avs] == 0x0A && b[avs + 1] < 0x80) {
                /* SDKs write the key first. As Python's slice, the compared key may run past the
                   attribute (to the end of the payload); the walk below then refuses it. */
                size_t ks = avs + 2, ke = (ks + b[avs + 1] < len) ? ks + b[avs + 1] : len;
                if (mb_key_index(b, ks, ke) < 0)
                    continue;
            }
            size_t kvs = 0, kve = 0, vvs = 0, vve = 0;
            int has_key = 0;
            size_t r = avs;
            while (r < ave) {
                size_t fvs, fve;
                if (sb_field(b, r, ave, &num, &wt, &fvs, &fve) < 0)
                    return -1;
                r = fve;
                if (num == 1 && wt == 2) {
                    kvs = fvs;
                    kve = fve;
                    has_key = 1;
                } else if (num == 2 && wt == 2) {
                    vvs = fvs;
                    vve = fve;
                }
            }
            int k = has_key ? mb_key_index(b, kvs, kve) : -1;
            if (k >= 0) {
                vs[k] = vvs;
                ve[k] = vve;
            }
        }
    }
    return 0;
}

/* partitioning._label: [*s, *e) narrowed to the text of an AnyValue holding only a string_value. */
static void mb_label(const uint8_t *b, size_t *s, size_t *e) {
    uint64_t n;
    int big;
    size_t start;
    if (*e > *s && b[*s] == 0x0A && sb_varint(b, *s + 1, *e, &n, &big, &start) == 0 && !big &&
        n == *e - start)
        *s = start;
}

/* partitioning.metric_bucket's CRC-32 of job NUL instance from the AnyValue bodies. */
static uint32_t mb_identity_crc(const uint8_t *b, size_t *vs, size_t *ve) {
    for (int k = 0; k < MB_KEYS; k++)
        mb_label(b, &vs[k], &ve[k]);
    uint32_t crc = 0;
    if (ve[MB_NAMESPACE] > vs[MB_NAMESPACE]) {
        crc = crc32_more(crc, b + vs[MB_NAMESPACE], ve[MB_NAMESPACE] - vs[MB_NAMESPACE]);
        crc = crc32_more(crc, (const uint8_t *)"/", 1);
    }
    crc = crc32_more(crc, b + vs[MB_NAME], ve[MB_NAME] - vs[MB_NAME]);
    crc = crc32_more(crc, (const uint8_t *)"", 1); /* the NUL */
    return crc32_more(crc, b + vs[MB_INSTANCE], ve[MB_INSTANCE] - vs[MB_INSTANCE]);
}

/* The bytes of one bucket: the n_others fields of others (others_len bytes), then the resources
   linked from first (res_len bytes). */
static PyObject *mb_group_bytes(const uint8_t *b, const MbRes *others, size_t n_others, size_t others_len,
                                const MbRes *res, int32_t first, size_t res_len) {
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(others_len + res_len));
    if (out == NULL)
        return NULL;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    for (size_t i = 0; i < n_others; i++) {
        memcpy(o, b + others[i].s, others[i].e - others[i].s);
        o += others[i].e - others[i].s;
    }
    for (int32_t k = first; k >= 0; k = res[k].next) {
        memcpy(o, b + res[k].s, res[k].e - res[k].s);
        o += res[k].e - res[k].s;
    }
    return out;
}

/* What the walk of metric_buckets finds: per bucket its group (slot, -1 for none); per group its
   bucket, first and last resource and byte count; the resources (linked per group) and the other
   top-level fields, as ranges of the payload. */
typedef struct {
    int32_t *slot, *group_bucket, *first, *last, n_groups;
    size_t *group_len;
    MbRes *res, *others;
    size_t n_res, cap_res, n_others, cap_others, others_len;
} MbParse;

static void mb_free(MbParse *m) {
    free(m->slot);
    free(m->group_len);
    free(m->res);
    free(m->others);
}

/* The walk of group_resources: 0, -1 where it raises WireError, -2 when out of memory. */
static int mb_parse(const uint8_t *b, size_t len, int32_t partitions, MbParse *m) {
    m->slot = malloc(sizeof(int32_t) * (size_t)partitions * 4);
    m->group_len = calloc((size_t)partitions, sizeof(size_t));
    if (m->slot == NULL || m->group_len == NULL)
        return -2;
    m->group_bucket = m->slot + partitions;
    m->first = m->slot + 2 * partitions;
    m->last = m->slot + 3 * partitions;
    for (int32_t i = 0; i < partitions; i++)
        m->slot[i] = -1;
    size_t pos = 0, unused_s = 0, unused_e = 0;
    if (sb_walk(b, 0, len, 0, &unused_s, &unused_e) < 0) /* the whole top level first, as _fields */
        return -1;
    while (pos < len) {
        uint64_t num;
        int wt;
        size_t vs, after, start = pos;
        sb_field(b, pos, len, &num, &wt, &vs, &after);
        pos = after;
        if (num != 1 || wt != 2) {
            if (sb_grow((void **)&m->others, &m->cap_others, m->n_others, sizeof *m->others) < 0)
                return -2;
            m->others[m->n_others].s = start;
            m->others[m->n_others++].e = after;
            m->others_len += after - start;
            continue;
        }
        size_t avs[MB_KEYS] = {0, 0, 0}, ave[MB_KEYS] = {0, 0, 0};
        if (mb_attributes(b, len, vs, after, avs, ave) < 0)
            return -1;
        int32_t bucket = (int32_t)(mb_identity_crc(b, avs, ave) % (uint32_t)partitions);
        int32_t g = m->slot[bucket];
        if (g < 0) {
            g = m->slot[bucket] = m->n_groups++;
            m->group_bucket[g] = bucket;
            m->first[g] = m->last[g] = -1;
        }
        if (sb_grow((void **)&m->res, &m->cap_res, m->n_res, sizeof *m->res) < 0)
            return -2;
        int32_t k = (int32_t)m->n_res++;
        m->res[k] = (MbRes){start, after, -1};
        if (m->last[g] < 0)
            m->first[g] = k;
        else
            m->res[m->last[g]].next = k;
        m->last[g] = k;
        m->group_len[g] += after - start;
    }
    return 0;
}

/* {bucket: request} from a walk of the payload obj (bytes b[0, len)); NULL on error. */
static PyObject *mb_dict(PyObject *obj, const uint8_t *b, size_t len, const MbParse *m) {
    PyObject *dict = PyDict_New();
    for (int32_t g = 0; dict != NULL && g < m->n_groups; g++) {
        PyObject *val;
        if (m->n_groups == 1 && m->n_others == 0 && m->group_len[g] == len && PyBytes_CheckExact(obj))
            val = Py_NewRef(obj); /* every resource to one bucket, in order: the payload itself */
        else
            val = mb_group_bytes(b, m->others, g == 0 ? m->n_others : 0, g == 0 ? m->others_len : 0, m->res,
                                 m->first[g], m->group_len[g]);
        if (sb_dict_put(dict, m->group_bucket[g], val) < 0)
            Py_CLEAR(dict);
    }
    return dict;
}

static PyObject *metric_buckets(PyObject *self, PyObject *args) {
    PyObject *obj;
    long long partitions;
    if (!PyArg_ParseTuple(args, "OL", &obj, &partitions))
        return NULL;
    if (partitions < 1 || partitions > SB_MAX_PARTITIONS)
        Py_RETURN_NONE;
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    MbParse m;
    memset(&m, 0, sizeof m);
    PyObject *result;
    int rc = view.len > INT32_MAX / 2 ? -1 : mb_parse(view.buf, (size_t)view.len, (int32_t)partitions, &m);
    if (rc == -2)
        result = PyErr_NoMemory();
    else if (rc == -1)
        result = Py_NewRef(Py_None);
    else
        result = mb_dict(obj, view.buf, (size_t)view.len, &m);
    mb_free(&m);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"setup", setup, METH_VARARGS, "setup(table: bytes) -> None: install the descriptor tables."},
    {"check", check, METH_VARARGS,
     "check(buffer, message_index, max_nesting, max_items) -> items | (code, message_index, field, offset)."},
    {"span_buckets", span_buckets, METH_VARARGS,
     "span_buckets(payload, partitions) -> {bucket: request} | None: wire.group_spans by crc32(trace_id) % partitions."},
    {"metric_buckets", metric_buckets, METH_VARARGS,
     "metric_buckets(payload, partitions) -> {bucket: request} | None: wire.group_resources by job and instance."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_otlpcheck", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__otlpcheck(void) {
    crc_init();
    return PyModule_Create(&module);
}
