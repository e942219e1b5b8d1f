/* The replica engine's step loop, compiled: a line-for-line mirror of adaptergym/twin/engine.py.
 *
 * Every mechanism (scheduling, preemption, admission, LoRA slots, decode jumps) is the reference engine's; a
 * change there must be made here too (tests/test_compiled_engine.py runs both on randomised cases and
 * compares their records). Arithmetic follows the reference's expressions in the same order, compiled
 * without FMA contraction, so per-request times are bit-identical; a jump's total duration is summed with
 * numpy's pairwise algorithm for the same reason. Sums the reference folds in numpy/BLAS blocks (step counts,
 * ITL-weighted counts, the waiting area of a jump) are summed here step by step: equal to rounding. ITL bins
 * use libm's log, as the reference's scalar path (math.log) does; its vectorised path (np.log) may differ from
 * libm in the last bit on CPUs where numpy uses its own SIMD log, which moves a gap by one bin only if it lies
 * within that bit of a bin edge (never seen in the tests or the real rows).
 *
 * Per-request arrays are numpy arrays owned by the Python wrapper (adaptergym/twin/compiled_engine.py), bound with
 * Core.bind(); per-adapter state lives here. The step-time model and the load times come in as numbers
 * (StepTimer.coefficients(), LoraCache's per-adapter costs and visit order): the profile's data never reaches C as anything
 * else.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef int64_t i64;

#define NO_HEAD ((i64)1 << 62)
#define NONE ((i64)-1)
#define REFUSED 1
#define ROUTED_AWAY 2
#define ADMITS 0
#define BLOCKED 1
#define AWAITS_ARRIVAL 2
#define IDLE 0
#define PREFILLING 1
#define DECODING 2
#define N_COUNTS 10
#define PW_BLOCKSIZE 128

/* ------------------------------------------------------------------ small containers */
typedef struct { i64 a, b; } Pair;
typedef struct { Pair *items; i64 n, cap; } Heap; /* min-heap of (a, b), lexicographic */

static int pair_less(Pair x, Pair y) { return x.a < y.a || (x.a == y.a && x.b < y.b); }

static int heap_push(Heap *h, i64 a, i64 b) {
    if (h->n == h->cap) {
        i64 cap = h->cap ? 2 * h->cap : 64;
        Pair *items = PyMem_Realloc(h->items, (size_t)cap * sizeof(Pair));
        if (!items) { PyErr_NoMemory(); return -1; }
        h->items = items;
        h->cap = cap;
    }
    i64 i = h->n++;
    Pair item = {a, b};
    while (i > 0) {
        i64 parent = (i - 1) / 2;
        if (!pair_less(item, h->items[parent])) break;
        h->items[i] = h->items[parent];
        i = parent;
    }
    h->items[i] = item;
    return 0;
}

static Pair heap_pop(Heap *h) {
    Pair top = h->items[0], last = h->items[--h->n];
    i64 i = 0, n = h->n;
    while (1) {
        i64 child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && pair_less(h->items[child + 1], h->items[child])) child++;
        if (!pair_less(h->items[child], last)) break;
        h->items[i] = h->items[child];
        i = child;
    }
    if (n) h->items[i] = last;
    return top;
}

typedef struct { i64 *items; i64 n, cap; } Vec;

static int vec_reserve(Vec *v, i64 cap) {
    if (cap <= v->cap) return 0;
    i64 newcap = v->cap ? v->cap : 16;
    while (newcap < cap) newcap *= 2;
    i64 *items = PyMem_Realloc(v->items, (size_t)newcap * sizeof(i64));
    if (!items) { PyErr_NoMemory(); return -1; }
    v->items = items;
    v->cap = newcap;
    return 0;
}

static int vec_push(Vec *v, i64 x) {
    if (vec_reserve(v, v->n + 1) < 0) return -1;
    v->items[v->n++] = x;
    return 0;
}

static void vec_remove_at(Vec *v, i64 i) {
    memmove(v->items + i, v->items + i + 1, (size_t)(v->n - i - 1) * sizeof(i64));
    v->n--;
}

/* A tier of LoRA residency (GPU slots or the CPU cache): its members in no order, and each adapter's place. */
typedef struct { i64 *members, *pos, len; } Tier;

static int tier_has(const Tier *t, i64 a) { return t->pos[a] >= 0; }

static void tier_add(Tier *t, i64 a) {
    t->pos[a] = t->len;
    t->members[t->len++] = a;
}

static void tier_remove(Tier *t, i64 a) {
    i64 i = t->pos[a], last = t->members[--t->len];
    t->members[i] = last;
    t->pos[last] = i;
    t->pos[a] = NONE;
}

/* ------------------------------------------------------------------ the engine */
/* Per-request numpy arrays bound by Core.bind(), in this order. */
enum { B_ARRIVAL, B_ADAPTER, B_INPUT, B_OUTPUT, B_FIRST, B_FINISH, B_LAST, B_PREEMPT, B_GENERATED, B_FLAGS,
       B_BASE, B_STATE, B_COMPUTED, B_QUEUE_NEXT, B_ORDER_PREV, B_ORDER_NEXT, B_ITL_HIST, N_BUFS };
static const char *BUF_NAMES[N_BUFS] = {"arrival_s", "adapter", "input_tokens", "output_tokens", "first_token_s",
    "finish_s", "last_token_s", "preemptions", "generated", "flags", "base", "state", "computed", "queue_next",
    "order_prev", "order_next", "itl_hist"};
static const Py_ssize_t BUF_ITEMSIZE[N_BUFS] = {8, 8, 8, 8, 8, 8, 8, 8, 8, 1, 8, 1, 8, 8, 8, 8, 8};

typedef struct {
    PyObject_HEAD
    /* limits */
    i64 block_size, max_waiting, budget, max_seqs, max_loras, total_blocks, free_blocks, gpu_slots, cpu_slots;
    int lora_enabled, jumps;
    /* step time (StepTimer.coefficients()) and ITL histogram */
    double base_ms, eager_ms, per_decode, per_prefill, per_ctx, per_adapter, per_adapter_token, per_adapter_cached;
    double per_exposed_adapter, tokens_per_hidden_adapter;
    double sched_base, sched_running, sched_skipped;
    i64 graph_max_tokens, itl_bins;
    double itl_bin_width, itl_min_ms;
    /* per request */
    Py_buffer bufs[N_BUFS];
    int bound;
    double *arrival, *first_token, *finish, *last_token;
    i64 *adapter, *input, *output, *preemptions, *generated, *base, *computed, *queue_next, *order_prev,
        *order_next, *itl_hist;
    unsigned char *flags, *state;
    i64 n_requests, capacity, n_arrived, n_refused;
    /* per adapter */
    i64 n_adapters, adapter_cap;
    double *cpu_to_gpu_ms, *disk_to_cpu_ms;
    i64 *run_count, *fifo_head, *fifo_tail, *fifo_len;
    char *active;
    i64 n_active;
    Tier gpu, cpu;
    uint64_t *visit_order; /* where vLLM's per-step walk visits each adapter (LoraCache._order) */
    i64 *entered, *left;   /* step each adapter last entered the batch; last step it was in one, once it left */
    i64 *loaded;           /* the runtime load that touched an adapter since (numbered from 1), or 0 */
    i64 loads;             /* runtime loads so far */
    int must_reload;       /* a runtime load evicted, or an unload dropped, an adapter of the batch: next step walks */
    i64 *touched_in;       /* the walk an adapter was last touched in (walk_no) */
    i64 walk_no, loads_from_disk, loads_from_cpu;
    Vec walk;              /* scratch: the adapters of one walk, in visit order */
    /* waiting queue: preempted requests in front, then per-adapter FIFOs merged by request id */
    Vec preempted;
    Heap heads, active_heads;
    i64 fresh, fresh_of_active, last_position;
    /* running batch */
    i64 order_head, order_tail, n_running;
    Vec prefill; /* running requests still prefilling, in admission order */
    i64 tick, n_decoding, decoding_context;
    i64 *residue_count;
    Heap finishes; /* (tick at which it finishes, request) */
    /* scratch of one step */
    Vec chunk_rid, chunk_tokens, done;
    /* clock and statistics */
    double now;
    i64 steps, jumped_steps, last_tokens, last_adapters, last_seqs, max_waiting_seen, max_running_seen;
    double step_counts[N_COUNTS], itl_counts[N_COUNTS];
    double area_running, area_waiting, area_kv_blocks;
} Core;

