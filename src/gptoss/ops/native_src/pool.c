/* Persistent pthread pool for phased work; see pool.h for why it is not OpenMP.
 *
 * Protocol. A job is published under `lock` by bumping `gen`. Work is claimed with a CAS on next[p], which packs
 * (generation << 32 | next item), so a helper still holding an old generation can never claim (or run) an item of
 * a newer job. done[p] counts finished items the same way; whoever finds no item left in phase p waits until
 * done[p] reaches the phase's item count (spinning, then yielding the CPU, which lets a preempted item-holder
 * finish on this core). The caller returns once the last phase is done, without waiting for helpers that never
 * claimed anything. The job's ctx is only dereferenced inside claimed items, all of which end before the caller
 * returns.
 */
#include "pool.h"

#ifdef GPTOSS_NO_THREADS

void gptoss_pool_run(int nthreads, int nphases, const int *items, gptoss_item_fn fn, void *ctx) {
    (void)nthreads;
    for (int p = 0; p < nphases; p++)
        for (int i = 0; i < items[p]; i++) fn(ctx, p, i, 0);
}

int gptoss_pool_threaded(void) { return 0; }

#else

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

#define MAX_HELPERS 255
#define SPIN_FOR_JOB 20000  /* pause loops (~0.5 ms) a helper polls for the next job before sleeping: long enough to
                            * span the small torch ops between a decode step's kernels (a futex wake-up costs more,
                            * measured ~4% decode), short next to the torch GEMMs of prefill it competes with */
#define SPIN_FOR_PHASE 2000 /* pause loops waiting for a phase's last items before yielding the CPU each turn */

typedef struct {
    uint32_t gen;
    gptoss_item_fn fn;
    void *ctx;
    int nphases, participants;
    int items[GPTOSS_POOL_MAX_PHASES];
} job_t;

static struct {
    pthread_mutex_t lock; /* guards job, helper start-up and sleeping */
    pthread_cond_t wake;
    pthread_mutex_t run;  /* one job at a time; a concurrent caller runs its work alone */
    int nhelpers;
    int atfork_done;
    job_t job;            /* written under lock; job.gen mirrors gen */
    _Atomic uint32_t gen;
    _Atomic uint64_t next[GPTOSS_POOL_MAX_PHASES];
    _Atomic uint64_t done[GPTOSS_POOL_MAX_PHASES];
    uint32_t start_gen[MAX_HELPERS + 1];
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_MUTEX_INITIALIZER};

static int claim(int p, uint32_t gen, int n) {
    uint64_t v = atomic_load_explicit(&pool.next[p], memory_order_relaxed);
    for (;;) {
        if ((uint32_t)(v >> 32) != gen || (int)(uint32_t)v >= n) return -1;
        if (atomic_compare_exchange_weak_explicit(&pool.next[p], &v, v + 1, memory_order_acq_rel,
                                                  memory_order_relaxed))
            return (int)(uint32_t)v;
    }
}

/* 1 once every item of phase p is done; 0 if the job was replaced (so it is long finished). */
static int wait_phase(int p, uint32_t gen, int n) {
    for (int spins = 0;; spins++) {
        const uint64_t v = atomic_load_explicit(&pool.done[p], memory_order_acquire);
        if ((uint32_t)(v >> 32) != gen) return 0;
        if ((int)(uint32_t)v >= n) return 1;
        if (spins < SPIN_FOR_PHASE)
            cpu_relax();
        else
            sched_yield();
    }
}

static void participate(const job_t *job, int worker) {
    for (int p = 0; p < job->nphases; p++) {
        for (int i; (i = claim(p, job->gen, job->items[p])) >= 0;) {
            job->fn(job->ctx, p, i, worker);
            atomic_fetch_add_explicit(&pool.done[p], 1, memory_order_release);
        }
        if (!wait_phase(p, job->gen, job->items[p])) return;
    }
}

static void *helper_main(void *arg) {
    const int worker = (int)(intptr_t)arg;
    uint32_t seen = pool.start_gen[worker];
    for (;;) {
        for (int spins = 0; spins < SPIN_FOR_JOB; spins++) {
            if (atomic_load_explicit(&pool.gen, memory_order_acquire) != seen) break;
            cpu_relax();
        }
        pthread_mutex_lock(&pool.lock);
        while (atomic_load_explicit(&pool.gen, memory_order_relaxed) == seen) pthread_cond_wait(&pool.wake, &pool.lock);
        const job_t job = pool.job;
        pthread_mutex_unlock(&pool.lock);
        seen = job.gen;
        if (worker < job.participants) participate(&job, worker);
    }
    return NULL;
}

/* After fork() only the forking thread exists: forget the helpers (the child starts its own when needed). */
static void reset_after_fork(void) {
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_mutex_init(&pool.run, NULL);
    pool.nhelpers = 0;
}

static void ensure_helpers(int want) {
    if (want > MAX_HELPERS) want = MAX_HELPERS;
    pthread_mutex_lock(&pool.lock);
    if (!pool.atfork_done) pool.atfork_done = !pthread_atfork(NULL, NULL, reset_after_fork);
    while (pool.nhelpers < want) {
        const int worker = pool.nhelpers + 1;
        pool.start_gen[worker] = atomic_load_explicit(&pool.gen, memory_order_relaxed);
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        const int rc = pthread_create(&t, &attr, helper_main, (void *)(intptr_t)worker);
        pthread_attr_destroy(&attr);
        if (rc) break; /* fewer helpers: the caller does more of the work */
        pool.nhelpers++;
    }
    pthread_mutex_unlock(&pool.lock);
}

void gptoss_pool_run(int nthreads, int nphases, const int *items, gptoss_item_fn fn, void *ctx) {
    if (nthreads <= 1 || nphases > GPTOSS_POOL_MAX_PHASES || pthread_mutex_trylock(&pool.run)) {
        for (int p = 0; p < nphases; p++)
            for (int i = 0; i < items[p]; i++) fn(ctx, p, i, 0);
        return;
    }
    ensure_helpers(nthreads - 1);
    pthread_mutex_lock(&pool.lock);
    job_t job = {atomic_load_explicit(&pool.gen, memory_order_relaxed) + 1, fn, ctx, nphases, nthreads, {0}};
    for (int p = 0; p < nphases; p++) {
        job.items[p] = items[p];
        atomic_store_explicit(&pool.next[p], (uint64_t)job.gen << 32, memory_order_relaxed);
        atomic_store_explicit(&pool.done[p], (uint64_t)job.gen << 32, memory_order_relaxed);
    }
    pool.job = job;
    atomic_store_explicit(&pool.gen, job.gen, memory_order_release);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    participate(&job, 0);
    pthread_mutex_unlock(&pool.run);
}

int gptoss_pool_threaded(void) { return 1; }

#endif
