/*
 * vclock.c: virtual time for the daemon inside fuzz_rpc. Its timers (the
 * graceful-close sweep, close and shutdown timeouts, Happy Eyeballs) run
 * on libuv's clock, and a fuzz input that waited for them in real time
 * would run a few per second. This file defines clock_gettime in the fuzz
 * executable: calls made from libuv's code (its monotonic clocks) get an
 * offset that vclock_advance() grows, so the loop sees time pass at once;
 * every other caller (libFuzzer's timers, the sanitizers, the daemon's
 * wall clock) gets the real time. The offset only grows, so libuv's clock
 * stays monotonic.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "vclock.h"

#include <dlfcn.h>
#include <link.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static _Atomic uint64_t vclock_offset_ns;
static uintptr_t vclock_lo, vclock_hi; /* libuv's code segment */

/* dl_iterate_phdr callback: the loadable segment holding *data. */
static int vclock_find(struct dl_phdr_info *info, size_t size, void *data)
{
    uintptr_t addr = *(uintptr_t *)data;

    (void)size;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && addr >= lo && addr < lo + ph->p_memsz) {
            vclock_lo = lo;
            vclock_hi = lo + ph->p_memsz;
            return 1;
        }
    }
    return 0;
}

/* See vclock.h. The first call finds libuv's code (from uv_run). */
void vclock_advance(uint64_t ms)
{
    if (!vclock_hi) {
        void *uv = dlsym(RTLD_DEFAULT, "uv_run");
        uintptr_t addr = (uintptr_t)uv;
        if (!uv || !dl_iterate_phdr(vclock_find, &addr)) {
            fprintf(stderr, "vclock: cannot find libuv's code\n");
            abort();
        }
    }
    atomic_fetch_add(&vclock_offset_ns, ms * 1000000u);
}

/* glibc's, plus the offset for libuv's monotonic clocks. */
int clock_gettime(clockid_t id, struct timespec *ts)
{
    static int (*real)(clockid_t, struct timespec *);
    uintptr_t from = (uintptr_t)__builtin_return_address(0);
    uint64_t off;
    int rc;

    if (!real && !(*(void **)&real = dlsym(RTLD_NEXT, "clock_gettime")))
        abort();
    rc = real(id, ts);
    if (rc != 0 || from < vclock_lo || from >= vclock_hi ||
        (id != CLOCK_MONOTONIC && id != CLOCK_MONOTONIC_COARSE))
        return rc;
    off = atomic_load(&vclock_offset_ns);
    ts->tv_sec += (time_t)(off / 1000000000u);
    ts->tv_nsec += (long)(off % 1000000000u);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
    return rc;
}
