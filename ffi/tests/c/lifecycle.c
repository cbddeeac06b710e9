/*
 * One thread: insert, retain, get, count, release, pin, transfer and claim,
 * the finalizer's exact-once call, status messages, registry teardown.
 */
#include "check.h"

static struct fin_log LOG = {PTHREAD_MUTEX_INITIALIZER, 0, {0}, {0}};

static tether_registry *new_registry(void) {
    log_reset(&LOG);
    tether_registry *reg = tether_registry_new(record, &LOG);
    REQUIRE(reg != NULL);
    return reg;
}

static void insert_retain_get_release_finalizes_once_here(void) {
    tether_registry *reg = new_registry();
    uint64_t h = 0;
    CHECK_OK(tether_insert(reg, VAL(1), &h));
    CHECK(h != 0 && h < (UINT64_C(1) << 53));
    CHECK(tether_len(reg) == 1);

    uint32_t n = 0;
    CHECK_OK(tether_retain(reg, h, &n));
    CHECK(n == 2);
    CHECK_OK(tether_count(reg, h, &n));
    CHECK(n == 2);
    void *v = NULL;
    CHECK_OK(tether_get(reg, h, &v));
    CHECK(v == VAL(1));

    tether_released r = TETHER_QUEUED;
    CHECK_OK(tether_release(reg, h, &r));
    CHECK(r == TETHER_HELD);
    CHECK(log_count(&LOG) == 0);
    CHECK_OK(tether_release(reg, h, &r));
    CHECK(r == TETHER_FINALIZED);
    CHECK(log_count(&LOG) == 1);
    CHECK(log_times(&LOG, VAL(1)) == 1);
    CHECK(log_all_on(&LOG, pthread_self()));
    CHECK(tether_len(reg) == 0);

    /* Never resolves again. */
    CHECK_STATUS(tether_get(reg, h, &v), TETHER_STALE);
    CHECK_STATUS(tether_release(reg, h, &r), TETHER_STALE);
    CHECK(tether_pump(reg) == 0);
    tether_registry_free(reg);
    CHECK(log_count(&LOG) == 1);
}

static void handles_are_not_reused_for_new_objects(void) {
    tether_registry *reg = new_registry();
    uint64_t seen[64];
    tether_released r;
    for (int i = 0; i < 64; i++) {
        CHECK_OK(tether_insert(reg, VAL(100 + i), &seen[i]));
        CHECK_OK(tether_release(reg, seen[i], &r));
        for (int j = 0; j < i; j++)
            CHECK(seen[j] != seen[i]);
    }
    CHECK(log_count(&LOG) == 64);
    tether_registry_free(reg);
}

static void null_values_are_values(void) {
    tether_registry *reg = new_registry();
    uint64_t h;
    CHECK_OK(tether_insert(reg, NULL, &h));
    void *v = VAL(1);
    CHECK_OK(tether_get(reg, h, &v));
    CHECK(v == NULL);
    tether_released r;
    CHECK_OK(tether_release(reg, h, &r));
    CHECK(log_times(&LOG, NULL) == 1);
    tether_registry_free(reg);
}

static void pin_keeps_alive_until_unpin(void) {
    tether_registry *reg = new_registry();
    uint64_t h;
    CHECK_OK(tether_insert(reg, VAL(2), &h));
    CHECK_OK(tether_pin(reg, h));
    CHECK_OK(tether_pin(reg, h)); /* pins are counted */
    tether_released r;
    CHECK_OK(tether_release(reg, h, &r));
    CHECK(r == TETHER_HELD);
    uint32_t n = 9;
    CHECK_OK(tether_count(reg, h, &n));
    CHECK(n == 0);
    CHECK_OK(tether_unpin(reg, h));
    CHECK(log_count(&LOG) == 0);
    CHECK_OK(tether_unpin(reg, h)); /* the last hold: finalized here */
    CHECK(log_times(&LOG, VAL(2)) == 1);
    CHECK_STATUS(tether_unpin(reg, h), TETHER_STALE);
    tether_registry_free(reg);
}

