#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tether.h"
#define OK(call) do { if ((call) != TETHER_OK) abort(); } while (0)

static tether_registry *reg;
static void finalize(void *value, void *ctx) { (void)ctx; free(value); } /* on the home thread */

static void *worker(void *token) {
    uint64_t h; void *value; tether_released r;
    OK(tether_claim(reg, *(uint64_t *)token, &h));  /* this thread's own reference */
    OK(tether_get(reg, h, &value));
    printf("worker sees %s\n", (char *)value);
    OK(tether_release(reg, h, &r));                  /* its last: TETHER_QUEUED, sent home */
    return NULL;
}

int main(void) {
    uint64_t h, token; pthread_t t;
    reg = tether_registry_new(finalize, NULL);
    OK(tether_insert(reg, strdup("hello"), &h));     /* main is its home, holds 1 */
    OK(tether_transfer(reg, h, &token));             /* that reference goes in flight */
    pthread_create(&t, NULL, worker, &token);
    pthread_join(t, NULL);
    printf("finalized at home: %zu\n", tether_pump(reg)); /* free() runs here */
    tether_registry_free(reg);
}
