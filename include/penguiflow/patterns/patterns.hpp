// Umbrella header for the patterns layer (C13): routers, routing policies, join_k,
// map_concurrent.
#pragma once

#include <penguiflow/patterns/join.hpp>
#include <penguiflow/patterns/map_concurrent.hpp>
#include <penguiflow/patterns/routers.hpp>
