/*
 * The checkout-origin stack walk of dashboard/pool/origin.py, in C.
 *
 * Same contract as origin._walk_py (the pure-Python fallback, used when this module
 * was not built): starting at `frame`, skip frames whose file is classified HIDDEN
 * (SQLAlchemy, asyncio, greenlet, this package), then keep the next `keep` frames as a
 * flat tuple (code, lasti, code, lasti, ...), innermost first. The event loop's
 * callback runner (`stop`) ends the walk; so does finding no non-hidden frame within
 * `limit` frames (empty tuple).
 *
 * Why C: on every checkout of the host's pool this walk reads a handful of frames. In
 * Python each `f_code` / `f_back` / `co_filename` is a generic attribute lookup (plus
 * an audit hook for `f_code`); measured in place, the Python walk costs about 3 µs
 * per checkout, this one well under 1 µs (bench/bench_pool_overhead.py). Only the
 * public C API of CPython 3.11+ is used (PyFrame_GetCode, PyFrame_GetBack,
 * PyFrame_GetLasti).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>

#define HIDDEN 2
#define MAX_KEEP 64

/* Kind of a code object's file: from `kinds` (filename -> int), else `classify(filename)`,
 * which also records it in `kinds`. -1 on error. */
static long
kind_of(PyCodeObject *code, PyObject *kinds, PyObject *classify)
{
    PyObject *kind = PyDict_GetItemWithError(kinds, code->co_filename); /* borrowed */
    if (kind != NULL) {
        return PyLong_AsLong(kind);
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    PyObject *res = PyObject_CallOneArg(classify, code->co_filename);
    if (res == NULL) {
        return -1;
    }
    long k = PyLong_AsLong(res);
    Py_DECREF(res);
    return k;
}

static PyObject *
walk_from(PyObject *start, Py_ssize_t keep, PyObject *kinds, PyObject *classify, PyObject *stop,
          Py_ssize_t limit)
{
    if (start == NULL || start == Py_None || keep <= 0) {
        return PyTuple_New(0);
    }
    if (!PyFrame_Check(start)) {
        PyErr_SetString(PyExc_TypeError, "frame must be a frame object or None");
        return NULL;
    }
    if (keep > MAX_KEEP) {
        keep = MAX_KEEP;
    }

    PyFrameObject *frame = (PyFrameObject *)start;
    Py_INCREF(frame);

    /* 1. skip library frames */
    for (;;) {
        if (frame == NULL || limit <= 0) {
            Py_XDECREF(frame);
            return PyTuple_New(0);
        }
        PyCodeObject *code = PyFrame_GetCode(frame); /* new reference */
        long k = kind_of(code, kinds, classify);
        int is_stop = (PyObject *)code == stop;
        Py_DECREF(code);
        if (k == -1 && PyErr_Occurred()) {
            Py_DECREF(frame);
            return NULL;
        }
        if (is_stop) {
            Py_DECREF(frame);
            return PyTuple_New(0);
        }
        if (k != HIDDEN) {
            break;
        }
        PyFrameObject *back = PyFrame_GetBack(frame); /* new reference or NULL */
        Py_DECREF(frame);
        frame = back;
        limit--;
    }

    /* 2. keep the origin and its callers */
    PyObject *items[2 * MAX_KEEP];
    Py_ssize_t n = 0;
    while (frame != NULL && keep > 0) {
        PyCodeObject *code = PyFrame_GetCode(frame);
        if ((PyObject *)code == stop) {
            Py_DECREF(code);
            break;
        }
        PyObject *lasti = PyLong_FromLong(PyFrame_GetLasti(frame));
        if (lasti == NULL) {
            Py_DECREF(code);
            Py_DECREF(frame);
            for (Py_ssize_t i = 0; i < n; i++) {
                Py_DECREF(items[i]);
            }
            return NULL;
        }
        items[n++] = (PyObject *)code; /* reference handed to the tuple below */
        items[n++] = lasti;
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
        keep--;
    }
    Py_XDECREF(frame);

    PyObject *out = PyTuple_New(n);
    if (out == NULL) {
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_DECREF(items[i]);
        }
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTuple_SET_ITEM(out, i, items[i]);
    }
    return out;
}

