/*
 * test_config.c: the config file parser (daemon/config.c). "valid" checks
 * the fields and defaults of configs that parse, "errors" a table of bad
 * configs and the one-line message each must produce, "alloc" that a jansson
 * allocation failing at any point fails the parse cleanly.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef CONND_DEFAULT_PLUGIN_DIR
#define EXPECTED_PLUGIN_DIR CONND_DEFAULT_PLUGIN_DIR
#else
#define EXPECTED_PLUGIN_DIR CONFIG_DEFAULT_PLUGIN_DIR
#endif

/* The example of SPEC section 3, verbatim. */
static const char spec_example[] =
    "{\n"
    "  \"control\": { \"path\": \"/run/connd/control.sock\", \"mode\": \"0660\" },\n"
    "  \"plugin_dir\": \"/usr/lib/connd/plugins\",\n"
    "  \"shutdown_timeout_ms\": 5000,\n"
    "  \"plugins\": [\n"
    "    { \"name\": \"echo\",  \"file\": \"echo.so\" },\n"
    "    { \"name\": \"proxy\", \"file\": \"proxy.so\",\n"
    "      \"config\": { \"upstream\": \"127.0.0.1:8080\" } }\n"
    "  ],\n"
    "  \"listeners\": [\n"
    "    { \"name\": \"echo\", \"host\": \"127.0.0.1\", \"port\": \"7000\", "
    "\"plugin\": \"echo\",\n"
    "      \"limit\": 0, \"init_size\": 64, \"max_size\": 16384,\n"
    "      \"high_watermark\": 1048576, \"low_watermark\": 262144 }\n"
    "  ],\n"
    "  \"connections\": [\n"
    "    { \"name\": \"feed\", \"host\": \"example.org\", \"port\": \"9000\", "
    "\"plugin\": \"echo\",\n"
    "      \"from\": \"\", \"family\": \"any\" }\n"
    "  ]\n"
    "}\n";

/* Parses text that must be valid; the caller frees the result. */
static struct config *parse_ok(const char *text)
{
    struct config *cfg = NULL;
    char err[256] = "";
    int rc = config_parse(text, strlen(text), &cfg, err, sizeof(err));

    ck_assert_msg(rc == 0, "config_parse failed (%d): %s", rc, err);
    ck_assert_ptr_nonnull(cfg);
    return cfg;
}

/* A plugin table for configs that need one, and listener/connection wrappers. */
#define PLUGINS "\"plugins\":[{\"name\":\"echo\",\"file\":\"echo.so\"}]"
#define LISTENER(fields) "{" PLUGINS ",\"listeners\":[{" fields "}]}"
#define CONNECTION(fields) "{" PLUGINS ",\"connections\":[{" fields "}]}"
#define L_BASE "\"name\":\"l\",\"host\":\"h\",\"plugin\":\"echo\""
#define L_OK L_BASE ",\"port\":1"
#define C_BASE "\"name\":\"c\",\"host\":\"h\",\"plugin\":\"echo\""
#define C_OK C_BASE ",\"port\":1"

