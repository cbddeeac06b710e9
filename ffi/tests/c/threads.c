/*
 * pthreads: a home thread and workers. Transfers between threads, the
 * finalizer always on the home thread (recorded with pthread_self), thread
 * exit as a release, a home's exit running its queue, and the registry
 * freed while idle threads still hold references.
 */
#include <time.h>

#include "check.h"

static struct fin_log LOG = {PTHREAD_MUTEX_INITIALIZER, 0, {0}, {0}};
static tether_registry *REG;

/* Iteration counts scale with TETHER_FFI_C_SCALE (percent; valgrind runs
 * use less). */
static int scaled(int n) {
    const char *s = getenv("TETHER_FFI_C_SCALE");
    int pct = s ? atoi(s) : 100;
    int m = (int)((long)n * pct / 100);
    return m < 1 ? 1 : m;
}

static void nap(void) {
    struct timespec ts = {0, 100 * 1000};
    nanosleep(&ts, NULL);
}

static void fresh_registry(void) {
    log_reset(&LOG);
    REG = tether_registry_new(record, &LOG);
    REQUIRE(REG != NULL);
}

static pthread_t spawn(void *(*fn)(void *), void *arg) {
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, fn, arg) == 0);
    return t;
}

/* ----- a worker's last release is queued to the home, finalized there --- */

#define OBJECTS 64
#define WORKERS 4

struct slice {
    uint64_t *tokens;
    int from, to;
    int queued;
};

static void *claim_use_release(void *arg) {
    struct slice *s = arg;
    for (int i = s->from; i < s->to; i++) {
        uint64_t h;
        uint32_t n;
        void *v;
        tether_released r;
        CHECK_OK(tether_claim(REG, s->tokens[i], &h));
        CHECK_OK(tether_get(REG, h, &v));
        CHECK(v == VAL(1000 + i));
        CHECK_OK(tether_retain(REG, h, &n));
        CHECK(n == 2);
        CHECK_OK(tether_release(REG, h, &r));
        CHECK(r == TETHER_HELD);
        CHECK_OK(tether_release(REG, h, &r));
        CHECK(r == TETHER_QUEUED); /* the last one, off its home */
        s->queued += r == TETHER_QUEUED;
    }
    return NULL;
}

static void last_release_on_a_worker_is_finalized_at_home(void) {
    fresh_registry();
    uint64_t tokens[OBJECTS];
    for (int i = 0; i < OBJECTS; i++) {
        uint64_t h;
        CHECK_OK(tether_insert(REG, VAL(1000 + i), &h));
        CHECK_OK(tether_transfer(REG, h, &tokens[i])); /* home keeps nothing */
    }
    struct slice slices[WORKERS];
    pthread_t t[WORKERS];
    for (int w = 0; w < WORKERS; w++) {
        slices[w] = (struct slice){tokens, w * OBJECTS / WORKERS, (w + 1) * OBJECTS / WORKERS, 0};
        t[w] = spawn(claim_use_release, &slices[w]);
    }
    int queued = 0;
    for (int w = 0; w < WORKERS; w++) {
        pthread_join(t[w], NULL);
        queued += slices[w].queued;
    }
    CHECK(queued == OBJECTS);
    CHECK(log_count(&LOG) == 0); /* nothing finalized on a worker */
    CHECK(tether_len(REG) == 0); /* queued values are not live */
    CHECK(tether_pump(REG) == OBJECTS);
    CHECK(log_count(&LOG) == OBJECTS);
    CHECK(log_all_on(&LOG, pthread_self()));
    for (int i = 0; i < OBJECTS; i++)
        CHECK(log_times(&LOG, VAL(1000 + i)) == 1);
    CHECK(tether_pump(REG) == 0);
    tether_registry_free(REG);
}

/* ----- tokens hop between workers; a separate home thread pumps ---------- */

/* A mailbox of transfer tokens shared by the workers. */
struct mailbox {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint64_t *tokens;
    int *objects;
    size_t head, tail, cap;
    int closed;
};

static struct mailbox MAIL = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, 0, 0, 0, 0};

static void mail_put(uint64_t token, int object) {
    pthread_mutex_lock(&MAIL.lock);
    REQUIRE(MAIL.tail - MAIL.head < MAIL.cap);
    MAIL.tokens[MAIL.tail % MAIL.cap] = token;
    MAIL.objects[MAIL.tail % MAIL.cap] = object;
    MAIL.tail++;
    pthread_cond_signal(&MAIL.cond);
    pthread_mutex_unlock(&MAIL.lock);
}

