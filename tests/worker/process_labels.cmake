# Run by CTest after the discovered tests of worker_process_test are included (see
# process.cmake): gives each of them the labels "worker" and "process".
foreach(t IN LISTS worker_process_test_TESTS)
  set_tests_properties("${t}" PROPERTIES LABELS "worker;process")
endforeach()
