/*
 * test_install.c: the plugin author's kit, end to end (cmake/packaging.cmake,
 * examples/plugin-template/). Every test first stages the build tree with
 * `DESTDIR=<tmp> cmake --install <build> --prefix /usr`. "layout" checks
 * what lands there; "pkgconfig" what connd-plugin.pc says about it;
 * "template" configures and builds examples/plugin-template against the
 * staged tree through pkg-config (PKG_CONFIG_PATH + PKG_CONFIG_SYSROOT_DIR),
 * checks that the plugin exports only connd_plugin_entry and that its own
 * install rule puts it in the kit's plugindir, then loads it by absolute
 * path into the build tree's connd and talks to it over a socket.
 *
 * The build tree is found by walking up from connd (CONND_BIN) to the first
 * directory with a CMakeCache.txt whose connd_SOURCE_DIR is
 * CONND_SOURCE_DIR, rather than by cutting "/daemon/connd" off the path: it
 * survives a move of the daemon's directory and multi-config layouts, and
 * the cache also names the cmake, generator, compiler and pkg-config this
 * tree was built with, which the template build reuses (no network, no
 * tool the main build did not already need).
 *
 * Every child process runs in its own process group and is killed with its
 * children after a deadline; its output goes to a file that a failing
 * assertion prints.
 */
#include "harness.h"

#include <check.h>
#include <connd/plugin.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define STR_(x) #x
#define STR(x) STR_(x)

#define STEP_TIMEOUT_MS 60000 /* one cmake or compiler run */
#define TEXT_MAX 8192         /* a captured output shown on failure */

/* The bundled plugins SPEC section 4 names; the install must carry them. */
static const char *const bundled[] = {"echo.so", "proxy.so", "discard.so", "framing.so"};

/* ---- small helpers ------------------------------------------------------ */