/* 0 once the mailbox is closed and empty. */
static int mail_take(uint64_t *token, int *object) {
    pthread_mutex_lock(&MAIL.lock);
    while (MAIL.head == MAIL.tail && !MAIL.closed)
        pthread_cond_wait(&MAIL.cond, &MAIL.lock);
    int got = MAIL.head != MAIL.tail;
    if (got) {
        *token = MAIL.tokens[MAIL.head % MAIL.cap];
        *object = MAIL.objects[MAIL.head % MAIL.cap];
        MAIL.head++;
    }
    pthread_mutex_unlock(&MAIL.lock);
    return got;
}

static void mail_close(void) {
    pthread_mutex_lock(&MAIL.lock);
    MAIL.closed = 1;
    pthread_cond_broadcast(&MAIL.cond);
    pthread_mutex_unlock(&MAIL.lock);
}

static int HOPS;           /* how many claims each object goes through */
static int *hops_left;     /* per object; only its current holder touches it */
static int released_last;  /* objects whose last reference a worker let go */

static void *hop_worker(void *arg) {
    (void)arg;
    uint64_t token, h;
    int object;
    while (mail_take(&token, &object)) {
        void *v;
        uint32_t n;
        tether_released r;
        CHECK_OK(tether_claim(REG, token, &h));
        CHECK_OK(tether_get(REG, h, &v));
        CHECK(v == VAL(object));
        CHECK_OK(tether_retain(REG, h, &n));
        CHECK_OK(tether_release(REG, h, &r));
        CHECK(r == TETHER_HELD);
        if (--hops_left[object] > 0) {
            uint64_t next;
            CHECK_OK(tether_transfer(REG, h, &next));
            CHECK_STATUS(tether_get(REG, h, &v), TETHER_NOT_HELD); /* gave it away */
            mail_put(next, object);
        } else {
            CHECK_OK(tether_release(REG, h, &r));
            CHECK(r == TETHER_QUEUED);
            __atomic_add_fetch(&released_last, 1, __ATOMIC_SEQ_CST);
        }
    }
    return NULL;
}

static pthread_t HOME;

static void *hop_home(void *arg) {
    int objects = *(int *)arg;
    for (int i = 0; i < objects; i++) {
        uint64_t h, t;
        CHECK_OK(tether_insert(REG, VAL(i), &h));
        CHECK_OK(tether_transfer(REG, h, &t));
        mail_put(t, i);
    }
    /* The home's loop: pump until every object came home and was finalized. */
    while (log_count(&LOG) < (size_t)objects)
        if (tether_pump(REG) == 0)
            nap();
    mail_close();
    return NULL;
}

static void tokens_hop_between_workers_and_come_home(void) {
    fresh_registry();
    int objects = scaled(2000);
    HOPS = 5;
    hops_left = malloc(sizeof(int) * (size_t)objects);
    MAIL.cap = (size_t)objects;
    MAIL.tokens = malloc(sizeof(uint64_t) * MAIL.cap);
    MAIL.objects = malloc(sizeof(int) * MAIL.cap);
    REQUIRE(hops_left && MAIL.tokens && MAIL.objects);
    MAIL.head = MAIL.tail = 0;
    MAIL.closed = 0;
    released_last = 0;
    for (int i = 0; i < objects; i++)
        hops_left[i] = HOPS;

    pthread_t workers[WORKERS];
    for (int w = 0; w < WORKERS; w++)
        workers[w] = spawn(hop_worker, NULL);
    HOME = spawn(hop_home, &objects);
    pthread_join(HOME, NULL);
    for (int w = 0; w < WORKERS; w++)
        pthread_join(workers[w], NULL);

    CHECK(released_last == objects);
    CHECK(log_count(&LOG) == (size_t)objects);
    CHECK(log_all_on(&LOG, HOME)); /* never on a worker, never on main */
    for (int i = 0; i < objects && i < 200; i++)
        CHECK(log_times(&LOG, VAL(i)) == 1);
    CHECK(tether_len(REG) == 0);
    tether_registry_free(REG);
    free(hops_left);
    free(MAIL.tokens);
    free(MAIL.objects);
}

/* ----- many threads hammer one object's counts -------------------------- */

struct hammer {
    uint64_t token;
    int rounds;
    tether_released last;
};

static void *hammer_one(void *arg) {
    struct hammer *a = arg;
    uint64_t h;
    uint32_t n;
    void *v;
    tether_released r;
    CHECK_OK(tether_claim(REG, a->token, &h));
    for (int i = 0; i < a->rounds; i++) {
        CHECK_OK(tether_retain(REG, h, &n));
        CHECK(n == 2); /* counts are per thread: only ours */
        CHECK_OK(tether_get(REG, h, &v));
        CHECK(v == VAL(7));
        CHECK_OK(tether_release(REG, h, &r));
        CHECK(r == TETHER_HELD);
    }
    CHECK_OK(tether_release(REG, h, &a->last));
    return NULL;
}