START_TEST(test_config_spec_example_parses_with_all_fields)
{
    struct config *cfg = parse_ok(spec_example);

    ck_assert_str_eq(cfg->control_path, "/run/connd/control.sock");
    ck_assert_uint_eq(cfg->control_mode, 0660);
    ck_assert_str_eq(cfg->plugin_dir, "/usr/lib/connd/plugins");
    ck_assert_uint_eq(cfg->shutdown_timeout_ms, 5000);
    ck_assert_uint_eq(cfg->close_timeout_ms, 10000);

    ck_assert_uint_eq(cfg->n_plugins, 2);
    ck_assert_str_eq(cfg->plugins[0].name, "echo");
    ck_assert_str_eq(cfg->plugins[0].file, "echo.so");
    ck_assert_str_eq(cfg->plugins[0].config_json, "{}");
    ck_assert_str_eq(cfg->plugins[1].name, "proxy");
    ck_assert_str_eq(cfg->plugins[1].file, "proxy.so");
    ck_assert_str_eq(cfg->plugins[1].config_json, "{\"upstream\":\"127.0.0.1:8080\"}");

    ck_assert_uint_eq(cfg->n_listeners, 1);
    ck_assert_str_eq(cfg->listeners[0].name, "echo");
    ck_assert_str_eq(cfg->listeners[0].host, "127.0.0.1");
    ck_assert_str_eq(cfg->listeners[0].port, "7000");
    ck_assert_uint_eq(cfg->listeners[0].port_num, 7000);
    ck_assert_str_eq(cfg->listeners[0].plugin, "echo");
    ck_assert_uint_eq(cfg->listeners[0].limit, 0);
    ck_assert_uint_eq(cfg->listeners[0].lim.init_size, 64);
    ck_assert_uint_eq(cfg->listeners[0].lim.max_size, 16384);
    ck_assert_uint_eq(cfg->listeners[0].lim.high_watermark, 1048576);
    ck_assert_uint_eq(cfg->listeners[0].lim.low_watermark, 262144);
    ck_assert_uint_eq(cfg->listeners[0].lim.max_pending, 67108864);

    ck_assert_uint_eq(cfg->n_connections, 1);
    ck_assert_str_eq(cfg->connections[0].name, "feed");
    ck_assert_str_eq(cfg->connections[0].host, "example.org");
    ck_assert_str_eq(cfg->connections[0].port, "9000");
    ck_assert_uint_eq(cfg->connections[0].port_num, 9000);
    ck_assert_str_eq(cfg->connections[0].plugin, "echo");
    ck_assert_str_eq(cfg->connections[0].from, "");
    ck_assert_int_eq(cfg->connections[0].family, CONFIG_FAMILY_ANY);
    ck_assert_uint_eq(cfg->connections[0].lim.max_pending, 67108864);

    ck_assert_int_eq(config_find_plugin(cfg, "proxy"), 1);
    ck_assert_int_eq(config_find_plugin(cfg, "nope"), -1);
    config_free(cfg);
}
END_TEST

START_TEST(test_config_empty_object_gets_every_default)
{
    struct config *cfg = parse_ok("{}");
    struct conn_limits d;

    ck_assert_str_eq(cfg->control_path, CONFIG_DEFAULT_CONTROL_PATH);
    ck_assert_uint_eq(cfg->control_mode, 0660);
    ck_assert_ptr_null(cfg->readonly_uids);
    ck_assert_uint_eq(cfg->n_readonly_uids, 0);
    ck_assert_ptr_null(cfg->admin_uids);
    ck_assert_uint_eq(cfg->n_admin_uids, 0);
    ck_assert_str_eq(cfg->plugin_dir, EXPECTED_PLUGIN_DIR);
    ck_assert_uint_eq(cfg->shutdown_timeout_ms, 5000);
    ck_assert_uint_eq(cfg->close_timeout_ms, 10000);
    ck_assert_uint_eq(cfg->n_plugins + cfg->n_listeners + cfg->n_connections, 0);
    config_free(cfg);

    config_limits_default(&d);
    ck_assert_uint_eq(d.init_size, 64);
    ck_assert_uint_eq(d.max_size, 16384);
    ck_assert_uint_eq(d.high_watermark, 1048576);
    ck_assert_uint_eq(d.low_watermark, 262144);
    ck_assert_uint_eq(d.max_pending, 67108864);
}
END_TEST

START_TEST(test_config_optional_entry_fields_get_defaults)
{
    struct config *cfg = parse_ok("{" PLUGINS ",\"listeners\":[{" L_OK "}],"
                                  "\"connections\":[{" C_OK "}]}");
    struct conn_limits d;

    config_limits_default(&d);
    ck_assert_uint_eq(cfg->listeners[0].limit, 0);
    ck_assert_mem_eq(&cfg->listeners[0].lim, &d, sizeof(d));
    ck_assert_mem_eq(&cfg->connections[0].lim, &d, sizeof(d));
    ck_assert_str_eq(cfg->connections[0].from, "");
    ck_assert_int_eq(cfg->connections[0].family, CONFIG_FAMILY_ANY);
    config_free(cfg);
}
END_TEST

