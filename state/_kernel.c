/* The ledger's hot loop in C: decode, contract checks and fold of the common event, one call
 * per run of such events (state/partition.py says when it is used and what it must equal).
 *
 * It takes only what both Python paths accept without question: a receipt, or a payment not
 * against a commitment, in Korea time, not a reversal, never seen before, whose every contract
 * rule holds on the hot-path tests of streams.contract.check_message. At the first record that
 * is anything else it returns that record's index; the Python path decides it (a rejection, a
 * duplicate, a commitment ...) and calls again after it. So this file holds no rule of its own:
 * only a faster way to reach the same state, which tests/test_partition_fold.py compares with
 * the pure Python path byte for byte (positions, journal entries, index rows, outcomes).
 *
 * The journal entry is the msgpack array msgspec writes for state.ledger.Journal
 * (array_like), encoded here directly: integers in their shortest form, as msgspec does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <structmember.h>
#include <string.h>

static PyObject *s_value, *s_key, *s_offset, *s_timestamp;  /* the record's attributes */
static PyObject *s_revenue_tag, *s_expenditure_tag;  /* state.ledger's side tags of event ids */

/* -- msgpack, the subset a journal entry needs ------------------------------------------------ */

typedef struct {
    char *p;  /* the caller sizes the buffer for the whole entry */
} Buf;

static inline void put_u8(Buf *b, unsigned v) { *b->p++ = (char)v; }

static inline void put_be(Buf *b, unsigned long long v, int n) {
    for (int i = n - 1; i >= 0; i--) *b->p++ = (char)((v >> (8 * i)) & 0xff);
}

static void put_int(Buf *b, long long v) {
    if (v >= 0) {
        if (v < 128) put_u8(b, (unsigned)v);
        else if (v < 256) { put_u8(b, 0xcc); put_be(b, (unsigned long long)v, 1); }
        else if (v < 65536) { put_u8(b, 0xcd); put_be(b, (unsigned long long)v, 2); }
        else if (v < 4294967296LL) { put_u8(b, 0xce); put_be(b, (unsigned long long)v, 4); }
        else { put_u8(b, 0xcf); put_be(b, (unsigned long long)v, 8); }
    } else {
        if (v >= -32) put_u8(b, (unsigned)(v & 0xff));
        else if (v >= -128) { put_u8(b, 0xd0); put_be(b, (unsigned long long)v, 1); }
        else if (v >= -32768) { put_u8(b, 0xd1); put_be(b, (unsigned long long)v, 2); }
        else if (v >= -2147483648LL) { put_u8(b, 0xd2); put_be(b, (unsigned long long)v, 4); }
        else { put_u8(b, 0xd3); put_be(b, (unsigned long long)v, 8); }
    }
}

static void put_str(Buf *b, const char *s, Py_ssize_t n) {
    if (n < 32) put_u8(b, 0xa0 | (unsigned)n);
    else if (n < 256) { put_u8(b, 0xd9); put_be(b, (unsigned long long)n, 1); }
    else if (n < 65536) { put_u8(b, 0xda); put_be(b, (unsigned long long)n, 2); }
    else { put_u8(b, 0xdb); put_be(b, (unsigned long long)n, 4); }
    memcpy(b->p, s, (size_t)n);
    b->p += n;
}

static void put_bin(Buf *b, const char *s, Py_ssize_t n) {
    if (n < 256) { put_u8(b, 0xc4); put_be(b, (unsigned long long)n, 1); }
    else if (n < 65536) { put_u8(b, 0xc5); put_be(b, (unsigned long long)n, 2); }
    else { put_u8(b, 0xc6); put_be(b, (unsigned long long)n, 4); }
    memcpy(b->p, s, (size_t)n);
    b->p += n;
}

/* -- slots: msgspec Struct fields and dataclass(slots=True) attributes are member descriptors;
 * reading the slot directly skips the attribute protocol (≈ 13 reads and 3 writes an event). -- */

enum { F_ORG, F_EID, F_ACCOUNT, F_FY, F_KIND, F_AMOUNT, F_AT, F_CATEGORY, F_COMMITMENT, F_DUE,
       F_TO_ACCOUNT, F_REVERSES, F_BASIS, F_PAY_DATE, F_ORDER, F_SCHEDULE, F_EXPECTED_DATE,
       F_CERTAINTY, N_EVENT_FIELDS };
