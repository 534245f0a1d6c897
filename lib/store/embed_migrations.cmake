# Build step: turns schemas/sql/NNN_name.sql into a .cpp with raw string
# literals, so installed binaries never look for SQL files at run time.
# Inputs: SQL_DIR, OUTPUT.
file(GLOB sql_files "${SQL_DIR}/[0-9][0-9][0-9]_*.sql")
# A .sql file of another name would be left out without a word.
file(GLOB all_sql "${SQL_DIR}/*.sql")
foreach(f IN LISTS all_sql)
  list(FIND sql_files "${f}" at)
  if(at EQUAL -1)
    get_filename_component(name "${f}" NAME)
    message(FATAL_ERROR "schemas/sql/${name}: a migration is named NNN_name.sql (three digits)")
  endif()
endforeach()
list(SORT sql_files)
set(body "")
# Versions run 1, 2, 3, ... with none twice: migrate() runs each version
# once, so a second 008_*.sql would be skipped for good on every file the
# first reached, and a gap hides a file left out.
set(expected 1)
foreach(f IN LISTS sql_files)
  get_filename_component(name "${f}" NAME)
  string(SUBSTRING "${name}" 0 3 version)
  math(EXPR version "${version}")
  if(NOT version EQUAL expected)
    message(FATAL_ERROR "schemas/sql/${name}: migration ${version} where ${expected} is next (each number once, none missing)")
  endif()
  math(EXPR expected "${expected} + 1")
  file(READ "${f}" sql)
  string(APPEND body "      {${version}, \"${name}\", R\"clerk_sync_sql(${sql})clerk_sync_sql\"},\n")
endforeach()
file(WRITE "${OUTPUT}.tmp" "// Generated from schemas/sql by lib/store/embed_migrations.cmake. Do not edit.
#include \"store/database.hpp\"

namespace clerk_sync::store {

const std::vector<migration>& embedded_migrations() {
  static const std::vector<migration> all{
${body}  };
  return all;
}

}  // namespace clerk_sync::store
")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