START_TEST(test_config_port_integer_digits_and_service_name_resolve)
{
    struct config *cfg =
        parse_ok("{" PLUGINS ",\"listeners\":["
                 "{\"name\":\"a\",\"host\":\"h\",\"plugin\":\"echo\",\"port\":8080},"
                 "{\"name\":\"b\",\"host\":\"h\",\"plugin\":\"echo\",\"port\":\"8081\"},"
                 "{\"name\":\"c\",\"host\":\"h\",\"plugin\":\"echo\",\"port\":\"http\"},"
                 "{\"name\":\"d\",\"host\":\"h\",\"plugin\":\"echo\",\"port\":0}],"
                 "\"connections\":[{" C_BASE ",\"port\":\"http\"}]}");

    ck_assert_uint_eq(cfg->listeners[0].port_num, 8080);
    ck_assert_str_eq(cfg->listeners[0].port, "8080");
    ck_assert_uint_eq(cfg->listeners[1].port_num, 8081);
    ck_assert_str_eq(cfg->listeners[1].port, "8081");
    ck_assert_uint_eq(cfg->listeners[2].port_num, 80);
    ck_assert_str_eq(cfg->listeners[2].port, "http");
    ck_assert_uint_eq(cfg->listeners[3].port_num, 0); /* ephemeral */
    ck_assert_uint_eq(cfg->connections[0].port_num, 80);
    config_free(cfg);
}
END_TEST

START_TEST(test_config_mode_string_reads_as_octal)
{
    struct config *cfg = parse_ok("{\"control\":{\"mode\":\"0600\"}}");

    ck_assert_uint_eq(cfg->control_mode, 0600);
    config_free(cfg);
    cfg = parse_ok("{\"control\":{\"mode\":\"1770\"}}");
    ck_assert_uint_eq(cfg->control_mode, 01770);
    config_free(cfg);
    cfg = parse_ok("{\"control\":{\"mode\":\"640\"}}");
    ck_assert_uint_eq(cfg->control_mode, 0640);
    config_free(cfg);
}
END_TEST

START_TEST(test_config_control_uids_and_timeouts_are_read)
{
    struct config *cfg =
        parse_ok("{\"control\":{\"path\":\"/tmp/c.sock\",\"readonly_uids\":[0,1000],"
                 "\"admin_uids\":[4294967294]},\"shutdown_timeout_ms\":0,"
                 "\"close_timeout_ms\":86400000}");

    ck_assert_str_eq(cfg->control_path, "/tmp/c.sock");
    ck_assert_uint_eq(cfg->n_readonly_uids, 2);
    ck_assert_uint_eq(cfg->readonly_uids[0], 0);
    ck_assert_uint_eq(cfg->readonly_uids[1], 1000);
    ck_assert_uint_eq(cfg->n_admin_uids, 1);
    ck_assert_uint_eq(cfg->admin_uids[0], 4294967294u);
    ck_assert_uint_eq(cfg->shutdown_timeout_ms, 0);
    ck_assert_uint_eq(cfg->close_timeout_ms, 86400000);
    config_free(cfg);
}
END_TEST

START_TEST(test_config_connection_fields_and_absolute_plugin_path_are_kept)
{
    struct config *cfg =
        parse_ok("{\"plugins\":[{\"name\":\"x-1.b_2\",\"file\":\"/opt/p/x.so\","
                 "\"config\":{\"a\": [1, 2], \"b\": {}}}],"
                 "\"connections\":[{\"name\":\"c\",\"host\":\"::1\",\"port\":\"443\","
                 "\"plugin\":\"x-1.b_2\",\"from\":\"10.0.0.1\",\"family\":\"ipv6\"},"
                 "{\"name\":\"d\",\"host\":\"h\",\"port\":1,\"plugin\":\"x-1.b_2\","
                 "\"family\":\"ipv4\",\"max_size\":32,\"init_size\":32}]}");

    ck_assert_str_eq(cfg->plugins[0].file, "/opt/p/x.so");
    ck_assert_str_eq(cfg->plugins[0].config_json, "{\"a\":[1,2],\"b\":{}}");
    ck_assert_str_eq(cfg->connections[0].from, "10.0.0.1");
    ck_assert_int_eq(cfg->connections[0].family, CONFIG_FAMILY_IPV6);
    ck_assert_int_eq(cfg->connections[1].family, CONFIG_FAMILY_IPV4);
    ck_assert_uint_eq(cfg->connections[1].lim.init_size, 32);
    ck_assert_uint_eq(cfg->connections[1].lim.max_size, 32);
    config_free(cfg);
}
END_TEST

