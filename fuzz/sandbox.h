/*
 * sandbox.h: keeps the daemon inside fuzz_rpc on the loopback interface
 * (sandbox.c replaces getaddrinfo, bind, listen and connect for the whole
 * process).
 */
#ifndef CONND_FUZZ_SANDBOX_H
#define CONND_FUZZ_SANDBOX_H

/* Forget the ports this process listened on: a connect() to one of them is
 * refused from now on, until something listens there again. */
void sandbox_reset(void);

#endif