/* snprintf that fails the test instead of truncating. */
static char *fmt(char *buf, size_t len, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
static char *fmt(char *buf, size_t len, const char *format, ...)
{
    va_list ap;
    int n;

    va_start(ap, format);
    n = vsnprintf(buf, len, format, ap);
    va_end(ap);
    ck_assert_msg(n >= 0 && (size_t)n < len, "path or text too long: %s", buf);
    return buf;
}

/* The whole file as a NUL-terminated string (malloc'd), or NULL. At most
 * the last TEXT_MAX bytes when `tail` is set, for failure messages. */
static char *slurp(const char *path, bool tail)
{
    FILE *f = fopen(path, "r");
    long size;
    char *text;

    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    if (tail && size > TEXT_MAX)
        fseek(f, size - TEXT_MAX, SEEK_SET);
    else
        fseek(f, 0, SEEK_SET);
    text = calloc(1, (size_t)(size > 0 ? size : 0) + 1);
    if (text && size > 0 && fread(text, 1, (size_t)size, f) == 0 && ferror(f)) {
        free(text);
        text = NULL;
    }
    fclose(f);
    return text;
}

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Remove trailing whitespace (a command's final newline) in place. */
static char *chomp(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return (flag == FTW_DP ? rmdir(path) : unlink(path)) < 0 && errno != ENOENT ? -1 : 0;
}

/*
 * Run argv[0] (searched in PATH) with the environment changed by env
 * ("NAME=value" sets, "NAME" unsets; NULL-terminated, may be NULL), stdout
 * and stderr appended to log_path, in its own process group, which is
 * killed after timeout_ms. Returns the exit code, or -1 on a timeout, a
 * signal or a failure to start (the log says which).
 */
static int run(const char *log_path, int timeout_ms, const char *const *env,
               const char *const *argv)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    int fd, st;
    FILE *log;
    pid_t pid;

    if ((fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) < 0)
        return -1;
    if ((log = fdopen(dup(fd), "a"))) {
        fprintf(log, "$");
        for (int i = 0; env && env[i]; i++)
            fprintf(log, " %s%s", strchr(env[i], '=') ? "" : "-u ", env[i]);
        for (int i = 0; argv[i]; i++)
            fprintf(log, " %s", argv[i]);
        fprintf(log, "\n");
        fclose(log);
    }
    if ((pid = fork()) < 0) {
        close(fd);
        return -1;
    }
    if (pid == 0) {
        setpgid(0, 0);
        for (int i = 0; env && env[i]; i++) {
            const char *eq = strchr(env[i], '=');
            if (eq) {
                char name[128];
                snprintf(name, sizeof(name), "%.*s", (int)(eq - env[i]), env[i]);
                setenv(name, eq + 1, 1);
            } else {
                unsetenv(env[i]);
            }
        }
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        execvp(argv[0], (char *const *)argv);
        dprintf(STDERR_FILENO, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fd);
    setpgid(pid, pid); /* also here, so that the kill below cannot miss */
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        if (r < 0 && errno != EINTR)
            return -1;
        if (now_ms() >= end)
            break;
        usleep(20000);
    }
    kill(-pid, SIGKILL);
    waitpid(pid, &st, 0);
    if ((fd = open(log_path, O_WRONLY | O_APPEND | O_CLOEXEC)) >= 0) {
        dprintf(fd, "(killed after %d ms)\n", timeout_ms);
        close(fd);
    }
    return -1;
}

/* ---- the build tree, from its CMakeCache.txt ---------------------------- */

/* The value of `key` ("KEY:TYPE=value" lines) in the cache at path, copied
 * into out; false when absent. */
static bool cache_get(const char *path, const char *key, char *out, size_t len)
{
    FILE *f = fopen(path, "r");
    size_t kl = strlen(key);
    char line[4096];
    bool found = false;

    if (!f)
        return false;
    while (!found && fgets(line, sizeof(line), f)) {
        char *colon = strchr(line, ':'), *eq;
        if (!colon || (size_t)(colon - line) != kl || strncmp(line, key, kl) != 0 ||
            !(eq = strchr(colon, '=')))
            continue;
        snprintf(out, len, "%s", chomp(eq + 1));
        found = true;
    }
    fclose(f);
    return found;
}

/* Whether dir is the build tree of this source tree. */
static bool is_our_build_dir(const char *dir)
{
    char cache[PATH_MAX + 32], src[PATH_MAX], real_src[PATH_MAX], real_ours[PATH_MAX];

    fmt(cache, sizeof(cache), "%s/CMakeCache.txt", dir);
    if (!cache_get(cache, "connd_SOURCE_DIR", src, sizeof(src)))
        return false;
    return realpath(src, real_src) && realpath(CONND_SOURCE_DIR, real_ours) &&
           strcmp(real_src, real_ours) == 0;
}

/* ---- the staged kit (checked fixture: one per test) --------------------- */

struct kit {
    char build[PATH_MAX];   /* the build tree */
    char cache[PATH_MAX];   /* its CMakeCache.txt */
    char cmake[PATH_MAX];   /* the cmake that configured it */
    char pkgconf[PATH_MAX]; /* pkg-config */
    char tmp[96];           /* this test's dir under tcase_dir, removed by teardown */
    char dest[PATH_MAX];    /* DESTDIR */
    char pcdir[PATH_MAX];   /* DESTDIR + <prefix>/lib.../pkgconfig */
    char log[PATH_MAX];     /* output of every child */
};

static struct kit K;
static struct daemon D; /* the "template" load test's daemon, freed by teardown */
/* One temp dir per TCase, made and removed in the parent process by the
 * unchecked fixture: a failed assertion ends a forked test without its
 * teardown, and Check then kills the test's process group, so only the
 * parent can be relied on to clean up. Each test works in its own
 * subdirectory. */
static char tcase_dir[64];

/* The log so far, for a failure message (malloc'd). */
static char *kit_log(void)
{
    char *text = slurp(K.log, true);
    return text ? text : strdup("(no output)");
}

/* Find "<dest>/usr/<lib*>/pkgconfig/connd-plugin.pc": the libdir may be lib,
 * lib64 or lib/<multiarch>, as GNUInstallDirs decided at configure time. */
static bool find_pcdir(void)
{
    static const char *const candidates[] = {"lib", "lib64", "lib32", "libx32"};
    char base[PATH_MAX + 64], pc[PATH_MAX + 128];
    char libdir[256] = "";

    /* The multiarch libdir (Debian: lib/x86_64-linux-gnu) is whatever
     * CMAKE_INSTALL_LIBDIR says; try it first. */
    if (cache_get(K.cache, "CMAKE_INSTALL_LIBDIR", libdir, sizeof(libdir)) &&
        libdir[0] != '/') {
        fmt(base, sizeof(base), "%s/usr/%s/pkgconfig", K.dest, libdir);
        fmt(pc, sizeof(pc), "%s/connd-plugin.pc", base);
        if (is_file(pc)) {
            fmt(K.pcdir, sizeof(K.pcdir), "%s", base);
            return true;
        }
    }
    for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++) {
        fmt(base, sizeof(base), "%s/usr/%s/pkgconfig", K.dest, candidates[i]);
        fmt(pc, sizeof(pc), "%s/connd-plugin.pc", base);
        if (is_file(pc)) {
            fmt(K.pcdir, sizeof(K.pcdir), "%s", base);
            return true;
        }
    }
    return false;
}