static i64 floor_mod(i64 x, i64 m) { i64 r = x % m; return r < 0 ? r + m : r; }
static i64 ceil_div(i64 x, i64 m) { return (x + m - 1) / m; } /* x >= 0 */

/* ------------------------------------------------------------------ waiting queue (reference: waiting.py) */
static i64 n_waiting(Core *c) { return c->preempted.n + c->fresh; }

static i64 skipped(Core *c) {
    return c->n_active >= c->max_loras ? c->fresh - c->fresh_of_active : 0;
}

static int new_head(Core *c, i64 a, i64 rid) {
    if (heap_push(&c->heads, rid, a) < 0) return -1;
    if (c->active[a] && heap_push(&c->active_heads, rid, a) < 0) return -1;
    return 0;
}

static int queue_push(Core *c, i64 rid) {
    i64 a = c->adapter[rid];
    c->queue_next[rid] = NONE;
    if (c->fifo_len[a] == 0) {
        c->fifo_head[a] = rid;
        if (new_head(c, a, rid) < 0) return -1;
    } else {
        c->queue_next[c->fifo_tail[a]] = rid;
    }
    c->fifo_tail[a] = rid;
    c->fifo_len[a]++;
    c->fresh++;
    c->fresh_of_active += c->active[a];
    return 0;
}

static int queue_activate(Core *c, i64 a) {
    c->fresh_of_active += c->fifo_len[a];
    return c->fifo_len[a] ? heap_push(&c->active_heads, c->fifo_head[a], a) : 0;
}

static i64 queue_peek(Core *c) {
    int free_slot = c->n_active < c->max_loras;
    for (i64 i = 0; i < c->preempted.n; i++) {
        i64 rid = c->preempted.items[i];
        if (free_slot || c->active[c->adapter[rid]]) {
            c->last_position = i;
            return rid;
        }
    }
    c->last_position = -1;
    Heap *h = free_slot ? &c->heads : &c->active_heads;
    while (h->n) {
        Pair top = h->items[0];
        i64 head = c->fifo_len[top.b] ? c->fifo_head[top.b] : NO_HEAD;
        if (top.a == head && (free_slot || c->active[top.b])) return top.a;
        heap_pop(h);
    }
    return -1;
}

static int queue_take(Core *c, i64 rid, i64 a) {
    if (c->last_position >= 0) {
        vec_remove_at(&c->preempted, c->last_position);
        return 0;
    }
    c->fifo_head[a] = c->queue_next[rid];
    c->fifo_len[a]--;
    c->fresh--;
    c->fresh_of_active -= c->active[a];
    return c->fifo_len[a] ? new_head(c, a, c->fifo_head[a]) : 0;
}

/* ------------------------------------------------------------------ LoRA residency (reference: lora_cache.py) */
#define NEVER (-((i64)1 << 62))

/* Whether adapter a is evicted before adapter b (LoraCache._by_recency's heap order as the walk of `step` begins):
   `spare` ones (the batch's, in a runtime load) last; then least recently used first: those in the previous
   step's batch were touched then; the others when they were last in a batch, or just after it if a runtime load
   touched them since (later loads later); ties by visit order, then index. */
static int evicted_before(Core *c, i64 a, i64 b, i64 step, int spare_batch) {
    int batch_a = c->active[a] && c->entered[a] < step, batch_b = c->active[b] && c->entered[b] < step;
    int spare_a = spare_batch && c->active[a], spare_b = spare_batch && c->active[b];
    if (spare_a != spare_b) return spare_b;
    i64 key_a = batch_a ? step - 1 : c->left[a], key_b = batch_b ? step - 1 : c->left[b];
    if (key_a != key_b) return key_a < key_b;
    i64 load_a = batch_a ? 0 : c->loaded[a], load_b = batch_b ? 0 : c->loaded[b];
    if (load_a != load_b) return load_a < load_b;
    if (c->visit_order[a] != c->visit_order[b]) return c->visit_order[a] < c->visit_order[b];
    return a < b;
}

/* The member of `t` evicted first (evicted_before) among those not touched by this walk; NONE if every member was
   touched. */
static i64 lru_untouched(Core *c, const Tier *t, i64 step, int spare_batch) {
    i64 best = NONE;
    for (i64 i = 0; i < t->len; i++) {
        i64 a = t->members[i];
        if (c->touched_in[a] == c->walk_no) continue;
        if (best == NONE || evicted_before(c, a, best, step, spare_batch)) best = a;
    }
    return best;
}

/* Make the walk's adapters resident in turn, each evicting the first untouched adapter of a full tier
   (lru_untouched; the batch's last if spare_batch) and noting when that one is in the batch (LoraCache._walk);
   the load time, ms. The caller has begun the walk (walk_no). */
static double lora_walk(Core *c, const i64 *adapters, i64 n, i64 step, int spare_batch) {
    double cost = 0.0;
    for (i64 i = 0; i < n; i++) {
        i64 a = adapters[i];
        if (!tier_has(&c->cpu, a)) {
            cost += c->disk_to_cpu_ms[a];
            c->loads_from_disk++;
            if (c->cpu.len >= c->cpu_slots) {
                i64 victim = lru_untouched(c, &c->cpu, step, spare_batch);
                tier_remove(&c->cpu, victim);
                if (tier_has(&c->gpu, victim)) tier_remove(&c->gpu, victim);
                c->must_reload |= c->active[victim];
            }
            tier_add(&c->cpu, a);
        }
        if (!tier_has(&c->gpu, a)) {
            cost += c->cpu_to_gpu_ms[a];
            c->loads_from_cpu++;
            if (c->gpu.len >= c->gpu_slots) {
                i64 victim = lru_untouched(c, &c->gpu, step, spare_batch);
                tier_remove(&c->gpu, victim);
                c->must_reload |= c->active[victim];
            }
            tier_add(&c->gpu, a);
        }
        c->touched_in[a] = c->walk_no;
    }
    return cost;
}

static const uint64_t *sort_key; /* what by_visit_order compares (set just before qsort; the GIL is held) */

static int by_visit_order(const void *x, const void *y) {
    i64 a = *(const i64 *)x, b = *(const i64 *)y;
    uint64_t ka = sort_key[a], kb = sort_key[b];
    return ka < kb ? -1 : ka > kb ? 1 : (a > b) - (a < b);
}

