/*
 * test_plugin.c: loading notifier plugins (daemon/plugin.c). "load" calls
 * plugin_load() in-process on the tiny plugins of tests/plugins/, one per
 * way a load can fail, and on the scriptable testplug; "exports" checks
 * with nm(1) that every plugin exports connd_plugin_entry and nothing else;
 * "daemon" starts the real connd on configs naming each bad plugin and
 * checks it exits 1 with one clear line instead of crashing.
 */
#include "plugin.h"

#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "loop.h"

#define TPLUG(file) CONND_TEST_PLUGIN_DIR "/" file
#define BPLUG(file) CONND_PLUGIN_BUILD_DIR "/" file

/* ---- capturing the log of in-process calls ----------------------------- */

/* The daemon's log goes to fd 2 with write(2); point fd 2 at a temp file
 * while a call runs, then read it back. */
struct capture {
    int saved;
    int fd;
};

static void capture_start(struct capture *cap)
{
    char path[] = "/tmp/test_plugin_log_XXXXXX";

    cap->fd = mkstemp(path);
    ck_assert_int_ge(cap->fd, 0);
    unlink(path);
    fflush(stderr);
    cap->saved = dup(STDERR_FILENO);
    ck_assert_int_ge(cap->saved, 0);
    ck_assert_int_ge(dup2(cap->fd, STDERR_FILENO), 0);
}

/* Restores fd 2, copies what was logged there too, and returns it
 * (malloc'd, NUL-terminated). */
static char *capture_end(struct capture *cap)
{
    off_t len;
    char *text;

    dup2(cap->saved, STDERR_FILENO);
    close(cap->saved);
    len = lseek(cap->fd, 0, SEEK_END);
    ck_assert_int_ge(len, 0);
    text = calloc(1, (size_t)len + 1);
    ck_assert_ptr_nonnull(text);
    ck_assert_int_eq(pread(cap->fd, text, (size_t)len, 0), len);
    close(cap->fd);
    /* Echo it, so that a failing run shows what was logged; best effort. */
    if (len > 0 && write(STDERR_FILENO, text, (size_t)len) != len)
        fprintf(stderr, "(log echo incomplete)\n");
    return text;
}

/* ---- plugin_load() helpers ---------------------------------------------- */

/* What *out holds before each load: a failed load must leave it alone
 * (or set it to NULL), never hand out a freed plugin. */
static struct plugin sentinel_plugin;
#define SENTINEL (&sentinel_plugin)

struct load_result {
    int rc;
    struct plugin *p;
    char err[512];
    char *log;
};

/* plugin_load() for one plugin instance on a zeroed loop. */
static void load(struct loop *lp, const char *name, const char *file, const char *dir,
                 const char *config_json, struct load_result *r)
{
    struct config_plugin cp = {
        .name = (char *)name, .file = (char *)file, .config_json = (char *)config_json};
    struct capture cap;

    memset(r, 0, sizeof(*r));
    r->p = SENTINEL;
    strcpy(r->err, "(untouched)");
    capture_start(&cap);
    r->rc = plugin_load(lp, &cp, dir, &r->p, r->err, sizeof(r->err));
    r->log = capture_end(&cap);
}

/* A failed load: negative rc, *out not set to anything new, and a one-line
 * message naming the instance. */
static void assert_refused(const struct load_result *r, const char *name)
{
    char want[128];

    ck_assert_msg(r->rc < 0, "plugin_load returned %d for %s: %s", r->rc, name, r->err);
    ck_assert_msg(r->p == SENTINEL || r->p == NULL, "*out was set to %p on failure",
                  (void *)r->p);
    ck_assert_msg(strcmp(r->err, "(untouched)") != 0 && r->err[0] != '\0',
                  "no error message");
    ck_assert_msg(!strchr(r->err, '\n'), "message is not one line: \"%s\"", r->err);
    snprintf(want, sizeof(want), "plugin %s", name);
    ck_assert_msg(strstr(r->err, want), "message does not name \"%s\": \"%s\"", want,
                  r->err);
}

#define assert_has(text, needle)                                                         \
    ck_assert_msg(strstr((text), (needle)) != NULL, "\"%s\" not in \"%s\"", (needle),    \
                  (text))

/* Whether the shared object at path is still mapped in this process. */
static bool still_loaded(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);

    if (!h)
        return false;
    dlclose(h);
    return true;
}

/* One temp dir per TCase, made and removed in the parent process
 * (unchecked fixture), so that a failing test does not leave it behind. */
static char tmpdir[64];

static void tmpdir_setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_plugin_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void tmpdir_teardown(void)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}

