/*
 * OTLP protobuf bytes -> compact OTLP/JSON, straight from the wire to the output buffer.
 *
 * The file sink turns every record into JSON; otlp/json_mapping.py does it in Python (dicts,
 * then orjson) at about 25 us a span. This walks the bytes once against tables made from the
 * message descriptors and writes the JSON as it goes, with the GIL released, so it also runs
 * beside the event loop on another core.
 *
 * Its output is byte for byte what json_mapping.proto_to_json gives (the reference; see
 * tests/unit/test_proto_json.py) for the requests real writers produce. Anything where a
 * streaming writer cannot know the Python result without looking back -- a singular field or a
 * oneof seen twice (protobuf merges those), a repeated field split by other fields, a wire type
 * that does not match the declaration, invalid UTF-8, framing errors, a KeyValue with an
 * explicitly empty key (the Python fast path keeps it), a varint whose tenth byte is over 1,
 * tags over 5 bytes, nesting deeper than MAX_DEPTH -- makes to_json return None, and the caller
 * converts that record with the Python reference, which raises or salvages as it always did.
 *
 * Tables (set once by setup()): a flat int32 array
 *   [n_messages, then per message: max_field (< 64), is_key_value, then for each field number
 *   0..max_field: kind | flags, sub-message index, oneof group (-1: none), name index]
 * and a list of names, each the quoted JSON name with its colon ("spanId":).
 *
 * to_json(buffer, message index[, end]) -> the JSON then ``end`` (b"\n" makes it a JSON line with no
 * copy), or None for the Python path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    K_NONE = 0, K_MSG = 1, K_STRING = 2, K_BYTES = 3, K_ID = 4, K_INT64 = 5, K_UINT64 = 6,
    K_SINT64 = 7, K_INT32 = 8, K_UINT32 = 9, K_SINT32 = 10, K_BOOL = 11, K_DOUBLE = 12,
    K_FLOAT = 13, K_FIXED64 = 14, K_SFIXED64 = 15, K_FIXED32 = 16, K_SFIXED32 = 17
};
#define REPEATED 0x100
#define IMPLICIT 0x200 /* proto3 field without presence: its default value is left out */
#define MAX_DEPTH 100

typedef struct {
    int32_t kind; /* with flags */
    int32_t sub;
    int32_t oneof;
    int32_t name;
} Field;

typedef struct {
    int32_t max_field;
    int32_t is_kv;
    const Field *fields;
} Msg;

static int32_t *table_ints = NULL;
static Msg *msgs = NULL;
static int32_t n_msgs = 0;
static char **names = NULL;
static Py_ssize_t *name_lens = NULL;
static Py_ssize_t n_names = 0;

typedef struct {
    char *buf;
    size_t len;
    size_t cap;
} Out;

static int grow(Out *o, size_t need) {
    if (o->len + need <= o->cap)
        return 1;
    size_t cap = o->cap ? o->cap : 4096;
    while (cap < o->len + need)
        cap *= 2;
    char *nb = realloc(o->buf, cap);
    if (nb == NULL)
        return 0;
    o->buf = nb;
    o->cap = cap;
    return 1;
}

static inline int put(Out *o, const char *s, size_t n) {
    if (!grow(o, n))
        return 0;
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    return 1;
}

static inline int putc1(Out *o, char c) {
    if (!grow(o, 1))
        return 0;
    o->buf[o->len++] = c;
    return 1;
}

/* As otlp/wire.py's read_varint, less what it reads differently from a uint64: more than
 * ``max_bytes`` bytes, or a tenth byte over 1, is 0 (the Python path). */