static void transfer_keeps_alive_until_claimed_or_dropped(void) {
    tether_registry *reg = new_registry();
    uint64_t h, t, h2;
    tether_released r;
    CHECK_OK(tether_insert(reg, VAL(3), &h));
    CHECK_OK(tether_transfer(reg, h, &t));
    CHECK(t != 0 && t < (UINT64_C(1) << 53));
    uint32_t n = 9;
    CHECK_OK(tether_count(reg, h, &n));
    CHECK(n == 0);
    CHECK(tether_len(reg) == 1); /* the token holds it */
    CHECK_OK(tether_claim(reg, t, &h2));
    CHECK(h2 == h);
    CHECK_STATUS(tether_claim(reg, t, &h2), TETHER_TRANSFER_CLAIMED);
    CHECK_OK(tether_release(reg, h, &r));
    CHECK(r == TETHER_FINALIZED);

    /* Dropping an unclaimed token releases its reference. */
    CHECK_OK(tether_insert(reg, VAL(4), &h));
    CHECK_OK(tether_transfer(reg, h, &t));
    CHECK(log_times(&LOG, VAL(4)) == 0);
    CHECK_OK(tether_drop_transfer(reg, t));
    CHECK(log_times(&LOG, VAL(4)) == 1);
    CHECK_STATUS(tether_drop_transfer(reg, t), TETHER_TRANSFER_CLAIMED);
    CHECK_STATUS(tether_claim(reg, t, &h2), TETHER_TRANSFER_CLAIMED);
    CHECK(tether_len(reg) == 0);
    tether_registry_free(reg);
}

static void handles_of_another_registry_are_foreign(void) {
    tether_registry *a = new_registry();
    tether_registry *b = tether_registry_new(record, &LOG);
    REQUIRE(b != NULL);
    uint64_t h, t, hb;
    CHECK_OK(tether_insert(a, VAL(5), &h));
    uint32_t n;
    void *v;
    tether_released r;
    CHECK_STATUS(tether_retain(b, h, &n), TETHER_FOREIGN);
    CHECK_STATUS(tether_get(b, h, &v), TETHER_FOREIGN);
    CHECK_STATUS(tether_release(b, h, &r), TETHER_FOREIGN);
    CHECK_STATUS(tether_count(b, h, &n), TETHER_FOREIGN);
    CHECK_STATUS(tether_pin(b, h), TETHER_FOREIGN);
    CHECK_STATUS(tether_unpin(b, h), TETHER_FOREIGN);
    CHECK_STATUS(tether_transfer(b, h, &t), TETHER_FOREIGN);
    /* A token of `a` means nothing to `b`. */
    CHECK_OK(tether_transfer(a, h, &t));
    CHECK_STATUS(tether_claim(b, t, &hb), TETHER_INVALID);
    CHECK_STATUS(tether_drop_transfer(b, t), TETHER_INVALID);
    CHECK_OK(tether_claim(a, t, &h));
    CHECK_OK(tether_release(a, h, &r));
    CHECK(r == TETHER_FINALIZED);
    tether_registry_free(b);
    tether_registry_free(a);
}

/* A finalizer may call tether: here it releases the next link of a chain. */
struct chain {
    tether_registry *reg;
    uint64_t next[8];
    int finalized;
};

static void release_next(void *value, void *ctx) {
    struct chain *c = ctx;
    int i = (int)(uintptr_t)value;
    c->finalized++;
    if (i + 1 < 8) {
        tether_released r;
        CHECK_OK(tether_release(c->reg, c->next[i + 1], &r));
        CHECK(r == TETHER_FINALIZED);
    }
}

static void finalizers_may_call_tether(void) {
    struct chain c = {0};
    c.reg = tether_registry_new(release_next, &c);
    REQUIRE(c.reg != NULL);
    for (int i = 0; i < 8; i++)
        CHECK_OK(tether_insert(c.reg, VAL(i), &c.next[i]));
    tether_released r;
    CHECK_OK(tether_release(c.reg, c.next[0], &r));
    CHECK(r == TETHER_FINALIZED);
    CHECK(c.finalized == 8);
    CHECK(tether_len(c.reg) == 0);
    tether_registry_free(c.reg);
}

static void free_finalizes_what_is_still_held(void) {
    tether_registry *reg = new_registry();
    uint64_t h, t;
    CHECK_OK(tether_insert(reg, VAL(10), &h));            /* held */
    CHECK_OK(tether_insert(reg, VAL(11), &h));
    CHECK_OK(tether_pin(reg, h));                         /* pinned and held */
    CHECK_OK(tether_insert(reg, VAL(12), &h));
    CHECK_OK(tether_transfer(reg, h, &t));                /* in a token */
    CHECK(log_count(&LOG) == 0);
    tether_registry_free(reg);
    CHECK(log_count(&LOG) == 3);
    CHECK(log_times(&LOG, VAL(10)) == 1);
    CHECK(log_times(&LOG, VAL(11)) == 1);
    CHECK(log_times(&LOG, VAL(12)) == 1);
    CHECK(log_all_on(&LOG, pthread_self()));
}