/* A text file named like a plugin, in the temp dir; returns its path. */
static const char *write_text_plugin(char *path, size_t len)
{
    static const char text[] = "this is not an ELF shared object\n";
    FILE *f;

    snprintf(path, len, "%s/notso.so", tmpdir);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* ---- "load": every failure is a clear error ------------------------------ */

START_TEST(test_plugin_missing_file_names_path_and_enoent)
{
    struct loop lp;
    struct load_result r;
    char path[128];

    memset(&lp, 0, sizeof(lp));
    /* A relative name is looked up under plugin_dir: the message names the
     * full path that was tried. */
    load(&lp, "ghost", "nosuch.so", tmpdir, "{}", &r);
    snprintf(path, sizeof(path), "%s/nosuch.so", tmpdir);
    assert_refused(&r, "ghost");
    ck_assert_int_eq(r.rc, -ENOENT);
    assert_has(r.err, path);
    assert_has(r.err, "No such file");
    free(r.log);
}
END_TEST

START_TEST(test_plugin_text_file_is_refused_as_not_a_shared_object)
{
    struct loop lp;
    struct load_result r;
    char path[128];

    memset(&lp, 0, sizeof(lp));
    write_text_plugin(path, sizeof(path));
    load(&lp, "text", path, "/nonexistent", "{}", &r);
    assert_refused(&r, "text");
    assert_has(r.err, path);
    ck_assert(!still_loaded(path));
    free(r.log);
}
END_TEST

START_TEST(test_plugin_directory_is_refused_naming_it)
{
    struct loop lp;
    struct load_result r;

    memset(&lp, 0, sizeof(lp));
    load(&lp, "dir", tmpdir, "/nonexistent", "{}", &r);
    assert_refused(&r, "dir");
    assert_has(r.err, tmpdir);
    free(r.log);
}
END_TEST

START_TEST(test_plugin_without_entry_symbol_names_connd_plugin_entry)
{
    struct loop lp;
    struct load_result r;

    memset(&lp, 0, sizeof(lp));
    load(&lp, "noentry", "no_entry.so", CONND_TEST_PLUGIN_DIR, "{}", &r);
    assert_refused(&r, "noentry");
    assert_has(r.err, TPLUG("no_entry.so"));
    assert_has(r.err, "connd_plugin_entry");
    ck_assert_msg(!still_loaded(TPLUG("no_entry.so")), "no_entry.so stayed loaded");
    free(r.log);
}
END_TEST

START_TEST(test_plugin_wrong_abi_names_file_and_versions)
{
    struct loop lp;
    struct load_result r;
    char want[64];

    memset(&lp, 0, sizeof(lp));
    load(&lp, "future", TPLUG("bad_abi.so"), "/nonexistent", "{}", &r);
    assert_refused(&r, "future");
    assert_has(r.err, TPLUG("bad_abi.so"));
    snprintf(want, sizeof(want), "abi %d, connd speaks %d", CONND_PLUGIN_ABI + 98,
             CONND_PLUGIN_ABI);
    assert_has(r.err, want);
    ck_assert_msg(!still_loaded(TPLUG("bad_abi.so")), "bad_abi.so stayed loaded");
    free(r.log);
}
END_TEST

START_TEST(test_plugin_small_notify_table_names_file_and_sizes)
{
    struct loop lp;
    struct load_result r;
    char want[32];

    memset(&lp, 0, sizeof(lp));
    load(&lp, "tiny", "small_size.so", CONND_TEST_PLUGIN_DIR, "{}", &r);
    assert_refused(&r, "tiny");
    assert_has(r.err, TPLUG("small_size.so"));
    /* Refusals name the numbers: the plugin's size and the least accepted. */
    assert_has(r.err, " 16 ");
    snprintf(want, sizeof(want), "%zu", (size_t)PLUGIN_NOTIFY_MIN_SIZE);
    assert_has(r.err, want);
    ck_assert_msg(!still_loaded(TPLUG("small_size.so")), "small_size.so stayed loaded");
    free(r.log);
}
END_TEST

/* init_fail's fini() calls abort(): reaching the end proves it never ran. */
START_TEST(test_plugin_failed_init_is_refused_without_fini)
{
    struct loop lp;
    struct load_result r;

    memset(&lp, 0, sizeof(lp));
    load(&lp, "broken", "init_fail.so", CONND_TEST_PLUGIN_DIR, "{}", &r);
    assert_has(r.log, "plugin broken: init called"); /* init ran, logging via the host */
    assert_refused(&r, "broken");
    ck_assert_int_eq(r.rc, -EINVAL); /* init's own errno is passed through */
    assert_has(r.err, "init failed");
    assert_has(r.err, "Invalid argument");
    ck_assert_msg(!still_loaded(TPLUG("init_fail.so")), "init_fail.so stayed loaded");
    /* plugin.h: on failure err names "the file and the reason". */
    assert_has(r.err, TPLUG("init_fail.so"));
    free(r.log);
}
END_TEST

START_TEST(test_plugin_good_plugin_loads_logs_via_host_and_unloads)
{
    struct loop lp;
    struct load_result r;
    struct capture cap;
    struct plugin *p;
    char *log;

    memset(&lp, 0, sizeof(lp));
    load(&lp, "good", "testplug.so", CONND_TEST_PLUGIN_DIR, "{}", &r);
    ck_assert_msg(r.rc == 0, "plugin_load: %d: %s", r.rc, r.err);
    p = r.p;
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_ne(p, SENTINEL);
    ck_assert_str_eq(p->name, "good");
    ck_assert_str_eq(p->path, TPLUG("testplug.so"));
    ck_assert_ptr_eq(p->lp, &lp);
    ck_assert_uint_eq(p->notify.abi, CONND_PLUGIN_ABI);
    ck_assert_str_eq(p->notify.name, "testplug");
    ck_assert_ptr_nonnull(p->state); /* what testplug's init stored */
    ck_assert_ptr_nonnull(p->notify.listening);
    ck_assert_uint_eq(p->n_conns, 0);
    assert_has(r.log, "plugin good: loaded " TPLUG("testplug.so"));
    ck_assert(still_loaded(TPLUG("testplug.so")));
    free(r.log);

    /* A hook runs on the state init made and logs through the host table,
     * under the instance's name. */
    capture_start(&cap);
    p->notify.listening(p->state, "L1");
    log = capture_end(&cap);
    assert_has(log, "plugin good: listening L1");
    free(log);

    plugin_unload(p);
    ck_assert_msg(!still_loaded(TPLUG("testplug.so")), "testplug.so stayed loaded");
}
END_TEST

START_TEST(test_plugin_two_instances_of_one_file_have_independent_state)
{
    struct loop lp;
    struct load_result ra, rb;
    struct capture cap;
    char *log;

    memset(&lp, 0, sizeof(lp));
    load(&lp, "first", TPLUG("testplug.so"), "/nonexistent", "{\"echo\":true}", &ra);
    ck_assert_msg(ra.rc == 0, "first: %d: %s", ra.rc, ra.err);
    load(&lp, "second", "testplug.so", CONND_TEST_PLUGIN_DIR, "{}", &rb);
    ck_assert_msg(rb.rc == 0, "second: %d: %s", rb.rc, rb.err);
    free(ra.log);
    free(rb.log);
    ck_assert_ptr_ne(ra.p, rb.p);
    ck_assert_ptr_nonnull(ra.p->state);
    ck_assert_ptr_nonnull(rb.p->state);
    ck_assert_ptr_ne(ra.p->state, rb.p->state);

    capture_start(&cap);
    ra.p->notify.listening(ra.p->state, "LA");
    rb.p->notify.listening(rb.p->state, "LB");
    log = capture_end(&cap);
    assert_has(log, "plugin first: listening LA");
    assert_has(log, "plugin second: listening LB");
    free(log);

    /* Unloading one instance frees its state only: the other still works
     * (under ASan a shared or freed state would be a use after free) and
     * keeps the file mapped. */
    plugin_unload(ra.p);
    ck_assert_msg(still_loaded(TPLUG("testplug.so")),
                  "unloading one instance unmapped both");
    capture_start(&cap);
    rb.p->notify.listening(rb.p->state, "LC");
    log = capture_end(&cap);
    assert_has(log, "plugin second: listening LC");
    ck_assert_msg(!strstr(log, "plugin first"), "second instance logs as the first: %s",
                  log);
    free(log);
    plugin_unload(rb.p);
    ck_assert_msg(!still_loaded(TPLUG("testplug.so")), "testplug.so stayed loaded");
}
END_TEST

/* ---- "exports": only connd_plugin_entry --------------------------------- */

/* The defined dynamic symbols of a shared object as "TYPE NAME" lines, in
 * nm's order, with nm's exit status in *status. */
static char *defined_dynamic_symbols(const char *path, int *status)
{
    char cmd[512], line[512], type, name[256];
    unsigned long long addr;
    size_t n = 0, cap = 4096;
    char *out = calloc(1, cap);
    FILE *f;

    ck_assert_ptr_nonnull(out);
    snprintf(cmd, sizeof(cmd), "nm -D --defined-only '%s' 2>&1", path);
    f = popen(cmd, "r");
    ck_assert_msg(f != NULL, "popen(%s) failed", cmd);
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "%llx %c %255s", &addr, &type, name) != 3) {
            /* Not a symbol line: keep it, so that a failure shows it. */
            snprintf(name, sizeof(name), "%.200s", line);
            type = '?';
        }
        if (n + strlen(name) + 4 >= cap) {
            out = realloc(out, cap *= 2);
            ck_assert_ptr_nonnull(out);
        }
        n += (size_t)sprintf(out + n, "%c %s\n", type, name);
    }
    *status = pclose(f);
    return out;
}