enum { P_CASH, P_VERSION, P_LAST, P_RECEIVED, N_POSITION_FIELDS };
static PyObject *event_names[N_EVENT_FIELDS], *position_names[N_POSITION_FIELDS];

typedef struct {
    PyTypeObject *type;  /* a strong reference, so the address cannot be reused */
    Py_ssize_t off[N_EVENT_FIELDS];
} Layout;
static Layout event_layout, position_layout;

/* The slot offsets of ``names`` in ``tp`` (cached per type); -1 if one is not a plain slot. */
static int layout_of(Layout *l, PyTypeObject *tp, PyObject **names, int n) {
    if (l->type == tp) return 0;
    for (int k = 0; k < n; k++) {
        PyObject *d = _PyType_Lookup(tp, names[k]);
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type)) return -1;
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type != T_OBJECT_EX || (m->flags & READONLY)) return -1;
        l->off[k] = m->offset;
    }
    Py_XDECREF(l->type);
    Py_INCREF(tp);
    l->type = tp;
    return 0;
}

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* Replace a slot's value (steals ``v``). */
static inline void slot_set(PyObject *obj, Py_ssize_t off, PyObject *v) {
    PyObject *old = SLOT(obj, off);
    SLOT(obj, off) = v;
    Py_XDECREF(old);
}

/* -- helpers ------------------------------------------------------------------------------------ */

/* Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static long long days_from_civil(int y, int m, int d) {
    y -= m <= 2;
    const long long era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (unsigned)(m + (m > 2 ? -3 : 9)) + 2) / 5 + (unsigned)d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}

/* prefix + org + NUL + event_id: a journal entry's key, as state/store.py lays it out. */
static PyObject *journal_key(PyObject *prefix, PyObject *org, PyObject *eid) {
    Py_ssize_t org_len, eid_len;
    const char *org_s = PyUnicode_AsUTF8AndSize(org, &org_len);
    if (org_s == NULL) return NULL;
    const char *eid_s = PyUnicode_AsUTF8AndSize(eid, &eid_len);
    if (eid_s == NULL) return NULL;
    const Py_ssize_t prefix_len = PyBytes_GET_SIZE(prefix);
    PyObject *key = PyBytes_FromStringAndSize(NULL, prefix_len + org_len + 1 + eid_len);
    if (key == NULL) return NULL;
    char *k = PyBytes_AS_STRING(key);
    memcpy(k, PyBytes_AS_STRING(prefix), (size_t)prefix_len);
    memcpy(k + prefix_len, org_s, (size_t)org_len);
    k[prefix_len + org_len] = '\0';
    memcpy(k + prefix_len + org_len + 1, eid_s, (size_t)eid_len);
    return key;
}

/* 1 if the message ``s`` (which the strict decoder accepted as an Event: a flat object of
 * scalars) names no field twice, has no escape in any string, and its occurred_at ends in
 * "+09:00"; else 0, and the Python path decides (streams.contract.check_raw). */
static int raw_plain(const char *s, Py_ssize_t n) {
    const char *keys[16];
    Py_ssize_t lens[16];
    int nk = 0, at_value = 0;
    const char *p = s, *end = s + n;
    for (;;) {  /* string by string (memchr: the bytes between strings hold no quote) */
        const char *q = memchr(p, '"', (size_t)(end - p));
        if (q == NULL) return 1;
        const char *a = q + 1;
        const char *e = memchr(a, '"', (size_t)(end - a));
        if (e == NULL || memchr(a, '\\', (size_t)(e - a)) != NULL) return 0;  /* an escape: Python's */
        const Py_ssize_t len = e - a;
        p = e + 1;
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
        if (p < end && *p == ':') {  /* a key */
            if (nk == 16) return 0;
            for (int k = 0; k < nk; k++)
                if (lens[k] == len && memcmp(keys[k], a, (size_t)len) == 0) return 0;
            keys[nk] = a;
            lens[nk++] = len;
            at_value = len == 11 && memcmp(a, "occurred_at", 11) == 0;
            p++;
        } else if (at_value) {  /* occurred_at's value */
            if (len < 6 || memcmp(a + len - 6, "+09:00", 6) != 0) return 0;
            at_value = 0;
        }
    }
}