static void setup(void)
{
    char dir[PATH_MAX], *slash;
    int rc;

    memset(&K, 0, sizeof(K));
    memset(&D, 0, sizeof(D));
    D.err_fd = -1;
    /* Walk up from connd's directory to the build tree. */
    ck_assert_ptr_nonnull(realpath(CONND_BIN, dir));
    for (;;) {
        ck_assert_msg((slash = strrchr(dir, '/')) != NULL && slash != dir,
                      "no build tree of %s above %s", CONND_SOURCE_DIR, CONND_BIN);
        *slash = '\0';
        if (is_our_build_dir(dir))
            break;
    }
    fmt(K.build, sizeof(K.build), "%s", dir);
    fmt(K.cache, sizeof(K.cache), "%s/CMakeCache.txt", K.build);
    if (!cache_get(K.cache, "CMAKE_COMMAND", K.cmake, sizeof(K.cmake)))
        fmt(K.cmake, sizeof(K.cmake), "cmake");
    if (!cache_get(K.cache, "PKG_CONFIG_EXECUTABLE", K.pkgconf, sizeof(K.pkgconf)) ||
        !K.pkgconf[0])
        fmt(K.pkgconf, sizeof(K.pkgconf), "pkg-config");

    fmt(K.tmp, sizeof(K.tmp), "%s/kit-XXXXXX", tcase_dir);
    ck_assert_ptr_nonnull(mkdtemp(K.tmp));
    fmt(K.dest, sizeof(K.dest), "%s/dest", K.tmp);
    fmt(K.log, sizeof(K.log), "%s/output.log", K.tmp);

    const char *env[] = {NULL, "MAKEFLAGS", "MFLAGS", "MAKELEVEL", NULL};
    char destdir[PATH_MAX + 16];
    env[0] = fmt(destdir, sizeof(destdir), "DESTDIR=%s", K.dest);
    const char *argv[] = {K.cmake, "--install", K.build, "--prefix", "/usr", NULL};
    rc = run(K.log, STEP_TIMEOUT_MS, env, argv);
    if (rc != 0) {
        char *text = kit_log();
        ck_abort_msg("cmake --install exited %d:\n%s", rc, text);
    }
    ck_assert_msg(find_pcdir(), "no lib*/pkgconfig/connd-plugin.pc under %s/usr", K.dest);
}

static void tcase_setup(void)
{
    snprintf(tcase_dir, sizeof(tcase_dir), "/tmp/connd-install-XXXXXX");
    if (!mkdtemp(tcase_dir)) {
        perror("mkdtemp");
        abort();
    }
}

static void tcase_teardown(void)
{
    if (tcase_dir[0] && nftw(tcase_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) < 0)
        fprintf(stderr, "could not remove %s\n", tcase_dir);
    tcase_dir[0] = '\0';
}

