# Runs at install time (included from cmake_install.cmake): copies the units,
# pointing ExecStart and Documentation at the prefix being installed to.
# Staged per prefix: parallel installs into different prefixes (the tests do
# that) must not overwrite each other's copies.
string(MD5 prefix_hash "$ENV{DESTDIR}${CMAKE_INSTALL_PREFIX}")
set(stage "${clerk_sync_unit_stage}/${prefix_hash}")
foreach(src IN LISTS clerk_sync_unit_sources)
  get_filename_component(name "${src}" NAME)
  file(READ "${src}" text)
  string(REPLACE "ExecStart=/usr/bin/" "ExecStart=${CMAKE_INSTALL_PREFIX}/${clerk_sync_bindir}/" text "${text}")
  string(REPLACE "file:///usr/share/doc/clerk-sync/" "file://${CMAKE_INSTALL_PREFIX}/${clerk_sync_docdir}/" text "${text}")
  file(WRITE "${stage}/${name}" "${text}")
  file(INSTALL "${stage}/${name}" DESTINATION "${CMAKE_INSTALL_PREFIX}/${clerk_sync_unitdir}"
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
endforeach()
