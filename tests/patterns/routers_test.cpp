// C13: predicate_router, union_router, routing policies.
#include "support/async_test.hpp"

#include <penguiflow/patterns/routers.hpp>
#include <penguiflow/penguiflow.hpp>

#include <boost/asio/this_coro.hpp>
#include <boost/describe/class.hpp>
#include <boost/json/parse.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>

using namespace penguiflow;
using penguiflow::testing::run_async;
namespace asio = boost::asio;
namespace json = boost::json;

namespace routing {
struct Order {
  std::string item;
  int qty = 0;
};
BOOST_DESCRIBE_STRUCT(Order, (), (item, qty))
struct Refund {
  std::string reason;
};
BOOST_DESCRIBE_STRUCT(Refund, (), (reason))
}  // namespace routing
using routing::Order;
using routing::Refund;

namespace {

/// A sink-bound node answering "<its name>:<the payload's description>".
Node tagger(std::string name) {
  return Node(name, [name](Message m, Context&) -> Task<Message> {
    std::string what = "?";
    if (auto* s = payload_if<std::string>(m)) what = *s;
    else if (auto* o = payload_if<Order>(m)) what = "order " + o->item;
    else if (auto* r = payload_if<Refund>(m)) what = "refund " + r->reason;
    else if (payload_if<json::value>(m)) what = "json";
    co_return std::move(m).with_payload(name + ":" + what);
  });
}

Message msg(std::any payload, std::string topic = {}, std::string tenant = "acme") {
  return Message{std::move(payload), Headers{.tenant = std::move(tenant), .topic = std::move(topic)}};
}

std::string text_of(const std::any& result) {
  if (auto* m = std::any_cast<Message>(&result))
    if (auto* s = payload_if<std::string>(*m)) return *s;
  if (auto* e = std::any_cast<FlowError>(&result)) return "error:" + e->message;
  return "<unexpected " + boost::core::demangle(result.type().name()) + ">";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST(C13_PredicateRouter, RoutesByNameOrNodeAndFansOut) {
  run_async([]() -> Task<void> {
    auto billing = tagger("billing"), support = tagger("support");
    auto router = predicate_router("router", [support](const Message& m) -> Routes {
      if (m.headers.topic == "billing") return {"billing"};           // by name
      if (m.headers.topic == "both") return {"billing", support};      // a name and a node
      return {support};                                                // by node
    });
    Flow flow({router.to(billing, support), billing.to(), support.to()});
    flow.run(co_await asio::this_coro::executor);
    flow.emit_nowait(msg(std::string("invoice"), "billing"), "t1");
    flow.emit_nowait(msg(std::string("hi"), "chat"), "t2");
    flow.emit_nowait(msg(std::string("x"), "both"), "t3");
    EXPECT_EQ(text_of(co_await flow.fetch("t1")), "billing:invoice");
    EXPECT_EQ(text_of(co_await flow.fetch("t2")), "support:hi");
    std::set<std::string> both;
    both.insert(text_of(co_await flow.fetch("t3")));
    both.insert(text_of(co_await flow.fetch("t3")));
    EXPECT_EQ(both, (std::set<std::string>{"billing:x", "support:x"}));
    co_await flow.stop();
  }());
}

TEST(C13_PredicateRouter, NoneOrEmptyDropsTheMessage) {
  run_async([]() -> Task<void> {
    int invoked = 0;
    auto only = Node("only", [&invoked](Message m, Context&) -> Task<Message> {
      ++invoked;
      co_return m;
    });
    auto router = predicate_router("router", [](const std::string& text) -> std::optional<std::string> {
      if (text == "drop-none") return std::nullopt;
      return "only";
    });
    auto empty_router = predicate_router("empty", [](const std::any&) { return Routes{}; });
    Flow flow({router.to(only), only.to()});
    flow.run(co_await asio::this_coro::executor);
    // One router, one worker: the dropped message is handled before the kept one.
    flow.emit_nowait(msg(std::string("drop-none")), "dropped");
    flow.emit_nowait(msg(std::string("keep")), "kept");
    auto kept = co_await flow.fetch("kept");
    EXPECT_EQ(*payload_if<std::string>(std::any_cast<Message&>(kept)), "keep");
    EXPECT_EQ(invoked, 1);
    EXPECT_EQ(flow.sink_size(), 0u);
    EXPECT_THROW(flow.fetch_nowait("dropped"), QueueEmptyError);
    co_await flow.stop();

    Flow flow2({empty_router.to(only), only.to()});
    flow2.run(co_await asio::this_coro::executor);
    flow2.emit_nowait(msg(std::string("a")), "e1");
    bool drained = co_await penguiflow::testing::eventually([&]() -> Task<bool> { co_return flow2.active_traces() == 0; });
    EXPECT_TRUE(drained);
    EXPECT_EQ(invoked, 1);
    EXPECT_EQ(flow2.sink_size(), 0u);
    co_await flow2.stop();
  }());
}

TEST(C13_PredicateRouter, UnknownTargetNameFailsTheInvocationNamingItAndTheFlowKeepsServing) {
  run_async([]() -> Task<void> {
    auto a = tagger("a"), stranger = tagger("stranger");
    auto router = predicate_router("router", [stranger](const Message& m) -> Routes {
      if (m.headers.topic == "typo") return {"nope"};
      if (m.headers.topic == "stranger") return {stranger};  // a node, but not a successor
      return {"a"};
    });
    Flow flow({router.to(a), a.to()}, FlowOptions{.emit_errors_to_rookery = true});
    flow.run(co_await asio::this_coro::executor);
    flow.emit_nowait(msg(std::string("x"), "typo"), "bad");
    flow.emit_nowait(msg(std::string("y"), "stranger"), "bad2");
    flow.emit_nowait(msg(std::string("z")), "good");
    auto bad = co_await flow.fetch("bad");
    auto* err = std::any_cast<FlowError>(&bad);
    EXPECT_TRUE(err);
    if (err) {
      EXPECT_EQ(err->node_name, "router");
      EXPECT_TRUE(contains(err->message, "unknown target 'nope'")) << err->message;
      EXPECT_TRUE(contains(err->message, "successors: a")) << err->message;
    }
    auto bad2 = co_await flow.fetch("bad2");
    EXPECT_TRUE(contains(text_of(bad2), "'stranger'")) << text_of(bad2);
    EXPECT_EQ(text_of(co_await flow.fetch("good")), "a:z");
    co_await flow.stop();
  }());
}

TEST(C13_PredicateRouter, PredicateSeesTypedPayloadsDecodedFromJson) {
  run_async([]() -> Task<void> {
    auto big = tagger("big"), small = tagger("small");
    auto router = predicate_router("router", [](const Order& o) { return o.qty >= 10 ? "big" : "small"; });
    Flow flow({router.to(big, small), big.to(), small.to()}, FlowOptions{.emit_errors_to_rookery = true});
    flow.run(co_await asio::this_coro::executor);
    flow.emit_nowait(msg(Order{"pens", 100}), "o1");
    flow.emit_nowait(msg(json::parse(R"({"item": "ink", "qty": 1})")), "o2");
    flow.emit_nowait(msg(json::parse(R"({"item": "ink", "qty": "many"})")), "o3");
    EXPECT_EQ(text_of(co_await flow.fetch("o1")), "big:order pens");
    EXPECT_EQ(text_of(co_await flow.fetch("o2")), "small:json");  // routed as it came
    auto bad = text_of(co_await flow.fetch("o3"));
    EXPECT_TRUE(contains(bad, "field 'qty'")) << bad;
    co_await flow.stop();
  }());
}

TEST(C13_UnionRouter, RoutesByCppTypeAndJsonKind) {
  run_async([]() -> Task<void> {
    auto orders = tagger("orders"), refunds = tagger("refunds"), raw = tagger("raw");
    auto router = union_router("by_kind", {when<Order>(orders, "order"), when<Refund>(refunds), when_kind("ping", raw)});
    Flow flow({router.to(orders, refunds, raw), orders.to(), refunds.to(), raw.to()},
              FlowOptions{.emit_errors_to_rookery = true});
    flow.run(co_await asio::this_coro::executor);
    flow.emit_nowait(msg(Order{"pens", 1}), "typed");
    flow.emit_nowait(msg(json::parse(R"({"kind": "order", "item": "ink", "qty": 2})")), "json-kind");
    flow.emit_nowait(msg(json::parse(R"({"type": "refunds", "reason": "late"})")), "json-type");
    flow.emit_nowait(msg(json::parse(R"({"kind": "ping"})")), "untyped");
    EXPECT_EQ(text_of(co_await flow.fetch("typed")), "orders:order pens");
    EXPECT_EQ(text_of(co_await flow.fetch("json-kind")), "orders:order ink");  // decoded into Order
    EXPECT_EQ(text_of(co_await flow.fetch("json-type")), "refunds:refund late");
    EXPECT_EQ(text_of(co_await flow.fetch("untyped")), "raw:json");
    co_await flow.stop();
  }());
}

TEST(C13_UnionRouter, UnknownKindOrTypeNamesItAndTheFlowKeepsServing) {
  run_async([]() -> Task<void> {
    auto orders = tagger("orders");
    auto router = union_router("by_kind", {when<Order>(orders, "order")});
    Flow flow({router.to(orders), orders.to()}, FlowOptions{.emit_errors_to_rookery = true});
    flow.run(co_await asio::this_coro::executor);
    flow.emit_nowait(msg(json::parse(R"({"kind": "invoice"})")), "k");
    flow.emit_nowait(msg(json::parse(R"({"item": "x"})")), "nokind");
    flow.emit_nowait(msg(std::string("text")), "type");
    flow.emit_nowait(msg(json::parse(R"({"kind": "order", "item": 3})")), "field");
    flow.emit_nowait(msg(Order{"ok", 1}), "good");
    auto k = text_of(co_await flow.fetch("k"));
    EXPECT_TRUE(contains(k, "unknown kind 'invoice'") && contains(k, "known kinds: order")) << k;
    auto nokind = text_of(co_await flow.fetch("nokind"));
    EXPECT_TRUE(contains(nokind, "'kind'")) << nokind;
    auto type = text_of(co_await flow.fetch("type"));
    EXPECT_TRUE(contains(type, "no route for payload type std::__cxx11::basic_string") && contains(type, "Order")) << type;
    auto field = text_of(co_await flow.fetch("field"));
    EXPECT_TRUE(contains(field, "field 'item'")) << field;
    EXPECT_EQ(text_of(co_await flow.fetch("good")), "orders:order ok");
    co_await flow.stop();
  }());
}

TEST(C13_UnionRouter, BadCasesRejectedAtConstruction) {
  auto a = tagger("a"), b = tagger("b");
  EXPECT_THROW(union_router("u", {}), FlowUsageError);
  try {
    union_router("u", {when<Order>(a, "x"), when<Refund>(b, "x")});
    FAIL();
  } catch (const FlowUsageError& e) {
    EXPECT_TRUE(contains(e.what(), "kind 'x' is listed twice")) << e.what();
  }
  EXPECT_THROW(union_router("u", {when<Order>(a), when<Order>(b)}), FlowUsageError);
}

TEST(C13_RoutingPolicy, VetoesOrReplacesTheProposal) {
  run_async([]() -> Task<void> {
    auto a = tagger("a"), b = tagger("b");
    std::vector<std::string> seen;
    auto policy = make_routing_policy([&](const RoutingRequest& r) -> std::optional<Routes> {
      seen.push_back(r.node_name + "|" + r.trace_id + "|" + r.proposed_names().at(0));
      if (r.trace_id == "veto") return Routes{};
      if (r.trace_id == "swap") return Routes{"b"};
      return std::nullopt;  // keep the proposal
    });
    auto router = predicate_router("router", [](const std::any&) { return "a"; }, RouterOptions{.policy = policy});
    Flow flow({router.to(a, b), a.to(), b.to()});
    flow.run(co_await asio::this_coro::executor);
    flow.emit_nowait(msg(std::string("1")), "veto");
    flow.emit_nowait(msg(std::string("2")), "swap");
    flow.emit_nowait(msg(std::string("3")), "keep");
    EXPECT_EQ(text_of(co_await flow.fetch("swap")), "b:2");
    EXPECT_EQ(text_of(co_await flow.fetch("keep")), "a:3");
    EXPECT_EQ(flow.sink_size(), 0u);  // the vetoed message produced nothing
    EXPECT_EQ(seen, (std::vector<std::string>{"router|veto|a", "router|swap|a", "router|keep|a"}));
    co_await flow.stop();
  }());
}

TEST(C13_DictRoutingPolicy, TableFromJsonKeyedByTenant) {
  run_async([]() -> Task<void> {
    auto a = tagger("a"), b = tagger("b");
    auto table = DictRoutingPolicy::from_json(R"({"acme": "b", "globex": ["a", "b"], "blocked": [], "free": null})",
                                              std::vector<std::string>{"a"}, DictRoutingPolicy::key_by_tenant());
    auto router = predicate_router("router", [](const std::any&) { return "a"; }, RouterOptions{.policy = table});
    Flow flow({router.to(a, b), a.to(), b.to()});
    flow.run(co_await asio::this_coro::executor);
    flow.emit_nowait(msg(std::string("1"), "", "acme"), "t-acme");
    flow.emit_nowait(msg(std::string("2"), "", "globex"), "t-globex");
    flow.emit_nowait(msg(std::string("3"), "", "blocked"), "t-blocked");
    flow.emit_nowait(msg(std::string("4"), "", "free"), "t-free");
    flow.emit_nowait(msg(std::string("5"), "", "unknown"), "t-default");
    EXPECT_EQ(text_of(co_await flow.fetch("t-acme")), "b:1");
    std::set<std::string> globex;
    globex.insert(text_of(co_await flow.fetch("t-globex")));
    globex.insert(text_of(co_await flow.fetch("t-globex")));
    EXPECT_EQ(globex, (std::set<std::string>{"a:2", "b:2"}));
    EXPECT_EQ(text_of(co_await flow.fetch("t-free")), "a:4");     // null: the router's proposal
    EXPECT_EQ(text_of(co_await flow.fetch("t-default")), "a:5");  // unmapped: the default
    EXPECT_EQ(flow.sink_size(), 0u);                               // "blocked" was dropped
    table->update_mapping({{"acme", std::vector<std::string>{"a"}}});
    flow.emit_nowait(msg(std::string("6"), "", "acme"), "t-acme2");
    EXPECT_EQ(text_of(co_await flow.fetch("t-acme2")), "a:6");
    co_await flow.stop();
  }());
}

TEST(C13_DictRoutingPolicy, LoadsFromEnvAndFileWithClearErrors) {
  ::setenv("PF_TEST_ROUTES", R"({"t1": "x"})", 1);
  auto from_env = DictRoutingPolicy::from_env("PF_TEST_ROUTES");
  std::any payload = std::string("p");
  Routes proposed{"y"};
  std::string node = "r", trace = "t1";
  RoutingRequest req{payload, nullptr, node, proposed, trace};
  auto d = from_env->select(req);  // keyed by trace id by default, as upstream
  ASSERT_TRUE(d);
  EXPECT_EQ(d->at(0).name(), "x");

  ::unsetenv("PF_TEST_ROUTES_UNSET");
  try {
    DictRoutingPolicy::from_env("PF_TEST_ROUTES_UNSET");
    FAIL();
  } catch (const RoutingPolicyError& e) {
    EXPECT_TRUE(contains(e.what(), "'PF_TEST_ROUTES_UNSET' is not set")) << e.what();
  }
  ::setenv("PF_TEST_ROUTES_BAD", "{not json", 1);
  try {
    DictRoutingPolicy::from_env("PF_TEST_ROUTES_BAD");
    FAIL();
  } catch (const RoutingPolicyError& e) {
    EXPECT_TRUE(contains(e.what(), "PF_TEST_ROUTES_BAD") && contains(e.what(), "malformed")) << e.what();
  }
  try {
    DictRoutingPolicy::from_json(R"({"k": 5})");
    FAIL();
  } catch (const RoutingPolicyError& e) {
    EXPECT_TRUE(contains(e.what(), "key 'k'")) << e.what();
  }
  EXPECT_THROW(DictRoutingPolicy::from_json(R"(["a"])"), RoutingPolicyError);

  std::string path = ::testing::TempDir() + "/pf_routes.json";
  {
    std::ofstream(path) << R"({"t1": ["a", "b"]})";
  }
  auto from_file = DictRoutingPolicy::from_json_file(path);
  auto f = from_file->select(req);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->size(), 2u);
  std::remove(path.c_str());
  try {
    DictRoutingPolicy::from_json_file(path);
    FAIL();
  } catch (const RoutingPolicyError& e) {
    EXPECT_TRUE(contains(e.what(), path)) << e.what();
  }
}
