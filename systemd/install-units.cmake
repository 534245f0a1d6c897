# Runs at install time (included from cmake_install.cmake): copies the units,
# pointing ExecStart and Documentation at the prefix being installed to.
foreach(src IN LISTS clerk_sync_unit_sources)
  get_filename_component(name "${src}" NAME)
  file(READ "${src}" text)
  string(REPLACE "ExecStart=/usr/bin/" "ExecStart=${CMAKE_INSTALL_PREFIX}/${clerk_sync_bindir}/" text "${text}")
  string(REPLACE "file:///usr/share/doc/clerk-sync/" "file://${CMAKE_INSTALL_PREFIX}/${clerk_sync_docdir}/" text "${text}")
  file(WRITE "${clerk_sync_unit_stage}/${name}" "${text}")
  file(INSTALL "${clerk_sync_unit_stage}/${name}" DESTINATION "${CMAKE_INSTALL_PREFIX}/${clerk_sync_unitdir}"
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
endforeach()
