/* The flat-JSONL scanner's two loops (see flatjson.py, which calls them through ctypes).
 *
 * Built with the package (setup.py, an optional extension): machine code that loads with the
 * process, where numba's version of these loops cost ~0.5 s of start-up per process (numba's
 * import, its typing registries and scipy.linalg for its BLAS check), a third of a 1 GB
 * ingest's fixed cost. ctypes releases the GIL while they run.
 *
 * Strict IEEE double arithmetic is assumed (no -ffast-math): a decimal is read with one
 * correctly rounded multiply or divide of exact operands (Clinger's fast path).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <stdint.h>
#include <string.h>

#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD != 0
#error "the decimals' fast path needs double arithmetic in double precision (FLT_EVAL_METHOD 0)"
#endif

/* The kinds of a (line, key) slot: flatjson.py's ABSENT, NULL, INT, ... (same order). */
enum { ABSENT, KIND_NULL, INT, FLOAT, DECIMAL_TEXT, TEXT, KIND_TRUE, KIND_FALSE };

#define MAX_DIGITS 18
#define EXACT_MANTISSA (INT64_C(1) << 53)
#define KEY_BYTES_PER_SLOT 64

static const double POW10[23] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

/* By byte: 0 a plain string byte, 1 the closing quote, 2 ends the fast path (a backslash,
 * a control or a non-ASCII byte). */
static const uint8_t CHAR_CLASS[256] = {
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
};

static inline int64_t skip_space(const uint8_t *buf, int64_t i, int64_t n) {
    while (i < n && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\r')) {
        i++;
    }
    return i;
}

/* The index of the quote closing the string that starts at i; -1 when the string is not
 * plain or is not closed. */
static inline int64_t string_end(const uint8_t *buf, int64_t i, int64_t n) {
    while (i < n) {
        uint8_t c = CHAR_CLASS[buf[i]];
        if (c == 0) {
            i++;
        } else if (c == 1) {
            return i;
        } else {
            return -1;
        }
    }
    return -1;
}

static inline int is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

/* Read the lines of flat objects in buf[0:n] into values and kinds (slots x rows, row-major by
 * key; kinds all ABSENT); counts[k * 8 + kind] (zeros) counts each key's kinds. Key k is
 * key_bytes[key_ends[k]:key_ends[k + 1]] (key_bytes: slots * 64 bytes, key_ends: slots + 1
 * zeros, previous: slots scratch words); *keys receives the number of keys.
 *
 * values[k * rows + row] receives an integer, a double's bits, or a text's start << 24 |
 * length. Returns 0 when every line was read, else the block is declined: 1 + the byte index
 * where the scan stopped, -1 when there are more keys than slots, -2 when there are not rows
 * lines. */