/* walk(frame, keep, kinds, classify, stop, limit) -> tuple */
static PyObject *
walk(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError,
                        "walk(frame, keep, kinds, classify, stop, limit) takes 6 arguments");
        return NULL;
    }
    Py_ssize_t keep = PyLong_AsSsize_t(args[1]);
    if (keep == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[5]);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "kinds must be a dict");
        return NULL;
    }
    return walk_from(args[0], keep, args[2], args[3], args[4], limit);
}

/* What capture() needs, set once by configure() (origin.py, at import). */
static PyObject *cfg_getcurrent = NULL, *cfg_current_task = NULL, *cfg_kinds = NULL,
                *cfg_classify = NULL, *cfg_stop = NULL, *cfg_provider = NULL;
static PyTypeObject *cfg_greenlet_type = NULL;
/* greenlet's `parent` and `gr_frame` data descriptors, called directly: a generic
 * attribute lookup on a greenlet subclass walks its MRO on every call. */
static PyObject *desc_parent = NULL, *desc_gr_frame = NULL;
static Py_ssize_t cfg_limit = 80;
/* the last greenlet type seen and whether it is SQLAlchemy's (holds a reference) */
static PyTypeObject *seen_type = NULL;
static int seen_is_provider = 0;

static PyObject *
data_descriptor(PyTypeObject *type, const char *name)
{
    PyObject *key = PyUnicode_InternFromString(name);
    if (key == NULL) {
        return NULL;
    }
    PyObject *desc = _PyType_Lookup(type, key); /* borrowed */
    Py_DECREF(key);
    if (desc == NULL || Py_TYPE(desc)->tp_descr_get == NULL ||
        Py_TYPE(desc)->tp_descr_set == NULL) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a data descriptor", type->tp_name, name);
        return NULL;
    }
    return Py_NewRef(desc);
}

/* configure(getcurrent, greenlet_type, kinds, classify, stop, limit, provider_attr,
 *           current_task) */
static PyObject *
configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError,
                        "configure(getcurrent, greenlet_type, kinds, classify, stop, limit, "
                        "provider_attr, current_task) takes 8 arguments");
        return NULL;
    }
    if (!PyType_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "greenlet_type must be a type");
        return NULL;
    }
    if (!PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "kinds must be a dict");
        return NULL;
    }
    if (!PyUnicode_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError, "provider_attr must be a str");
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[5]);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyTypeObject *gtype = (PyTypeObject *)args[1];
    PyObject *parent = data_descriptor(gtype, "parent");
    if (parent == NULL) {
        return NULL;
    }
    PyObject *gr_frame = data_descriptor(gtype, "gr_frame");
    if (gr_frame == NULL) {
        Py_DECREF(parent);
        return NULL;
    }
    Py_XSETREF(desc_parent, parent);
    Py_XSETREF(desc_gr_frame, gr_frame);
    Py_XSETREF(cfg_greenlet_type, (PyTypeObject *)Py_NewRef(args[1]));
    Py_XSETREF(cfg_getcurrent, Py_NewRef(args[0]));
    Py_XSETREF(cfg_current_task, Py_NewRef(args[7]));
    Py_XSETREF(cfg_kinds, Py_NewRef(args[2]));
    Py_XSETREF(cfg_classify, Py_NewRef(args[3]));
    Py_XSETREF(cfg_stop, Py_NewRef(args[4]));
    Py_XSETREF(cfg_provider, Py_NewRef(args[6]));
    Py_CLEAR(seen_type);
    cfg_limit = limit;
    Py_RETURN_NONE;
}

/* Is `type` SQLAlchemy's greenlet class (the provider marker as a true class attribute)?
 * Cached for the last type seen. -1 on error. */
static int
is_provider(PyTypeObject *type)
{
    if (type == seen_type) {
        return seen_is_provider;
    }
    PyObject *marker = _PyType_Lookup(type, cfg_provider); /* borrowed */
    int yes = marker != NULL ? PyObject_IsTrue(marker) : 0;
    if (yes < 0) {
        return -1;
    }
    Py_XSETREF(seen_type, (PyTypeObject *)Py_NewRef((PyObject *)type));
    seen_is_provider = yes;
    return yes;
}

static PyObject *
descr_get(PyObject *desc, PyObject *obj)
{
    return Py_TYPE(desc)->tp_descr_get(desc, obj, (PyObject *)Py_TYPE(obj));
}

/* The walk from the Python caller, or, inside SQLAlchemy's asyncio greenlet, from the
 * parent greenlet's frame (where the awaiting coroutines are). */