/* Absent limits follow explicit ones instead of contradicting them. */
START_TEST(test_config_absent_limits_follow_the_ones_given)
{
    struct config *cfg = parse_ok(
        "{" PLUGINS ",\"listeners\":["
        "{" L_BASE ",\"port\":1,\"high_watermark\":0},"
        "{\"name\":\"m\",\"host\":\"h\",\"plugin\":\"echo\",\"port\":2,\"max_size\":16},"
        "{\"name\":\"n\",\"host\":\"h\",\"plugin\":\"echo\",\"port\":3,"
        "\"high_watermark\":1099511627776}]}");

    ck_assert_uint_eq(cfg->listeners[0].lim.high_watermark, 0);
    ck_assert_uint_eq(cfg->listeners[0].lim.low_watermark, 0);
    ck_assert_uint_eq(cfg->listeners[1].lim.init_size, 16);
    ck_assert_uint_eq(cfg->listeners[2].lim.max_pending, 1099511627776u);
    config_free(cfg);
}
END_TEST

/* Listeners and connections are separate name spaces, as are plugins. */
START_TEST(test_config_same_name_in_different_sections_is_fine)
{
    struct config *cfg = parse_ok("{" PLUGINS ",\"listeners\":[{\"name\":\"echo\","
                                  "\"host\":\"h\",\"port\":1,\"plugin\":\"echo\"}],"
                                  "\"connections\":[{\"name\":\"echo\",\"host\":\"h\","
                                  "\"port\":1,\"plugin\":\"echo\"}]}");
    config_free(cfg);
}
END_TEST

START_TEST(test_config_load_reads_a_file)
{
    char path[] = "/tmp/test_config_XXXXXX", err[256] = "";
    struct config *cfg = NULL;
    int fd = mkstemp(path);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, spec_example, strlen(spec_example)),
                     (ssize_t)strlen(spec_example));
    close(fd);
    ck_assert_int_eq(config_load(path, &cfg, err, sizeof(err)), 0);
    unlink(path);
    ck_assert_uint_eq(cfg->n_plugins, 2);
    ck_assert_uint_eq(cfg->listeners[0].port_num, 7000);
    config_free(cfg);
}
END_TEST

struct bad_case {
    const char *json;
    const char *expect; /* a substring of the error line */
};

