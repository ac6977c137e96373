/*
 * sandbox.c: what the daemon inside fuzz_rpc may reach on the network. The
 * fuzzer writes listener.add and conn.connect requests with any host and
 * port, and the daemon would bind them and connect out for real. This file
 * defines getaddrinfo, bind, listen and connect in the fuzz executable; the
 * daemon's own calls and libuv's (through the dynamic linker) land here
 * first, and the real functions are found with dlsym(RTLD_NEXT).
 *
 * The rules: names are not resolved (only numeric hosts and "localhost",
 * so no DNS query leaves the machine and no lookup waits for one); nothing
 * listens on an address other than loopback; and connect() reaches only a
 * loopback port that this process listens on, so that the fuzzer's bytes
 * never go to another program on the machine, and whether a connect
 * succeeds does not depend on what else runs there. A refused connect
 * fails at once with ECONNREFUSED (a loopback port not ours) or
 * ENETUNREACH (anything else), which the daemon handles as any failure.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "sandbox.h"

#include <dlfcn.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define SANDBOX_MAX_PORTS 128

static uint16_t sandbox_ports[SANDBOX_MAX_PORTS];
static size_t sandbox_n_ports;

/* The next definition of `name` after this executable (libc's). */
static void *sandbox_real(const char *name)
{
    void *fn = dlsym(RTLD_NEXT, name);

    if (!fn) {
        fprintf(stderr, "sandbox: no real %s: %s\n", name, dlerror());
        abort();
    }
    return fn;
}

static bool sandbox_inet(const struct sockaddr *sa)
{
    return sa && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6);
}

static bool sandbox_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) ||
               (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return false;
}

static uint16_t sandbox_port(const struct sockaddr *sa)
{
    return ntohs(sa->sa_family == AF_INET ? ((const struct sockaddr_in *)sa)->sin_port
                                          : ((const struct sockaddr_in6 *)sa)->sin6_port);
}

static bool sandbox_ours(uint16_t port)
{
    for (size_t i = 0; i < sandbox_n_ports; i++)
        if (sandbox_ports[i] == port)
            return true;
    return false;
}

/* See sandbox.h. */
void sandbox_reset(void)
{
    sandbox_n_ports = 0;
}

/* glibc's, made numeric-only (AI_NUMERICHOST) for any node but
 * "localhost"; same return values and ownership of *res (freeaddrinfo). */
int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    static int (*real)(const char *, const char *, const struct addrinfo *,
                       struct addrinfo **);
    struct addrinfo h = {.ai_flags = AI_V4MAPPED | AI_ADDRCONFIG}; /* glibc's default */

    if (!real)
        *(void **)&real = sandbox_real("getaddrinfo");
    if (hints)
        h = *hints;
    if (node && strcmp(node, "localhost") != 0)
        h.ai_flags |= AI_NUMERICHOST;
    return real(node, service, &h, res);
}

/* bind(2), refusing (EADDRNOTAVAIL) a non-loopback address with a port. */
int bind(int fd, const struct sockaddr *sa, socklen_t len)
{
    static int (*real)(int, const struct sockaddr *, socklen_t);

    if (!real)
        *(void **)&real = sandbox_real("bind");
    /* Port 0 elsewhere is an outgoing connection's "from"; listen() below
     * still refuses to listen there. */
    if (sandbox_inet(sa) && !sandbox_loopback(sa) && sandbox_port(sa) != 0) {
        errno = EADDRNOTAVAIL;
        return -1;
    }
    return real(fd, sa, len);
}

/* listen(2), refusing (EADDRNOTAVAIL) a TCP socket not bound to loopback,
 * and remembering the port of one that listens. */
int listen(int fd, int backlog)
{
    static int (*real)(int, int);
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    const struct sockaddr *sa = (const struct sockaddr *)&ss;

    if (!real)
        *(void **)&real = sandbox_real("listen");
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0 || !sandbox_inet(sa))
        return real(fd, backlog);
    if (!sandbox_loopback(sa)) {
        errno = EADDRNOTAVAIL;
        return -1;
    }
    if (real(fd, backlog) < 0)
        return -1;
    if (!sandbox_ours(sandbox_port(sa)) && sandbox_n_ports < SANDBOX_MAX_PORTS)
        sandbox_ports[sandbox_n_ports++] = sandbox_port(sa);
    return 0;
}

/* connect(2) to a loopback port this process listens on; anything else
 * fails at once: ENETUNREACH off loopback, ECONNREFUSED for another port. */
int connect(int fd, const struct sockaddr *sa, socklen_t len)
{
    static int (*real)(int, const struct sockaddr *, socklen_t);

    if (!real)
        *(void **)&real = sandbox_real("connect");
    if (sandbox_inet(sa)) {
        if (!sandbox_loopback(sa)) {
            errno = ENETUNREACH;
            return -1;
        }
        if (!sandbox_ours(sandbox_port(sa))) {
            errno = ECONNREFUSED;
            return -1;
        }
    }
    return real(fd, sa, len);
}
