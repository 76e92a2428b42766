# Process-level worker tests (included from tests/worker/CMakeLists.txt).
#  test_worker          - a user's own worker binary on penguiflow::cli::run, with test
#                         flows (effect, hang, poison) and the example flows.
#  worker_process_test  - spawns test_worker / penguiflow processes against SQLite,
#                         PostgreSQL (PENGUIFLOW_TEST_PG_URL) and Redis
#                         (PENGUIFLOW_TEST_REDIS_URL); server cases skip when unset.
add_executable(test_worker ${CMAKE_CURRENT_LIST_DIR}/test_worker_main.cpp)
target_link_libraries(test_worker PRIVATE penguiflow_cli penguiflow_example_flows)
penguiflow_use_pch(test_worker)
penguiflow_use_malloc(test_worker)

penguiflow_add_test(worker_process_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/process_test.cpp ${CMAKE_CURRENT_LIST_DIR}/process_support.cpp
  LIBS penguiflow_queue_open
  LABELS worker process)
target_compile_definitions(worker_process_test PRIVATE
  PF_TEST_WORKER_BIN="$<TARGET_FILE:test_worker>"
  PF_CLI_BIN="$<TARGET_FILE:penguiflow>")
if(TARGET penguiflow_queue_postgres)
  target_compile_definitions(worker_process_test PRIVATE PF_HAVE_POSTGRES)
endif()
if(TARGET penguiflow_queue_redis)
  target_compile_definitions(worker_process_test PRIVATE PF_HAVE_REDIS)
endif()
add_dependencies(worker_process_test test_worker penguiflow)