static const struct bad_case bad_cases[] = {
    /* Not JSON, or not an object */
    {"{", "line 1 column 1: "},
    {"{\"plugins\": [}", "line 1 column "},
    {"", "line 1 column 0: "},
    {"[]", "(root): expected object"},
    {"\"x\"", "(root): expected object"},
    {"{\"a\":1,\"a\":2}", "duplicate object key"},
    /* Unknown keys at each level */
    {"{\"frobnicate\":1}", "frobnicate: unknown key"},
    {"{\"control\":{\"owner\":\"root\"}}", "control.owner: unknown key"},
    {"{\"plugins\":[{\"name\":\"e\",\"file\":\"e.so\",\"x\":1}]}",
     "plugins[0].x: unknown key"},
    {LISTENER(L_OK ",\"frobnicate\":1"), "listeners[0].frobnicate: unknown key"},
    {CONNECTION(C_OK ",\"limit\":1"), "connections[0].limit: unknown key"},
    /* Wrong types */
    {"{\"control\":[]}", "control: expected object"},
    {"{\"control\":{\"path\":5}}", "control.path: expected string"},
    {"{\"control\":{\"path\":\"\"}}", "control.path: must not be empty"},
    {"{\"control\":{\"readonly_uids\":7}}", "control.readonly_uids: expected array"},
    {"{\"control\":{\"admin_uids\":[0,\"1\"]}}",
     "control.admin_uids[1]: expected integer"},
    {"{\"control\":{\"admin_uids\":[-1]}}",
     "control.admin_uids[0]: out of range (0..4294967294)"},
    {"{\"control\":{\"admin_uids\":[4294967295]}}",
     "control.admin_uids[0]: out of range (0..4294967294)"},
    {"{\"plugin_dir\":null}", "plugin_dir: expected string"},
    {"{\"shutdown_timeout_ms\":1.5}", "shutdown_timeout_ms: expected integer"},
    {"{\"shutdown_timeout_ms\":true}", "shutdown_timeout_ms: expected integer"},
    {"{\"shutdown_timeout_ms\":\"5000\"}", "shutdown_timeout_ms: expected integer"},
    {"{\"plugins\":{}}", "plugins: expected array"},
    {"{\"plugins\":[1]}", "plugins[0]: expected object"},
    {"{" PLUGINS ",\"listeners\":\"l\"}", "listeners: expected array"},
    {"{" PLUGINS ",\"connections\":[[]]}", "connections[0]: expected object"},
    {LISTENER(L_BASE ",\"port\":true"), "listeners[0].port: expected string or integer"},
    {LISTENER(L_BASE ",\"port\":80.5"), "listeners[0].port: expected string or integer"},
    {LISTENER(L_OK ",\"limit\":\"5\""), "listeners[0].limit: expected integer"},
    {LISTENER(L_OK ",\"max_pending\":1e9"), "listeners[0].max_pending: expected integer"},
    {CONNECTION(C_OK ",\"from\":1"), "connections[0].from: expected string"},
    {"{\"plugins\":[{\"name\":\"e\",\"file\":\"e.so\",\"config\":[]}]}",
     "plugins[0].config: expected object"},
    {"{\"plugins\":[{\"name\":\"e\",\"file\":\"e.so\",\"config\":\"{}\"}]}",
     "plugins[0].config: expected object"},
    /* Bad mode strings */
    {"{\"control\":{\"mode\":\"660x\"}}",
     "control.mode: expected an octal string like \"0660\""},
    {"{\"control\":{\"mode\":\"99\"}}", "control.mode: expected an octal string"},
    {"{\"control\":{\"mode\":\"\"}}", "control.mode: expected an octal string"},
    {"{\"control\":{\"mode\":\"0888\"}}", "control.mode: expected an octal string"},
    {"{\"control\":{\"mode\":\"017777\"}}", "control.mode: expected an octal string"},
    {"{\"control\":{\"mode\":660}}", "control.mode: expected an octal string"},
    /* Out of range */
    {"{\"shutdown_timeout_ms\":86400001}",
     "shutdown_timeout_ms: out of range (0..86400000)"},
    {"{\"close_timeout_ms\":0}", "close_timeout_ms: out of range (1..86400000)"},
    {LISTENER(L_BASE ",\"port\":70000"), "listeners[0].port: out of range (0..65535)"},
    {LISTENER(L_BASE ",\"port\":-1"), "listeners[0].port: out of range (0..65535)"},
    {LISTENER(L_BASE ",\"port\":\"70000\""),
     "listeners[0].port: out of range (0..65535)"},
    {LISTENER(L_BASE ",\"port\":\"99999999999999999999999\""),
     "listeners[0].port: out of range (0..65535)"},
    {LISTENER(L_BASE ",\"port\":\"nosuch\""),
     "listeners[0].port: unknown service \"nosuch\""},
    {LISTENER(L_BASE ",\"port\":\"\""), "listeners[0].port: must not be empty"},
    {CONNECTION(C_BASE ",\"port\":0"), "connections[0].port: out of range (1..65535)"},
    {CONNECTION(C_BASE ",\"port\":\"0\""),
     "connections[0].port: out of range (1..65535)"},
    {LISTENER(L_OK ",\"limit\":10000001"),
     "listeners[0].limit: out of range (0..10000000)"},
    {LISTENER(L_OK ",\"max_size\":0"),
     "listeners[0].max_size: out of range (1..67108864)"},
    {LISTENER(L_OK ",\"init_size\":0"),
     "listeners[0].init_size: out of range (1..67108864)"},
    {LISTENER(L_OK ",\"high_watermark\":1099511627777"),
     "listeners[0].high_watermark: out of range (0..1099511627776)"},
    {CONNECTION(C_OK ",\"low_watermark\":-5"),
     "connections[0].low_watermark: out of range (0..1099511627776)"},
    /* Limits that contradict each other */
    {LISTENER(L_OK ",\"low_watermark\":2000000"),
     "listeners[0].low_watermark: must not exceed high_watermark (1048576)"},
    {LISTENER(L_OK ",\"high_watermark\":0,\"low_watermark\":1"),
     "listeners[0].low_watermark: must be 0 when high_watermark is 0"},
    {LISTENER(L_OK ",\"init_size\":100,\"max_size\":50"),
     "listeners[0].init_size: must not exceed max_size (50)"},
    {CONNECTION(C_OK ",\"max_pending\":10"),
     "connections[0].max_pending: must not be less than high_watermark (1048576)"},
    /* Missing required keys */
    {"{\"plugins\":[{\"file\":\"e.so\"}]}", "plugins[0]: missing key \"name\""},
    {"{\"plugins\":[{\"name\":\"e\"}]}", "plugins[0]: missing key \"file\""},
    {LISTENER(L_BASE), "listeners[0]: missing key \"port\""},
    {LISTENER("\"name\":\"l\",\"port\":1,\"plugin\":\"echo\""),
     "listeners[0]: missing key \"host\""},
    {LISTENER("\"name\":\"l\",\"host\":\"h\",\"port\":1"),
     "listeners[0]: missing key \"plugin\""},
    {CONNECTION("\"host\":\"h\",\"port\":1,\"plugin\":\"echo\""),
     "connections[0]: missing key \"name\""},
    /* Names, and references between sections */
    {"{\"plugins\":[{\"name\":\"\",\"file\":\"e.so\"}]}",
     "plugins[0].name: must be 1 to 64"},
    {"{\"plugins\":[{\"name\":\"a b\",\"file\":\"e.so\"}]}",
     "plugins[0].name: must be 1 to 64"},
    {"{\"plugins\":[{\"name\":\"a/b\",\"file\":\"e.so\"}]}",
     "plugins[0].name: must be 1 to 64"},
    {"{\"plugins\":[{\"name\":\"x12345678901234567890123456789012345678901234567890123456"
     "78901234\",\"file\":\"e.so\"}]}",
     "plugins[0].name: must be 1 to 64"},
    {"{\"plugins\":[{\"name\":\"e\",\"file\":\"e.so\"},{\"name\":\"e\",\"file\":\"f.so\"}"
     "]}",
     "plugins[1].name: duplicate name \"e\""},
    {"{" PLUGINS
     ",\"listeners\":[{\"name\":\"echo\",\"host\":\"h\",\"port\":1,\"plugin\":"
     "\"echo\"},{\"name\":\"echo\",\"host\":\"h\",\"port\":2,\"plugin\":\"echo\"}]}",
     "listeners[1].name: duplicate name \"echo\""},
    {"{" PLUGINS ",\"connections\":[{" C_OK "},{" C_OK "}]}",
     "connections[1].name: duplicate name \"c\""},
    {LISTENER("\"name\":\"l\",\"host\":\"h\",\"port\":1,\"plugin\":\"nope\""),
     "listeners[0].plugin: no plugin named \"nope\""},
    {CONNECTION("\"name\":\"c\",\"host\":\"h\",\"port\":1,\"plugin\":\"Echo\""),
     "connections[0].plugin: no plugin named \"Echo\""},
    {LISTENER("\"name\":\"l\",\"host\":\"\",\"port\":1,\"plugin\":\"echo\""),
     "listeners[0].host: must not be empty"},
    /* family */
    {CONNECTION(C_OK ",\"family\":\"ipv5\""),
     "connections[0].family: expected \"any\", \"ipv4\" or \"ipv6\""},
    {CONNECTION(C_OK ",\"family\":4"), "connections[0].family: expected \"any\""},
    /* Plugin files */
    {"{\"plugins\":[{\"name\":\"e\",\"file\":\"../x.so\"}]}",
     "plugins[0].file: must be a file name in plugin_dir or an absolute path"},
    {"{\"plugins\":[{\"name\":\"e\",\"file\":\"a/b.so\"}]}",
     "plugins[0].file: must be a file name in plugin_dir or an absolute path"},
    {"{\"plugins\":[{\"name\":\"e\",\"file\":\"/usr/lib/../x.so\"}]}",
     "plugins[0].file: must be a file name in plugin_dir"},
    {"{\"plugins\":[{\"name\":\"e\",\"file\":\"..\"}]}",
     "plugins[0].file: must be a file name in plugin_dir"},
    {"{\"plugins\":[{\"name\":\"e\",\"file\":\"\"}]}",
     "plugins[0].file: must not be empty"},
    {"{\"plugins\":[{\"name\":\"e\",\"file\":3}]}", "plugins[0].file: expected string"},
};

