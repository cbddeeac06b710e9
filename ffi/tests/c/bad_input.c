/*
 * Bad input to every function: NULL pointers, pointers that are not a
 * registry, garbage / neighbour / stale / foreign handles, forged and
 * reused tokens, double release, calls from a late thread-exit destructor
 * and from a forked child. Every error must leave the out-parameter as it
 * was, change nothing, and never finalize a value it should not.
 */
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static struct fin_log LOG = {PTHREAD_MUTEX_INITIALIZER, 0, {0}, {0}};

#define SENTINEL_U64 UINT64_C(0x5e5e5e5e5e5e5e5e)
#define SENTINEL_U32 UINT32_C(0x5e5e5e5e)
#define SENTINEL_PTR VAL(0x5e5e5e5e)
#define SENTINEL_REL ((tether_released)0x5e5e5e5e)

static tether_registry *new_registry(void) {
    log_reset(&LOG);
    tether_registry *reg = tether_registry_new(record, &LOG);
    REQUIRE(reg != NULL);
    return reg;
}

/*
 * Every call that takes a handle returns `want` for `h`, writes no
 * out-parameter, and no value is finalized. (`count` too, unless `h` names a
 * live object, which `count` answers for any thread.)
 */
static void check_handle_refused(tether_registry *reg, uint64_t h, tether_status want,
                                 int count_answers, int line) {
    uint32_t n = SENTINEL_U32;
    void *v = SENTINEL_PTR;
    tether_released r = SENTINEL_REL;
    uint64_t t = SENTINEL_U64;
    size_t finalized = log_count(&LOG);
    size_t live = tether_len(reg);
    int before = check_failures;
    CHECK_STATUS(tether_retain(reg, h, &n), want);
    CHECK_STATUS(tether_release(reg, h, &r), want);
    CHECK_STATUS(tether_get(reg, h, &v), want);
    CHECK_STATUS(tether_pin(reg, h), want);
    CHECK_STATUS(tether_unpin(reg, h), want);
    CHECK_STATUS(tether_transfer(reg, h, &t), want);
    if (!count_answers)
        CHECK_STATUS(tether_count(reg, h, &n), want);
    CHECK(n == SENTINEL_U32 && v == SENTINEL_PTR && r == SENTINEL_REL && t == SENTINEL_U64);
    CHECK(log_count(&LOG) == finalized);
    CHECK(tether_len(reg) == live);
    if (check_failures != before)
        fprintf(stderr, "    (for handle %#llx, checked from line %d)\n", (unsigned long long)h,
                line);
}

#define HANDLE_REFUSED(reg, h, want) check_handle_refused(reg, h, want, 0, __LINE__)

/* Every call on `reg` returns `want`; no out-parameter is written. */
static void check_registry_refused(tether_registry *reg, tether_status want, uint64_t h,
                                   uint64_t token, int line) {
    uint32_t n = SENTINEL_U32;
    void *v = SENTINEL_PTR;
    tether_released r = SENTINEL_REL;
    uint64_t t = SENTINEL_U64, h2 = SENTINEL_U64;
    size_t finalized = log_count(&LOG);
    int before = check_failures;
    CHECK_STATUS(tether_insert(reg, VAL(999), &h2), want);
    CHECK_STATUS(tether_retain(reg, h, &n), want);
    CHECK_STATUS(tether_release(reg, h, &r), want);
    CHECK_STATUS(tether_get(reg, h, &v), want);
    CHECK_STATUS(tether_count(reg, h, &n), want);
    CHECK_STATUS(tether_pin(reg, h), want);
    CHECK_STATUS(tether_unpin(reg, h), want);
    CHECK_STATUS(tether_transfer(reg, h, &t), want);
    CHECK_STATUS(tether_claim(reg, token, &h2), want);
    CHECK_STATUS(tether_drop_transfer(reg, token), want);
    CHECK(tether_pump(reg) == 0);
    CHECK(tether_len(reg) == 0);
    CHECK(n == SENTINEL_U32 && v == SENTINEL_PTR && r == SENTINEL_REL && t == SENTINEL_U64 &&
          h2 == SENTINEL_U64);
    CHECK(log_count(&LOG) == finalized); /* VAL(999) was not finalized */
    if (check_failures != before)
        fprintf(stderr, "    (checked from line %d)\n", line);
}

