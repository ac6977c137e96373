
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/main/daemon/config.c" "daemon/CMakeFiles/connd_core.dir/config.c.o" "gcc" "daemon/CMakeFiles/connd_core.dir/config.c.o.d"
  "/work/main/daemon/conn.c" "daemon/CMakeFiles/connd_core.dir/conn.c.o" "gcc" "daemon/CMakeFiles/connd_core.dir/conn.c.o.d"
  "/work/main/daemon/connect.c" "daemon/CMakeFiles/connd_core.dir/connect.c.o" "gcc" "daemon/CMakeFiles/connd_core.dir/connect.c.o.d"
  "/work/main/daemon/listener.c" "daemon/CMakeFiles/connd_core.dir/listener.c.o" "gcc" "daemon/CMakeFiles/connd_core.dir/listener.c.o.d"
  "/work/main/daemon/log.c" "daemon/CMakeFiles/connd_core.dir/log.c.o" "gcc" "daemon/CMakeFiles/connd_core.dir/log.c.o.d"
  "/work/main/daemon/loop.c" "daemon/CMakeFiles/connd_core.dir/loop.c.o" "gcc" "daemon/CMakeFiles/connd_core.dir/loop.c.o.d"
  "/work/main/daemon/plugin.c" "daemon/CMakeFiles/connd_core.dir/plugin.c.o" "gcc" "daemon/CMakeFiles/connd_core.dir/plugin.c.o.d"
  )

# Targets to which this target links.
set(CMAKE_TARGET_LINKED_INFO_FILES
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")
