# packaging.cmake: the plugin author's kit. `cmake --install` puts
# connd-plugin.pc into <libdir>/pkgconfig (plugin.h itself is installed by
# the top-level CMakeLists.txt) and docs/writing-plugins.md into the doc dir.
#
# The .pc is written at install time, not at configure time, so that its
# `prefix` is the prefix actually installed to: `cmake --install build
# --prefix /usr` moves bin/, include/ and the .pc, and a .pc written at
# configure time would still name the configured prefix. DESTDIR is not part
# of it; a DESTDIR-staged tree is used with PKG_CONFIG_SYSROOT_DIR (see
# docs/writing-plugins.md, "Building against a staged tree").
#
# `plugindir` is CONND_PLUGIN_INSTALL_DIR as configured, an absolute path:
# the bundled plugins are installed there and connd is compiled with it as
# its default plugin_dir, so neither follows an install-time --prefix.
# Configure with -DCMAKE_INSTALL_PREFIX=/usr for a /usr layout.

# The ABI number comes from the header, the only place it is written.
set(_connd_plugin_h ${PROJECT_SOURCE_DIR}/include/connd/plugin.h)
file(STRINGS ${_connd_plugin_h} _connd_abi_line
     REGEX "^#define[ \t]+CONND_PLUGIN_ABI[ \t]+[0-9]+")
if(NOT _connd_abi_line MATCHES "CONND_PLUGIN_ABI[ \t]+([0-9]+)")
  message(FATAL_ERROR "packaging: no \"#define CONND_PLUGIN_ABI <n>\" in ${_connd_plugin_h}")
endif()
set(CONND_PLUGIN_ABI_VERSION ${CMAKE_MATCH_1})
# Re-run the configure step when the header changes, so the .pc follows it.
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${_connd_plugin_h})

# Directories relative to ${prefix} unless the user made them absolute
# (install() treats relative destinations the same way).
set(_connd_pc_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
set(_connd_pc_PLUGINDIR "${CONND_PLUGIN_INSTALL_DIR}")
foreach(_d INCLUDEDIR PLUGINDIR)
  if(NOT IS_ABSOLUTE "${_connd_pc_${_d}}")
    set(_connd_pc_${_d} "\${prefix}/${_connd_pc_${_d}}")
  endif()
endforeach()

# The install-time step: fill in the template with the prefix of this
# install run (CMAKE_INSTALL_PREFIX, which --prefix overrides), then install
# the result like any other file, so DESTDIR and install_manifest.txt apply.
set(_connd_pc_out ${PROJECT_BINARY_DIR}/pkgconfig/connd-plugin.pc)
install(CODE "
set(CONND_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
set(CONND_PC_INCLUDEDIR [==[${_connd_pc_INCLUDEDIR}]==])
set(CONND_PC_PLUGINDIR [==[${_connd_pc_PLUGINDIR}]==])
set(CONND_PC_ABI [==[${CONND_PLUGIN_ABI_VERSION}]==])
set(CONND_PC_VERSION [==[${PROJECT_VERSION}]==])
configure_file([==[${CMAKE_CURRENT_LIST_DIR}/connd-plugin.pc.in]==]
               [==[${_connd_pc_out}]==] @ONLY)
")
install(FILES ${_connd_pc_out} DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

install(FILES ${PROJECT_SOURCE_DIR}/docs/writing-plugins.md DESTINATION ${CMAKE_INSTALL_DOCDIR})

message(STATUS "connd-plugin.pc: plugin ABI ${CONND_PLUGIN_ABI_VERSION}, "
               "plugindir ${CONND_PLUGIN_INSTALL_DIR}")