int64_t flat_scan(const uint8_t *buf, int64_t n, int64_t *values, uint8_t *kinds,
                  int64_t slots, int64_t rows, int64_t *counts, uint8_t *key_bytes,
                  int64_t *key_ends, int64_t *previous, int64_t *keys_out) {
    const int64_t key_capacity = slots * KEY_BYTES_PER_SLOT;
    int64_t keys = 0, i = 0, row = 0;
    for (int64_t s = 0; s < slots; s++) {
        previous[s] = 0;
    }
#define DECLINE(status)      \
    do {                     \
        *keys_out = keys;    \
        return (status);     \
    } while (0)
    while (i < n) {
        if (row >= rows) {
            DECLINE(-2);
        }
        i = skip_space(buf, i, n);
        if (i >= n || buf[i] != '{') { /* a line that is not an object (or is blank) */
            DECLINE(i + 1);
        }
        i = skip_space(buf, i + 1, n);
        int64_t position = 0;
        if (i < n && buf[i] == '}') {
            i++;
        } else {
            for (;;) {
                if (i >= n || buf[i] != '"') {
                    DECLINE(i + 1);
                }
                int64_t start = i + 1, k = -1, end = -1, size = 0;
                if (position < slots && previous[position] < keys) {
                    /* the usual case: the same key as at this position of the previous line */
                    int64_t h = previous[position];
                    int64_t low = key_ends[h];
                    size = key_ends[h + 1] - low;
                    if (start + size < n && buf[start + size] == '"' &&
                        memcmp(key_bytes + low, buf + start, (size_t)size) == 0) {
                        k = h;
                        end = start + size;
                    }
                }
                if (k < 0) {
                    end = string_end(buf, start, n);
                    if (end < 0) {
                        DECLINE(start + 1);
                    }
                    size = end - start;
                    if (size == 0) { /* the key "": polars' frames rename it */
                        DECLINE(start + 1);
                    }
                    for (int64_t h = 0; h < keys; h++) {
                        if (key_ends[h + 1] - key_ends[h] == size &&
                            memcmp(key_bytes + key_ends[h], buf + start, (size_t)size) == 0) {
                            k = h;
                            break;
                        }
                    }
                    if (k < 0) { /* a new key */
                        int64_t low = key_ends[keys];
                        if (keys >= slots || low + size > key_capacity) {
                            DECLINE(-1);
                        }
                        memcpy(key_bytes + low, buf + start, (size_t)size);
                        key_ends[keys + 1] = low + size;
                        k = keys;
                        keys++;
                    }
                }
                if (position < slots) {
                    previous[position] = k;
                }
                position++;
                int64_t slot = k * rows + row;
                if (kinds[slot] != ABSENT) { /* a key twice on one line */
                    DECLINE(start + 1);
                }
                i = skip_space(buf, end + 1, n);
                if (i >= n || buf[i] != ':') {
                    DECLINE(i + 1);
                }
                i = skip_space(buf, i + 1, n);
                if (i >= n) {
                    DECLINE(i + 1);
                }
                uint8_t c = buf[i];
                if (c == '"') {
                    int64_t close = i + 1;
                    while (close < n && CHAR_CLASS[buf[close]] == 0) {
                        close++;
                    }
                    if (close >= n || CHAR_CLASS[buf[close]] != 1 ||
                        close - i - 1 >= (INT64_C(1) << 24)) {
                        DECLINE(i + 1);
                    }
                    kinds[slot] = TEXT;
                    values[slot] = ((i + 1) << 24) | (close - i - 1);
                    i = close + 1;
                } else if (c == '-' || is_digit(c)) {
                    int64_t begin = i;
                    int negative = buf[i] == '-';
                    if (negative) {
                        i++;
                    }
                    if (i >= n || !is_digit(buf[i])) {
                        DECLINE(begin + 1);
                    }
                    int64_t mantissa = 0, digits = 0, exponent = 0;
                    int inexact = 0, decimal = 0;
                    if (buf[i] == '0') {
                        i++;
                        if (i < n && is_digit(buf[i])) { /* a leading zero */
                            DECLINE(begin + 1);
                        }
                    } else {
                        while (i < n && is_digit(buf[i])) {
                            if (digits < MAX_DIGITS) {
                                mantissa = mantissa * 10 + (buf[i] - '0');
                                digits++;
                            } else {
                                exponent++;
                                inexact = 1;
                            }
                            i++;
                        }
                    }
                    if (i < n && buf[i] == '.') {
                        decimal = 1;
                        i++;
                        if (i >= n || !is_digit(buf[i])) {
                            DECLINE(begin + 1);
                        }
                        while (i < n && is_digit(buf[i])) {
                            if (digits < MAX_DIGITS) {
                                mantissa = mantissa * 10 + (buf[i] - '0');
                                exponent--;
                                if (mantissa > 0) {
                                    digits++;
                                }
                            } else if (buf[i] != '0') {
                                inexact = 1;
                            }
                            i++;
                        }
                    }
                    if (i < n && (buf[i] == 'e' || buf[i] == 'E')) {
                        decimal = 1;
                        i++;
                        int64_t sign = 1, power = 0;
                        if (i < n && (buf[i] == '+' || buf[i] == '-')) {
                            sign = buf[i] == '-' ? -1 : 1;
                            i++;
                        }
                        if (i >= n || !is_digit(buf[i])) {
                            DECLINE(begin + 1);
                        }
                        while (i < n && is_digit(buf[i])) {
                            if (power < 100000) {
                                power = power * 10 + (buf[i] - '0');
                            }
                            i++;
                        }
                        exponent += sign * power;
                    }
                    double *floats = (double *)values;
                    if (!decimal) {
                        if (inexact) { /* an integer past int64 */
                            DECLINE(begin + 1);
                        }
                        kinds[slot] = INT;
                        values[slot] = negative ? -mantissa : mantissa;
                    } else if (mantissa == 0) {
                        kinds[slot] = FLOAT;
                        floats[slot] = negative ? -0.0 : 0.0;
                    } else if (inexact || mantissa > EXACT_MANTISSA || exponent < -22 ||
                               exponent > 22) {
                        if (i - begin >= (INT64_C(1) << 24)) {
                            DECLINE(begin + 1);
                        }
                        kinds[slot] = DECIMAL_TEXT; /* left to polars: see flatjson.py */
                        values[slot] = (begin << 24) | (i - begin);
                    } else { /* exact operands, one correctly rounded operation */
                        double number = (double)mantissa;
                        number = exponent >= 0 ? number * POW10[exponent]
                                               : number / POW10[-exponent];
                        kinds[slot] = FLOAT;
                        floats[slot] = negative ? -number : number;
                    }
                } else if (c == 'n' && i + 3 < n && buf[i + 1] == 'u' && buf[i + 2] == 'l') {
                    if (buf[i + 3] != 'l') {
                        DECLINE(i + 1);
                    }
                    kinds[slot] = KIND_NULL;
                    i += 4;
                } else if (c == 't' && i + 3 < n && buf[i + 1] == 'r' && buf[i + 2] == 'u') {
                    if (buf[i + 3] != 'e') {
                        DECLINE(i + 1);
                    }
                    kinds[slot] = KIND_TRUE;
                    i += 4;
                } else if (c == 'f' && i + 4 < n && buf[i + 1] == 'a' && buf[i + 2] == 'l') {
                    if (buf[i + 3] != 's' || buf[i + 4] != 'e') {
                        DECLINE(i + 1);
                    }
                    kinds[slot] = KIND_FALSE;
                    i += 5;
                } else { /* a nested value, NaN, Infinity, ... */
                    DECLINE(i + 1);
                }
                counts[k * 8 + kinds[slot]]++;
                i = skip_space(buf, i, n);
                if (i < n && buf[i] == ',') {
                    i = skip_space(buf, i + 1, n);
                    continue;
                }
                if (i < n && buf[i] == '}') {
                    i++;
                    break;
                }
                DECLINE(i + 1);
            }
        }
        i = skip_space(buf, i, n);
        if (i < n) {
            if (buf[i] != '\n') {
                DECLINE(i + 1);
            }
            i++;
        }
        row++;
    }
    if (row != rows) {
        DECLINE(-2);
    }
    DECLINE(0);
#undef DECLINE
}

