file(REMOVE_RECURSE
  "CMakeFiles/connd_core.dir/config.c.o"
  "CMakeFiles/connd_core.dir/config.c.o.d"
  "CMakeFiles/connd_core.dir/conn.c.o"
  "CMakeFiles/connd_core.dir/conn.c.o.d"
  "CMakeFiles/connd_core.dir/connect.c.o"
  "CMakeFiles/connd_core.dir/connect.c.o.d"
  "CMakeFiles/connd_core.dir/listener.c.o"
  "CMakeFiles/connd_core.dir/listener.c.o.d"
  "CMakeFiles/connd_core.dir/log.c.o"
  "CMakeFiles/connd_core.dir/log.c.o.d"
  "CMakeFiles/connd_core.dir/loop.c.o"
  "CMakeFiles/connd_core.dir/loop.c.o.d"
  "CMakeFiles/connd_core.dir/plugin.c.o"
  "CMakeFiles/connd_core.dir/plugin.c.o.d"
  "libconnd_core.a"
  "libconnd_core.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/connd_core.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