static const char *const exporting_plugins[] = {
    BPLUG("echo.so"),    BPLUG("discard.so"),   TPLUG("testplug.so"),
    TPLUG("bad_abi.so"), TPLUG("init_fail.so"), TPLUG("small_size.so"),
};

START_TEST(test_plugin_exports_only_connd_plugin_entry)
{
    const char *path = exporting_plugins[_i];
    int status;
    char *syms = defined_dynamic_symbols(path, &status);

    ck_assert_msg(status == 0, "nm -D failed on %s (status %d): %s", path, status, syms);
    ck_assert_msg(strcmp(syms, "T connd_plugin_entry\n") == 0,
                  "%s exports something other than exactly connd_plugin_entry:\n%s", path,
                  syms);
    free(syms);
}
END_TEST

/* The check above can fail: it sees no_entry.so's one export, which is not
 * the entry point. */
START_TEST(test_plugin_export_check_sees_a_wrong_export)
{
    int status;
    char *syms = defined_dynamic_symbols(TPLUG("no_entry.so"), &status);

    ck_assert_int_eq(status, 0);
    ck_assert_str_eq(syms, "T not_a_connd_plugin\n");
    free(syms);
}
END_TEST

/* ---- "daemon": bad plugins end to end ----------------------------------- */

struct daemon_case {
    const char *name;   /* instance name in the config */
    const char *file;   /* "file" in the config; NULL: filled in by the test */
    const char *path;   /* the path the error line must name; NULL: as file */
    const char *reason; /* and a substring of the reason */
};