static void null_and_foreign_registry_pointers_are_refused(void) {
    tether_registry *reg = new_registry();
    uint64_t h, token;
    CHECK_OK(tether_insert(reg, VAL(1), &h));
    CHECK_OK(tether_insert(reg, VAL(2), &token));
    CHECK_OK(tether_transfer(reg, token, &token));

    check_registry_refused(NULL, TETHER_NULL_ARGUMENT, h, token, __LINE__);

    /* Memory that is not a registry: zeroes, garbage, another object. */
    uint64_t zeroes[16] = {0};
    check_registry_refused((tether_registry *)zeroes, TETHER_INVALID, h, token, __LINE__);
    uint64_t garbage[16];
    memset(garbage, 0xa5, sizeof garbage);
    check_registry_refused((tether_registry *)garbage, TETHER_INVALID, h, token, __LINE__);
    check_registry_refused((tether_registry *)&LOG, TETHER_INVALID, h, token, __LINE__);
    /* A misaligned pointer into a real registry. */
    check_registry_refused((tether_registry *)((char *)reg + 1), TETHER_INVALID, h, token,
                           __LINE__);
    /* Freeing what is not a registry does nothing. */
    tether_registry_free(NULL);
    tether_registry_free((tether_registry *)zeroes);
    tether_registry_free((tether_registry *)garbage);
    for (int i = 0; i < 16; i++)
        CHECK(zeroes[i] == 0);

    /* The real registry saw none of it. */
    CHECK(tether_len(reg) == 2);
    void *v;
    CHECK_OK(tether_get(reg, h, &v));
    CHECK(v == VAL(1));
    CHECK(log_count(&LOG) == 0);
    tether_registry_free(reg);
    CHECK(log_count(&LOG) == 2);
}

static void null_out_parameters_are_refused_and_change_nothing(void) {
    tether_registry *reg = new_registry();
    uint64_t h, token, h2;
    CHECK_STATUS(tether_insert(reg, VAL(3), NULL), TETHER_NULL_ARGUMENT);
    CHECK(tether_len(reg) == 0);
    CHECK(log_count(&LOG) == 0); /* not inserted, not finalized: still ours */

    CHECK_OK(tether_insert(reg, VAL(4), &h));
    CHECK_STATUS(tether_retain(reg, h, NULL), TETHER_NULL_ARGUMENT);
    CHECK_STATUS(tether_count(reg, h, NULL), TETHER_NULL_ARGUMENT);
    CHECK_STATUS(tether_get(reg, h, NULL), TETHER_NULL_ARGUMENT);
    CHECK_STATUS(tether_release(reg, h, NULL), TETHER_NULL_ARGUMENT);
    CHECK_STATUS(tether_transfer(reg, h, NULL), TETHER_NULL_ARGUMENT);
    uint32_t n;
    CHECK_OK(tether_count(reg, h, &n));
    CHECK(n == 1); /* none of them retained, released or transferred */

    CHECK_OK(tether_transfer(reg, h, &token));
    CHECK_STATUS(tether_claim(reg, token, NULL), TETHER_NULL_ARGUMENT);
    CHECK_OK(tether_claim(reg, token, &h2)); /* the token was not used up */
    CHECK(h2 == h);
    tether_released r;
    CHECK_OK(tether_release(reg, h, &r));
    CHECK(r == TETHER_FINALIZED);
    tether_registry_free(reg);
}

static void garbage_handles_are_invalid(void) {
    tether_registry *reg = new_registry();
    uint64_t h;
    CHECK_OK(tether_insert(reg, VAL(5), &h));
    const uint64_t garbage[] = {
        0,
        1,
        UINT64_C(1) << 53,
        (UINT64_C(1) << 53) + 1,
        UINT64_MAX,
        h + 1,                      /* the neighbour slot: never issued */
        h + 1000,
        h ^ (UINT64_C(1) << 23),    /* a far slot */
        h + (UINT64_C(1) << 24),    /* the same slot, a generation not issued */
        h & ((UINT64_C(1) << 45) - 1), /* no registry tag */
    };
    for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++)
        HANDLE_REFUSED(reg, garbage[i], TETHER_INVALID);
    uint32_t n;
    CHECK_OK(tether_count(reg, h, &n));
    CHECK(n == 1);
    tether_registry_free(reg);
}

