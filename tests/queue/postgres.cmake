# PostgreSQL backend tests (included from tests/queue/CMakeLists.txt). They need a server:
# PENGUIFLOW_TEST_PG_URL (scripts/test-servers.sh sets it); without it every test skips.
if(TARGET penguiflow_queue_postgres)
  find_package(PostgreSQL REQUIRED)
  penguiflow_add_test(postgres_queue_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/postgres_test.cpp
    LIBS penguiflow_queue_conformance penguiflow_queue_postgres PostgreSQL::PostgreSQL LABELS postgres)
  # (one label: penguiflow_add_test passes LABELS through gtest_discover_tests PROPERTIES,
  # where a second label would be read as a property name)
endif()