START_TEST(test_config_bad_config_is_refused_with_key_path_and_reason)
{
    const struct bad_case *bc = &bad_cases[_i];
    struct config *cfg = NULL;
    char err[256] = "";
    int rc = config_parse(bc->json, strlen(bc->json), &cfg, err, sizeof(err));

    ck_assert_msg(rc == -EINVAL, "case %d (%s): rc %d", _i, bc->json, rc);
    ck_assert_ptr_null(cfg);
    ck_assert_msg(strstr(err, bc->expect) != NULL,
                  "case %d (%s): got \"%s\", want \"%s\"", _i, bc->json, err, bc->expect);
    ck_assert_ptr_null(strchr(err, '\n'));
}
END_TEST

START_TEST(test_config_unknown_key_names_its_path)
{
    const char *text = LISTENER(L_OK ",\"frobnicate\":1");
    struct config *cfg = NULL;
    char err[256];

    ck_assert_int_eq(config_parse(text, strlen(text), &cfg, err, sizeof(err)), -EINVAL);
    ck_assert_str_eq(err, "listeners[0].frobnicate: unknown key");
}
END_TEST

/* Keys come from the file: a newline in one must not split the error line. */
START_TEST(test_config_error_stays_one_line_for_hostile_keys)
{
    const char *text = "{\"control\":{\"a\\nb\":1}}";
    struct config *cfg = NULL;
    char err[256];

    ck_assert_int_eq(config_parse(text, strlen(text), &cfg, err, sizeof(err)), -EINVAL);
    ck_assert_str_eq(err, "control.a?b: unknown key");
}
END_TEST