/* vLLM's walk over the adapters of `step`'s batch (LoraCache.apply): load what is not resident, adding the load
   time to *load_ms. -1 on error. */
static int lora_apply(Core *c, i64 step, double *load_ms) {
    c->walk.n = 0;
    if (vec_reserve(&c->walk, c->n_active) < 0) return -1;
    for (i64 a = 0; a < c->n_adapters; a++) {
        if (c->active[a]) c->walk.items[c->walk.n++] = a;
    }
    sort_key = c->visit_order;
    qsort(c->walk.items, (size_t)c->walk.n, sizeof(i64), by_visit_order);
    c->walk_no++;
    *load_ms = lora_walk(c, c->walk.items, c->walk.n, step, 0);
    c->must_reload = 0; /* the walk made the whole batch resident */
    return 0;
}

/* vLLM's runtime load_lora_adapter between two steps (LoraCache.load; `step` is the next one): into the CPU
   cache, then into a GPU slot, evicting an adapter of the running batch only from a tier that holds no other. */
static double lora_load(Core *c, i64 a, i64 step) {
    if (tier_has(&c->gpu, a)) return 0.0;
    c->left[a] = step - 1;
    c->loaded[a] = ++c->loads;
    c->walk_no++;
    return lora_walk(c, &a, 1, step, 1);
}

/* ------------------------------------------------------------------ running batch */
/* Count a request of adapter a into the batch; sets *must_load when a is not on the GPU (LoraCache.enter). */
static int enter_batch(Core *c, i64 a, int *must_load) {
    if (c->run_count[a] == 0) {
        c->active[a] = 1;
        c->n_active++;
        if (queue_activate(c, a) < 0) return -1;
        if (c->lora_enabled) {
            c->entered[a] = c->steps;
            c->loaded[a] = 0;
            if (!tier_has(&c->gpu, a)) *must_load = 1;
        }
    }
    c->run_count[a]++;
    return 0;
}

/* Count a request of adapter a out of the batch (it was last in the step before c->steps). */
static void leave_batch(Core *c, i64 a) {
    if (--c->run_count[a] == 0) {
        c->active[a] = 0;
        c->n_active--;
        c->fresh_of_active -= c->fifo_len[a];
        c->left[a] = c->steps - 1;
    }
}

static i64 residue(Core *c, i64 rid) { return floor_mod(c->input[rid] - c->base[rid] - 1, c->block_size); }

static int start_decoding(Core *c, i64 rid, i64 generated) {
    i64 base = c->tick - generated;
    c->base[rid] = base;
    c->state[rid] = DECODING;
    c->residue_count[residue(c, rid)]++;
    c->n_decoding++;
    c->decoding_context += c->input[rid] + generated - 1;
    return heap_push(&c->finishes, base + c->output[rid], rid);
}

static i64 stop_decoding(Core *c, i64 rid) {
    i64 generated = c->tick - c->base[rid];
    c->residue_count[residue(c, rid)]--;
    c->n_decoding--;
    c->decoding_context -= c->input[rid] + generated - 1;
    return generated;
}

static void order_append(Core *c, i64 rid) {
    c->order_prev[rid] = c->order_tail;
    c->order_next[rid] = NONE;
    if (c->order_tail == NONE) c->order_head = rid; else c->order_next[c->order_tail] = rid;
    c->order_tail = rid;
    c->n_running++;
}

static void order_remove(Core *c, i64 rid) {
    i64 p = c->order_prev[rid], q = c->order_next[rid];
    if (p == NONE) c->order_head = q; else c->order_next[p] = q;
    if (q == NONE) c->order_tail = p; else c->order_prev[q] = p;
    c->n_running--;
}

static void prefill_remove(Core *c, i64 rid) {
    for (i64 i = 0; i < c->prefill.n; i++) {
        if (c->prefill.items[i] == rid) { vec_remove_at(&c->prefill, i); return; }
    }
}

/* Take rid out of the running batch, freeing its KV blocks and keeping its progress. */
static void remove_running(Core *c, i64 rid, double last_token_s) {
    i64 computed;
    order_remove(c, rid);
    if (c->state[rid] == PREFILLING) {
        computed = c->computed[rid];
        prefill_remove(c, rid);
    } else {
        i64 generated = stop_decoding(c, rid);
        c->generated[rid] = generated;
        computed = c->input[rid] + generated - 1;
        c->last_token[rid] = last_token_s;
    }
    c->state[rid] = IDLE;
    c->free_blocks += ceil_div(computed, c->block_size);
    leave_batch(c, c->adapter[rid]);
}

static void finish_request(Core *c, i64 rid, double end) {
    c->finish[rid] = end;
    remove_running(c, rid, end);
}

static i64 next_finish_tick(Core *c) {
    Heap *h = &c->finishes;
    while (h->n) {
        Pair top = h->items[0];
        if (c->state[top.b] == DECODING && c->base[top.b] + c->output[top.b] == top.a) return top.a;
        heap_pop(h);
    }
    return NO_HEAD;
}

static void finish_decoding(Core *c, double end) {
    while (next_finish_tick(c) <= c->tick) finish_request(c, heap_pop(&c->finishes).b, end);
}

/* ------------------------------------------------------------------ step time (reference: step_time.py) */
/* The step's distinct adapters whose weight reads its token work does not hide (StepTimer.exposed_adapters). */
static double exposed_adapters(Core *c, i64 adapters, i64 tokens) {
    double exposed = (double)adapters - (double)tokens / c->tokens_per_hidden_adapter;
    return exposed > 0.0 ? exposed : 0.0;
}

static double step_ms(Core *c, i64 decode_seqs, i64 prefill_tokens, i64 context_tokens, i64 adapters, i64 cached) {
    double eager = decode_seqs + prefill_tokens > c->graph_max_tokens ? c->eager_ms : 0.0;
    return c->base_ms + eager + c->per_decode * (double)decode_seqs + c->per_prefill * (double)prefill_tokens
           + c->per_ctx * (double)context_tokens
           + (c->per_adapter + c->per_adapter_token * (double)(decode_seqs + prefill_tokens)
              + c->per_adapter_cached * (double)cached) * (double)adapters
           + c->per_exposed_adapter * exposed_adapters(c, adapters, decode_seqs + prefill_tokens);
}

static double scheduler_ms(Core *c, i64 running, i64 skipped_requests) {
    double ms = c->sched_base + c->sched_running * (double)running + c->sched_skipped * (double)skipped_requests;
    return ms > 0.0 ? ms : 0.0;
}

static i64 itl_bin(Core *c, double gap_ms) {
    double g = gap_ms > c->itl_min_ms ? gap_ms : c->itl_min_ms;
    i64 bin = (i64)(log(g / c->itl_min_ms) / c->itl_bin_width);
    return bin < c->itl_bins - 1 ? bin : c->itl_bins - 1;
}

static void log_counts(Core *c, const double counts[N_COUNTS], i64 gaps) {
    for (int j = 0; j < N_COUNTS; j++) {
        c->step_counts[j] += counts[j];
        c->itl_counts[j] += (double)gaps * counts[j];
    }
}

static void account(Core *c, double dt_s, i64 running, i64 waiting, double used_blocks, double waiting_area_s) {
    c->area_running += (double)running * dt_s;
    c->area_waiting += isnan(waiting_area_s) ? (double)waiting * dt_s : waiting_area_s;
    c->area_kv_blocks += used_blocks * dt_s;
    if (waiting > c->max_waiting_seen) c->max_waiting_seen = waiting;
    if (running > c->max_running_seen) c->max_running_seen = running;
}