static void threads_hammering_one_object_finalize_it_once_at_home(void) {
    fresh_registry();
    uint64_t h;
    uint32_t n;
    CHECK_OK(tether_insert(REG, VAL(7), &h));
    struct hammer args[WORKERS];
    pthread_t t[WORKERS];
    for (int w = 0; w < WORKERS; w++) {
        CHECK_OK(tether_retain(REG, h, &n));
        CHECK_OK(tether_transfer(REG, h, &args[w].token));
        args[w].rounds = scaled(20000);
        t[w] = spawn(hammer_one, &args[w]);
    }
    tether_released r;
    CHECK_OK(tether_release(REG, h, &r)); /* the home lets go first */
    CHECK(r == TETHER_HELD);
    int last = 0;
    for (int w = 0; w < WORKERS; w++) {
        pthread_join(t[w], NULL);
        CHECK(args[w].last == TETHER_HELD || args[w].last == TETHER_QUEUED);
        last += args[w].last == TETHER_QUEUED;
    }
    CHECK(last == 1); /* exactly one thread let go last */
    CHECK(tether_pump(REG) == 1);
    CHECK(log_times(&LOG, VAL(7)) == 1);
    CHECK(log_all_on(&LOG, pthread_self()));
    tether_registry_free(REG);
}

/* ----- thread exit is a release ----------------------------------------- */

static void *claim_and_exit_holding(void *arg) {
    uint64_t *tokens = arg;
    uint64_t h;
    uint32_t n;
    for (int i = 0; i < 3; i++)
        CHECK_OK(tether_claim(REG, tokens[i], &h));
    CHECK_OK(tether_retain(REG, h, &n));
    CHECK(n == 2);
    return NULL; /* exits holding four references to three objects */
}

static void a_thread_exit_releases_what_it_holds(void) {
    fresh_registry();
    uint64_t tokens[3];
    for (int i = 0; i < 3; i++) {
        uint64_t h;
        CHECK_OK(tether_insert(REG, VAL(20 + i), &h));
        CHECK_OK(tether_transfer(REG, h, &tokens[i]));
    }
    pthread_join(spawn(claim_and_exit_holding, tokens), NULL);
    CHECK(log_count(&LOG) == 0);
    CHECK(tether_pump(REG) == 3);
    CHECK(log_count(&LOG) == 3);
    CHECK(log_all_on(&LOG, pthread_self()));
    CHECK(tether_len(REG) == 0);
    tether_registry_free(REG);
}

/* ----- a home's exit runs its queue; an exited home's values ------------- */

struct handoff {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stage;
    uint64_t token;
};

static void handoff_set(struct handoff *x, int stage) {
    pthread_mutex_lock(&x->lock);
    x->stage = stage;
    pthread_cond_broadcast(&x->cond);
    pthread_mutex_unlock(&x->lock);
}

static void handoff_wait(struct handoff *x, int stage) {
    pthread_mutex_lock(&x->lock);
    while (x->stage < stage)
        pthread_cond_wait(&x->cond, &x->lock);
    pthread_mutex_unlock(&x->lock);
}

static void *home_that_exits_without_pumping(void *arg) {
    struct handoff *x = arg;
    uint64_t h;
    CHECK_OK(tether_insert(REG, VAL(30), &h));
    CHECK_OK(tether_transfer(REG, h, &x->token));
    handoff_set(x, 1);
    handoff_wait(x, 2); /* the worker released it: queued here */
    CHECK(log_count(&LOG) == 0);
    return NULL;        /* no pump: the thread's exit runs the queue */
}

static void *claim_then_release(void *arg) {
    struct handoff *x = arg;
    uint64_t h;
    tether_released r;
    handoff_wait(x, 1);
    CHECK_OK(tether_claim(REG, x->token, &h));
    CHECK_OK(tether_release(REG, h, &r));
    CHECK(r == TETHER_QUEUED);
    handoff_set(x, 2);
    return NULL;
}

static void a_home_thread_exit_finalizes_its_queue_there(void) {
    fresh_registry();
    struct handoff x = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    pthread_t home = spawn(home_that_exits_without_pumping, &x);
    pthread_t worker = spawn(claim_then_release, &x);
    pthread_join(worker, NULL);
    pthread_join(home, NULL);
    CHECK(log_times(&LOG, VAL(30)) == 1);
    CHECK(log_all_on(&LOG, home)); /* `home` is not reused before the join */
    CHECK(tether_len(REG) == 0);
    tether_registry_free(REG);
}