static const struct daemon_case daemon_cases[] = {
    {"ghost", "nosuch.so", TPLUG("nosuch.so"), "No such file"},
    {"text", NULL, NULL, ""}, /* a text file in tmpdir */
    {"dir", NULL, NULL, ""},  /* tmpdir itself */
    {"noentry", "no_entry.so", TPLUG("no_entry.so"), "connd_plugin_entry"},
    {"future", "bad_abi.so", TPLUG("bad_abi.so"), "connd speaks 1"},
    {"tiny", TPLUG("small_size.so"), TPLUG("small_size.so"), " 16 "},
    {"broken", "init_fail.so", TPLUG("init_fail.so"), "init failed"},
};

START_TEST(test_plugin_bad_plugin_makes_connd_exit_1_with_one_line)
{
    const struct daemon_case *dc = &daemon_cases[_i];
    char file[128], json[1024], needle[128], *log = NULL, *copy, *save = NULL;
    const char *path;
    int rc, lines = 0;

    if (strcmp(dc->name, "text") == 0)
        path = write_text_plugin(file, sizeof(file));
    else if (strcmp(dc->name, "dir") == 0)
        path = tmpdir;
    else
        path = dc->path;
    snprintf(json, sizeof(json),
             "{\"control\":{\"path\":\"@DIR@/ctl.sock\"},\"plugin_dir\":\"@TPLUGINS@\","
             "\"plugins\":[{\"name\":\"%s\",\"file\":\"%s\"}]}",
             dc->name, dc->file ? dc->file : path);
    rc = daemon_run(json, NULL, 10000, &log);
    ck_assert_ptr_nonnull(log);
    /* Exactly 1: not 0, not a timeout, not death by a signal (-1). */
    ck_assert_msg(rc == 1, "connd exited %d for plugin %s; log:\n%s", rc, dc->name, log);
    ck_assert_msg(!strstr(log, "Sanitizer") && !strstr(log, "runtime error"),
                  "connd crashed:\n%s", log);
    ck_assert_msg(!strstr(log, "notice: ready"), "connd became ready:\n%s", log);

    /* One err line names the instance, the file and the reason. */
    snprintf(needle, sizeof(needle), "plugin %s", dc->name);
    copy = strdup(log);
    ck_assert_ptr_nonnull(copy);
    for (char *line = strtok_r(copy, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        if (!strstr(line, "err: ") || !strstr(line, needle))
            continue;
        lines++;
        ck_assert_msg(strstr(line, path), "err line does not name %s: %s", path, line);
        ck_assert_msg(strstr(line, dc->reason), "err line does not say \"%s\": %s",
                      dc->reason, line);
    }
    free(copy);
    ck_assert_msg(lines == 1, "%d err lines name \"%s\"; log:\n%s", lines, needle, log);
    if (strcmp(dc->name, "broken") == 0)
        assert_has(log, "plugin broken: init called");
    free(log);
}
END_TEST

/* The control run: the same config with a good plugin starts. */
START_TEST(test_plugin_good_plugin_config_starts_connd)
{
    struct daemon d;
    int rc;

    rc = daemon_start(&d,
                      "{\"control\":{\"path\":\"@DIR@/ctl.sock\"},"
                      "\"plugin_dir\":\"@TPLUGINS@\","
                      "\"plugins\":[{\"name\":\"good\",\"file\":\"testplug.so\"}]}",
                      NULL);
    if (rc != 0) {
        daemon_free(&d);
        ck_abort_msg("connd did not start with testplug.so");
    }
    rc = daemon_stop(&d, SIGTERM, 10000);
    ck_assert_msg(daemon_count_log(&d, "plugin good: loaded " TPLUG("testplug.so")) == 1,
                  "no load line:\n%s", d.log);
    daemon_free(&d);
    ck_assert_int_eq(rc, 0);
}
END_TEST

/* --check-config opens each plugin and checks its ABI without starting it. */
START_TEST(test_plugin_check_config_refuses_a_wrong_abi_without_init)
{
    static const char *const check[] = {"--check-config", NULL};
    char *log = NULL;
    int rc;

    rc = daemon_run("{\"plugin_dir\":\"@TPLUGINS@\","
                    "\"plugins\":[{\"name\":\"b\",\"file\":\"bad_abi.so\"}]}",
                    check, 10000, &log);
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(log, "abi 99, connd speaks 1"), "log:\n%s", log);
    free(log);
    /* init_fail.so loads fine: --check-config runs no init(), so it passes. */
    rc = daemon_run("{\"plugin_dir\":\"@TPLUGINS@\","
                    "\"plugins\":[{\"name\":\"i\",\"file\":\"init_fail.so\"}]}",
                    check, 10000, &log);
    ck_assert_msg(rc == 0 && !strstr(log, "init called"), "rc %d, log:\n%s", rc, log);
    free(log);
}
END_TEST