/* ------------------------------------------------------------------ arrivals */
static int take_arrivals(Core *c, double t) {
    i64 first = c->n_arrived, n = c->n_requests, arrived;
    if (first + 1 < n && c->arrival[first + 1] > t) {
        arrived = c->arrival[first] <= t ? first + 1 : first;
    } else { /* searchsorted(arrival[:n], t, side="right"), from first on */
        i64 lo = first, hi = n;
        while (lo < hi) {
            i64 mid = lo + (hi - lo) / 2;
            if (c->arrival[mid] <= t) lo = mid + 1; else hi = mid;
        }
        arrived = lo;
    }
    if (arrived <= first) return 0;
    i64 space = c->max_waiting - n_waiting(c);
    if (space < 0) space = 0;
    for (i64 rid = first; rid < arrived; rid++) {
        if (c->flags[rid] != 0) continue; /* routed to another replica */
        if (space > 0) {
            if (queue_push(c, rid) < 0) return -1;
            space--;
        } else {
            c->flags[rid] = REFUSED;
            c->n_refused++;
        }
    }
    c->n_arrived = arrived;
    return 0;
}

/* ------------------------------------------------------------------ scheduling */
static i64 chunk_blocks(Core *c, i64 rid, i64 tokens) {
    i64 computed = c->computed[rid];
    return ceil_div(computed + tokens, c->block_size) - ceil_div(computed, c->block_size);
}

static i64 first_chunk_tokens(Core *c, i64 rid, i64 budget) {
    i64 tokens = c->input[rid] + c->generated[rid];
    return tokens < budget ? tokens : budget;
}

/* KV blocks ran out: preempt from the newest end until the chunks fit. Returns -1 on error. */
static int schedule_with_preemption(Core *c, i64 need) {
    i64 hit = floor_mod(-c->tick, c->block_size), first_victim = c->preempted.n;
    while (need > c->free_blocks) {
        i64 rid = c->order_tail;
        if (c->state[rid] == PREFILLING) {
            for (i64 i = 0; i < c->chunk_rid.n; i++) {
                if (c->chunk_rid.items[i] == rid) { need -= chunk_blocks(c, rid, c->chunk_tokens.items[i]); break; }
            }
        } else if (residue(c, rid) == hit) {
            need -= 1;
        }
        c->preemptions[rid]++;
        remove_running(c, rid, c->now);
        if (vec_push(&c->preempted, rid) < 0) return -1; /* appended newest first, moved to the front below */
    }
    c->free_blocks -= need;
    /* The victims go in front, oldest first: reverse them and rotate them ahead of those already waiting. */
    i64 nv = c->preempted.n - first_victim, *items = c->preempted.items;
    if (nv) {
        i64 *victims = PyMem_Malloc((size_t)nv * sizeof(i64));
        if (!victims) { PyErr_NoMemory(); return -1; }
        for (i64 i = 0; i < nv; i++) victims[i] = items[c->preempted.n - 1 - i];
        memmove(items + nv, items, (size_t)first_victim * sizeof(i64));
        memcpy(items, victims, (size_t)nv * sizeof(i64));
        PyMem_Free(victims);
    }
    i64 kept = 0;
    for (i64 i = 0; i < c->chunk_rid.n; i++) {
        if (c->state[c->chunk_rid.items[i]] == IDLE) continue;
        c->chunk_rid.items[kept] = c->chunk_rid.items[i];
        c->chunk_tokens.items[kept++] = c->chunk_tokens.items[i];
    }
    c->chunk_rid.n = c->chunk_tokens.n = kept;
    return 0;
}

/* This step's prefill chunks of running requests (into chunk_rid/chunk_tokens); sets *budget_left and
 * *preempted. */
static int schedule_running(Core *c, i64 *budget_left, int *preempted) {
    i64 left = c->budget - c->n_decoding, wanted = 0;
    c->chunk_rid.n = c->chunk_tokens.n = 0;
    if (vec_reserve(&c->chunk_rid, c->prefill.n) < 0 || vec_reserve(&c->chunk_tokens, c->prefill.n) < 0) return -1;
    for (i64 i = 0; i < c->prefill.n; i++) {
        i64 rid = c->prefill.items[i], tokens = c->input[rid] + c->generated[rid] - c->computed[rid];
        c->chunk_rid.items[i] = rid;
        c->chunk_tokens.items[i] = tokens;
        wanted += tokens;
    }
    c->chunk_rid.n = c->chunk_tokens.n = c->prefill.n;
    if (wanted > left) { /* the budget runs out inside the prefill chunks */
        i64 kept = 0;
        for (i64 i = 0; i < c->chunk_rid.n && left > 0; i++) {
            i64 tokens = c->chunk_tokens.items[i] < left ? c->chunk_tokens.items[i] : left;
            c->chunk_tokens.items[i] = tokens;
            left -= tokens;
            kept++;
        }
        c->chunk_rid.n = c->chunk_tokens.n = kept;
        *budget_left = 0;
    } else {
        *budget_left = left - wanted;
    }
    i64 need = c->residue_count[floor_mod(-c->tick, c->block_size)];
    for (i64 i = 0; i < c->chunk_rid.n; i++) need += chunk_blocks(c, c->chunk_rid.items[i], c->chunk_tokens.items[i]);
    if (need <= c->free_blocks) {
        c->free_blocks -= need;
        *preempted = 0;
        return 0;
    }
    *budget_left = 0;
    *preempted = 1;
    return schedule_with_preemption(c, need);
}

/* Admit waiting requests FCFS (appending their first chunks); sets *must_load when an adapter must be loaded. */
static int admit_waiting(Core *c, i64 budget, int *must_load) {
    while (budget > 0 && c->n_running < c->max_seqs) {
        i64 rid = queue_peek(c);
        if (rid < 0) break;
        i64 tokens = first_chunk_tokens(c, rid, budget), blocks = ceil_div(tokens, c->block_size);
        if (blocks > c->free_blocks) break;
        i64 a = c->adapter[rid];
        if (queue_take(c, rid, a) < 0) return -1;
        c->free_blocks -= blocks;
        order_append(c, rid);
        c->state[rid] = PREFILLING;
        c->computed[rid] = 0;
        if (vec_push(&c->prefill, rid) < 0) return -1;
        if (enter_batch(c, a, must_load) < 0) return -1;
        if (vec_push(&c->chunk_rid, rid) < 0 || vec_push(&c->chunk_tokens, tokens) < 0) return -1;
        budget -= tokens;
    }
    return 0;
}

