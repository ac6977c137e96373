/*
 * test_generations.c: plugin reload generations. plugin.load of a loaded
 * name, or SIGHUP after the plugin's file changed, gives new connections
 * the new code while existing ones keep the old until they close or are
 * moved with conn.set_notify; the old code is unloaded after that.
 */
#include <check.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static struct daemon D;

/* One listener "l" served by plugin "tp" loaded from file_json. */
static void start(const char *file, const char *config)
{
    char cfg[1024];
    snprintf(cfg, sizeof(cfg),
             "{\"plugin_dir\": \"@PLUGINS@\", \"plugins\": [{\"name\": \"tp\", \"file\": \"%s\","
             " \"config\": %s}, {\"name\": \"echo\", \"file\": \"echo.so\"}],"
             " \"listeners\": [{\"name\": \"l\", \"host\": \"127.0.0.1\", \"port\": 0,"
             " \"plugin\": \"tp\"}]}",
             file, config);
    ck_assert_int_eq(daemon_start(&D, cfg, NULL), 0);
}

static void stop(void)
{
    ck_assert_int_eq(daemon_stop(&D, SIGTERM, 5000), 0);
    ck_assert_ptr_null(strstr(D.log, "Sanitizer"));
    daemon_free(&D);
}

/* Send text on fd and return what comes back (same length). */
static const char *roundtrip(int fd, const char *text)
{
    static char buf[64];
    size_t len = strlen(text);

    memset(buf, 0, sizeof(buf));
    ck_assert_int_eq(io_write_all(fd, text, len), 0);
    ck_assert_int_eq(io_read_exact(fd, buf, len), 0);
    return buf;
}

/* plugin.list entries named tp: their count, and the connections of the
 * given generation (-1 when that generation is not listed). */
static long generation_conns(int ctl, unsigned gen, size_t *count)
{
    json_t *reply = ctl_call(ctl, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"plugin.list\"}");
    json_t *list = json_object_get(reply, "result"), *p;
    long conns = -1;
    size_t i;

    ck_assert(json_is_array(list));
    *count = 0;
    json_array_foreach(list, i, p)
    {
        if (strcmp(json_string_value(json_object_get(p, "name")), "tp") != 0)
            continue;
        (*count)++;
        if (json_integer_value(json_object_get(p, "generation")) == (json_int_t)gen)
            conns = (long)json_integer_value(json_object_get(p, "connections"));
    }
    json_decref(reply);
    return conns;
}

START_TEST(test_generations_plugin_load_keeps_old_connections_on_old_code)
{
    int port, a, b, ctl;
    size_t n;
    json_t *reply;

    start("@TPLUGINS@/testplug.so", "{\"echo\": true}");
    port = daemon_port(&D, "l");
    a = tcp_connect("127.0.0.1", port);
    ck_assert_str_eq(roundtrip(a, "old"), "old");
    ctl = ctl_connect(&D);
    reply = ctl_callf(ctl, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"plugin.load\","
                           "\"params\":{\"name\":\"tp\",\"file\":\"%s/testplug.so\","
                           "\"config\":{\"echo\":true,\"sent\":\"upper\"}}}",
                      CONND_TEST_PLUGIN_DIR);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(reply, "result"),
                                                        "generation")),
                     2);
    json_decref(reply);

    b = tcp_connect("127.0.0.1", port);
    ck_assert_str_eq(roundtrip(b, "new"), "NEW"); /* generation 2 */
    ck_assert_str_eq(roundtrip(a, "still"), "still"); /* generation 1 */
    ck_assert_int_eq(generation_conns(ctl, 1, &n), 1);
    ck_assert_int_eq(generation_conns(ctl, 2, &n), 1);
    ck_assert_uint_eq(n, 2);

    close(a); /* the last connection of generation 1 */
    ck_assert(daemon_wait_log(&D, "plugin tp: generation 1 unloaded", 3000));
    ck_assert_int_eq(generation_conns(ctl, 1, &n), -1);
    ck_assert_uint_eq(n, 1);
    close(b);
    close(ctl);
    stop();
}
END_TEST

