/* The simulator's event loop, compiled: gossip_sim.simulator.Simulator._loop in C.
 *
 * Optional: without a C compiler the tool installs without it and the simulator runs
 * its Python loop, which this file follows line for line. Both give the same run for the
 * same seed (tools/gossip-sim/tests/test_simulator.py compares them); only the cost
 * differs. The membership cores are the same Python objects either way: this file only
 * moves the clock, keeps the queue of pending events and hands each event to its core.
 *
 * The queue is a binary heap of plain C structs ordered by (time, id), ids counting up in
 * the order of scheduling, the order of the Python loop's calendar.
 *
 * Also a Clock, haflowd.testing.FakeClock in C: every core asks it the time once or more
 * per event, and a C method answers that at a fraction of a Python one's cost.
 *
 * What the loop reads and writes of the simulator's nodes (slots of a Python dataclass)
 * and calls on the cores, it looks up once per run, by type: a slot's offset in the
 * object, a method's descriptor. An object of another type falls back to a lookup by name.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>

enum { WAKE = 0, DELIVER = 1, STALL_END = 2 };

typedef struct {
    double when;
    long long id;
    int kind;
    int node;
    PyObject *msg; /* owned; NULL unless DELIVER */
} Event;

typedef struct {
    PyObject_HEAD
    Event *heap;
    Py_ssize_t len, cap;
    long long next_id;
} Queue;

static inline int before(const Event *a, const Event *b) {
    return a->when < b->when || (a->when == b->when && a->id < b->id);
}