static void *insert_transfer_exit(void *arg) {
    uint64_t h;
    CHECK_OK(tether_insert(REG, VAL(31), &h));
    CHECK_OK(tether_transfer(REG, h, (uint64_t *)arg));
    return NULL;
}

static void an_exited_homes_value_is_finalized_by_the_last_releaser(void) {
    fresh_registry();
    uint64_t token, h;
    tether_released r;
    pthread_join(spawn(insert_transfer_exit, &token), NULL);
    CHECK(log_count(&LOG) == 0); /* the token keeps it alive */
    CHECK_OK(tether_claim(REG, token, &h));
    CHECK_OK(tether_release(REG, h, &r));
    CHECK(r == TETHER_FINALIZED); /* its home is gone: finalized here */
    CHECK(log_times(&LOG, VAL(31)) == 1);
    CHECK(log_all_on(&LOG, pthread_self()));
    tether_registry_free(REG);
}

/* ----- access: strangers get nothing; pins open the object to all ------- */

static uint64_t SHARED;

static void *stranger(void *arg) {
    int pinned = *(int *)arg;
    uint32_t n = 77;
    void *v = VAL(77);
    tether_released r = (tether_released)77;
    uint64_t t = 77;
    if (!pinned) {
        CHECK_STATUS(tether_retain(REG, SHARED, &n), TETHER_NOT_HELD);
        CHECK_STATUS(tether_get(REG, SHARED, &v), TETHER_NOT_HELD);
        CHECK_STATUS(tether_release(REG, SHARED, &r), TETHER_NOT_HELD);
        CHECK_STATUS(tether_pin(REG, SHARED), TETHER_NOT_HELD);
        CHECK_STATUS(tether_unpin(REG, SHARED), TETHER_NOT_HELD);
        CHECK_STATUS(tether_transfer(REG, SHARED, &t), TETHER_NOT_HELD);
        CHECK(n == 77 && v == VAL(77) && r == (tether_released)77 && t == 77);
        CHECK_OK(tether_count(REG, SHARED, &n));
        CHECK(n == 0);
    } else {
        CHECK_OK(tether_get(REG, SHARED, &v));
        CHECK(v == VAL(40));
        CHECK_OK(tether_retain(REG, SHARED, &n)); /* now it holds one */
        CHECK(n == 1);
        CHECK_OK(tether_release(REG, SHARED, &r));
        CHECK(r == TETHER_HELD);
        CHECK_STATUS(tether_release(REG, SHARED, &r), TETHER_NOT_HELD);
    }
    return NULL;
}

static void a_thread_without_a_reference_has_no_access_unless_pinned(void) {
    fresh_registry();
    CHECK_OK(tether_insert(REG, VAL(40), &SHARED));
    int pinned = 0;
    pthread_join(spawn(stranger, &pinned), NULL);
    CHECK_OK(tether_pin(REG, SHARED));
    pinned = 1;
    pthread_join(spawn(stranger, &pinned), NULL);
    CHECK_OK(tether_unpin(REG, SHARED));
    tether_released r;
    CHECK_OK(tether_release(REG, SHARED, &r));
    CHECK(r == TETHER_FINALIZED);
    tether_registry_free(REG);
}

/* ----- freeing the registry while idle threads hold references ---------- */

static void *hold_while_freed(void *arg) {
    struct handoff *x = arg;
    uint64_t h;
    CHECK_OK(tether_claim(REG, x->token, &h));
    handoff_set(x, 1);
    handoff_wait(x, 2); /* the registry is freed meanwhile; no more calls */
    return NULL;        /* exits: its exit hook finds the registry gone */
}

static void free_while_a_thread_holds_finalizes_on_the_freeing_thread(void) {
    fresh_registry();
    struct handoff x = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    uint64_t h;
    CHECK_OK(tether_insert(REG, VAL(50), &h));
    CHECK_OK(tether_transfer(REG, h, &x.token));
    pthread_t holder = spawn(hold_while_freed, &x);
    handoff_wait(&x, 1);
    tether_registry_free(REG);
    CHECK(log_times(&LOG, VAL(50)) == 1);
    CHECK(log_all_on(&LOG, pthread_self()));
    handoff_set(&x, 2);
    pthread_join(holder, NULL);
    CHECK(log_count(&LOG) == 1);
}

/* ----- freed off the home: queued values still die at home -------------- */