START_TEST(test_generations_set_notify_moves_a_connection_to_the_new_code)
{
    int port, a, ctl;
    size_t n;
    json_t *reply;

    start("@TPLUGINS@/testplug.so", "{\"echo\": true}");
    port = daemon_port(&D, "l");
    a = tcp_connect("127.0.0.1", port);
    ck_assert_str_eq(roundtrip(a, "abc"), "abc");
    ctl = ctl_connect(&D);
    json_decref(ctl_callf(ctl, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"plugin.load\","
                               "\"params\":{\"name\":\"tp\",\"file\":\"%s/testplug.so\","
                               "\"config\":{\"echo\":true,\"sent\":\"upper\"}}}",
                          CONND_TEST_PLUGIN_DIR));
    reply = ctl_call(ctl, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"conn.set_notify\","
                          "\"params\":{\"id\":1,\"plugin\":\"tp\"}}");
    ck_assert_ptr_nonnull(json_object_get(reply, "result"));
    json_decref(reply);
    /* Moved off generation 1, which had nothing else: unloaded at once. */
    ck_assert(daemon_wait_log(&D, "plugin tp: generation 1 unloaded", 3000));
    ck_assert_int_eq(generation_conns(ctl, 2, &n), 1);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(roundtrip(a, "moved"), "MOVED");
    close(a);
    close(ctl);
    stop();
}
END_TEST

START_TEST(test_generations_sighup_loads_a_changed_file_for_new_connections)
{
    char path[160], tmp[160], cmd[1024];
    int port, a, b, ctl;
    size_t n;

    /* The plugin file lives in a directory of the test's, to be replaced. */
    char dir[] = "/tmp/connd-gen-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/tp.so", dir);
    snprintf(tmp, sizeof(tmp), "%s/tp.so.new", dir);
    snprintf(cmd, sizeof(cmd), "cp %s/testplug.so %s", CONND_TEST_PLUGIN_DIR, path);
    ck_assert_int_eq(system(cmd), 0);
    start(path, "{\"echo\": true, \"sent\": \"upper\"}");
    port = daemon_port(&D, "l");
    a = tcp_connect("127.0.0.1", port);
    ck_assert_str_eq(roundtrip(a, "one"), "ONE");

    /* An unchanged file: a reload loads nothing new. */
    kill(D.pid, SIGHUP);
    ck_assert(daemon_wait_log(&D, "reload: done", 3000));
    ctl = ctl_connect(&D);
    generation_conns(ctl, 1, &n);
    ck_assert_uint_eq(n, 1);

    /* New code at the same path (echo.so, which does not upper-case),
     * moved into place the way package managers do. */
    snprintf(cmd, sizeof(cmd), "cp %s/echo.so %s && mv %s %s", CONND_PLUGIN_BUILD_DIR, tmp,
             tmp, path);
    ck_assert_int_eq(system(cmd), 0);
    kill(D.pid, SIGHUP);
    ck_assert(daemon_wait_log(&D, "generation 2 takes new connections", 3000));
    b = tcp_connect("127.0.0.1", port);
    ck_assert_str_eq(roundtrip(b, "two"), "two");  /* the new code */
    ck_assert_str_eq(roundtrip(a, "old"), "OLD");  /* still the old code */
    close(a);
    ck_assert(daemon_wait_log(&D, "plugin tp: generation 1 unloaded", 3000));
    close(b);
    close(ctl);
    stop();
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(test_generations_failed_load_keeps_the_current_generation)
{
    int port, a, ctl;
    size_t n;
    json_t *reply;

    start("@TPLUGINS@/testplug.so", "{\"echo\": true}");
    port = daemon_port(&D, "l");
    ctl = ctl_connect(&D);
    reply = ctl_callf(ctl, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"plugin.load\","
                           "\"params\":{\"name\":\"tp\",\"file\":\"%s/init_fail.so\"}}",
                      CONND_TEST_PLUGIN_DIR);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(reply, "error"),
                                                        "code")),
                     -32003);
    json_decref(reply);
    ck_assert_int_eq(generation_conns(ctl, 1, &n), 0);
    ck_assert_uint_eq(n, 1);
    a = tcp_connect("127.0.0.1", port);
    ck_assert_str_eq(roundtrip(a, "fine"), "fine");
    close(a);
    close(ctl);
    stop();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("generations");
    TCase *tc = tcase_create("generations");

    tcase_add_test(tc, test_generations_plugin_load_keeps_old_connections_on_old_code);
    tcase_add_test(tc, test_generations_set_notify_moves_a_connection_to_the_new_code);
    tcase_add_test(tc, test_generations_sighup_loads_a_changed_file_for_new_connections);
    tcase_add_test(tc, test_generations_failed_load_keeps_the_current_generation);
    tcase_set_timeout(tc, 30);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