static inline int read_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out, int max_bytes) {
    const uint8_t *p = *pp;
    if (p < end && *p < 0x80) {
        *out = *p;
        *pp = p + 1;
        return 1;
    }
    uint64_t r = 0;
    for (int i = 0;; i++) {
        if (i == max_bytes || p >= end)
            return 0;
        uint8_t b = *p++;
        if (i == 9) {
            if (b > 1)
                return 0;
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

static const char HEX[] = "0123456789abcdef";

/* A JSON string as orjson writes it: ", \\ and control characters escaped (\b \f \n \r \t, else
 * \u00xx), everything else (DEL, non-ASCII) as it is. Checks the bytes are RFC 3629 UTF-8 as it
 * copies them, as Python's strict decoder does (no overlong forms, surrogates or past U+10FFFF):
 * 0 if not. */
static int put_string(Out *o, const uint8_t *s, const uint8_t *end) {
    if (!grow(o, (size_t)(end - s) * 6 + 2))
        return 0;
    char *w = o->buf + o->len;
    *w++ = '"';
    while (s < end) {
        uint8_t c = *s;
        if (c >= 0x80) {
            int n;
            if (c >= 0xC2 && c <= 0xDF)
                n = 2;
            else if (c >= 0xE0 && c <= 0xEF)
                n = 3;
            else if (c >= 0xF0 && c <= 0xF4)
                n = 4;
            else
                return 0;
            if (end - s < n)
                return 0;
            for (int i = 1; i < n; i++)
                if ((s[i] & 0xC0) != 0x80)
                    return 0;
            if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F) || (c == 0xF0 && s[1] < 0x90) ||
                (c == 0xF4 && s[1] > 0x8F))
                return 0; /* overlong, surrogate, past U+10FFFF */
            memcpy(w, s, (size_t)n);
            w += n;
            s += n;
            continue;
        }
        s++;
        if (c >= 0x20 && c != '"' && c != '\\') {
            *w++ = (char)c;
            continue;
        }
        *w++ = '\\';
        switch (c) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '\b': *w++ = 'b'; break;
        case '\f': *w++ = 'f'; break;
        case '\n': *w++ = 'n'; break;
        case '\r': *w++ = 'r'; break;
        case '\t': *w++ = 't'; break;
        default:
            *w++ = 'u'; *w++ = '0'; *w++ = '0'; *w++ = HEX[c >> 4]; *w++ = HEX[c & 15];
        }
    }
    *w++ = '"';
    o->len = (size_t)(w - o->buf);
    return 1;
}

