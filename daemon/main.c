/*
 * main.c: command line, config load, start-up and exit status. The only
 * place that exits on error, and only before the loop runs.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <connd/plugin.h>

#include "config.h"
#include "log.h"
#include "loop.h"
#include "plugin.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: connd [-c FILE] [-s CONTROL_SOCKET] [--check-config]\n"
            "             [--log-level LEVEL] [--version] [--help]\n"
            "\n"
            "  -c, --config FILE          config file (default %s)\n"
            "  -s, --control-socket PATH  control socket path, overrides control.path\n"
            "      --check-config         validate the config (and that each plugin\n"
            "                             file loads with the right ABI) and exit\n"
            "      --log-level LEVEL      err, warning, notice, info (default) or debug\n"
            "      --version              print the version and exit\n"
            "  -h, --help                 this text\n",
            CONFIG_DEFAULT_PATH);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"control-socket", required_argument, NULL, 's'},
        {"check-config", no_argument, NULL, 'C'},
        {"log-level", required_argument, NULL, 'l'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = CONFIG_DEFAULT_PATH, *control_path = NULL;
    bool check_only = false;
    struct config *cfg = NULL;
    struct loop lp;
    char err[512];
    int opt, rc;

    log_init();
    while ((opt = getopt_long(argc, argv, "c:s:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 's':
            control_path = optarg;
            break;
        case 'C':
            check_only = true;
            break;
        case 'l':
            if ((rc = log_parse_level(optarg)) < 0) {
                fprintf(stderr, "connd: --log-level: unknown level \"%s\"\n", optarg);
                return 2;
            }
            log_set_level(rc);
            break;
        case 'V':
            printf("connd %s (plugin abi %d)\n", CONND_VERSION, CONND_PLUGIN_ABI);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "connd: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (config_load(config_path, &cfg, err, sizeof(err)) < 0) {
        log_err("config: %s", err);
        return 1;
    }
    if (control_path) {
        char *dup = strdup(control_path);
        if (!dup) {
            config_free(cfg);
            return 1;
        }
        free(cfg->control_path);
        cfg->control_path = dup;
        cfg->control_path_override = true;
    }
    if (check_only) {
        /* Each plugin file is opened and its ABI checked, but not started. */
        for (size_t i = 0; i < cfg->n_plugins; i++)
            if (plugin_probe(&cfg->plugins[i], cfg->plugin_dir, err, sizeof(err)) < 0) {
                log_err("config: %s", err);
                config_free(cfg);
                return 1;
            }
        printf("%s: ok\n", config_path);
        config_free(cfg);
        return 0;
    }
    /* Writes to a closed socket must come back as EPIPE, not kill us. */
    signal(SIGPIPE, SIG_IGN);
    if (loop_init(&lp, cfg, config_path) < 0) {
        log_err("exiting: start-up failed");
        loop_close(&lp);
        return 1;
    }
    loop_run(&lp);
    loop_close(&lp);
    return 0;
}
