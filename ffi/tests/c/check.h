/*
 * A tiny test harness for the C suite (the .c files beside it), run by
 * ffi/tests/c.rs: each file is one program; each TEST is a function; the
 * program prints one line per test and "N passed, N failed" and exits 1 if
 * any failed.
 */
#ifndef TETHER_CHECK_H
#define TETHER_CHECK_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tether.h"

static int check_failures;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
            __atomic_add_fetch(&check_failures, 1, __ATOMIC_SEQ_CST);       \
        }                                                                    \
    } while (0)

/* `call` returns `want` (statuses are printed by name when they differ). */
#define CHECK_STATUS(call, want)                                                \
    do {                                                                        \
        tether_status got_ = (call);                                            \
        tether_status want_ = (want);                                           \
        if (got_ != want_) {                                                    \
            fprintf(stderr, "%s:%d: %s\n    returned %u (%s)\n    expected %u (%s)\n", \
                    __FILE__, __LINE__, #call, (unsigned)got_,                  \
                    tether_status_str(got_), (unsigned)want_,                   \
                    tether_status_str(want_));                                  \
            __atomic_add_fetch(&check_failures, 1, __ATOMIC_SEQ_CST);           \
        }                                                                       \
    } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, TETHER_OK)

/* A fatal check: the rest of the test depends on it. */
#define REQUIRE(cond)                                                         \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                   \
            exit(2);                                                          \
        }                                                                     \
    } while (0)

#define REQUIRE_OK(call)                                                      \
    do {                                                                      \
        tether_status got_ = (call);                                          \
        if (got_ != TETHER_OK) {                                              \
            fprintf(stderr, "%s:%d: %s returned %u (%s)\n", __FILE__,         \
                    __LINE__, #call, (unsigned)got_, tether_status_str(got_)); \
            exit(2);                                                          \
        }                                                                     \
    } while (0)

static int tests_passed, tests_failed;

#define RUN(test)                                                     \
    do {                                                              \
        int before_ = check_failures;                                 \
        test();                                                       \
        if (check_failures == before_) {                              \
            tests_passed++;                                           \
            printf("ok     %s\n", #test);                             \
        } else {                                                      \
            tests_failed++;                                           \
            printf("FAILED %s\n", #test);                             \
        }                                                             \
        fflush(stdout);                                               \
    } while (0)

#define DONE()                                                         \
    do {                                                               \
        printf("%d passed, %d failed\n", tests_passed, tests_failed); \
        return tests_failed == 0 ? 0 : 1;                              \
    } while (0)

/* ----- a finalizer that records where it ran -------------------------- */

#define LOG_MAX 65536

/* Every finalizer call: the value and the thread it ran on. */
struct fin_log {
    pthread_mutex_t lock;
    size_t n;
    void *value[LOG_MAX];
    pthread_t thread[LOG_MAX];
};

static inline void log_reset(struct fin_log *log) {
    pthread_mutex_lock(&log->lock);
    log->n = 0;
    pthread_mutex_unlock(&log->lock);
}

static inline void record(void *value, void *ctx) {
    struct fin_log *log = ctx;
    pthread_mutex_lock(&log->lock);
    if (log->n < LOG_MAX) {
        log->value[log->n] = value;
        log->thread[log->n] = pthread_self();
    }
    log->n++;
    pthread_mutex_unlock(&log->lock);
}

static inline size_t log_count(struct fin_log *log) {
    pthread_mutex_lock(&log->lock);
    size_t n = log->n;
    pthread_mutex_unlock(&log->lock);
    return n;
}

/* How many times `value` was finalized. */
static inline size_t log_times(struct fin_log *log, void *value) {
    pthread_mutex_lock(&log->lock);
    size_t times = 0;
    for (size_t i = 0; i < log->n && i < LOG_MAX; i++)
        times += log->value[i] == value;
    pthread_mutex_unlock(&log->lock);
    return times;
}

/* Whether every finalization so far ran on `thread`. */
static inline int log_all_on(struct fin_log *log, pthread_t thread) {
    pthread_mutex_lock(&log->lock);
    int all = 1;
    for (size_t i = 0; i < log->n && i < LOG_MAX; i++)
        all &= pthread_equal(log->thread[i], thread) != 0;
    pthread_mutex_unlock(&log->lock);
    return all;
}

/* An integer as an opaque value (tether never dereferences values). */
#define VAL(i) ((void *)(uintptr_t)(i))

#endif /* TETHER_CHECK_H */
