/*
 * idmap.c: see idmap.h. Lookups by connection id must stay O(1) with
 * 100,000 connections open, for the control socket's per-id methods.
 */
#include "idmap.h"

#include <errno.h>
#include <stdlib.h>

static size_t idmap_hash(uint64_t key, size_t cap)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    return (size_t)key & (cap - 1);
}

static int idmap_grow(struct idmap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    struct idmap_slot *old = m->slots, *slots = calloc(cap, sizeof(*slots));
    size_t old_cap = m->cap;

    if (!slots)
        return -ENOMEM;
    m->slots = slots;
    m->cap = cap;
    m->n = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].key)
            idmap_put(m, old[i].key, old[i].val);
    free(old);
    return 0;
}

int idmap_put(struct idmap *m, uint64_t key, void *val)
{
    size_t i;

    if ((m->n + 1) * 2 > m->cap && idmap_grow(m) < 0)
        return -ENOMEM;
    for (i = idmap_hash(key, m->cap); m->slots[i].key; i = (i + 1) & (m->cap - 1))
        ;
    m->slots[i].key = key;
    m->slots[i].val = val;
    m->n++;
    return 0;
}

void *idmap_get(const struct idmap *m, uint64_t key)
{
    if (!m->cap || !key)
        return NULL;
    for (size_t i = idmap_hash(key, m->cap); m->slots[i].key; i = (i + 1) & (m->cap - 1))
        if (m->slots[i].key == key)
            return m->slots[i].val;
    return NULL;
}

void idmap_del(struct idmap *m, uint64_t key)
{
    size_t mask = m->cap - 1, i, j;

    if (!m->cap || !key)
        return;
    for (i = idmap_hash(key, m->cap); m->slots[i].key != key; i = (i + 1) & mask)
        if (!m->slots[i].key)
            return;
    /* Shift later members of the run back so lookups never cross a hole. */
    for (j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
        size_t home = idmap_hash(m->slots[j].key, m->cap);
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].key = 0;
    m->slots[i].val = NULL;
    m->n--;
}

void idmap_free(struct idmap *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = m->n = 0;
}