static void teardown(void)
{
    if (D.log)
        daemon_free(&D);
    if (K.tmp[0] && nftw(K.tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS) < 0)
        fprintf(stderr, "could not remove %s\n", K.tmp);
    memset(&K, 0, sizeof(K));
}

/* pkg-config `arg` connd-plugin against the staged kit only (PKG_CONFIG_LIBDIR is
 * its pkgconfig dir), with PKG_CONFIG_SYSROOT_DIR set to DESTDIR when
 * `sysroot`. Returns its stdout, chomped (malloc'd); fails the test when
 * it exits non-zero. */
static char *pkgconf(bool sysroot, const char *arg)
{
    char out[PATH_MAX + 64], libdir[PATH_MAX + 32], sroot[PATH_MAX + 32];
    const char *env[] = {
        fmt(libdir, sizeof(libdir), "PKG_CONFIG_LIBDIR=%s", K.pcdir), "PKG_CONFIG_PATH",
        sysroot ? fmt(sroot, sizeof(sroot), "PKG_CONFIG_SYSROOT_DIR=%s", K.dest)
                : "PKG_CONFIG_SYSROOT_DIR",
        NULL};
    const char *argv[] = {K.pkgconf, arg, "connd-plugin", NULL};
    char *text;
    int rc;

    fmt(out, sizeof(out), "%s/pkg-config.out", K.tmp);
    unlink(out);
    rc = run(out, 10000, env, argv);
    text = slurp(out, false);
    ck_assert_ptr_nonnull(text);
    ck_assert_msg(rc == 0, "pkg-config %s exited %d:\n%s", arg, rc, text);
    /* Drop the "$ command" line run() put first. */
    char *body = strchr(text, '\n');
    body = body ? body + 1 : text + strlen(text);
    memmove(text, body, strlen(body) + 1);
    return chomp(text);
}

/* ---- "layout" ----------------------------------------------------------- */

START_TEST(test_install_stages_binary_header_pc_doc_and_bundled_plugins)
{
    char path[2 * PATH_MAX], *src, *inst, *plugindir, *text;
    const char *argv[] = {path, "--version", NULL};
    int rc;

    fmt(path, sizeof(path), "%s/usr/bin/connd", K.dest);
    ck_assert_msg(access(path, X_OK) == 0, "%s is not executable", path);
    /* The installed binary runs (no build-tree RPATH left behind). */
    rc = run(K.log, 10000, NULL, argv);
    text = kit_log();
    ck_assert_msg(rc == 0, "connd --version exited %d:\n%s", rc, text);
    ck_assert_msg(
        strstr(text, "connd " CONND_VERSION " (plugin abi " STR(CONND_PLUGIN_ABI) ")"),
        "unexpected --version output:\n%s", text);
    free(text);

    fmt(path, sizeof(path), "%s/usr/include/connd/plugin.h", K.dest);
    ck_assert_ptr_nonnull(inst = slurp(path, false));
    ck_assert_ptr_nonnull(src = slurp(CONND_SOURCE_DIR "/include/connd/plugin.h", false));
    ck_assert_msg(strcmp(inst, src) == 0, "%s differs from the source header", path);
    free(inst);
    free(src);

    fmt(path, sizeof(path), "%s/usr/share/doc/connd/writing-plugins.md", K.dest);
    ck_assert_msg(is_file(path), "%s missing", path);

    /* The bundled plugins are where the .pc says connd looks for them. */
    plugindir = pkgconf(false, "--variable=plugindir");
    ck_assert_msg(plugindir[0] == '/', "plugindir \"%s\" is not absolute", plugindir);
    for (size_t i = 0; i < sizeof(bundled) / sizeof(bundled[0]); i++) {
        fmt(path, sizeof(path), "%s%s/%s", K.dest, plugindir, bundled[i]);
        ck_assert_msg(is_file(path), "bundled plugin %s missing", path);
    }
    free(plugindir);
}
END_TEST