static Suite *plugin_suite(void)
{
    Suite *s = suite_create("plugin");
    TCase *tc = tcase_create("load");

    tcase_add_unchecked_fixture(tc, tmpdir_setup, tmpdir_teardown);
    tcase_add_test(tc, test_plugin_missing_file_names_path_and_enoent);
    tcase_add_test(tc, test_plugin_text_file_is_refused_as_not_a_shared_object);
    tcase_add_test(tc, test_plugin_directory_is_refused_naming_it);
    tcase_add_test(tc, test_plugin_without_entry_symbol_names_connd_plugin_entry);
    tcase_add_test(tc, test_plugin_wrong_abi_names_file_and_versions);
    tcase_add_test(tc, test_plugin_small_notify_table_names_file_and_sizes);
    tcase_add_test(tc, test_plugin_failed_init_is_refused_without_fini);
    tcase_add_test(tc, test_plugin_good_plugin_loads_logs_via_host_and_unloads);
    tcase_add_test(tc, test_plugin_two_instances_of_one_file_have_independent_state);
    suite_add_tcase(s, tc);

    tc = tcase_create("exports");
    tcase_add_loop_test(tc, test_plugin_exports_only_connd_plugin_entry, 0,
                        (int)(sizeof(exporting_plugins) / sizeof(exporting_plugins[0])));
    tcase_add_test(tc, test_plugin_export_check_sees_a_wrong_export);
    suite_add_tcase(s, tc);

    tc = tcase_create("daemon");
    tcase_add_unchecked_fixture(tc, tmpdir_setup, tmpdir_teardown);
    tcase_add_loop_test(tc, test_plugin_bad_plugin_makes_connd_exit_1_with_one_line, 0,
                        (int)(sizeof(daemon_cases) / sizeof(daemon_cases[0])));
    tcase_add_test(tc, test_plugin_good_plugin_config_starts_connd);
    tcase_add_test(tc, test_plugin_check_config_refuses_a_wrong_abi_without_init);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(plugin_suite());
    int failures;

    srunner_run_all(sr, CK_NORMAL);
    failures = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failures ? 1 : 0;
}
