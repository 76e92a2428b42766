// Umbrella header for the flow runtime.
#pragma once

#include <penguiflow/core/errors.hpp>
#include <penguiflow/core/events.hpp>
#include <penguiflow/core/flow.hpp>
#include <penguiflow/core/json.hpp>
#include <penguiflow/core/logging.hpp>
#include <penguiflow/core/message.hpp>
#include <penguiflow/core/node.hpp>
