/* A shared object without connd_plugin_entry: connd must refuse it. */
#include <connd/plugin.h>

CONND_EXPORT int not_a_connd_plugin(void);
CONND_EXPORT int not_a_connd_plugin(void)
{
    return 42;
}
