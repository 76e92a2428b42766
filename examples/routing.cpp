// Routing: union_router by payload kind, predicate_router by topic, and a routing-policy
// table loaded from JSON that overrides the routers' choice per tenant (C13).
//
//   by_kind --refund--> refunds                 (JSON decoded into the Refund struct)
//           --question--> triage --billing--> billing
//                                --other----> support
//                                (tenant "vip": the policy table sends it to priority)
#include "example_main.hpp"

#include <penguiflow/patterns/routers.hpp>
#include <penguiflow/penguiflow.hpp>

#include <boost/asio/this_coro.hpp>
#include <boost/describe/class.hpp>
#include <boost/json/parse.hpp>

#include <iostream>

namespace asio = boost::asio;
namespace json = boost::json;
using namespace penguiflow;

struct Refund {
  std::string order_id;
  double amount = 0;
};
BOOST_DESCRIBE_STRUCT(Refund, (), (order_id, amount))

Node desk(std::string name) {  // answers "<desk>: <what it got>"
  return Node(name, [name](Message m, Context&) -> Task<Message> {
    std::string what = payload_if<Refund>(m) ? "refund of " + payload_if<Refund>(m)->order_id
                                              : json::serialize(*payload_if<json::value>(m));
    co_return std::move(m).with_payload(name + ": " + what);
  });
}

Task<int> run() {
  auto refunds = desk("refunds"), billing = desk("billing"), support = desk("support"), priority = desk("priority");
  // The table could come from a file or an environment variable just the same:
  // DictRoutingPolicy::from_json_file(path) / from_env("ROUTES").
  auto vip_table = DictRoutingPolicy::from_json(R"({"vip": "priority"})", std::nullopt, DictRoutingPolicy::key_by_tenant());
  auto triage = predicate_router("triage", [](const Message& m) {
    return m.headers.topic == "billing" ? "billing" : "support";
  }, RouterOptions{.policy = vip_table});
  auto by_kind = union_router("by_kind", {when<Refund>(refunds, "refund"), when_kind("question", triage)});

  Flow flow({by_kind.to(refunds, triage), triage.to(billing, support, priority), refunds.to(), billing.to(),
             support.to(), priority.to()});
  flow.run(co_await asio::this_coro::executor);

  struct Case { const char* trace; const char* tenant; const char* topic; const char* payload; const char* expect; };
  const Case cases[] = {
      {"r1", "acme", "", R"({"kind": "refund", "order_id": "A-7", "amount": 12.5})", "refunds: refund of A-7"},
      {"q1", "acme", "billing", R"({"kind": "question", "text": "invoice?"})", "billing: "},
      {"q2", "acme", "chat", R"({"kind": "question", "text": "hello"})", "support: "},
      {"q3", "vip", "chat", R"({"kind": "question", "text": "hello"})", "priority: "},
  };
  for (const Case& c : cases) {
    Message m{json::parse(c.payload), Headers{.tenant = c.tenant, .topic = c.topic}};
    co_await flow.emit(std::move(m), c.trace);
  }
  int problems = 0;
  for (const Case& c : cases) {
    std::any r = co_await flow.fetch(c.trace);
    auto text = std::any_cast<std::string>(std::any_cast<Message&>(r).payload);
    std::cout << c.trace << " (tenant " << c.tenant << ") -> " << text << "\n";
    if (text.rfind(c.expect, 0) != 0) ++problems;
  }
  co_await flow.stop();
  co_return problems;
}

int main() { return examples::run_example("routing", run); }