static PyObject *
capture_keep(Py_ssize_t keep)
{
    if (cfg_getcurrent == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_framewalk.configure() was not called");
        return NULL;
    }
    if (keep <= 0) {
        return PyTuple_New(0);
    }
    PyObject *current = PyObject_CallNoArgs(cfg_getcurrent);
    if (current == NULL) {
        return NULL;
    }
    PyObject *start = NULL; /* new reference */
    int provider = PyObject_TypeCheck(current, cfg_greenlet_type) ? is_provider(Py_TYPE(current)) : 0;
    if (provider < 0) {
        Py_DECREF(current);
        return NULL;
    }
    if (provider) {
        PyObject *parent = descr_get(desc_parent, current);
        if (parent == NULL) {
            Py_DECREF(current);
            return NULL;
        }
        if (parent != Py_None) {
            start = descr_get(desc_gr_frame, parent);
            if (start == NULL) {
                Py_DECREF(parent);
                Py_DECREF(current);
                return NULL;
            }
        }
        Py_DECREF(parent);
    }
    Py_DECREF(current);
    if (start == NULL) {
        PyFrameObject *caller = PyEval_GetFrame(); /* borrowed: the Python caller */
        start = caller != NULL ? Py_NewRef((PyObject *)caller) : Py_NewRef(Py_None);
    }
    PyObject *out = walk_from(start, keep, cfg_kinds, cfg_classify, cfg_stop, cfg_limit);
    Py_DECREF(start);
    return out;
}

/* capture(keep) -> tuple */
static PyObject *
capture(PyObject *module, PyObject *arg)
{
    Py_ssize_t keep = PyLong_AsSsize_t(arg);
    if (keep == -1 && PyErr_Occurred()) {
        return NULL;
    }
    return capture_keep(keep);
}

/* checkout_entry(seq, now, wait, depth) -> (seq, now, wait, task_ref, None, stack): the
 * ledger entry of one asyncio checkout (instrument.RawEntry), built in one call. */
static PyObject *
checkout_entry(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "checkout_entry(seq, now, wait, depth) takes 4 arguments");
        return NULL;
    }
    Py_ssize_t depth = PyLong_AsSsize_t(args[3]);
    if (depth == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (cfg_current_task == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_framewalk.configure() was not called");
        return NULL;
    }
    PyObject *task = PyObject_CallNoArgs(cfg_current_task);
    if (task == NULL) {
        return NULL;
    }
    PyObject *task_ref;
    if (task == Py_None) {
        task_ref = task; /* reference moves */
    } else {
        task_ref = PyWeakref_NewRef(task, NULL);
        Py_DECREF(task);
        if (task_ref == NULL) {
            return NULL;
        }
    }
    PyObject *stack = capture_keep(depth);
    if (stack == NULL) {
        Py_DECREF(task_ref);
        return NULL;
    }
    PyObject *out = PyTuple_New(6);
    if (out == NULL) {
        Py_DECREF(task_ref);
        Py_DECREF(stack);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 0, Py_NewRef(args[0]));
    PyTuple_SET_ITEM(out, 1, Py_NewRef(args[1]));
    PyTuple_SET_ITEM(out, 2, Py_NewRef(args[2]));
    PyTuple_SET_ITEM(out, 3, task_ref);
    PyTuple_SET_ITEM(out, 4, Py_NewRef(Py_None));
    PyTuple_SET_ITEM(out, 5, stack);
    return out;
}

static PyMethodDef methods[] = {
    {"walk", (PyCFunction)(void (*)(void))walk, METH_FASTCALL,
     "walk(frame, keep, kinds, classify, stop, limit) -> (code, lasti, ...)"},
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL,
     "configure(getcurrent, greenlet_type, kinds, classify, stop, limit, provider_attr, "
     "current_task)"},
    {"checkout_entry", (PyCFunction)(void (*)(void))checkout_entry, METH_FASTCALL,
     "checkout_entry(seq, now, wait, depth) -> (seq, now, wait, task_ref, None, stack)"},
    {"capture", (PyCFunction)capture, METH_O,
     "capture(keep) -> (code, lasti, ...) from the caller (or SQLAlchemy's parent greenlet)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "_framewalk",
    "C version of dashboard.pool.origin's checkout stack walk.",
    -1,
    methods,
};

PyMODINIT_FUNC
PyInit__framewalk(void)
{
    return PyModule_Create(&module);
}