/* One engine step at now: 1 if it ran, 0 if nothing could be scheduled, -1 on error. */
static int step(Core *c) {
    i64 waiting_before = n_waiting(c), running_before = c->n_running, budget;
    int preempted;
    if (schedule_running(c, &budget, &preempted) < 0) return -1;
    double load_ms = 0.0;
    int must_load = c->must_reload;
    if (!preempted && budget > 0 && waiting_before && admit_waiting(c, budget, &must_load) < 0) return -1;
    /* vLLM loads the step's adapters before its forward pass: the whole batch waits */
    if (must_load && lora_apply(c, c->steps, &load_ms) < 0) return -1;
    i64 decoding = c->n_decoding, n_chunks = c->chunk_rid.n;
    if (decoding + n_chunks == 0) return 0;
    i64 tokens = decoding, decode = decoding, chunk_context = 0;
    for (i64 i = 0; i < n_chunks; i++) {
        i64 t = c->chunk_tokens.items[i];
        tokens += t;
        decode += t == 1;
        chunk_context += c->computed[c->chunk_rid.items[i]];
    }
    i64 context = c->decoding_context + chunk_context + tokens;
    double overhead_ms = scheduler_ms(c, running_before, skipped(c)) + load_ms;
    double ms = overhead_ms + step_ms(c, decode, tokens - decode, context, c->n_active, c->cpu.len);
    double end = c->now + ms / 1000.0;
    c->last_tokens = tokens;
    c->last_adapters = c->n_active;
    c->last_seqs = decoding + n_chunks;
    c->steps++; /* counted before requests finish: an adapter leaving was last in this step */
    c->tick++;
    c->decoding_context += decoding;
    i64 same = decoding;
    c->done.n = 0;
    for (i64 i = 0; i < n_chunks; i++) { /* prefill chunks that reach the end of the prompt sample a token */
        i64 rid = c->chunk_rid.items[i];
        i64 computed = c->computed[rid] += c->chunk_tokens.items[i];
        i64 gen = c->generated[rid];
        if (computed < c->input[rid] + gen) continue;
        double last = c->last_token[rid];
        if (last == c->now) {
            same++;
        } else if (gen == 0) {
            if (isnan(c->first_token[rid])) c->first_token[rid] = end;
        } else {
            c->itl_hist[itl_bin(c, (end - last) * 1000.0)]++;
        }
        if (gen + 1 >= c->output[rid]) {
            if (vec_push(&c->done, rid) < 0) return -1;
        } else {
            prefill_remove(c, rid);
            if (start_decoding(c, rid, gen + 1) < 0) return -1;
        }
    }
    if (same) c->itl_hist[itl_bin(c, ms)] += same;
    for (i64 i = 0; i < c->done.n; i++) { /* finished on the token sampled right after (re)computing the prompt */
        i64 rid = c->done.items[i], gen = c->generated[rid] + 1;
        finish_request(c, rid, end);
        c->generated[rid] = gen;
        c->last_token[rid] = end;
    }
    finish_decoding(c, end);
    i64 adapters = c->n_active;
    double counts[N_COUNTS] = {1.0, (double)decode, (double)(tokens - decode), (double)context, (double)adapters,
                               (double)(adapters * tokens), (double)(tokens > c->graph_max_tokens),
                               (double)(adapters * c->cpu.len), exposed_adapters(c, adapters, tokens), overhead_ms};
    log_counts(c, counts, same);
    account(c, ms / 1000.0, running_before, waiting_before, (double)(c->total_blocks - c->free_blocks), NAN);
    c->now = end;
    return 1;
}

/* ------------------------------------------------------------------ decode jumps */
/* numpy's pairwise summation (what ndarray.sum() does with a contiguous float64 array), so a jump's duration
 * is the reference's to the last bit. */
static double pairwise_sum(const double *a, i64 n) {
    if (n < 8) {
        double res = 0.0;
        for (i64 i = 0; i < n; i++) res += a[i];
        return res;
    }
    if (n <= PW_BLOCKSIZE) {
        double r[8];
        i64 i;
        for (int j = 0; j < 8; j++) r[j] = a[j];
        for (i = 8; i < n - (n % 8); i += 8) {
            for (int j = 0; j < 8; j++) r[j] += a[i + j];
        }
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) res += a[i];
        return res;
    }
    i64 n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

/* How many steps of durations first_ms, first_ms + delta_ms, ... start within window_s. */
static double step_start_ms(i64 j, double first_ms, double delta_ms) {
    return (double)j * first_ms + delta_ms * (double)j * (double)(j - 1) / 2.0;
}

static i64 steps_before(double window_s, double first_ms, double delta_ms) {
    if (!isfinite(window_s)) return (i64)1 << 40;
    double window_ms = window_s * 1000.0;
    if (window_ms <= 0) return 0;
    i64 k;
    if (delta_ms <= 1e-15) {
        k = (i64)ceil(window_ms / first_ms);
    } else { /* smallest k with k*first + delta*k*(k-1)/2 >= window */
        double b = first_ms - delta_ms / 2.0;
        k = (i64)ceil((-b + sqrt(b * b + 2.0 * delta_ms * window_ms)) / delta_ms);
    }
    while (k > 0 && step_start_ms(k - 1, first_ms, delta_ms) >= window_ms) k--;
    while (step_start_ms(k, first_ms, delta_ms) < window_ms) k++;
    return k;
}

/* New KV blocks the decoding requests need over the next k steps. */
static i64 blocks_needed(Core *c, i64 k) {
    i64 bs = c->block_size, total = 0;
    for (i64 r = 0; r < bs; r++) {
        i64 count = c->residue_count[r];
        if (count) {
            i64 first = floor_mod(-(r + c->tick), bs);
            if (first < k) total += count * ((k - 1 - first) / bs + 1);
        }
    }
    return total;
}

static i64 max_steps_within_blocks(Core *c, i64 k_max) {
    i64 lo = 0, hi = k_max;
    while (lo < hi) {
        i64 mid = (lo + hi + 1) / 2;
        if (blocks_needed(c, mid) <= c->free_blocks) lo = mid; else hi = mid - 1;
    }
    return lo;
}

static int admission(Core *c) {
    i64 n = c->n_running;
    if (n >= c->max_seqs || n >= c->budget) return BLOCKED;
    i64 rid = n_waiting(c) ? queue_peek(c) : -1;
    if (rid >= 0) return ceil_div(first_chunk_tokens(c, rid, c->budget - n), c->block_size) > c->free_blocks
                         ? BLOCKED : ADMITS;
    return n_waiting(c) >= c->max_waiting ? BLOCKED : AWAITS_ARRIVAL;
}

static double next_arrival_of_active_adapter(Core *c) {
    for (i64 rid = c->n_arrived; rid < c->n_requests; rid++) {
        if (c->active[c->adapter[rid]]) return c->arrival[rid];
    }
    return INFINITY;
}

static double arrivals_matter_from(Core *c, int adm, double next_arrival) {
    if (c->sched_skipped != 0.0 && c->n_active >= c->max_loras && n_waiting(c) < c->max_waiting) return next_arrival;
    if (adm == BLOCKED) return INFINITY;
    if (c->n_active < c->max_loras) return next_arrival;
    return next_arrival_of_active_adapter(c);
}

/* Queue length at the start of the jump's last step and the waiting area (queue x duration summed over its
 * steps, s), as the per-step loop would have them. */
static void queue_during_jump(Core *c, const double *durations_ms, i64 k, i64 *last_queue, double *area_s) {
    i64 waiting = n_waiting(c), cap = c->max_waiting > waiting ? c->max_waiting : waiting;
    i64 rid = c->n_arrived, ours = 0, queued = 0;
    double elapsed_ms = 0.0, area_ms = 0.0;
    for (i64 j = 0; j < k; j++) {
        double start = c->now + elapsed_ms / 1000.0;
        while (rid < c->n_requests && c->arrival[rid] <= start) ours += c->flags[rid++] != ROUTED_AWAY;
        queued = waiting + ours < cap ? waiting + ours : cap;
        area_ms += (double)queued * durations_ms[j];
        elapsed_ms += durations_ms[j];
    }
    *last_queue = queued;
    *area_s = area_ms / 1000.0;
}

