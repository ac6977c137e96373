/*
 * replay_main.c: main() for the fuzz targets in a build without libFuzzer
 * (gcc, or clang without CONND_FUZZ): runs LLVMFuzzerTestOneInput once on
 * each file named on the command line, as a libFuzzer binary does when
 * given files, so the committed corpus and the regression inputs run in
 * every build's ctest. A crash, sanitizer report or failed check aborts;
 * a file that cannot be read exits 2.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Defined by targets that set up process-wide state first. */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

/* The whole file in a buffer of exactly its size, so that ASan sees a read
 * past the end; *size its length. NULL with errno set on failure. */
static uint8_t *replay_read(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL, *nb;
    size_t len = 0, cap = 0, n;

    if (!f)
        return NULL;
    do {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            if (!(nb = realloc(buf, cap))) {
                free(buf);
                fclose(f);
                errno = ENOMEM;
                return NULL;
            }
            buf = nb;
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
    } while (n > 0);
    if (ferror(f)) {
        free(buf);
        fclose(f);
        errno = EIO;
        return NULL;
    }
    fclose(f);
    /* Shrink to fit; an empty input is a one-byte buffer of length 0. */
    if ((nb = realloc(buf, len ? len : 1)))
        buf = nb;
    *size = len;
    return buf;
}

/* Runs each file argument once; returns 0, or 2 if a file was unreadable.
 * A failing input aborts the process. */
int main(int argc, char **argv)
{
    int rc = 0;

    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        size_t size = 0;
        uint8_t *data = replay_read(argv[i], &size);

        if (!data) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            rc = 2;
            continue;
        }
        fprintf(stderr, "replay: %s (%zu bytes)\n", argv[i], size);
        LLVMFuzzerTestOneInput(data, size);
        free(data);
    }
    return rc;
}