static void stale_handles_and_double_release_are_refused(void) {
    tether_registry *reg = new_registry();
    uint64_t h, h2;
    tether_released r;
    CHECK_OK(tether_insert(reg, VAL(6), &h));
    CHECK_OK(tether_release(reg, h, &r));
    CHECK(r == TETHER_FINALIZED);
    HANDLE_REFUSED(reg, h, TETHER_STALE); /* double release among them */
    /* The slot is reused: the old handle still never resolves. */
    CHECK_OK(tether_insert(reg, VAL(7), &h2));
    CHECK(h2 != h);
    HANDLE_REFUSED(reg, h, TETHER_STALE);
    void *v;
    CHECK_OK(tether_get(reg, h2, &v));
    CHECK(v == VAL(7));
    CHECK(log_times(&LOG, VAL(6)) == 1);
    CHECK(log_times(&LOG, VAL(7)) == 0);
    CHECK_OK(tether_release(reg, h2, &r));
    tether_registry_free(reg);
}

static void foreign_handles_are_refused(void) {
    tether_registry *a = new_registry();
    tether_registry *b = tether_registry_new(record, &LOG);
    REQUIRE(b != NULL);
    uint64_t ha;
    CHECK_OK(tether_insert(a, VAL(8), &ha));
    HANDLE_REFUSED(b, ha, TETHER_FOREIGN);
    tether_registry_free(b);
    tether_registry_free(a);
}

static void releasing_more_than_held_is_refused(void) {
    tether_registry *reg = new_registry();
    uint64_t h, t;
    tether_released r = SENTINEL_REL;
    CHECK_OK(tether_insert(reg, VAL(9), &h));
    CHECK_OK(tether_pin(reg, h));
    CHECK_OK(tether_release(reg, h, &r));
    CHECK(r == TETHER_HELD);
    r = SENTINEL_REL;
    CHECK_STATUS(tether_release(reg, h, &r), TETHER_NOT_HELD); /* a pin is not ours */
    CHECK(r == SENTINEL_REL);
    t = SENTINEL_U64;
    CHECK_STATUS(tether_transfer(reg, h, &t), TETHER_NOT_HELD);
    CHECK(t == SENTINEL_U64);
    CHECK_OK(tether_unpin(reg, h));
    CHECK_STATUS(tether_unpin(reg, h), TETHER_STALE);
    CHECK(log_times(&LOG, VAL(9)) == 1);

    CHECK_OK(tether_insert(reg, VAL(10), &h));
    CHECK_STATUS(tether_unpin(reg, h), TETHER_NOT_PINNED);
    CHECK_OK(tether_transfer(reg, h, &t));
    CHECK_STATUS(tether_release(reg, h, &r), TETHER_NOT_HELD); /* it is in the token */
    CHECK(log_count(&LOG) == 1);
    CHECK_OK(tether_drop_transfer(reg, t));
    CHECK(log_times(&LOG, VAL(10)) == 1);
    tether_registry_free(reg);
}

static void forged_and_reused_tokens_are_refused(void) {
    tether_registry *reg = new_registry();
    uint64_t h, t, h2 = SENTINEL_U64;
    CHECK_OK(tether_insert(reg, VAL(11), &h));
    CHECK_OK(tether_transfer(reg, h, &t));
    const uint64_t forged[] = {
        0, 1, t - 1, t + 1, t ^ 1, t ^ (UINT64_C(1) << 40), h,
        UINT64_C(1) << 53, UINT64_MAX,
    };
    for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++) {
        if (forged[i] == t)
            continue;
        CHECK_STATUS(tether_claim(reg, forged[i], &h2), TETHER_INVALID);
        CHECK_STATUS(tether_drop_transfer(reg, forged[i]), TETHER_INVALID);
    }
    CHECK(h2 == SENTINEL_U64);
    CHECK(log_count(&LOG) == 0); /* the real token still holds it */
    CHECK_OK(tether_claim(reg, t, &h2));
    CHECK(h2 == h);
    h2 = SENTINEL_U64;
    CHECK_STATUS(tether_claim(reg, t, &h2), TETHER_TRANSFER_CLAIMED);
    CHECK_STATUS(tether_drop_transfer(reg, t), TETHER_TRANSFER_CLAIMED);
    CHECK(h2 == SENTINEL_U64);

    uint64_t t2;
    CHECK_OK(tether_transfer(reg, h, &t2));
    CHECK(t2 != t);
    CHECK_OK(tether_drop_transfer(reg, t2));
    CHECK_STATUS(tether_claim(reg, t2, &h2), TETHER_TRANSFER_CLAIMED);
    CHECK_STATUS(tether_drop_transfer(reg, t2), TETHER_TRANSFER_CLAIMED);
    CHECK(log_times(&LOG, VAL(11)) == 1);
    CHECK(h2 == SENTINEL_U64);
    tether_registry_free(reg);
}

