// The one awaitable type of the library: every suspending function returns Task<T>.
#pragma once

#include <boost/asio/awaitable.hpp>

namespace penguiflow {

template <class T>
using Task = boost::asio::awaitable<T>;

}  // namespace penguiflow