START_TEST(test_config_error_is_truncated_into_a_small_buffer)
{
    const char *text = LISTENER(L_OK ",\"frobnicate\":1");
    struct config *cfg = NULL;
    char err[12];

    memset(err, 'x', sizeof(err));
    ck_assert_int_eq(config_parse(text, strlen(text), &cfg, err, sizeof(err)), -EINVAL);
    ck_assert_str_eq(err, "listeners[0");
    ck_assert_int_eq(config_parse(text, strlen(text), &cfg, NULL, 0), -EINVAL);
}
END_TEST

START_TEST(test_config_load_of_missing_file_names_the_path)
{
    const char *path = "/nonexistent/connd/test.json";
    struct config *cfg = NULL;
    char err[256] = "";

    ck_assert_int_eq(config_load(path, &cfg, err, sizeof(err)), -ENOENT);
    ck_assert_ptr_null(cfg);
    ck_assert_msg(strncmp(err, "/nonexistent/connd/test.json: ", 30) == 0, "got %s", err);
}
END_TEST

START_TEST(test_config_load_prefixes_parse_errors_with_the_path)
{
    char path[] = "/tmp/test_config_XXXXXX", err[256] = "", want[300];
    struct config *cfg = NULL;
    int fd = mkstemp(path);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "{\"x\":1}", 7), 7);
    close(fd);
    ck_assert_int_eq(config_load(path, &cfg, err, sizeof(err)), -EINVAL);
    unlink(path);
    ck_assert_ptr_null(cfg);
    snprintf(want, sizeof(want), "%s: x: unknown key", path);
    ck_assert_str_eq(err, want);
}
END_TEST