/* Advance k >= 2 identical pure-decode steps at once: 1 if done, 0 if the state does not allow it. */
static int decode_jump(Core *c, double next_arrival, double t_stop) {
    i64 n = c->n_running, bs = c->block_size;
    if (n > c->budget || c->prefill.n || c->must_reload) return 0;
    i64 k = next_finish_tick(c) - c->tick;
    if (k < 2) return 0;
    int adm = admission(c);
    if (adm == ADMITS) return 0;
    i64 context0 = c->decoding_context + n, waiting = n_waiting(c);
    double overhead_ms = scheduler_ms(c, n, skipped(c));
    double d0 = step_ms(c, n, 0, context0, c->n_active, c->cpu.len) + overhead_ms;
    double delta = c->per_ctx * (double)n;
    i64 limit = steps_before(t_stop - c->now, d0, delta);
    if (limit < k) k = limit;
    if (next_arrival < t_stop && steps_before(next_arrival - c->now, d0, delta) < k) {
        limit = steps_before(arrivals_matter_from(c, adm, next_arrival) - c->now, d0, delta);
        if (limit < k) k = limit;
    }
    if (k < 2) return 0;
    if (n * (k / bs + 1) > c->free_blocks) {
        k = max_steps_within_blocks(c, k);
        if (k < 2) return 0;
    }
    double *durations_ms = PyMem_Malloc((size_t)k * sizeof(double));
    if (!durations_ms) { PyErr_NoMemory(); return -1; }
    for (i64 j = 0; j < k; j++) durations_ms[j] = d0 + delta * (double)j;
    c->last_tokens = n;
    c->last_adapters = c->n_active;
    c->last_seqs = n;
    double total_ms = pairwise_sum(durations_ms, k);
    double end = c->now + total_ms / 1000.0;
    i64 used_before = c->total_blocks - c->free_blocks;
    c->free_blocks -= blocks_needed(c, k);
    c->tick += k;
    c->decoding_context += n * k;
    for (i64 j = 0; j < k; j++) c->itl_hist[itl_bin(c, durations_ms[j])] += n;
    i64 adapters = c->n_active;
    double counts[N_COUNTS] = {(double)k, (double)(k * n), 0.0,
                               (double)k * ((double)context0 + (double)(n * (k - 1)) / 2.0), (double)(k * adapters),
                               (double)(k * adapters * n), (double)(k * (n > c->graph_max_tokens)),
                               (double)(k * adapters * c->cpu.len), (double)k * exposed_adapters(c, adapters, n),
                               (double)k * overhead_ms};
    log_counts(c, counts, n);
    double used_mean = (double)(used_before + c->total_blocks - c->free_blocks) / 2.0;
    double last_start = end - durations_ms[k - 1] / 1000.0;
    if (next_arrival <= last_start && waiting < c->max_waiting) { /* the queue grew during the jump */
        i64 last_queue;
        double area_s;
        queue_during_jump(c, durations_ms, k, &last_queue, &area_s);
        account(c, total_ms / 1000.0, n, last_queue, used_mean, area_s);
    } else {
        account(c, total_ms / 1000.0, n, waiting, used_mean, NAN);
    }
    PyMem_Free(durations_ms);
    if (next_arrival <= last_start && take_arrivals(c, last_start) < 0) return -1;
    c->now = end;
    c->steps += k;
    c->jumped_steps += k;
    finish_decoding(c, end);
    return 1;
}

