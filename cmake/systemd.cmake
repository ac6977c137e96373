# systemd units, the sysusers entry, the system config and the man pages.
# The unit directory comes from systemd's pkg-config file when there is
# one (Debian: /lib/systemd/system), else PREFIX/lib/systemd/system.
pkg_get_variable(CONND_PC_UNIT_DIR systemd systemdsystemunitdir)
pkg_get_variable(CONND_PC_SYSUSERS_DIR systemd sysusersdir)
if(NOT CONND_PC_UNIT_DIR)
  set(CONND_PC_UNIT_DIR "${CMAKE_INSTALL_PREFIX}/lib/systemd/system")
endif()
if(NOT CONND_PC_SYSUSERS_DIR)
  set(CONND_PC_SYSUSERS_DIR "${CMAKE_INSTALL_PREFIX}/lib/sysusers.d")
endif()
set(CONND_SYSTEMD_UNIT_DIR "${CONND_PC_UNIT_DIR}" CACHE PATH "systemd unit directory")
set(CONND_SYSUSERS_DIR "${CONND_PC_SYSUSERS_DIR}" CACHE PATH "sysusers.d directory")

set(CONND_BIN "${CMAKE_INSTALL_FULL_BINDIR}/connd")
set(CONND_CTL_BIN "${CMAKE_INSTALL_FULL_BINDIR}/connctl")
set(CONND_CONFIG "${CMAKE_INSTALL_FULL_SYSCONFDIR}/connd/connd.json")
set(CONND_PLUGIN_DIR "${CONND_PLUGIN_INSTALL_DIR}")
configure_file(systemd/connd.service.in ${PROJECT_BINARY_DIR}/systemd/connd.service @ONLY)
configure_file(examples/connd-system.json.in ${PROJECT_BINARY_DIR}/etc/connd.json @ONLY)

install(FILES ${PROJECT_BINARY_DIR}/systemd/connd.service systemd/connd.socket
        DESTINATION ${CONND_SYSTEMD_UNIT_DIR})
install(FILES systemd/connd-sysusers.conf DESTINATION ${CONND_SYSUSERS_DIR}
        RENAME connd.conf)
install(FILES ${PROJECT_BINARY_DIR}/etc/connd.json
        DESTINATION ${CMAKE_INSTALL_FULL_SYSCONFDIR}/connd)
install(FILES man/connd.8 DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)
install(FILES man/connctl.1 DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
install(FILES man/connd.json.5 DESTINATION ${CMAKE_INSTALL_MANDIR}/man5)