static inline int is_str(PyObject *o, const char *lit) {
    return PyUnicode_Check(o) && PyUnicode_CompareWithASCIIString(o, lit) == 0;
}

/* fold_hot(records, start, ctx, last_ms) -> (stop, applied, last_ms)
 *
 * ctx = (decode, charts, org_keys, kst_tz, org_partition, partition, side, max_bytes, topic,
 *        positions, journal, ch_journal, index, db_get, journal_prefix, position_type,
 *        max_side_total, closed)
 * ``closed``: org -> the last fiscal year this side closed; an event of a closed year stops
 * (``period_closed`` is the Python path's to name).
 * Applies records[start:stop] (every one of them), stop being the first record it does not
 * take or len(records). A stored journal entry found on the way is put into ``journal`` (as
 * the Python fold does) before returning at its record.
 */
static PyObject *fold_hot(PyObject *self, PyObject *args) {
    PyObject *records, *ctx;
    Py_ssize_t start;
    long long last_ms;
    if (!PyArg_ParseTuple(args, "O!nO!L", &PyList_Type, &records, &start, &PyTuple_Type, &ctx, &last_ms))
        return NULL;
    PyObject *decode, *charts, *org_keys, *kst_tz, *org_partition, *partition, *side, *topic;
    PyObject *positions, *journal, *ch_journal, *index, *db_get, *prefix, *position_type, *closed;
    Py_ssize_t max_bytes;
    long long max_side;
    if (!PyArg_ParseTuple(ctx, "OO!O!OO!O!OnO!O!O!O!O!OO!OLO!",
                          &decode, &PyDict_Type, &charts, &PyDict_Type, &org_keys, &kst_tz,
                          &PyDict_Type, &org_partition, &PyLong_Type, &partition, &side, &max_bytes,
                          &PyUnicode_Type, &topic, &PyDict_Type, &positions, &PyDict_Type, &journal,
                          &PyDict_Type, &ch_journal, &PyDict_Type, &index, &db_get,
                          &PyBytes_Type, &prefix, &position_type, &max_side, &PyDict_Type, &closed))
        return NULL;
    const int side_any = side == Py_None;
    const int side_revenue = !side_any && is_str(side, "revenue");
    const int side_expenditure = !side_any && is_str(side, "expenditure");
    const long long part = PyLong_AsLongLong(partition);
    Py_ssize_t topic_len;
    const char *topic_s = PyUnicode_AsUTF8AndSize(topic, &topic_len);
    if (topic_s == NULL) return NULL;
    const Py_ssize_t n = PyList_GET_SIZE(records);
    Py_ssize_t i = start;
    long long applied = 0;
    char *buf = NULL;
    Py_ssize_t buf_cap = 0;

    /* Owned references of one iteration, released at its end (or on the way out). The event's
     * fields are borrowed from ``ev``. */
    PyObject *value = NULL, *rkey = NULL, *offset = NULL, *timestamp = NULL, *ev = NULL, *jkey = NULL;
    PyObject *dbkey = NULL;
    PyObject *stored = NULL, *dc = NULL, *pk = NULL, *row = NULL, *entry = NULL, *tmp = NULL;
    PyObject *ms_obj = NULL, *sid = NULL;
    PyObject *org, *eid, *account, *fy, *kind, *amount, *at, *f;
    PyObject *stopped = NULL;  /* the decoded event of the record stopped at, for the Python path */
#define RELEASE()                                                                             \
    do {                                                                                      \
        Py_CLEAR(value); Py_CLEAR(rkey); Py_CLEAR(offset); Py_CLEAR(timestamp); Py_CLEAR(ev);  \
        Py_CLEAR(jkey); Py_CLEAR(dbkey); Py_CLEAR(stored); Py_CLEAR(dc); Py_CLEAR(pk);        \
        Py_CLEAR(row); Py_CLEAR(entry); Py_CLEAR(tmp); Py_CLEAR(ms_obj); Py_CLEAR(sid);       \
    } while (0)
#define GET(var, obj, name) if (((var) = PyObject_GetAttr((obj), (name))) == NULL) goto error
#define FIELD(var, k) if (((var) = SLOT(ev, event_layout.off[k])) == NULL) STOP()
#define STOP() do { stopped = ev; ev = NULL; RELEASE(); goto done; } while (0)
    if (layout_of(&position_layout, (PyTypeObject *)position_type, position_names, N_POSITION_FIELDS) < 0) {
        PyErr_SetString(PyExc_TypeError, "position_type: cash, version, last_event_ms and received must be slots");
        return NULL;
    }

    for (; i < n; i++) {
        PyObject *r = PyList_GET_ITEM(records, i);
        GET(value, r, s_value);
        if (!PyBytes_CheckExact(value)) STOP();
        const Py_ssize_t vlen = PyBytes_GET_SIZE(value);
        if (vlen == 0 || vlen > max_bytes) STOP();
        ev = PyObject_CallOneArg(decode, value);
        if (ev == NULL) {  /* bad input: the Python path names the reason */
            PyErr_Clear();
            STOP();
        }
        if (layout_of(&event_layout, Py_TYPE(ev), event_names, N_EVENT_FIELDS) < 0) {
            PyErr_Clear();
            STOP();  /* not the Struct expected: leave it all to the Python path */
        }
        if (!raw_plain(PyBytes_AS_STRING(value), vlen)) STOP();  /* duplicate_key, +0900 ... */
        FIELD(org, F_ORG);
        FIELD(account, F_ACCOUNT);
        FIELD(kind, F_KIND);
        FIELD(at, F_AT);
        PyObject *chart = PyDict_GetItemWithError(charts, org);
        if (chart == NULL) { if (PyErr_Occurred()) goto error; STOP(); }
        int has = PySet_Contains(chart, account);
        if (has < 0) goto error;
        if (!has) STOP();
        if (!PyDateTime_Check(at) || PyDateTime_DATE_GET_TZINFO(at) != kst_tz) STOP();
        FIELD(fy, F_FY);
        if (!PyLong_CheckExact(fy) || PyLong_AsLong(fy) != PyDateTime_GET_YEAR(at)) {
            PyErr_Clear();
            STOP();
        }
        if (PyDict_GET_SIZE(closed)) {
            PyObject *last = PyDict_GetItemWithError(closed, org);
            if (last == NULL && PyErr_Occurred()) goto error;
            if (last != NULL) {
                int open = PyObject_RichCompareBool(fy, last, Py_GT);
                if (open < 0) goto error;
                if (!open) STOP();  /* period_closed */
            }
        }
        GET(rkey, r, s_key);
        if (rkey == Py_None) STOP();  /* missing_key */
        {
            PyObject *want = PyDict_GetItemWithError(org_keys, org);
            if (want == NULL) { if (PyErr_Occurred()) goto error; STOP(); }
            int eq = PyObject_RichCompareBool(rkey, want, Py_EQ);
            if (eq < 0) goto error;
            if (!eq) STOP();
        }
        FIELD(f, F_TO_ACCOUNT);
        if (f != Py_None) STOP();
        int negative;
        if (is_str(kind, "receipt")) {
            if (!(side_any || side_revenue)) STOP();
            FIELD(f, F_CATEGORY);
            if (f == Py_None) STOP();
            negative = 0;
        } else if (is_str(kind, "payment")) {
            if (!(side_any || side_expenditure)) STOP();
            FIELD(f, F_CATEGORY);
            if (f != Py_None) STOP();
            negative = 1;
        } else {
            STOP();  /* commitments, cancels and transfers: the Python path */
        }
        FIELD(f, F_COMMITMENT);
        if (f != Py_None) STOP();
        FIELD(f, F_DUE);
        if (f != Py_None) STOP();
        FIELD(f, F_REVERSES);
        if (f != Py_None) STOP();
        FIELD(f, F_BASIS);
        if (f != Py_None) STOP();  /* field_not_allowed */
        /* the known flows (a receipt realising a schedule, a payment executing an order ...) */
        for (int k = F_PAY_DATE; k <= F_CERTAINTY; k++) {
            FIELD(f, k);
            if (f != Py_None) STOP();
        }
        PyObject *owner = PyDict_GetItemWithError(org_partition, org);
        if (owner == NULL && PyErr_Occurred()) goto error;
        if (owner != NULL) {
            int eq = PyObject_RichCompareBool(owner, partition, Py_EQ);
            if (eq < 0) goto error;
            if (!eq) STOP();  /* wrong_partition */
        }
        FIELD(eid, F_EID);
        sid = PyUnicode_Concat(negative ? s_expenditure_tag : s_revenue_tag, eid);
        if (sid == NULL) goto error;
        jkey = PyTuple_Pack(2, org, sid);
        if (jkey == NULL) goto error;
        int seen = PyDict_Contains(journal, jkey);
        if (seen < 0) goto error;
        if (seen) STOP();  /* applied in this batch: a duplicate or a conflict */
        if (db_get != Py_None) {
            dbkey = journal_key(prefix, org, sid);
            if (dbkey == NULL) goto error;
            stored = PyObject_CallOneArg(db_get, dbkey);
            if (stored == NULL) goto error;
            if (stored != Py_None) {  /* applied before: the Python path decides which */
                if (PyDict_SetItem(journal, jkey, stored) < 0) goto error;
                STOP();
            }
        }
        FIELD(amount, F_AMOUNT);
        if (!PyLong_CheckExact(amount)) STOP();
        const long long amount_v = PyLong_AsLongLong(amount);
        if (amount_v == -1 && PyErr_Occurred()) goto error;
        const long long dc_v = negative ? -amount_v : amount_v;
        const long long fy_v = PyLong_AsLongLong(fy);
        GET(offset, r, s_offset);
        const long long offset_v = PyLong_AsLongLong(offset);
        if (offset_v == -1 && PyErr_Occurred()) goto error;
        GET(timestamp, r, s_timestamp);  /* the record's: the history's known-at axis */
        const long long timestamp_v = PyLong_AsLongLong(timestamp);
        if (timestamp_v == -1 && PyErr_Occurred()) goto error;

        /* epoch milliseconds of occurred_at (KST = UTC+9), as streams.contract.epoch_ms */
        const long long ms = days_from_civil(PyDateTime_GET_YEAR(at), PyDateTime_GET_MONTH(at),
                                             PyDateTime_GET_DAY(at)) * 86400000LL - 32400000LL
            + ((PyDateTime_DATE_GET_HOUR(at) * 60LL + PyDateTime_DATE_GET_MINUTE(at)) * 60LL
               + PyDateTime_DATE_GET_SECOND(at)) * 1000LL
            + PyDateTime_DATE_GET_MICROSECOND(at) / 1000;
        ms_obj = PyLong_FromLongLong(ms);
        if (ms_obj == NULL) goto error;

        /* the position */
        pk = PyTuple_Pack(3, org, account, fy);
        if (pk == NULL) goto error;
        PyObject *pos = PyDict_GetItemWithError(positions, pk);  /* borrowed */
        if (pos == NULL) {
            if (PyErr_Occurred()) goto error;
            tmp = PyObject_CallNoArgs(position_type);
            if (tmp == NULL || PyDict_SetItem(positions, pk, tmp) < 0) goto error;
            pos = tmp;  /* the dict holds it too; tmp is released at the end */
        }
        {
            const Py_ssize_t *po = position_layout.off;
            PyObject *v = SLOT(pos, po[P_CASH]), *w = SLOT(pos, po[P_VERSION]), *l = SLOT(pos, po[P_LAST]);
            PyObject *rv = SLOT(pos, po[P_RECEIVED]);
            if (v == NULL || w == NULL || l == NULL || rv == NULL) {
                PyErr_SetString(PyExc_AttributeError, "a position without cash, version, last_event_ms or received");
                goto error;
            }
            /* Within the bound every figure fits 64 bits (streams.contract.MAX_SIDE_TOTAL);
             * anything else, or an event that would leave it, is the Python path's. */
            const long long cash_v = PyLong_AsLongLong(v), rec_v = PyLong_AsLongLong(rv);
            const long long ver = PyLong_AsLongLong(w);
            const long long last = PyLong_AsLongLong(l);
            if (PyErr_Occurred()) { PyErr_Clear(); Py_CLEAR(tmp); STOP(); }
            if (negative ? cash_v - rec_v + dc_v < -max_side : rec_v + dc_v > max_side) {
                Py_CLEAR(tmp);
                STOP();  /* position_out_of_range */
            }
            PyObject *cash = PyLong_FromLongLong(cash_v + dc_v);
            if (cash == NULL) goto error;
            PyObject *version = PyLong_FromLongLong(ver + 1);
            if (version == NULL) { Py_DECREF(cash); goto error; }
            if (!negative) {
                PyObject *received = PyLong_FromLongLong(rec_v + dc_v);
                if (received == NULL) { Py_DECREF(cash); Py_DECREF(version); goto error; }
                slot_set(pos, po[P_RECEIVED], received);
            }
            slot_set(pos, po[P_CASH], cash);
            slot_set(pos, po[P_VERSION], version);
            if (ms > last) slot_set(pos, po[P_LAST], Py_NewRef(ms_obj));
        }
        dc = PyLong_FromLongLong(dc_v);
        if (dc == NULL) goto error;

        /* the position's index row: (occurred_ms, event_id, cash delta, committed delta) */
        PyObject *rows = PyDict_GetItemWithError(index, pk);  /* borrowed */
        if (rows == NULL) {
            if (PyErr_Occurred()) goto error;
            Py_CLEAR(tmp);
            tmp = PyList_New(0);
            if (tmp == NULL || PyDict_SetItem(index, pk, tmp) < 0) goto error;
            rows = tmp;
        }
        row = PyTuple_New(4);
        if (row == NULL) goto error;
        Py_INCREF(ms_obj); PyTuple_SET_ITEM(row, 0, ms_obj);
        Py_INCREF(sid); PyTuple_SET_ITEM(row, 1, sid);
        Py_INCREF(dc); PyTuple_SET_ITEM(row, 2, dc);
        PyObject *zero = PyLong_FromLong(0);
        if (zero == NULL) goto error;
        PyTuple_SET_ITEM(row, 3, zero);
        if (PyList_Append(rows, row) < 0) goto error;

        /* the journal entry: [raw, kind, account, fy, amount, ms, [[account, fy, dc, 0]],
         *                     nil, 0, nil, nil, [topic, partition, offset, timestamp]] */
        Py_ssize_t kind_len, acc_len;
        const char *kind_s = PyUnicode_AsUTF8AndSize(kind, &kind_len);
        if (kind_s == NULL) goto error;
        const char *acc_s = PyUnicode_AsUTF8AndSize(account, &acc_len);
        if (acc_s == NULL) goto error;
        const Py_ssize_t need = 64 + vlen + kind_len + 2 * acc_len + topic_len + 9 * 7;
        if (need > buf_cap) {
            PyMem_Free(buf);
            buf_cap = need * 2;
            buf = PyMem_Malloc((size_t)buf_cap);
            if (buf == NULL) { buf_cap = 0; PyErr_NoMemory(); goto error; }
        }
        Buf b = {buf};
        put_u8(&b, 0x9c);  /* fixarray of 12 */
        put_bin(&b, PyBytes_AS_STRING(value), vlen);
        put_str(&b, kind_s, kind_len);
        put_str(&b, acc_s, acc_len);
        put_int(&b, fy_v);
        put_int(&b, amount_v);
        put_int(&b, ms);
        put_u8(&b, 0x91);
        put_u8(&b, 0x94);
        put_str(&b, acc_s, acc_len);
        put_int(&b, fy_v);
        put_int(&b, dc_v);
        put_u8(&b, 0x00);
        put_u8(&b, 0xc0);
        put_u8(&b, 0x00);
        put_u8(&b, 0xc0);
        put_u8(&b, 0xc0);
        put_u8(&b, 0x94);
        put_str(&b, topic_s, topic_len);
        put_int(&b, part);
        put_int(&b, offset_v);
        put_int(&b, timestamp_v);
        entry = PyBytes_FromStringAndSize(buf, b.p - buf);
        if (entry == NULL) goto error;
        if (PyDict_SetItem(journal, jkey, entry) < 0 || PyDict_SetItem(ch_journal, jkey, entry) < 0)
            goto error;
        applied++;
        if (ms > last_ms) last_ms = ms;
        RELEASE();
    }
done:
    PyMem_Free(buf);
    return Py_BuildValue("nLLN", i, applied, last_ms, stopped != NULL ? stopped : Py_NewRef(Py_None));
error:
    RELEASE();
    Py_XDECREF(stopped);
    PyMem_Free(buf);
    return NULL;
#undef RELEASE
#undef GET
#undef FIELD
#undef STOP
}