/* Finalizers run by tether_registry_free find the registry gone. */
struct during_free {
    tether_registry *reg;
    uint64_t other;
    tether_status release, insert;
    size_t len, pump, calls;
};

static void use_registry_being_freed(void *value, void *ctx) {
    (void)value;
    struct during_free *d = ctx;
    tether_released r;
    uint64_t h;
    d->calls++;
    d->release = tether_release(d->reg, d->other, &r);
    d->insert = tether_insert(d->reg, VAL(1), &h);
    d->len = tether_len(d->reg);
    d->pump = tether_pump(d->reg);
}

static void finalizers_run_by_free_cannot_use_the_registry(void) {
    struct during_free d = {0};
    d.reg = tether_registry_new(use_registry_being_freed, &d);
    REQUIRE(d.reg != NULL);
    uint64_t h;
    CHECK_OK(tether_insert(d.reg, VAL(1), &h));
    CHECK_OK(tether_insert(d.reg, VAL(2), &d.other));
    d.len = d.pump = 99;
    tether_registry_free(d.reg);
    CHECK(d.calls == 2);
    CHECK_STATUS(d.release, TETHER_INVALID);
    CHECK_STATUS(d.insert, TETHER_INVALID);
    CHECK(d.len == 0 && d.pump == 0);
}

static void a_registry_without_finalizer_owns_nothing(void) {
    tether_registry *reg = tether_registry_new(NULL, NULL);
    REQUIRE(reg != NULL);
    uint64_t h;
    tether_released r;
    CHECK_OK(tether_insert(reg, VAL(1), &h));
    CHECK_OK(tether_release(reg, h, &r));
    CHECK(r == TETHER_FINALIZED);
    CHECK_OK(tether_insert(reg, VAL(2), &h));
    tether_registry_free(reg);
}

static void every_status_has_a_static_message(void) {
    const tether_status all[] = {
        TETHER_OK,          TETHER_STALE,         TETHER_INVALID,
        TETHER_FOREIGN,     TETHER_NOT_HELD,      TETHER_NOT_PINNED,
        TETHER_OVERFLOW,    TETHER_FULL,          TETHER_FORKED,
        TETHER_TRANSFER_CLAIMED, TETHER_THREAD_EXITED, TETHER_CLOSED,
        TETHER_NULL_ARGUMENT, TETHER_PANIC,
    };
    const size_t count = sizeof all / sizeof all[0];
    for (size_t i = 0; i < count; i++) {
        CHECK(all[i] == i); /* dense, from 0 */
        const char *m = tether_status_str(all[i]);
        CHECK(m != NULL && strlen(m) > 1);
        CHECK(tether_status_str(all[i]) == m); /* static: the same pointer */
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(m, tether_status_str(all[j])) != 0);
    }
    CHECK(strcmp(tether_status_str(TETHER_OK), "ok") == 0);
    /* Any value is safe, even one C made up. */
    const char *unknown = tether_status_str((tether_status)count);
    CHECK(unknown != NULL && strstr(unknown, "unknown") != NULL);
    CHECK(strstr(tether_status_str((tether_status)UINT32_MAX), "unknown") != NULL);
    CHECK(TETHER_HELD == 0 && TETHER_FINALIZED == 1 && TETHER_QUEUED == 2);
}

int main(void) {
    RUN(insert_retain_get_release_finalizes_once_here);
    RUN(handles_are_not_reused_for_new_objects);
    RUN(null_values_are_values);
    RUN(pin_keeps_alive_until_unpin);
    RUN(transfer_keeps_alive_until_claimed_or_dropped);
    RUN(handles_of_another_registry_are_foreign);
    RUN(finalizers_may_call_tether);
    RUN(free_finalizes_what_is_still_held);
    RUN(finalizers_run_by_free_cannot_use_the_registry);
    RUN(a_registry_without_finalizer_owns_nothing);
    RUN(every_status_has_a_static_message);
    DONE();
}
