# Redis backend tests (included from tests/queue/CMakeLists.txt).
#  redis_core_test  - RESP parsing/formatting and the sans-io connection core; no server.
#  redis_queue_test - the conformance suite plus Redis specifics against
#                     PENGUIFLOW_TEST_REDIS_URL (skips when unset); starts a private
#                     redis-server of its own for the password and idle-cost cases.
if(TARGET penguiflow_queue_redis)
  penguiflow_add_test(redis_core_test SOURCES redis_core_test.cpp
    LIBS penguiflow_redis_core penguiflow_queue_redis LABELS redis)
  target_include_directories(redis_core_test PRIVATE ${PROJECT_SOURCE_DIR}/src/backends/redis)
  penguiflow_add_test(redis_queue_test SOURCES redis_test.cpp
    LIBS penguiflow_queue_conformance penguiflow_queue_redis penguiflow_redis_core LABELS redis)
  target_include_directories(redis_queue_test PRIVATE ${PROJECT_SOURCE_DIR}/src/backends/redis)
endif()
