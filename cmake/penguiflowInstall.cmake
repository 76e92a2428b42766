# Install rules and the CMake package (included last from the top-level CMakeLists.txt).
#
#   cmake --install build --prefix /opt/penguiflow
#   # a user's project:
#   find_package(penguiflow CONFIG REQUIRED)      # CMAKE_PREFIX_PATH=/opt/penguiflow
#   target_link_libraries(my_worker PRIVATE penguiflow::cli)
#
# Installed targets keep the in-tree ALIAS names: penguiflow::core, ::patterns, ::testkit,
# ::observe, ::observe_http, ::queue, ::queue_open, ::queue_memory, ::queue_sqlite,
# ::queue_postgres, ::queue_redis (the backends this build has), ::worker, ::cli,
# ::example_flows, and the penguiflow::penguiflow executable. The libraries are static, so
# their PRIVATE dependencies (spdlog, SQLite3, libpq, hiredis, Boost.URL) are link
# dependencies of the package: penguiflowConfig.cmake finds them again.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(PENGUIFLOW_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/penguiflow CACHE STRING
    "Where penguiflowConfig.cmake is installed, relative to the prefix")

set(_pf_targets)
foreach(name core patterns testkit observe observe_http queue queue_memory queue_sqlite
             queue_postgres redis_core queue_redis queue_open worker cli example_flows)
  if(TARGET penguiflow_${name})
    set_target_properties(penguiflow_${name} PROPERTIES EXPORT_NAME ${name})
    list(APPEND _pf_targets penguiflow_${name})
  endif()
endforeach()
# The consumer compiles the public headers as C++20.
target_compile_features(penguiflow_core INTERFACE cxx_std_20)
set_target_properties(penguiflow PROPERTIES EXPORT_NAME penguiflow)

install(TARGETS ${_pf_targets} penguiflow EXPORT penguiflowTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/ ${PROJECT_SOURCE_DIR}/examples/flows/include/
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.hpp")
install(EXPORT penguiflowTargets NAMESPACE penguiflow::
  FILE penguiflowTargets.cmake DESTINATION ${PENGUIFLOW_INSTALL_CMAKEDIR})

# What the config file must find again: only the backends this build has.
set(PENGUIFLOW_HAVE_POSTGRES OFF)
set(PENGUIFLOW_HAVE_REDIS OFF)
if(TARGET penguiflow_queue_postgres)
  set(PENGUIFLOW_HAVE_POSTGRES ON)
endif()
if(TARGET penguiflow_queue_redis)
  set(PENGUIFLOW_HAVE_REDIS ON)
  get_filename_component(HIREDIS_LIBRARY_DIR ${HIREDIS_LIBRARY} DIRECTORY)
endif()
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/penguiflowConfig.cmake.in
  ${PROJECT_BINARY_DIR}/penguiflowConfig.cmake
  INSTALL_DESTINATION ${PENGUIFLOW_INSTALL_CMAKEDIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/penguiflowConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/penguiflowConfig.cmake
              ${PROJECT_BINARY_DIR}/penguiflowConfigVersion.cmake
  DESTINATION ${PENGUIFLOW_INSTALL_CMAKEDIR})