/* ------------------------------------------------------------------ driving */
static int run_until(Core *c, double t_stop) {
    while (c->now < t_stop) {
        double next_arrival = c->n_arrived < c->n_requests ? c->arrival[c->n_arrived] : INFINITY;
        if (next_arrival <= c->now) {
            if (take_arrivals(c, c->now) < 0) return -1;
            continue;
        }
        if (c->n_running == 0 && n_waiting(c) == 0) {
            if (next_arrival == INFINITY) {
                if (isfinite(t_stop)) c->now = t_stop;
                return 0;
            }
            c->now = next_arrival < t_stop ? next_arrival : t_stop;
            continue;
        }
        if (c->jumps && c->n_running) {
            int jumped = decode_jump(c, next_arrival, t_stop);
            if (jumped < 0) return -1;
            if (jumped) continue;
        }
        int stepped = step(c);
        if (stepped < 0) return -1;
        if (!stepped) { /* nothing admissible and nothing running: wait for the next arrival */
            if (next_arrival == INFINITY) return 0;
            c->now = next_arrival < t_stop ? next_arrival : t_stop;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ Python type */
static int grow_adapters(Core *c, i64 n) {
    if (n > c->adapter_cap) {
        i64 cap = c->adapter_cap ? c->adapter_cap : 16;
        while (cap < n) cap *= 2;
#define GROW(field, type)                                                                  \
        do {                                                                               \
            type *p = PyMem_Realloc(c->field, (size_t)cap * sizeof(type));                 \
            if (!p) { PyErr_NoMemory(); return -1; }                                       \
            c->field = p;                                                                  \
        } while (0)
        GROW(cpu_to_gpu_ms, double); GROW(disk_to_cpu_ms, double);
        GROW(run_count, i64); GROW(fifo_head, i64); GROW(fifo_tail, i64); GROW(fifo_len, i64); GROW(active, char);
        GROW(gpu.members, i64); GROW(gpu.pos, i64); GROW(cpu.members, i64); GROW(cpu.pos, i64);
        GROW(visit_order, uint64_t); GROW(entered, i64); GROW(left, i64); GROW(loaded, i64);
        GROW(touched_in, i64);
#undef GROW
        c->adapter_cap = cap;
    }
    for (i64 a = c->n_adapters; a < n; a++) {
        c->cpu_to_gpu_ms[a] = c->disk_to_cpu_ms[a] = 0.0;
        c->run_count[a] = c->fifo_len[a] = 0;
        c->fifo_head[a] = c->fifo_tail[a] = NONE;
        c->active[a] = 0;
        c->gpu.pos[a] = c->cpu.pos[a] = NONE;
        c->visit_order[a] = 0;
        c->entered[a] = c->left[a] = NEVER;
        c->loaded[a] = 0;
        c->touched_in[a] = -1;
    }
    c->n_adapters = n;
    return 0;
}

/* Adapters first.. : their load times (ms) and where vLLM's walk visits them (LoraCache's visit_order). */
static int set_adapters(Core *c, i64 first, PyObject *cpu_ms, PyObject *disk_ms, PyObject *orders) {
    PyObject *cpu = PySequence_Fast(cpu_ms, "cpu_to_gpu_ms must be a sequence");
    PyObject *disk = cpu ? PySequence_Fast(disk_ms, "disk_to_cpu_ms must be a sequence") : NULL;
    PyObject *order = disk ? PySequence_Fast(orders, "visit orders must be a sequence") : NULL;
    int status = -1;
    if (!order) goto out;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(cpu);
    if (PySequence_Fast_GET_SIZE(disk) != n || PySequence_Fast_GET_SIZE(order) != n) {
        PyErr_SetString(PyExc_ValueError, "cpu_to_gpu_ms, disk_to_cpu_ms and visit orders differ in length");
        goto out;
    }
    if (grow_adapters(c, first + n) < 0) goto out;
    for (Py_ssize_t i = 0; i < n; i++) {
        c->cpu_to_gpu_ms[first + i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(cpu, i));
        c->disk_to_cpu_ms[first + i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(disk, i));
        c->visit_order[first + i] = PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(order, i));
    }
    status = PyErr_Occurred() ? -1 : 0;
out:
    Py_XDECREF(cpu);
    Py_XDECREF(disk);
    Py_XDECREF(order);
    return status;
}

static void release_buffers(Core *c) {
    if (!c->bound) return;
    for (int i = 0; i < N_BUFS; i++) PyBuffer_Release(&c->bufs[i]);
    c->bound = 0;
}

static int Core_init(Core *c, PyObject *args, PyObject *Py_UNUSED(kwds)) {
    PyObject *cpu_ms, *disk_ms, *orders;
    int lora_enabled, jumps;
    Py_ssize_t block_size, max_waiting, budget, max_seqs, max_loras, total_blocks, gpu_slots, cpu_slots, graph, bins;
    if (!PyArg_ParseTuple(args, "(nnnnnnnnpp)(ddddddddddnddd)(ndd)OOO", &block_size, &max_waiting, &budget,
                          &max_seqs, &max_loras, &total_blocks, &gpu_slots, &cpu_slots, &lora_enabled, &jumps,
                          &c->base_ms, &c->eager_ms, &c->per_decode, &c->per_prefill, &c->per_ctx, &c->per_adapter,
                          &c->per_adapter_token, &c->per_adapter_cached, &c->per_exposed_adapter,
                          &c->tokens_per_hidden_adapter, &graph, &c->sched_base, &c->sched_running,
                          &c->sched_skipped, &bins, &c->itl_bin_width, &c->itl_min_ms, &cpu_ms, &disk_ms, &orders))
        return -1;
    if (block_size < 1 || bins < 1) {
        PyErr_SetString(PyExc_ValueError, "block_size and ITL bins must be >= 1");
        return -1;
    }
    c->block_size = block_size; c->max_waiting = max_waiting; c->budget = budget; c->max_seqs = max_seqs;
    c->max_loras = max_loras; c->total_blocks = c->free_blocks = total_blocks; c->gpu_slots = gpu_slots;
    c->cpu_slots = cpu_slots; c->lora_enabled = lora_enabled; c->jumps = jumps; c->graph_max_tokens = graph;
    c->itl_bins = bins;
    c->order_head = c->order_tail = NONE;
    c->last_position = -1;
    c->residue_count = PyMem_Calloc((size_t)block_size, sizeof(i64));
    if (!c->residue_count) { PyErr_NoMemory(); return -1; }
    return set_adapters(c, 0, cpu_ms, disk_ms, orders);
}

static void Core_dealloc(Core *c) {
    release_buffers(c);
    void *owned[] = {c->cpu_to_gpu_ms, c->disk_to_cpu_ms, c->run_count, c->fifo_head, c->fifo_tail, c->fifo_len,
                     c->active, c->gpu.members, c->gpu.pos, c->cpu.members, c->cpu.pos, c->visit_order, c->entered,
                     c->left, c->loaded, c->touched_in, c->walk.items,
                     c->preempted.items, c->heads.items, c->active_heads.items, c->prefill.items, c->residue_count,
                     c->finishes.items, c->chunk_rid.items, c->chunk_tokens.items, c->done.items};
    for (size_t i = 0; i < sizeof(owned) / sizeof(owned[0]); i++) PyMem_Free(owned[i]);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyObject *Core_bind(Core *c, PyObject *args) {
    if (PyTuple_GET_SIZE(args) != N_BUFS) {
        PyErr_Format(PyExc_TypeError, "bind takes %d arrays", N_BUFS);
        return NULL;
    }
    Py_buffer views[N_BUFS];
    i64 capacity = -1;
    for (int i = 0; i < N_BUFS; i++) {
        int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (i >= B_FIRST ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(args, i), &views[i], flags) < 0) {
            for (int j = 0; j < i; j++) PyBuffer_Release(&views[j]);
            return NULL;
        }
        i64 len = views[i].len / (views[i].itemsize ? views[i].itemsize : 1);
        if (views[i].itemsize != BUF_ITEMSIZE[i] || (i == B_ITL_HIST && len < c->itl_bins)) {
            PyErr_Format(PyExc_ValueError, "bind: %s has the wrong item size or length", BUF_NAMES[i]);
            for (int j = 0; j <= i; j++) PyBuffer_Release(&views[j]);
            return NULL;
        }
        if (i != B_ITL_HIST && (capacity < 0 || len < capacity)) capacity = len;
    }
    release_buffers(c);
    memcpy(c->bufs, views, sizeof(views));
    c->bound = 1;
    c->capacity = capacity;
    c->arrival = c->bufs[B_ARRIVAL].buf; c->adapter = c->bufs[B_ADAPTER].buf; c->input = c->bufs[B_INPUT].buf;
    c->output = c->bufs[B_OUTPUT].buf; c->first_token = c->bufs[B_FIRST].buf; c->finish = c->bufs[B_FINISH].buf;
    c->last_token = c->bufs[B_LAST].buf; c->preemptions = c->bufs[B_PREEMPT].buf;
    c->generated = c->bufs[B_GENERATED].buf; c->flags = c->bufs[B_FLAGS].buf; c->base = c->bufs[B_BASE].buf;
    c->state = c->bufs[B_STATE].buf; c->computed = c->bufs[B_COMPUTED].buf;
    c->queue_next = c->bufs[B_QUEUE_NEXT].buf; c->order_prev = c->bufs[B_ORDER_PREV].buf;
    c->order_next = c->bufs[B_ORDER_NEXT].buf; c->itl_hist = c->bufs[B_ITL_HIST].buf;
    Py_RETURN_NONE;
}

static int check_bound(Core *c) {
    if (!c->bound) { PyErr_SetString(PyExc_RuntimeError, "Core: bind() the request arrays first"); return -1; }
    if (c->n_requests > c->capacity) {
        PyErr_SetString(PyExc_RuntimeError, "Core: n_requests exceeds the bound arrays");
        return -1;
    }
    return 0;
}

static PyObject *Core_run_until(Core *c, PyObject *arg) {
    double t_stop = PyFloat_AsDouble(arg);
    if ((t_stop == -1.0 && PyErr_Occurred()) || check_bound(c) < 0) return NULL;
    if (run_until(c, t_stop) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Core_step(Core *c, PyObject *Py_UNUSED(ignored)) {
    if (check_bound(c) < 0) return NULL;
    int stepped = step(c);
    if (stepped < 0) return NULL;
    return PyBool_FromLong(stepped);
}

static PyObject *Core_add_adapter(Core *c, PyObject *args) {
    PyObject *cpu_ms, *disk_ms, *orders;
    if (!PyArg_ParseTuple(args, "OOO", &cpu_ms, &disk_ms, &orders)) return NULL;
    if (set_adapters(c, c->n_adapters, cpu_ms, disk_ms, orders) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Core_discard_adapter(Core *c, PyObject *arg) {
    Py_ssize_t a = PyLong_AsSsize_t(arg);
    if (a == -1 && PyErr_Occurred()) return NULL;
    if (a < 0 || a >= c->n_adapters) { PyErr_SetString(PyExc_IndexError, "no such adapter"); return NULL; }
    if (tier_has(&c->gpu, a)) tier_remove(&c->gpu, a);
    if (tier_has(&c->cpu, a)) tier_remove(&c->cpu, a);
    if (c->active[a]) c->must_reload = 1; /* still running: the next step reads it back (reference: forget_adapter) */
    Py_RETURN_NONE;
}

static PyObject *Core_load_adapter(Core *c, PyObject *arg) {
    Py_ssize_t a = PyLong_AsSsize_t(arg);
    if (a == -1 && PyErr_Occurred()) return NULL;
    if (a < 0 || a >= c->n_adapters) { PyErr_SetString(PyExc_IndexError, "no such adapter"); return NULL; }
    double load_ms = c->lora_enabled ? lora_load(c, a, c->steps) : 0.0;
    if (load_ms != 0.0) { /* the engine waits for the load (reference: ReferenceEngine.load_adapter) */
        account(c, load_ms / 1000.0, c->n_running, n_waiting(c), (double)(c->total_blocks - c->free_blocks), NAN);
        c->now += load_ms / 1000.0;
    }
    return PyFloat_FromDouble(load_ms);
}

static PyObject *Core_take_queued(Core *c, PyObject *arg) {
    Py_ssize_t a = PyLong_AsSsize_t(arg);
    if (a == -1 && PyErr_Occurred()) return NULL;
    if (a < 0 || a >= c->n_adapters) { PyErr_SetString(PyExc_IndexError, "no such adapter"); return NULL; }
    PyObject *out = PyList_New(0);
    i64 rid = c->fifo_head[a];
    for (i64 k = 0; out && k < c->fifo_len[a]; k++, rid = c->queue_next[rid]) {
        PyObject *index = PyLong_FromLongLong(rid);
        if (!index || PyList_Append(out, index) < 0) Py_CLEAR(out);
        Py_XDECREF(index);
    }
    if (!out) return NULL;
    c->fresh -= c->fifo_len[a]; /* the adapter's heap entries go stale: queue_peek skips them */
    if (c->active[a]) c->fresh_of_active -= c->fifo_len[a];
    c->fifo_len[a] = 0;
    return out;
}

static PyObject *Core_running_adapters(Core *c, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = PyList_New(0);
    for (i64 a = 0; out && a < c->n_adapters; a++) {
        if (!c->active[a]) continue;
        PyObject *index = PyLong_FromLongLong(a);
        if (!index || PyList_Append(out, index) < 0) Py_CLEAR(out);
        Py_XDECREF(index);
    }
    return out;
}

static PyObject *counts_tuple(const double *counts) {
    PyObject *out = PyTuple_New(N_COUNTS);
    for (int j = 0; out && j < N_COUNTS; j++) {
        PyObject *x = PyFloat_FromDouble(counts[j]);
        if (!x) { Py_CLEAR(out); break; }
        PyTuple_SET_ITEM(out, j, x);
    }
    return out;
}

static PyObject *Core_get_step_counts(Core *c, void *Py_UNUSED(closure)) { return counts_tuple(c->step_counts); }
static PyObject *Core_get_itl_counts(Core *c, void *Py_UNUSED(closure)) { return counts_tuple(c->itl_counts); }
static PyObject *Core_get_n_waiting(Core *c, void *Py_UNUSED(closure)) { return PyLong_FromLongLong(n_waiting(c)); }
static PyObject *Core_get_last_step(Core *c, void *Py_UNUSED(closure)) {
    return Py_BuildValue("(LLL)", (long long)c->last_tokens, (long long)c->last_adapters, (long long)c->last_seqs);
}

static PyMethodDef Core_methods[] = {
    {"bind", (PyCFunction)Core_bind, METH_VARARGS, "bind(*arrays): the per-request numpy arrays (see BUF_NAMES)"},
    {"run_until", (PyCFunction)Core_run_until, METH_O, "Run the steps that start before t_stop."},
    {"step", (PyCFunction)Core_step, METH_NOARGS, "One engine step at now; False if nothing could be scheduled."},
    {"add_adapter", (PyCFunction)Core_add_adapter, METH_VARARGS,
     "add_adapter(cpu_to_gpu_ms, disk_to_cpu_ms, visit_orders)"},
    {"discard_adapter", (PyCFunction)Core_discard_adapter, METH_O,
     "Forget an adapter in GPU slots and CPU cache (the next step reloads it if it runs)."},
    {"running_adapters", (PyCFunction)Core_running_adapters, METH_NOARGS, "Adapters in the running batch."},
    {"load_adapter", (PyCFunction)Core_load_adapter, METH_O, "Load an adapter now (the engine waits); its ms."},
    {"take_queued", (PyCFunction)Core_take_queued, METH_O, "Remove an adapter's never-started queued requests."},
    {NULL, NULL, 0, NULL},
};

#define MEMBER(name, type, flags) {#name, type, offsetof(Core, name), flags, NULL}
static PyMemberDef Core_members[] = {
    MEMBER(n_requests, T_LONGLONG, 0),
    MEMBER(now, T_DOUBLE, READONLY),
    MEMBER(steps, T_LONGLONG, READONLY),
    MEMBER(jumped_steps, T_LONGLONG, READONLY),
    MEMBER(tick, T_LONGLONG, READONLY),
    MEMBER(n_arrived, T_LONGLONG, READONLY),
    MEMBER(n_refused, T_LONGLONG, READONLY),
    MEMBER(n_running, T_LONGLONG, READONLY),
    MEMBER(free_blocks, T_LONGLONG, READONLY),
    MEMBER(loads_from_disk, T_LONGLONG, READONLY),
    MEMBER(loads_from_cpu, T_LONGLONG, READONLY),
    MEMBER(max_waiting_seen, T_LONGLONG, READONLY),
    MEMBER(max_running_seen, T_LONGLONG, READONLY),
    MEMBER(area_running, T_DOUBLE, READONLY),
    MEMBER(area_waiting, T_DOUBLE, READONLY),
    MEMBER(area_kv_blocks, T_DOUBLE, READONLY),
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Core_getset[] = {
    {"step_counts", (getter)Core_get_step_counts, NULL, "RAW_COUNTS summed over every step", NULL},
    {"itl_counts", (getter)Core_get_itl_counts, NULL, "RAW_COUNTS weighted by the ITL gaps each step closes", NULL},
    {"n_waiting", (getter)Core_get_n_waiting, NULL, "requests in the waiting queue", NULL},
    {"last_step", (getter)Core_get_last_step, NULL, "(tokens, distinct adapters, sequences) of the latest step", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "adaptergym.twin._engine.Core",
    .tp_doc = "The state and step loop of one replica (see adaptergym/twin/compiled_engine.py).",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Core_init,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_methods = Core_methods,
    .tp_members = Core_members,
    .tp_getset = Core_getset,
};

static struct PyModuleDef engine_module = {
    PyModuleDef_HEAD_INIT, "_engine", "The compiled step loop of adaptergym's replica engine.", -1, NULL, NULL, NULL,
    NULL, NULL,
};

PyMODINIT_FUNC PyInit__engine(void) {
    if (PyType_Ready(&CoreType) < 0) return NULL;
    PyObject *m = PyModule_Create(&engine_module);
    if (!m) return NULL;
    Py_INCREF(&CoreType);
    if (PyModule_AddObject(m, "Core", (PyObject *)&CoreType) < 0) {
        Py_DECREF(&CoreType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