/* Fill views (two 64-bit words per slot) with the Arrow string views of the slots of kind:
 * the length and the first 4 bytes, then the next 8 bytes inline (texts up to 12 bytes) or
 * buffer 0 and the offset in texts, which receives the longer texts (copied: the frame does
 * not hold on to the block); valid[row] says whether the slot is of kind. */
void flat_text_views(const uint8_t *buf, const int64_t *values, const uint8_t *kinds,
                     int64_t rows, int64_t kind, uint64_t *views, uint8_t *texts,
                     uint8_t *valid) {
    uint64_t offset = 0;
    for (int64_t row = 0; row < rows; row++) {
        uint64_t low = 0, high = 0;
        valid[row] = kinds[row] == kind;
        if (valid[row]) {
            int64_t start = values[row] >> 24, size = values[row] & 0xFFFFFF;
            low = (uint64_t)size;
            for (int64_t t = 0; t < size && t < 4; t++) {
                low |= (uint64_t)buf[start + t] << (32 + 8 * t);
            }
            if (size <= 12) {
                for (int64_t t = 4; t < size; t++) {
                    high |= (uint64_t)buf[start + t] << (8 * (t - 4));
                }
            } else {
                high = offset << 32;
                memcpy(texts + offset, buf + start, (size_t)size);
                offset += (uint64_t)size;
            }
        }
        views[2 * row] = low;
        views[2 * row + 1] = high;
    }
}

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_flatscan",
    "The flat-JSONL scanner's loops (C functions called through ctypes, see flatjson.py).",
    -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__flatscan(void) { return PyModule_Create(&module); }