/* ---- "pkgconfig" -------------------------------------------------------- */

START_TEST(test_install_pc_names_prefix_version_abi_and_plugin_flags)
{
    char want[PATH_MAX + 32], *s;

    s = pkgconf(false, "--modversion");
    ck_assert_str_eq(s, CONND_VERSION);
    free(s);
    s = pkgconf(false, "--variable=abi");
    ck_assert_str_eq(s, STR(CONND_PLUGIN_ABI));
    free(s);
    /* The prefix given to `cmake --install --prefix`, not the configured
     * one, and without DESTDIR. */
    s = pkgconf(false, "--variable=prefix");
    ck_assert_str_eq(s, "/usr");
    free(s);
    s = pkgconf(false, "--variable=includedir");
    ck_assert_str_eq(s, "/usr/include");
    free(s);
    /* Staged: the sysroot leads to the staged header. */
    s = pkgconf(true, "--cflags");
    fmt(want, sizeof(want), "-I%s/usr/include", K.dest);
    ck_assert_msg(strstr(s, want), "--cflags \"%s\" lacks %s", s, want);
    ck_assert_msg(strstr(s, "-fvisibility=hidden"), "--cflags \"%s\" lacks visibility",
                  s);
    ck_assert_msg(strstr(s, "-fPIC"), "--cflags \"%s\" lacks -fPIC", s);
    free(s);
    /* A plugin links against no connd library. */
    s = pkgconf(true, "--libs");
    ck_assert_str_eq(s, "");
    free(s);
}
END_TEST

/* ---- "template" --------------------------------------------------------- */

/* Configure and build examples/plugin-template against the staged kit, the
 * way its README says, into K.tmp/template; *so is the built plugin. */
static void build_template(char *so, size_t so_len)
{
    char bdir[PATH_MAX], gen[256] = "", cc[PATH_MAX] = "", type[64] = "";
    char pcpath[PATH_MAX + 32], sysroot[PATH_MAX + 32], gen_arg[300],
        cc_arg[PATH_MAX + 32];
    char type_arg[96];
    const char *env[] = {
        fmt(pcpath, sizeof(pcpath), "PKG_CONFIG_PATH=%s", K.pcdir),
        fmt(sysroot, sizeof(sysroot), "PKG_CONFIG_SYSROOT_DIR=%s", K.dest),
        "PKG_CONFIG_LIBDIR",
        "DESTDIR",
        "MAKEFLAGS",
        "MFLAGS",
        "MAKELEVEL",
        NULL};
    const char *configure[16], *build[] = {K.cmake, "--build", bdir, NULL};
    int n = 0, rc;

    fmt(bdir, sizeof(bdir), "%s/template", K.tmp);
    configure[n++] = K.cmake;
    configure[n++] = "-S";
    configure[n++] = CONND_SOURCE_DIR "/examples/plugin-template";
    configure[n++] = "-B";
    configure[n++] = bdir;
    configure[n++] = "-DPLUGIN_WERROR=ON";
    /* The generator and compiler the main tree was built with are known to
     * be installed; the environment's defaults need not be. */
    if (cache_get(K.cache, "CMAKE_GENERATOR", gen, sizeof(gen)) && gen[0]) {
        configure[n++] = "-G";
        configure[n++] = fmt(gen_arg, sizeof(gen_arg), "%s", gen);
    }
    if (cache_get(K.cache, "CMAKE_C_COMPILER", cc, sizeof(cc)) && cc[0])
        configure[n++] = fmt(cc_arg, sizeof(cc_arg), "-DCMAKE_C_COMPILER=%s", cc);
    if (cache_get(K.cache, "CMAKE_BUILD_TYPE", type, sizeof(type)) && type[0])
        configure[n++] = fmt(type_arg, sizeof(type_arg), "-DCMAKE_BUILD_TYPE=%s", type);
    configure[n] = NULL;

    rc = run(K.log, STEP_TIMEOUT_MS, env, configure);
    if (rc != 0) {
        char *text = kit_log();
        ck_abort_msg("configuring the template exited %d:\n%s", rc, text);
    }
    rc = run(K.log, STEP_TIMEOUT_MS, env, build);
    if (rc != 0) {
        char *text = kit_log();
        ck_abort_msg("building the template exited %d:\n%s", rc, text);
    }
    fmt(so, so_len, "%s/upper.so", bdir);
    ck_assert_msg(is_file(so), "the template built no %s", so);
}