static int q_push(Queue *q, double when, int kind, int node, PyObject *msg) {
    if (q->len == q->cap) {
        Py_ssize_t cap = q->cap ? q->cap * 2 : 1024;
        Event *h = PyMem_Realloc(q->heap, (size_t)cap * sizeof(Event));
        if (h == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        q->heap = h;
        q->cap = cap;
    }
    Event e = {when, q->next_id++, kind, node, msg};
    Py_XINCREF(msg);
    Py_ssize_t i = q->len++;
    Event *h = q->heap;
    while (i > 0) {
        Py_ssize_t parent = (i - 1) >> 1;
        if (!before(&e, &h[parent]))
            break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = e;
    return 0;
}

/* Removes the first event; its message reference passes to the caller. */
static Event q_pop(Queue *q) {
    Event *h = q->heap;
    Event top = h[0];
    Event last = h[--q->len];
    Py_ssize_t n = q->len, i = 0;
    for (;;) {
        Py_ssize_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && before(&h[c + 1], &h[c]))
            c++;
        if (!before(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (n > 0)
        h[i] = last;
    return top;
}

static void Queue_dealloc(Queue *q) {
    for (Py_ssize_t i = 0; i < q->len; i++)
        Py_XDECREF(q->heap[i].msg);
    PyMem_Free(q->heap);
    Py_TYPE(q)->tp_free((PyObject *)q);
}

static PyObject *Queue_push(Queue *q, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "push(when, kind, node, msg)");
        return NULL;
    }
    double when = PyFloat_AsDouble(args[0]);
    long kind = PyLong_AsLong(args[1]);
    long node = PyLong_AsLong(args[2]);
    if (PyErr_Occurred())
        return NULL;
    if (q_push(q, when, (int)kind, (int)node, args[3] == Py_None ? NULL : args[3]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ Clock */

typedef struct {
    PyObject_HEAD
    double now;
    double wall_offset;
} Clock;

static int Clock_init(Clock *c, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"start", "wall_offset", NULL};
    c->now = 1000.0; /* FakeClock's defaults */
    c->wall_offset = 1700000000.0;
    return PyArg_ParseTupleAndKeywords(args, kwds, "|dd", kwlist, &c->now, &c->wall_offset) ? 0 : -1;
}

static PyObject *Clock_monotonic(Clock *c, PyObject *Py_UNUSED(ignored)) { return PyFloat_FromDouble(c->now); }

static PyObject *Clock_wall(Clock *c, PyObject *Py_UNUSED(ignored)) {
    return PyFloat_FromDouble(c->now + c->wall_offset);
}

static PyObject *Clock_advance(Clock *c, PyObject *arg) {
    double seconds = PyFloat_AsDouble(arg);
    if (seconds == -1.0 && PyErr_Occurred())
        return NULL;
    if (seconds < 0) {
        PyErr_SetString(PyExc_ValueError, "time does not go backwards");
        return NULL;
    }
    c->now += seconds;
    Py_RETURN_NONE;
}

static PyMethodDef Clock_methods[] = {
    {"monotonic", (PyCFunction)Clock_monotonic, METH_NOARGS, "the simulated time"},
    {"wall", (PyCFunction)Clock_wall, METH_NOARGS, "the simulated time plus wall_offset"},
    {"advance", (PyCFunction)Clock_advance, METH_O, "advance(seconds): move the time on"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Clock_members[] = {
    {"now", T_DOUBLE, offsetof(Clock, now), 0, "the simulated time"},
    {"wall_offset", T_DOUBLE, offsetof(Clock, wall_offset), 0, "wall() - monotonic()"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject ClockType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gossip_sim._simloop.Clock",
    .tp_basicsize = sizeof(Clock),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "haflowd.testing.FakeClock in C: Clock(start=1000.0, wall_offset=1.7e9)",
    .tp_methods = Clock_methods,
    .tp_members = Clock_members,
    .tp_init = (initproc)Clock_init,
    .tp_new = PyType_GenericNew,
};

/* ------------------------------------------------------------------ lookups once per run */

/* An attribute of objects of one type: where it sits in them when it is a writable slot
 * of that type (offset >= 0), else -1; the getter of a getset descriptor (the attributes
 * of a class compiled by mypyc) for reading; else looked up by name. Both descriptors
 * are data descriptors: nothing an instance holds could come before them. */
typedef struct {
    PyObject *name; /* interned */
    PyTypeObject *type;
    Py_ssize_t offset;
    getter get;
    void *closure;
} Slot;

#define SLOT(name) {(name), NULL, -1, NULL, NULL} /* found at first use */

static void slot_find(Slot *s, PyTypeObject *type) {
    PyObject *name = s->name;
    s->type = type;
    s->offset = -1;
    s->get = NULL;
    PyObject *d = PyObject_GetAttr((PyObject *)type, name); /* a slot's member descriptor, on its class */
    if (d == NULL) {
        PyErr_Clear(); /* an instance attribute, or none: by name, as before */
        return;
    }
    if (Py_IS_TYPE(d, &PyMemberDescr_Type)) {
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type == T_OBJECT_EX && !(m->flags & READONLY))
            s->offset = m->offset;
    } else if (Py_IS_TYPE(d, &PyGetSetDescr_Type)) {
        PyGetSetDef *g = ((PyGetSetDescrObject *)d)->d_getset;
        s->get = g->get;
        s->closure = g->closure;
    }
    Py_DECREF(d);
}

/* a new reference, or NULL with an exception */
static inline PyObject *slot_get(PyObject *obj, Slot *s) {
    if (!Py_IS_TYPE(obj, s->type))
        slot_find(s, Py_TYPE(obj));
    if (s->offset >= 0) {
        PyObject *v = *(PyObject **)((char *)obj + s->offset);
        if (v != NULL)
            return Py_NewRef(v);
    } else if (s->get != NULL) {
        return s->get(obj, s->closure);
    }
    return PyObject_GetAttr(obj, s->name);
}

static inline int slot_set(PyObject *obj, Slot *s, PyObject *v) {
    if (!Py_IS_TYPE(obj, s->type))
        slot_find(s, Py_TYPE(obj));
    if (s->offset >= 0) {
        PyObject **p = (PyObject **)((char *)obj + s->offset);
        PyObject *old = *p;
        *p = Py_NewRef(v);
        Py_XDECREF(old);
        return 0;
    }
    return PyObject_SetAttr(obj, s->name, v);
}

static int slot_get_double(PyObject *obj, Slot *s, double *out) {
    PyObject *v = slot_get(obj, s);
    if (v == NULL)
        return -1;
    *out = PyFloat_CheckExact(v) ? PyFloat_AS_DOUBLE(v) : PyFloat_AsDouble(v);
    Py_DECREF(v);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static int slot_set_double(PyObject *obj, Slot *s, double value) {
    PyObject *v = PyFloat_FromDouble(value);
    if (v == NULL)
        return -1;
    int r = slot_set(obj, s, v);
    Py_DECREF(v);
    return r;
}

static int slot_truth(PyObject *obj, Slot *s) {
    PyObject *v = slot_get(obj, s);
    if (v == NULL)
        return -1;
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

/* A method of objects of one type, its descriptor looked up once: calling it skips the
 * lookup of a bound method per call. Objects of another type: called by name. */
typedef struct {
    PyObject *name;
    PyTypeObject *type;
    PyObject *func; /* owned, or NULL */
} Method;

static void method_find(Method *m, PyTypeObject *type) {
    Py_CLEAR(m->func);
    m->type = type;
    m->func = PyObject_GetAttr((PyObject *)type, m->name);
    if (m->func == NULL)
        PyErr_Clear();
}

/* self.<name>(arg), or self.<name>() where arg is NULL */
static inline PyObject *method_call(Method *m, PyObject *self, PyObject *arg) {
    PyObject *args[2] = {self, arg};
    size_t n = arg ? 2 : 1;
    if (!Py_IS_TYPE(self, m->type))
        method_find(m, Py_TYPE(self));
    if (m->func != NULL)
        return PyObject_Vectorcall(m->func, args, n, NULL);
    return PyObject_VectorcallMethod(m->name, args, n, NULL);
}

/* interned attribute names */
static PyObject *s_now, *s_blocked, *s_down, *s_wake_at, *s_core, *s_backlog, *s_missed_wake, *s_handle, *s_tick,
    *s_next_wakeup, *s_changes, *s_address, *s_message, *s_collect, *s_unstall, *s_clock, *s_actions, *s_nodes,
    *s_by_addr, *s_rng, *s_random, *s_network, *s_loss, *s_latency, *s_jitter, *s_group, *s_split, *s_events,
    *s_dropped, *s_delivered, *s_heappop;

/* the same for an attribute read once per action or check: found afresh each time */
static int get_double(PyObject *obj, PyObject *name, double *out) {
    Slot s = SLOT(name);
    return slot_get_double(obj, &s, out);
}

static int set_double(PyObject *obj, PyObject *name, double value) {
    Slot s = SLOT(name);
    return slot_set_double(obj, &s, value);
}

/* the clock's time: directly where it is a Clock */
static inline int set_now(PyObject *clock, double when) {
    if (Py_IS_TYPE(clock, &ClockType)) {
        ((Clock *)clock)->now = when;
        return 0;
    }
    return set_double(clock, s_now, when);
}

static int get_truth(PyObject *obj, PyObject *name) {
    Slot s = SLOT(name);
    return slot_truth(obj, &s);
}

/* one draw of the simulator's random.Random, in the order the Python loop draws */
static int draw(PyObject *random_, double *out) {
    PyObject *r = PyObject_CallNoArgs(random_);
    if (r == NULL)
        return -1;
    *out = PyFloat_AsDouble(r);
    Py_DECREF(r);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static int add_count(PyObject *sim, PyObject *name, long long n) {
    PyObject *old = PyObject_GetAttr(sim, name);
    if (old == NULL)
        return -1;
    PyObject *add = PyLong_FromLongLong(n);
    PyObject *sum = add ? PyNumber_Add(old, add) : NULL;
    Py_DECREF(old);
    Py_XDECREF(add);
    if (sum == NULL)
        return -1;
    int r = PyObject_SetAttr(sim, name, sum);
    Py_DECREF(sum);
    return r;
}

/* run(sim, end, predicate, check_every) -> seconds until predicate() held, or None */
static PyObject *Queue_run(Queue *q, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "run(sim, end, predicate, check_every)");
        return NULL;
    }
    PyObject *sim = args[0], *predicate = args[2];
    double end = PyFloat_AsDouble(args[1]);
    double check_every = PyFloat_AsDouble(args[3]);
    if (PyErr_Occurred())
        return NULL;
    long long events = 0, dropped = 0, delivered = 0;
    PyObject *result = NULL;
    PyObject *clock = NULL, *actions = NULL, *nodes = NULL, *by_addr = NULL, *rng = NULL, *random_ = NULL,
             *heappop = NULL, *heapq = NULL;
    double start, next_check;
    /* of the nodes, their cores and what the cores return: found at first use */
    Slot n_blocked = SLOT(s_blocked), n_down = SLOT(s_down), n_wake_at = SLOT(s_wake_at), n_core = SLOT(s_core),
         n_backlog = SLOT(s_backlog), n_missed = SLOT(s_missed_wake), c_changes = SLOT(s_changes),
         o_address = SLOT(s_address), o_message = SLOT(s_message);
    Method m_handle = {s_handle, NULL, NULL}, m_tick = {s_tick, NULL, NULL}, m_next_wakeup = {s_next_wakeup, NULL, NULL};

    if (!(clock = PyObject_GetAttr(sim, s_clock)) || !(actions = PyObject_GetAttr(sim, s_actions)) ||
        !(nodes = PyObject_GetAttr(sim, s_nodes)) || !(by_addr = PyObject_GetAttr(sim, s_by_addr)) ||
        !(rng = PyObject_GetAttr(sim, s_rng)) || !(random_ = PyObject_GetAttr(rng, s_random)) ||
        !(heapq = PyImport_ImportModule("heapq")) || !(heappop = PyObject_GetAttr(heapq, s_heappop)))
        goto done;
    if (!PyList_Check(actions) || !PyList_Check(nodes) || !PyDict_Check(by_addr)) {
        PyErr_SetString(PyExc_TypeError, "simulator state of unexpected types");
        goto done;
    }
    if (get_double(clock, s_now, &start) < 0)
        goto done;
    next_check = predicate != Py_None ? start + check_every : INFINITY;

    for (;;) {
        double t_action = INFINITY;
        if (PyList_GET_SIZE(actions)) {
            PyObject *first = PyList_GET_ITEM(actions, 0);
            t_action = PyFloat_AsDouble(PyTuple_GET_ITEM(first, 0));
            if (t_action == -1.0 && PyErr_Occurred())
                goto done;
        }
        double limit = end < next_check ? end : next_check;
        double stop = limit < t_action ? limit : nextafter(t_action, -INFINITY);
        double loss, latency, jitter;
        PyObject *network = PyObject_GetAttr(sim, s_network);
        if (network == NULL)
            goto done;
        int bad = get_double(network, s_loss, &loss) < 0 || get_double(network, s_latency, &latency) < 0 ||
                  get_double(network, s_jitter, &jitter) < 0;
        Py_DECREF(network);
        if (bad)
            goto done;
        int split = get_truth(sim, s_split);
        if (split < 0)
            goto done;
        PyObject *group = PyObject_GetAttr(sim, s_group); /* owned until the inner loop ends */
        if (group == NULL)
            goto done;
        if (!PyList_Check(group)) {
            Py_DECREF(group);
            PyErr_SetString(PyExc_TypeError, "group is not a list");
            goto done;
        }

        while (q->len && q->heap[0].when <= stop) {
            Event ev = q_pop(q);
            double when = ev.when;
            PyObject *out = NULL, *core = NULL;
            if (set_now(clock, when) < 0) {
                Py_XDECREF(ev.msg);
                goto inner_error;
            }
            events++;
            PyObject *node = PyList_GET_ITEM(nodes, ev.node); /* borrowed */
            double blocked;
            if (ev.kind == DELIVER) {
                if (slot_get_double(node, &n_blocked, &blocked) < 0) {
                    Py_DECREF(ev.msg);
                    goto inner_error;
                }
                if (blocked > when) { /* down: lost; stalled: handled when the stall ends */
                    int down = slot_truth(node, &n_down);
                    int r = down;
                    if (down == 0) {
                        PyObject *backlog = slot_get(node, &n_backlog);
                        r = backlog ? PyList_Append(backlog, ev.msg) : -1;
                        Py_XDECREF(backlog);
                    } else if (down == 1) {
                        dropped++;
                        r = 0;
                    }
                    Py_DECREF(ev.msg);
                    if (r < 0)
                        goto inner_error;
                    continue;
                }
                delivered++;
                core = slot_get(node, &n_core);
                out = core ? method_call(&m_handle, core, ev.msg) : NULL;
                Py_DECREF(ev.msg);
            } else if (ev.kind == WAKE) {
                double wake_at;
                if (slot_get_double(node, &n_wake_at, &wake_at) < 0)
                    goto inner_error;
                if (when != wake_at) /* superseded by a later one */
                    continue;
                if (slot_get_double(node, &n_blocked, &blocked) < 0)
                    goto inner_error;
                if (blocked > when) {
                    int down = slot_truth(node, &n_down);
                    if (down < 0)
                        goto inner_error;
                    if (!down) {
                        if (slot_set_double(node, &n_wake_at, INFINITY) < 0)
                            goto inner_error;
                        PyObject *missed = slot_get(node, &n_missed);
                        if (missed == NULL)
                            goto inner_error;
                        int r = 0;
                        if (missed == Py_None)
                            r = slot_set_double(node, &n_missed, when);
                        Py_DECREF(missed);
                        if (r < 0)
                            goto inner_error;
                    }
                    continue;
                }
                if (slot_set_double(node, &n_wake_at, INFINITY) < 0)
                    goto inner_error;
                core = slot_get(node, &n_core);
                out = core ? method_call(&m_tick, core, NULL) : NULL;
            } else { /* STALL_END */
                if (slot_get_double(node, &n_blocked, &blocked) < 0)
                    goto inner_error;
                if (blocked > when)
                    continue;
                core = slot_get(node, &n_core);
                PyObject *w = PyFloat_FromDouble(when);
                out = (core && w) ? PyObject_CallMethodObjArgs(sim, s_unstall, node, w, NULL) : NULL;
                Py_XDECREF(w);
            }
            if (out == NULL || !PyList_Check(out)) {
                if (out != NULL)
                    PyErr_SetString(PyExc_TypeError, "a core returned something other than a list");
                Py_XDECREF(out);
                Py_XDECREF(core);
                goto inner_error;
            }
            Py_ssize_t n_out = PyList_GET_SIZE(out);
            if (n_out) { /* as _send does */
                long src_group = split ? PyLong_AsLong(PyList_GET_ITEM(group, ev.node)) : 0;
                for (Py_ssize_t k = 0; k < n_out; k++) {
                    PyObject *o = PyList_GET_ITEM(out, k);
                    PyObject *address = slot_get(o, &o_address);
                    if (address == NULL)
                        goto out_error;
                    PyObject *dst_obj = PyDict_GetItemWithError(by_addr, address); /* borrowed */
                    Py_DECREF(address);
                    if (dst_obj == NULL) {
                        if (PyErr_Occurred())
                            goto out_error;
                        dropped++;
                        continue;
                    }
                    long dst = PyLong_AsLong(dst_obj);
                    if (split && PyLong_AsLong(PyList_GET_ITEM(group, dst)) != src_group) {
                        dropped++;
                        continue;
                    }
                    double x;
                    if (loss != 0.0) {
                        if (draw(random_, &x) < 0)
                            goto out_error;
                        if (x < loss) {
                            dropped++;
                            continue;
                        }
                    }
                    double t = when + latency;
                    if (jitter != 0.0) {
                        if (draw(random_, &x) < 0)
                            goto out_error;
                        t = t + x * jitter;
                    }
                    PyObject *message = slot_get(o, &o_message);
                    if (message == NULL)
                        goto out_error;
                    int r = q_push(q, t, DELIVER, (int)dst, message);
                    Py_DECREF(message);
                    if (r < 0)
                        goto out_error;
                }
            }
            Py_DECREF(out);
            out = NULL;
            {
                int changed = slot_truth(core, &c_changes);
                if (changed < 0)
                    goto core_error;
                if (changed) {
                    PyObject *r = PyObject_CallMethodOneArg(sim, s_collect, node);
                    if (r == NULL)
                        goto core_error;
                    Py_DECREF(r);
                }
                PyObject *w = method_call(&m_next_wakeup, core, NULL);
                if (w == NULL)
                    goto core_error;
                double wake = PyFloat_AsDouble(w);
                Py_DECREF(w);
                if (wake == -1.0 && PyErr_Occurred())
                    goto core_error;
                if (wake < when)
                    wake = when;
                double wake_at;
                if (slot_get_double(node, &n_wake_at, &wake_at) < 0)
                    goto core_error;
                if (wake != wake_at) { /* earlier or later: the one already queued goes stale */
                    if (slot_set_double(node, &n_wake_at, wake) < 0 || q_push(q, wake, WAKE, ev.node, NULL) < 0)
                        goto core_error;
                }
            }
            Py_DECREF(core);
            continue;
        out_error:
            Py_DECREF(out);
        core_error:
            Py_DECREF(core);
            goto inner_error;
        }
        Py_DECREF(group);

        double t = q->len ? q->heap[0].when : INFINITY;
        if (t_action < t)
            t = t_action;
        if (t > next_check && next_check <= end) {
            if (set_now(clock, next_check) < 0)
                goto done;
            PyObject *r = PyObject_CallNoArgs(predicate);
            if (r == NULL)
                goto done;
            int ok = PyObject_IsTrue(r);
            Py_DECREF(r);
            if (ok < 0)
                goto done;
            if (ok) {
                double now;
                if (get_double(clock, s_now, &now) < 0)
                    goto done;
                result = PyFloat_FromDouble(now - start);
                goto done;
            }
            next_check += check_every;
            continue;
        }
        if (t > end) {
            if (set_now(clock, end) < 0)
                goto done;
            result = Py_NewRef(Py_None);
            goto done;
        }
        if (set_now(clock, t_action) < 0)
            goto done;
        PyObject *entry = PyObject_CallOneArg(heappop, actions);
        if (entry == NULL)
            goto done;
        PyObject *r = PyObject_CallNoArgs(PyTuple_GET_ITEM(entry, 2));
        Py_DECREF(entry);
        if (r == NULL)
            goto done;
        Py_DECREF(r);
        continue;
    inner_error:
        Py_DECREF(group);
        goto done;
    }

done:
    Py_XDECREF(m_handle.func);
    Py_XDECREF(m_tick.func);
    Py_XDECREF(m_next_wakeup.func);
    Py_XDECREF(clock);
    Py_XDECREF(actions);
    Py_XDECREF(nodes);
    Py_XDECREF(by_addr);
    Py_XDECREF(rng);
    Py_XDECREF(random_);
    Py_XDECREF(heappop);
    Py_XDECREF(heapq);
    {
        /* the counts go on even when an exception passes through, as in the Python loop */
        PyObject *exc_type, *exc_value, *exc_tb;
        PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
        int bad = add_count(sim, s_events, events) < 0 || add_count(sim, s_dropped, dropped) < 0 ||
                  add_count(sim, s_delivered, delivered) < 0;
        if (exc_type != NULL) {
            if (bad)
                PyErr_Clear();
            PyErr_Restore(exc_type, exc_value, exc_tb);
            Py_XDECREF(result);
            return NULL;
        }
        if (bad) {
            Py_XDECREF(result);
            return NULL;
        }
    }
    return result;
}

static PyMethodDef Queue_methods[] = {
    {"push", (PyCFunction)(void (*)(void))Queue_push, METH_FASTCALL, "push(when, kind, node, msg): schedule an event"},
    {"run", (PyCFunction)(void (*)(void))Queue_run, METH_FASTCALL,
     "run(sim, end, predicate, check_every): Simulator._loop"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject QueueType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gossip_sim._simloop.Queue",
    .tp_basicsize = sizeof(Queue),
    .tp_dealloc = (destructor)Queue_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The simulator's pending events, and its event loop",
    .tp_methods = Queue_methods,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef simloop_module = {
    PyModuleDef_HEAD_INIT, "_simloop", "The simulator's event loop, compiled (optional).", -1, NULL, NULL, NULL, NULL, NULL,
};

#define INTERN(var, text)                                                                                              \
    if ((var = PyUnicode_InternFromString(text)) == NULL)                                                              \
        return NULL;

PyMODINIT_FUNC PyInit__simloop(void) {
    INTERN(s_now, "now");
    INTERN(s_blocked, "blocked");
    INTERN(s_down, "down");
    INTERN(s_wake_at, "wake_at");
    INTERN(s_core, "core");
    INTERN(s_backlog, "backlog");
    INTERN(s_missed_wake, "missed_wake");
    INTERN(s_handle, "handle");
    INTERN(s_tick, "tick");
    INTERN(s_next_wakeup, "next_wakeup");
    INTERN(s_changes, "changes");
    INTERN(s_address, "address");
    INTERN(s_message, "message");
    INTERN(s_collect, "_collect");
    INTERN(s_unstall, "_unstall");
    INTERN(s_clock, "clock");
    INTERN(s_actions, "_actions");
    INTERN(s_nodes, "nodes");
    INTERN(s_by_addr, "_by_addr");
    INTERN(s_rng, "rng");
    INTERN(s_random, "random");
    INTERN(s_network, "network");
    INTERN(s_loss, "loss");
    INTERN(s_latency, "latency");
    INTERN(s_jitter, "jitter");
    INTERN(s_group, "_group");
    INTERN(s_split, "_split");
    INTERN(s_events, "events");
    INTERN(s_dropped, "dropped");
    INTERN(s_delivered, "delivered");
    INTERN(s_heappop, "heappop");
    if (PyType_Ready(&QueueType) < 0 || PyType_Ready(&ClockType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&simloop_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Queue", (PyObject *)&QueueType) < 0 ||
        PyModule_AddObjectRef(m, "Clock", (PyObject *)&ClockType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
