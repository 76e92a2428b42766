// The examples' shared main(): runs an example's coroutine on one event loop and turns
// its count of problems into the exit code (0: the example's result was right).
#pragma once

#include <penguiflow/core/node.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <exception>
#include <iostream>

namespace penguiflow::examples {

inline int run_example(const char* name, Task<int> (*body)()) {
  boost::asio::io_context io;
  int problems = -1;
  boost::asio::co_spawn(io, body(), [&](std::exception_ptr e, int n) {
    problems = n;
    if (!e) return;
    problems = 1;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      std::cerr << name << ": error: " << ex.what() << "\n";
    }
  });
  io.run();
  std::cout << name << (problems == 0 ? ": OK" : ": FAILED") << "\n";
  return problems == 0 ? 0 : 1;
}

}  // namespace penguiflow::examples