static int put_hex(Out *o, const uint8_t *s, const uint8_t *end) {
    if (!grow(o, (size_t)(end - s) * 2 + 2))
        return 0;
    char *w = o->buf + o->len;
    *w++ = '"';
    for (; s < end; s++) {
        *w++ = HEX[*s >> 4];
        *w++ = HEX[*s & 15];
    }
    *w++ = '"';
    o->len = (size_t)(w - o->buf);
    return 1;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int put_base64(Out *o, const uint8_t *s, const uint8_t *end) {
    size_t n = (size_t)(end - s);
    if (!grow(o, (n + 2) / 3 * 4 + 2))
        return 0;
    char *w = o->buf + o->len;
    *w++ = '"';
    for (; end - s >= 3; s += 3) {
        uint32_t v = (uint32_t)s[0] << 16 | (uint32_t)s[1] << 8 | s[2];
        *w++ = B64[v >> 18]; *w++ = B64[(v >> 12) & 63]; *w++ = B64[(v >> 6) & 63]; *w++ = B64[v & 63];
    }
    if (end - s == 1) {
        uint32_t v = (uint32_t)s[0] << 16;
        *w++ = B64[v >> 18]; *w++ = B64[(v >> 12) & 63]; *w++ = '='; *w++ = '=';
    } else if (end - s == 2) {
        uint32_t v = (uint32_t)s[0] << 16 | (uint32_t)s[1] << 8;
        *w++ = B64[v >> 18]; *w++ = B64[(v >> 12) & 63]; *w++ = B64[(v >> 6) & 63]; *w++ = '=';
    }
    *w++ = '"';
    o->len = (size_t)(w - o->buf);
    return 1;
}

static int put_u64(Out *o, uint64_t v, int neg, int quoted) {
    char tmp[24];
    int i = 24;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    if (neg)
        tmp[--i] = '-';
    if (!grow(o, 26))
        return 0;
    if (quoted)
        o->buf[o->len++] = '"';
    memcpy(o->buf + o->len, tmp + i, (size_t)(24 - i));
    o->len += (size_t)(24 - i);
    if (quoted)
        o->buf[o->len++] = '"';
    return 1;
}

static inline int put_i64(Out *o, int64_t v, int quoted) {
    return v < 0 ? put_u64(o, (uint64_t)0 - (uint64_t)v, 1, quoted) : put_u64(o, (uint64_t)v, 0, quoted);
}

/* The shortest decimal that reads back as ``a`` (finite, > 0): *digits (no trailing zeros) times
 * 10^*scale. At each length the correctly rounded decimal is tried, then its neighbours: a value
 * close to a tie may read back only from the one on the other side of it (as the shortest
 * round-trip algorithms pick it, and Python's repr). */
static void shortest(double a, uint64_t *digits, int *scale) {
    char text[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(text, sizeof text, "%.*e", prec - 1, a);
        uint64_t m = 0;
        const char *c = text;
        for (; *c != 'e'; c++)
            if (*c != '.')
                m = m * 10 + (uint64_t)(*c - '0');
        int q = atoi(c + 1) - (prec - 1);
        if (strtod(text, NULL) == a || prec == 17) {
            *digits = m;
            *scale = q;
            break;
        }
        /* the neighbour on the side of the exact value first */
        uint64_t near[2] = {m + 1, m - 1};
        if (strtod(text, NULL) > a) {
            near[0] = m - 1;
            near[1] = m + 1;
        }
        int found = 0;
        for (int i = 0; i < 2 && !found; i++) {
            if (near[i] == 0)
                continue;
            snprintf(text, sizeof text, "%llue%d", (unsigned long long)near[i], q);
            if (strtod(text, NULL) == a) {
                *digits = near[i];
                *scale = q;
                found = 1;
            }
        }
        if (found)
            break;
    }
    while (*digits % 10 == 0) {
        *digits /= 10;
        *scale += 1;
    }
}

/* A double as orjson writes it (the shortest digits that read back as the same double; plain
 * notation from 1e-5 up to 1e16, else d.ddde+N / e-N), NaN and the infinities as proto3 JSON's
 * strings. */
static int put_double(Out *o, double v) {
    if (isnan(v))
        return put(o, "\"NaN\"", 5);
    if (isinf(v))
        return v > 0 ? put(o, "\"Infinity\"", 10) : put(o, "\"-Infinity\"", 11);
    if (v == 0)
        return signbit(v) ? put(o, "-0.0", 4) : put(o, "0.0", 3);
    uint64_t m;
    int q;
    shortest(fabs(v), &m, &q);
    char digits[24];
    int nd = snprintf(digits, sizeof digits, "%llu", (unsigned long long)m);
    int exp = q + nd - 1; /* the power of ten of the first digit */
    char text[64];
    int n = 0;
    if (v < 0)
        text[n++] = '-';
    if (exp >= -5 && exp < 16) {
        if (exp >= 0) {
            for (int i = 0; i <= exp; i++)
                text[n++] = i < nd ? digits[i] : '0';
            text[n++] = '.';
            if (nd > exp + 1)
                for (int i = exp + 1; i < nd; i++)
                    text[n++] = digits[i];
            else
                text[n++] = '0';
        } else {
            text[n++] = '0';
            text[n++] = '.';
            for (int i = 0; i < -exp - 1; i++)
                text[n++] = '0';
            for (int i = 0; i < nd; i++)
                text[n++] = digits[i];
        }
    } else {
        text[n++] = digits[0];
        if (nd > 1) {
            text[n++] = '.';
            for (int i = 1; i < nd; i++)
                text[n++] = digits[i];
        }
        n += snprintf(text + n, sizeof text - (size_t)n, "e%c%d", exp < 0 ? '-' : '+', abs(exp));
    }
    return put(o, text, (size_t)n);
}

/* 1 done, 0 the Python path (or out of memory: the Python path then fails the same way). */
static int msg_json(const uint8_t *p, const uint8_t *end, int32_t mi, int depth, Out *o);

/* One value of a scalar or message field. ``wt`` is its wire type; for wire type 2 [vs, ve) is
 * the value, else ``v`` is the number. */
static int value_json(const Field *f, int kind, int wt, uint64_t v, const uint8_t *vs, const uint8_t *ve,
                      int depth, Out *o) {
    switch (kind) {
    case K_MSG: return msg_json(vs, ve, f->sub, depth + 1, o);
    case K_STRING: return put_string(o, vs, ve);
    case K_BYTES: return put_base64(o, vs, ve);
    case K_ID: return put_hex(o, vs, ve);
    case K_INT64: case K_SFIXED64: return put_i64(o, (int64_t)v, 1);
    case K_UINT64: case K_FIXED64: return put_u64(o, v, 0, 1);
    case K_SINT64: return put_i64(o, (int64_t)(v >> 1) ^ -(int64_t)(v & 1), 1);
    case K_INT32: case K_SFIXED32: return put_i64(o, (int32_t)(uint32_t)v, 0);
    case K_UINT32: case K_FIXED32: return put_u64(o, v & 0xFFFFFFFFULL, 0, 0);
    case K_SINT32: {
        uint32_t u = (uint32_t)v;
        return put_i64(o, (int64_t)(u >> 1) ^ -(int64_t)(u & 1), 0);
    }
    case K_BOOL: return v ? put(o, "true", 4) : put(o, "false", 5);
    case K_DOUBLE: {
        double d;
        memcpy(&d, &v, 8);
        return put_double(o, d);
    }
    case K_FLOAT: {
        float fl;
        uint32_t u = (uint32_t)v;
        memcpy(&fl, &u, 4);
        return put_double(o, (double)fl);
    }
    }
    return 0;
}

/* A number of wire type 0, 1 or 5 at *pp; 0 if it is not whole (or not one of those). */
static inline int read_number(const uint8_t **pp, const uint8_t *end, int wt, uint64_t *v) {
    if (wt == 0)
        return read_varint(pp, end, v, 10);
    int size = wt == 1 ? 8 : wt == 5 ? 4 : 0;
    if (size == 0 || end - *pp < size)
        return 0;
    if (size == 8) {
        memcpy(v, *pp, 8);
    } else {
        uint32_t u;
        memcpy(&u, *pp, 4);
        *v = u;
    }
    *pp += size;
    return 1;
}

static inline int wire_type_of(int kind) {
    switch (kind) {
    case K_MSG: case K_STRING: case K_BYTES: case K_ID: return 2;
    case K_DOUBLE: case K_FIXED64: case K_SFIXED64: return 1;
    case K_FLOAT: case K_FIXED32: case K_SFIXED32: return 5;
    default: return 0;
    }
}

/* The elements of a packed repeated number field, each after a comma unless it is the first. */
static int packed_json(const Field *f, int kind, const uint8_t *p, const uint8_t *end, int *elems, Out *o) {
    int wt = wire_type_of(kind);
    while (p < end) {
        uint64_t v;
        if (!read_number(&p, end, wt, &v))
            return 0;
        if ((*elems)++ && !putc1(o, ','))
            return 0;
        if (!value_json(f, kind, wt, v, NULL, NULL, 0, o))
            return 0;
    }
    return 1;
}

static int msg_json(const uint8_t *p, const uint8_t *end, int32_t mi, int depth, Out *o) {
    if (depth > MAX_DEPTH)
        return 0;
    const Msg *m = &msgs[mi];
    uint64_t seen = 0, oneofs = 0;
    int32_t open = 0; /* the repeated field whose array is open */
    int elems = 0;    /* elements in it so far */
    int first = 1;
    if (!putc1(o, '{'))
        return 0;
    while (p < end) {
        uint64_t tag, v = 0;
        if (!read_varint(&p, end, &tag, 5))
            return 0;
        int wt = (int)(tag & 7);
        const uint8_t *vs = NULL, *ve = NULL;
        if (wt == 2) {
            uint64_t ln;
            if (!read_varint(&p, end, &ln, 10) || ln > (uint64_t)(end - p))
                return 0;
            vs = p;
            ve = p + ln;
            p = ve;
        } else if (!read_number(&p, end, wt, &v)) {
            return 0; /* also wire types 3, 4 (groups), 6 and 7, which the reference refuses */
        }
        uint64_t num = tag >> 3;
        if (num > (uint64_t)m->max_field)
            continue; /* unknown fields are dropped */
        const Field *f = &m->fields[num];
        int kind = f->kind & 0xFF;
        if (kind == K_NONE)
            continue;
        int repeated = (f->kind & REPEATED) != 0;
        int expected = wire_type_of(kind);
        int packed = repeated && wt == 2 && expected != 2;
        if (wt != expected && !packed)
            return 0;
        if (m->is_kv && num == 1 && ve == vs)
            return 0;
        uint64_t bit = (uint64_t)1 << num;
        if (repeated && open == (int32_t)num) {
            if (packed) {
                if (!packed_json(f, kind, vs, ve, &elems, o))
                    return 0;
            } else {
                if ((elems++ && !putc1(o, ',')) || !value_json(f, kind, wt, v, vs, ve, depth, o))
                    return 0;
            }
            continue;
        }
        if (open) {
            if (!putc1(o, ']'))
                return 0;
            open = 0;
        }
        if (seen & bit)
            return 0;
        seen |= bit;
        if (f->oneof >= 0) {
            uint64_t obit = (uint64_t)1 << f->oneof;
            if (oneofs & obit)
                return 0;
            oneofs |= obit;
        }
        if ((f->kind & IMPLICIT) && (wt == 2 ? vs == ve : v == 0))
            continue; /* proto3 JSON leaves default values out */
        if (!first && !putc1(o, ','))
            return 0;
        first = 0;
        if (!put(o, names[f->name], (size_t)name_lens[f->name]))
            return 0;
        if (repeated) {
            if (!putc1(o, '['))
                return 0;
            open = (int32_t)num;
            elems = 0;
            if (packed) {
                if (!packed_json(f, kind, vs, ve, &elems, o))
                    return 0;
            } else {
                elems = 1;
                if (!value_json(f, kind, wt, v, vs, ve, depth, o))
                    return 0;
            }
        } else if (!value_json(f, kind, wt, v, vs, ve, depth, o)) {
            return 0;
        }
    }
    if (open && !putc1(o, ']'))
        return 0;
    return putc1(o, '}');
}

static PyObject *setup(PyObject *self, PyObject *args) {
    Py_buffer table;
    PyObject *name_list;
    if (!PyArg_ParseTuple(args, "y*O!", &table, &PyList_Type, &name_list))
        return NULL;
    Py_ssize_t n = table.len / 4;
    int32_t *ints = malloc((size_t)table.len + 4);
    Py_ssize_t nn = PyList_GET_SIZE(name_list);
    char **nm = calloc((size_t)nn + 1, sizeof(char *));
    Py_ssize_t *nl = calloc((size_t)nn + 1, sizeof(Py_ssize_t));
    Msg *ms = NULL;
    if (ints == NULL || nm == NULL || nl == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    memcpy(ints, table.buf, (size_t)table.len);
    for (Py_ssize_t i = 0; i < nn; i++) {
        char *s;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(PyList_GET_ITEM(name_list, i), &s, &len) < 0)
            goto fail;
        nm[i] = malloc((size_t)len + 1);
        if (nm[i] == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        memcpy(nm[i], s, (size_t)len);
        nl[i] = len;
    }
    int32_t count = n > 0 ? ints[0] : 0;
    ms = calloc((size_t)count + 1, sizeof(Msg));
    if (ms == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    Py_ssize_t pos = 1;
    for (int32_t i = 0; i < count; i++) {
        if (pos + 2 > n)
            goto bad;
        ms[i].max_field = ints[pos];
        ms[i].is_kv = ints[pos + 1];
        pos += 2;
        if (ms[i].max_field < 0 || ms[i].max_field > 63 || pos + 4 * (ms[i].max_field + 1) > n)
            goto bad;
        ms[i].fields = (const Field *)(ints + pos);
        for (int32_t k = 0; k <= ms[i].max_field; k++) {
            const Field *f = &ms[i].fields[k];
            if ((f->kind & 0xFF) != K_NONE &&
                (f->sub < 0 || f->sub >= count || f->oneof < -1 || f->oneof > 63 || f->name < 0 || f->name >= nn))
                goto bad;
        }
        pos += 4 * (ms[i].max_field + 1);
    }
    PyBuffer_Release(&table);
    /* Replaced only whole, and only here: setup runs once at import. */
    free(table_ints);
    free(msgs);
    for (Py_ssize_t i = 0; i < n_names; i++)
        free(names[i]);
    free(names);
    free(name_lens);
    table_ints = ints;
    msgs = ms;
    n_msgs = count;
    names = nm;
    name_lens = nl;
    n_names = nn;
    Py_RETURN_NONE;
bad:
    PyErr_SetString(PyExc_ValueError, "_otlpjson.setup: malformed table");
fail:
    PyBuffer_Release(&table);
    free(ints);
    free(ms);
    if (nm != NULL)
        for (Py_ssize_t i = 0; i < nn; i++)
            free(nm[i]);
    free(nm);
    free(nl);
    return NULL;
}

static PyObject *to_json(PyObject *self, PyObject *args) {
    Py_buffer buf;
    int mi;
    const char *tail = "";
    Py_ssize_t tail_len = 0;
    if (!PyArg_ParseTuple(args, "y*i|y#", &buf, &mi, &tail, &tail_len))
        return NULL;
    if (mi < 0 || mi >= n_msgs) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "_otlpjson.to_json: no such message index");
        return NULL;
    }
    Out o = {NULL, 0, 0};
    int ok;
    const uint8_t *p = buf.buf;
    /* An estimate from measured requests: the JSON is about twice the protobuf. */
    Py_BEGIN_ALLOW_THREADS
    ok = grow(&o, (size_t)buf.len * 2 + 64) && msg_json(p, p + buf.len, mi, 0, &o) &&
         put(&o, tail, (size_t)tail_len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    PyObject *result;
    if (ok)
        result = PyBytes_FromStringAndSize(o.buf, (Py_ssize_t)o.len);
    else
        result = Py_NewRef(Py_None);
    free(o.buf);
    return result;
}

static PyMethodDef methods[] = {
    {"setup", setup, METH_VARARGS, "setup(table, names): the message tables (see the module comment)."},
    {"to_json", to_json, METH_VARARGS, "to_json(buffer, message_index[, end]) -> OTLP/JSON bytes then end, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_otlpjson", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__otlpjson(void) { return PyModule_Create(&module); }