START_TEST(test_config_load_refuses_a_file_over_one_mib)
{
    char path[] = "/tmp/test_config_XXXXXX", err[256] = "";
    static char spaces[1024 * 1024];
    struct config *cfg = NULL;
    int fd = mkstemp(path);

    ck_assert_int_ge(fd, 0);
    memset(spaces, ' ', sizeof(spaces));
    ck_assert_int_eq(write(fd, "{}", 2), 2);
    ck_assert_int_eq(write(fd, spaces, sizeof(spaces)), (ssize_t)sizeof(spaces));
    close(fd);
    ck_assert_int_eq(config_load(path, &cfg, err, sizeof(err)), -EINVAL);
    unlink(path);
    ck_assert_ptr_null(cfg);
    ck_assert_msg(strstr(err, ": file too large") != NULL, "got %s", err);
}
END_TEST

/* A jansson allocator that fails call number fail_at only. Each test runs in
 * its own process (CK_FORK), so these statics do not leak between tests. */
static unsigned long alloc_calls, fail_at;

static void *failing_malloc(size_t size)
{
    return ++alloc_calls == fail_at ? NULL : malloc(size);
}

/*
 * Fails each of jansson's allocations in turn, until a run makes fewer calls
 * than the one to fail. A run that hit its failure must fail cleanly, or may
 * succeed: jansson 2.14 ignores a failed growth of its lexer buffer (jansson
 * issue #362) and parses on with a byte missing; nothing config.c can see.
 */
START_TEST(test_config_alloc_failure_at_any_call_fails_cleanly)
{
    unsigned long failures = 0;
    struct config *cfg = NULL;
    char err[256];
    int rc = -1;

    for (fail_at = 1; fail_at < 100000; fail_at++) {
        alloc_calls = 0;
        json_set_alloc_funcs(failing_malloc, free);
        rc = config_parse(spec_example, strlen(spec_example), &cfg, err, sizeof(err));
        json_set_alloc_funcs(malloc, free);
        if (alloc_calls < fail_at)
            break;
        if (rc == 0) {
            config_free(cfg);
            cfg = NULL;
            continue;
        }
        ck_assert_msg(rc == -ENOMEM || rc == -EINVAL, "fail_at %lu: rc %d", fail_at, rc);
        ck_assert_ptr_null(cfg);
        ck_assert_msg(err[0] != '\0', "fail_at %lu: no message", fail_at);
        failures++;
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_gt(failures, 50);
    ck_assert_str_eq(cfg->control_path, "/run/connd/control.sock");
    ck_assert_str_eq(cfg->plugins[1].config_json, "{\"upstream\":\"127.0.0.1:8080\"}");
    config_free(cfg);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("valid");

    tcase_add_test(tc, test_config_spec_example_parses_with_all_fields);
    tcase_add_test(tc, test_config_empty_object_gets_every_default);
    tcase_add_test(tc, test_config_optional_entry_fields_get_defaults);
    tcase_add_test(tc, test_config_port_integer_digits_and_service_name_resolve);
    tcase_add_test(tc, test_config_mode_string_reads_as_octal);
    tcase_add_test(tc, test_config_control_uids_and_timeouts_are_read);
    tcase_add_test(tc, test_config_connection_fields_and_absolute_plugin_path_are_kept);
    tcase_add_test(tc, test_config_absent_limits_follow_the_ones_given);
    tcase_add_test(tc, test_config_same_name_in_different_sections_is_fine);
    tcase_add_test(tc, test_config_load_reads_a_file);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_loop_test(tc, test_config_bad_config_is_refused_with_key_path_and_reason, 0,
                        (int)(sizeof(bad_cases) / sizeof(bad_cases[0])));
    tcase_add_test(tc, test_config_unknown_key_names_its_path);
    tcase_add_test(tc, test_config_error_stays_one_line_for_hostile_keys);
    tcase_add_test(tc, test_config_error_is_truncated_into_a_small_buffer);
    tcase_add_test(tc, test_config_load_of_missing_file_names_the_path);
    tcase_add_test(tc, test_config_load_prefixes_parse_errors_with_the_path);
    tcase_add_test(tc, test_config_load_refuses_a_file_over_one_mib);
    suite_add_tcase(s, tc);

    tc = tcase_create("alloc");
    tcase_add_test(tc, test_config_alloc_failure_at_any_call_fails_cleanly);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(config_suite());
    int failures;

    srunner_run_all(sr, CK_NORMAL);
    failures = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failures ? 1 : 0;
}