/* Defined dynamic symbols of path, one "TYPE NAME" line each (malloc'd). */
static char *exports(const char *path)
{
    char out[PATH_MAX + 32], line[512], name[256], type, *text;
    const char *argv[] = {"nm", "-D", "--defined-only", path, NULL};
    unsigned long long addr;
    size_t n = 0;
    FILE *f;
    int rc;

    fmt(out, sizeof(out), "%s/nm.out", K.tmp);
    unlink(out);
    rc = run(out, 10000, NULL, argv);
    ck_assert_msg(rc == 0, "nm -D %s exited %d", path, rc);
    ck_assert_ptr_nonnull(f = fopen(out, "r"));
    ck_assert_ptr_nonnull(text = calloc(1, TEXT_MAX));
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "%llx %c %255s", &addr, &type, name) == 3 && n + 300 < TEXT_MAX)
            n += (size_t)snprintf(text + n, TEXT_MAX - n, "%c %s\n", type, name);
    fclose(f);
    return text;
}

START_TEST(test_install_template_builds_with_one_export_and_installs_to_plugindir)
{
    char so[PATH_MAX], bdir[PATH_MAX], tdest[PATH_MAX], dir[PATH_MAX], path[3 * PATH_MAX];
    char destdir[PATH_MAX + 16], *syms, *plugindir;
    int rc;

    build_template(so, sizeof(so));
    syms = exports(so);
    ck_assert_msg(strcmp(syms, "T connd_plugin_entry\n") == 0,
                  "%s exports something other than exactly connd_plugin_entry:\n%s", so,
                  syms);
    free(syms);

    /* Its install rule puts it into the kit's plugindir (below a DESTDIR of
     * its own here; with a sysroot, pkgconf prefixes the directory too). */
    fmt(bdir, sizeof(bdir), "%s/template", K.tmp);
    fmt(tdest, sizeof(tdest), "%s/template-dest", K.tmp);
    const char *env[] = {fmt(destdir, sizeof(destdir), "DESTDIR=%s", tdest), "MAKEFLAGS",
                         NULL};
    const char *argv[] = {K.cmake, "--install", bdir, NULL};
    rc = run(K.log, STEP_TIMEOUT_MS, env, argv);
    if (rc != 0) {
        char *text = kit_log();
        ck_abort_msg("installing the template exited %d:\n%s", rc, text);
    }
    fmt(path, sizeof(path), "%s/CMakeCache.txt", bdir);
    ck_assert(cache_get(path, "CONND_PLUGIN_DIR", dir, sizeof(dir)));
    plugindir = pkgconf(false, "--variable=plugindir");
    ck_assert_msg(strlen(dir) >= strlen(plugindir) &&
                      strcmp(dir + strlen(dir) - strlen(plugindir), plugindir) == 0,
                  "the template installs to %s, not to the kit's plugindir %s", dir,
                  plugindir);
    free(plugindir);
    fmt(path, sizeof(path), "%s%s/upper.so", tdest, dir);
    ck_assert_msg(is_file(path), "the template's install made no %s", path);
}
END_TEST

