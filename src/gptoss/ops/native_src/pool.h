/* A small persistent thread pool for phased work (all items of phase p finish before phase p+1 starts).
 *
 * Why not OpenMP: on a machine whose cores are shared with other processes, an OpenMP barrier waits for every
 * team thread, including one the OS has not scheduled yet, and a decode step has dozens of such barriers. Here the
 * caller claims items like any helper and never waits for a helper that has not claimed anything: a helper that
 * wakes up late finds the job done and goes back to sleep. Only items already claimed are waited for.
 */
#ifndef GPTOSS_POOL_H
#define GPTOSS_POOL_H

#define GPTOSS_POOL_MAX_PHASES 4

/* Runs fn(ctx, phase, item, worker) for every item of every phase, on up to nthreads threads (the caller is
 * worker 0; helpers are 1..nthreads-1). Phases run in order, items of a phase in any order and concurrently. */
typedef void (*gptoss_item_fn)(void *ctx, int phase, int item, int worker);
void gptoss_pool_run(int nthreads, int nphases, const int *items, gptoss_item_fn fn, void *ctx);

/* 1 when built with threads (pthreads), else 0 (everything runs on the caller). */
int gptoss_pool_threaded(void);

#endif