/* ----- a thread's late destructor, after tether let go of the thread --- */

static tether_registry *LATE_REG;
static pthread_key_t LATE_KEY;

struct late {
    uint64_t held, token;
    tether_status insert, claim, retain, release, get;
    uint64_t h;
    uint32_t n;
};

static void late_destructor(void *arg) {
    struct late *l = arg;
    tether_released r;
    void *v;
    l->h = SENTINEL_U64;
    l->n = SENTINEL_U32;
    l->insert = tether_insert(LATE_REG, VAL(13), &l->h);
    l->claim = tether_claim(LATE_REG, l->token, &l->h);
    l->retain = tether_retain(LATE_REG, l->held, &l->n);
    l->release = tether_release(LATE_REG, l->held, &r);
    l->get = tether_get(LATE_REG, l->held, &v);
}

static void *use_then_exit(void *arg) {
    struct late *l = arg;
    uint64_t h;
    CHECK_OK(tether_claim(LATE_REG, l->held, &h)); /* `held` is a token here */
    l->held = h;
    REQUIRE(pthread_setspecific(LATE_KEY, l) == 0);
    return NULL;
}

static void calls_from_a_late_thread_exit_destructor_are_refused(void) {
    LATE_REG = new_registry();
    REQUIRE(pthread_key_create(&LATE_KEY, late_destructor) == 0);
    struct late l = {0};
    uint64_t h, h2;
    CHECK_OK(tether_insert(LATE_REG, VAL(12), &h));
    CHECK_OK(tether_transfer(LATE_REG, h, &l.held));
    CHECK_OK(tether_insert(LATE_REG, VAL(14), &h2));
    CHECK_OK(tether_transfer(LATE_REG, h2, &l.token));
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, use_then_exit, &l) == 0);
    pthread_join(t, NULL);
    /* glibc runs thread_local destructors (tether's exit hook) before
     * pthread key destructors: by then the thread has let go. */
    CHECK_STATUS(l.insert, TETHER_THREAD_EXITED);
    CHECK_STATUS(l.claim, TETHER_THREAD_EXITED);
    CHECK_STATUS(l.retain, TETHER_THREAD_EXITED);
    CHECK_STATUS(l.get, TETHER_THREAD_EXITED);
    CHECK_STATUS(l.release, TETHER_STALE); /* its exit let go of the last one */
    CHECK(l.h == SENTINEL_U64 && l.n == SENTINEL_U32);
    CHECK(log_times(&LOG, VAL(13)) == 0); /* a refused insert finalizes nothing */
    CHECK(tether_pump(LATE_REG) >= 1);   /* VAL(12), released at its exit */
    CHECK(log_times(&LOG, VAL(12)) == 1);
    CHECK(tether_len(LATE_REG) == 0);    /* VAL(14): the refused claim used it up */
    CHECK(log_times(&LOG, VAL(14)) == 1);
    pthread_key_delete(LATE_KEY);
    tether_registry_free(LATE_REG);
}

/* ----- a forked child ---------------------------------------------------- */

static void every_call_in_a_forked_child_is_forked(void) {
    tether_registry *reg = new_registry();
    uint64_t h, t;
    CHECK_OK(tether_insert(reg, VAL(15), &h));
    CHECK_OK(tether_insert(reg, VAL(16), &t));
    CHECK_OK(tether_transfer(reg, t, &t));
    fflush(stdout);
    fflush(stderr);
    int before = check_failures; /* the child inherits the count */
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        check_registry_refused(reg, TETHER_FORKED, h, t, __LINE__);
        _exit(check_failures == before ? 0 : 1);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* The parent is untouched. */
    void *v;
    CHECK_OK(tether_get(reg, h, &v));
    CHECK(v == VAL(15));
    CHECK(tether_len(reg) == 2);
    tether_registry_free(reg);
    CHECK(log_count(&LOG) == 2);
}

int main(void) {
    RUN(null_and_foreign_registry_pointers_are_refused);
    RUN(null_out_parameters_are_refused_and_change_nothing);
    RUN(garbage_handles_are_invalid);
    RUN(stale_handles_and_double_release_are_refused);
    RUN(foreign_handles_are_refused);
    RUN(releasing_more_than_held_is_refused);
    RUN(forged_and_reused_tokens_are_refused);
    RUN(calls_from_a_late_thread_exit_destructor_are_refused);
    RUN(every_call_in_a_forked_child_is_forked);
    DONE();
}
