/*
 * vclock.h: virtual time for libuv in fuzz_rpc (vclock.c replaces
 * clock_gettime for the whole process, and shifts what libuv reads).
 */
#ifndef CONND_FUZZ_VCLOCK_H
#define CONND_FUZZ_VCLOCK_H

#include <stdint.h>

/* Move libuv's monotonic clock (uv_now, uv_hrtime, timers) forward by ms,
 * without waiting. The next loop turn runs the timers that fall due. */
void vclock_advance(uint64_t ms);

#endif