static void *home_waits_then_exits(void *arg) {
    struct handoff *x = arg;
    uint64_t h;
    CHECK_OK(tether_insert(REG, VAL(60), &h));
    CHECK_OK(tether_transfer(REG, h, &x->token));
    handoff_set(x, 1);
    handoff_wait(x, 2); /* meanwhile: released elsewhere (queued here), registry freed */
    CHECK(log_count(&LOG) == 0);
    /* Its next pump of any registry runs the leftovers, here. */
    tether_registry *other = tether_registry_new(NULL, NULL);
    CHECK(tether_pump(other) == 0); /* counts only `other`'s own queue */
    tether_registry_free(other);
    CHECK(log_times(&LOG, VAL(60)) == 1);
    CHECK(log_all_on(&LOG, pthread_self()));
    return NULL;
}

static void a_registry_freed_off_the_home_leaves_queued_values_to_the_home(void) {
    fresh_registry();
    struct handoff x = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    pthread_t home = spawn(home_waits_then_exits, &x);
    handoff_wait(&x, 1);
    uint64_t h;
    tether_released r;
    CHECK_OK(tether_claim(REG, x.token, &h));
    CHECK_OK(tether_release(REG, h, &r));
    CHECK(r == TETHER_QUEUED);
    tether_registry_free(REG);   /* the value waits in the home's queue... */
    CHECK(log_count(&LOG) == 0); /* ...and is not finalized here */
    handoff_set(&x, 2);
    pthread_join(home, NULL);
    CHECK(log_times(&LOG, VAL(60)) == 1);
}

/* ----- the notifier wakes a home blocked on a condition variable ------- */

struct wakeup {
    pthread_mutex_t m;
    pthread_cond_t c;
    int notified;
};

static struct wakeup WAKE = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};

static void on_queued(void *ctx) {
    struct wakeup *w = ctx;
    pthread_mutex_lock(&w->m);
    w->notified++;
    pthread_cond_signal(&w->c);
    pthread_mutex_unlock(&w->m);
}

static void *claim_release_one(void *arg) {
    uint64_t token = *(uint64_t *)arg, h;
    tether_released r;
    CHECK_OK(tether_claim(REG, token, &h));
    CHECK_OK(tether_release(REG, h, &r));
    CHECK(r == TETHER_QUEUED);
    return NULL;
}

static void the_notifier_wakes_a_home_blocked_on_a_condition_variable(void) {
    fresh_registry();
    WAKE.notified = 0;
    CHECK_OK(tether_set_notify(REG, on_queued, &WAKE));
    uint64_t h, token;
    CHECK_OK(tether_insert(REG, VAL(7), &h));
    CHECK_OK(tether_transfer(REG, h, &token));
    CHECK(!tether_has_pending(REG));
    pthread_t t = spawn(claim_release_one, &token);
    /* The home sleeps, no polling, until the notifier signals. */
    pthread_mutex_lock(&WAKE.m);
    while (WAKE.notified == 0) {
        pthread_cond_wait(&WAKE.c, &WAKE.m);
    }
    pthread_mutex_unlock(&WAKE.m);
    pthread_join(t, NULL);
    CHECK(tether_has_pending(REG));
    CHECK(tether_pump_at_most(REG, 0) == 0);
    CHECK(tether_has_pending(REG));
    CHECK(tether_pump_at_most(REG, 1) == 1);
    CHECK(!tether_has_pending(REG));
    CHECK(WAKE.notified == 1);
    CHECK(log_count(&LOG) == 1);
    CHECK(log_all_on(&LOG, pthread_self()));
    CHECK_OK(tether_set_notify(REG, NULL, NULL)); /* cleared */
    CHECK(tether_set_notify(NULL, on_queued, NULL) == TETHER_NULL_ARGUMENT);
    CHECK(!tether_has_pending(NULL));
    CHECK(tether_pump_at_most(NULL, 5) == 0);
    tether_registry_free(REG);
}

int main(void) {
    RUN(last_release_on_a_worker_is_finalized_at_home);
    RUN(the_notifier_wakes_a_home_blocked_on_a_condition_variable);
    RUN(tokens_hop_between_workers_and_come_home);
    RUN(threads_hammering_one_object_finalize_it_once_at_home);
    RUN(a_thread_exit_releases_what_it_holds);
    RUN(a_home_thread_exit_finalizes_its_queue_there);
    RUN(an_exited_homes_value_is_finalized_by_the_last_releaser);
    RUN(a_thread_without_a_reference_has_no_access_unless_pinned);
    RUN(free_while_a_thread_holds_finalizes_on_the_freeing_thread);
    RUN(a_registry_freed_off_the_home_leaves_queued_values_to_the_home);
    DONE();
}