/* raw_plain(value) -> bool: ``raw_plain`` above, for the records the kernel stops at (a
 * commitment, a transfer ...): True spares the Python path its slower streams.contract.check_raw,
 * which only ever finds nothing wrong where this returns True. */
static PyObject *raw_plain_py(PyObject *self, PyObject *value) {
    if (!PyBytes_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "raw_plain takes bytes");
        return NULL;
    }
    return PyBool_FromLong(raw_plain(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value)));
}

/* put_journal(put, journal, prefix, encode): ``put(prefix + org + NUL + event_id, entry)`` for
 * every ``(org, event_id) -> entry`` of a batch's journal, ``entry`` as it is when bytes and
 * ``encode(entry)`` otherwise: the journal part of state.store.Store.commit, without building
 * each key in Python. */
static PyObject *put_journal(PyObject *self, PyObject *args) {
    PyObject *put, *journal, *prefix, *encode;
    if (!PyArg_ParseTuple(args, "OO!O!O", &put, &PyDict_Type, &journal, &PyBytes_Type, &prefix, &encode))
        return NULL;
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(journal, &pos, &k, &v)) {
        if (!PyTuple_CheckExact(k) || PyTuple_GET_SIZE(k) != 2) {
            PyErr_SetString(PyExc_TypeError, "journal keys are (org_code, event_id)");
            return NULL;
        }
        PyObject *key = journal_key(prefix, PyTuple_GET_ITEM(k, 0), PyTuple_GET_ITEM(k, 1));
        if (key == NULL) return NULL;
        PyObject *value = PyBytes_CheckExact(v) ? Py_NewRef(v) : PyObject_CallOneArg(encode, v);
        if (value == NULL) { Py_DECREF(key); return NULL; }
        PyObject *argv[2] = {key, value};
        PyObject *res = PyObject_Vectorcall(put, argv, 2, NULL);
        Py_DECREF(key);
        Py_DECREF(value);
        if (res == NULL) return NULL;
        Py_DECREF(res);
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"fold_hot", fold_hot, METH_VARARGS, "Apply a run of common events; see state/partition.py."},
    {"put_journal", put_journal, METH_VARARGS, "Put a batch's journal entries; see state/store.py."},
    {"raw_plain", raw_plain_py, METH_O, "No field twice, no escape in a key or occurred_at, +09:00."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "state._kernel", NULL, -1, methods};

PyMODINIT_FUNC PyInit__kernel(void) {
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) return NULL;
#define INTERN(var, s) if (((var) = PyUnicode_InternFromString(s)) == NULL) return NULL
    INTERN(s_value, "value"); INTERN(s_key, "key"); INTERN(s_offset, "offset");
    INTERN(s_timestamp, "timestamp");
    static const char *ev_fields[N_EVENT_FIELDS] = {
        "org_code", "event_id", "account", "fiscal_year", "kind", "amount", "occurred_at",
        "category", "commitment_id", "due_date", "to_account", "reverses", "basis", "pay_date",
        "order_id", "schedule_id", "expected_date", "certainty"};
    for (int k = 0; k < N_EVENT_FIELDS; k++) INTERN(event_names[k], ev_fields[k]);
    INTERN(position_names[P_CASH], "cash");
    INTERN(position_names[P_VERSION], "version");
    INTERN(position_names[P_LAST], "last_event_ms");
    INTERN(position_names[P_RECEIVED], "received");
    INTERN(s_revenue_tag, "r:");
    INTERN(s_expenditure_tag, "e:");
#undef INTERN
    return PyModule_Create(&module);
}
