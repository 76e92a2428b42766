// A worker of your own: register your flows, then hand over to the `penguiflow` command
// line (worker, enqueue, jobs, stats, dead, requeue, purge, cancel, flows, demo).
//
//   orders_worker enqueue --queue sqlite://./orders.db --flow orders --tenant acme --payload '{"order_id": 7, "amount": 12.5}'
//   orders_worker worker  --queue sqlite://./orders.db --exit-when-empty
//
// The "orders" flow validates the order (typed input: a bad payload is dead-lettered
// with the field named), charges it exactly once per job even when the job is retried
// (worker::effect_once records the charge in the queue's own backend), and returns a
// receipt that becomes the job's result.
#include <penguiflow/cli/cli.hpp>
#include <penguiflow/penguiflow.hpp>
#include <penguiflow/worker/job_context.hpp>

#include <boost/describe/class.hpp>
#include <boost/json.hpp>

namespace json = boost::json;
using namespace penguiflow;

struct Order {
  long order_id = 0;
  double amount = 0;
  std::optional<std::string> validate() const {
    if (amount <= 0) return "amount must be positive";
    return std::nullopt;
  }
};
BOOST_DESCRIBE_STRUCT(Order, (), (order_id, amount))

struct Receipt {
  long order_id = 0;
  std::string charge_id;
};
BOOST_DESCRIBE_STRUCT(Receipt, (), (order_id, charge_id))

Flow make_orders_flow() {
  // The job payload arrives as JSON in a Message; decode it with field-level errors.
  Node validate("validate", [](Message m, Context& ctx) -> Task<Order> {
    co_return decode<Order>(std::any_cast<json::value>(m.payload), ctx.node_name());
  });
  Node charge("charge", [](Order o, Context& ctx) -> Task<Receipt> {
    json::value charged = co_await worker::effect_once(ctx, "charge", [&]() -> Task<json::value> {
      // Call the payment provider here; its answer is recorded before the job goes on.
      co_return json::value(json::object{{"charge_id", "ch_" + std::to_string(o.order_id)}});
    });
    co_return Receipt{o.order_id, std::string(charged.at("charge_id").as_string())};
  }, NodePolicy{.timeout_s = 5, .max_retries = 2, .backoff_base = 0.2});
  return Flow({validate.to(charge), charge.to()}, FlowOptions{.name = "orders"});
}

int main(int argc, char** argv) {
  register_json_type<Receipt>();
  worker::FlowRegistry flows;
  flows.add("orders", make_orders_flow, "validate and charge an order; payload {\"order_id\": N, \"amount\": X}");
  return cli::run(argc, argv, std::move(flows));
}
