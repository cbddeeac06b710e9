/*
 * The FFI cost, C side: a tether_retain + tether_release pair on a handle
 * the thread holds, timed over many pairs; prints the best ns per pair of
 * five runs. Built and run by benches/ffi_cost.rs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "tether.h"

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    long pairs = argc > 1 ? atol(argv[1]) : 10000000;
    tether_registry *reg = tether_registry_new(NULL, NULL);
    uint64_t h;
    uint32_t n;
    tether_released r;
    if (!reg || tether_insert(reg, NULL, &h) != TETHER_OK)
        return 1;
    double best = 1e30;
    for (int run = 0; run < 5; run++) {
        double start = now_ns();
        for (long i = 0; i < pairs; i++) {
            if (tether_retain(reg, h, &n) != TETHER_OK || tether_release(reg, h, &r) != TETHER_OK)
                return 1;
        }
        double per = (now_ns() - start) / (double)pairs;
        if (per < best)
            best = per;
    }
    printf("%.2f\n", best);
    tether_registry_free(reg);
    return 0;
}