START_TEST(test_install_template_plugin_loads_and_sends_bytes_back_upper_cased)
{
    static const char in[] = "Hello, World! 0123 \xe9t\xe9 abc xyz\n";
    static const char out[] = "HELLO, WORLD! 0123 \xe9T\xe9 ABC XYZ\n";
    char so[PATH_MAX], cfg[2 * PATH_MAX], buf[256], needle[PATH_MAX + 64];
    size_t big = 200 * 1024, total = 0;
    uint8_t *data, *want, *got;
    int fd, port;

    build_template(so, sizeof(so));
    fmt(cfg, sizeof(cfg),
        "{\"plugins\":[{\"name\":\"upper\",\"file\":\"%s\","
        "\"config\":{\"greeting\":\"hi\\n\"}}],"
        "\"listeners\":[{\"name\":\"u\",\"host\":\"127.0.0.1\",\"port\":0,"
        "\"plugin\":\"upper\"}]}",
        so);
    ck_assert_msg(daemon_start(&D, cfg, NULL) == 0, "connd did not start:\n%s", D.log);
    /* Loaded by absolute path, before "ready". */
    fmt(needle, sizeof(needle), "plugin upper: loaded %s", so);
    ck_assert_msg(strstr(D.log, needle), "no \"%s\" in the log:\n%s", needle, D.log);
    ck_assert_int_gt(port = daemon_port(&D, "u"), 0);
    ck_assert_int_ge(fd = tcp_connect("127.0.0.1", port), 0);

    /* The greeting from the config, then the bytes back upper-cased (ASCII
     * letters only; other bytes unchanged). */
    ck_assert_int_eq(io_read_exact(fd, buf, 3), 0);
    ck_assert_int_eq(memcmp(buf, "hi\n", 3), 0);
    ck_assert_int_eq(io_write_all(fd, in, sizeof(in) - 1), 0);
    total += sizeof(in) - 1;
    ck_assert_int_eq(io_read_exact(fd, buf, sizeof(out) - 1), 0);
    ck_assert_int_eq(memcmp(buf, out, sizeof(out) - 1), 0);

    /* More than one read buffer and more than the plugin's 4 KiB chunk;
     * under the default high watermark, so the daemon holds all of it. */
    ck_assert_ptr_nonnull(data = malloc(big));
    ck_assert_ptr_nonnull(want = malloc(big));
    ck_assert_ptr_nonnull(got = malloc(big));
    fill_random(data, big, 11);
    for (size_t i = 0; i < big; i++)
        want[i] = data[i] >= 'a' && data[i] <= 'z' ? (uint8_t)(data[i] - 32) : data[i];
    ck_assert_int_eq(io_write_all(fd, data, big), 0);
    total += big;
    ck_assert_int_eq(io_read_exact(fd, got, big), 0);
    ck_assert_msg(memcmp(got, want, big) == 0, "200 KiB came back altered");
    free(data);
    free(want);
    free(got);

    /* Half-close: peer_closed() shuts our side down too, then closed()
     * frees the connection's data and logs its count. */
    ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
    ck_assert_int_eq(io_expect_eof(fd, 5000), 1);
    close(fd);
    fmt(needle, sizeof(needle), "upper: %zu bytes upper-cased", total);
    ck_assert_msg(daemon_wait_log(&D, needle, 5000), "no \"%s\" in the log:\n%s", needle,
                  D.log);
    /* fini() runs at exit; a crash there would not exit 0. */
    ck_assert_int_eq(daemon_stop(&D, SIGTERM, 10000), 0);
}
END_TEST

static Suite *install_suite(void)
{
    Suite *s = suite_create("install");
    TCase *tc;

    tc = tcase_create("layout");
    tcase_add_unchecked_fixture(tc, tcase_setup, tcase_teardown);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_install_stages_binary_header_pc_doc_and_bundled_plugins);
    suite_add_tcase(s, tc);

    tc = tcase_create("pkgconfig");
    tcase_add_unchecked_fixture(tc, tcase_setup, tcase_teardown);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_install_pc_names_prefix_version_abi_and_plugin_flags);
    suite_add_tcase(s, tc);

    tc = tcase_create("template");
    tcase_add_unchecked_fixture(tc, tcase_setup, tcase_teardown);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(
        tc, test_install_template_builds_with_one_export_and_installs_to_plugindir);
    tcase_add_test(tc,
                   test_install_template_plugin_loads_and_sends_bytes_back_upper_cased);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(install_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
