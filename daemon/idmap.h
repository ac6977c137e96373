/*
 * idmap.h: connection id -> connection, an open-addressing hash table with
 * linear probing and backward-shift deletion (no tombstones). Ids are
 * positive, so 0 marks a free slot. Grows at 50% load, never shrinks.
 */
#ifndef CONND_IDMAP_H
#define CONND_IDMAP_H

#include <stddef.h>
#include <stdint.h>

struct idmap_slot {
    uint64_t key;
    void *val;
};

struct idmap {
    struct idmap_slot *slots;
    size_t cap; /* a power of two, or 0 */
    size_t n;
};

/* 0 or -ENOMEM; key must be > 0 and not present. */
int idmap_put(struct idmap *m, uint64_t key, void *val);
void *idmap_get(const struct idmap *m, uint64_t key);
void idmap_del(struct idmap *m, uint64_t key);
void idmap_free(struct idmap *m);

#endif
