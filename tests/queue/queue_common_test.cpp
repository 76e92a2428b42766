// Pure logic of the queue layer: no event loop.
#include <penguiflow/queue/ids.hpp>
#include <penguiflow/queue/job_codec.hpp>

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <set>
#include <thread>

namespace penguiflow::queue {
namespace json = boost::json;

TEST(JobState, RoundTripsItsWireNames) {
  for (auto s : {JobState::queued, JobState::running, JobState::succeeded, JobState::dead})
    EXPECT_EQ(parse_job_state(to_string(s)), s);
  EXPECT_FALSE(parse_job_state("pending").has_value());
}

TEST(RedactUrl, HidesPasswords) {
  EXPECT_EQ(redact_url("postgresql://bob:s3cret@db:5432/jobs"), "postgresql://bob:***@db:5432/jobs");
  EXPECT_EQ(redact_url("redis://:pw@127.0.0.1:6379/0"), "redis://:***@127.0.0.1:6379/0");
  EXPECT_EQ(redact_url("postgresql://bob@db/jobs?sslmode=require&password=x1"),
            "postgresql://bob@db/jobs?sslmode=require&password=***");
  EXPECT_EQ(redact_url("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
  EXPECT_EQ(redact_url("memory://"), "memory://");
  EXPECT_EQ(redact_url("not a url"), "not a url");
  // '@' in the path is not userinfo.
  EXPECT_EQ(redact_url("sqlite:///tmp/a:b@c.db"), "sqlite:///tmp/a:b@c.db");
  // libpq takes userinfo up to the last '@' before the path, so a password may hold '?',
  // '#' or '@' (percent-encoding is optional for libpq; such URLs are not valid RFC 3986).
  EXPECT_EQ(redact_url("postgresql://bob:pa?ss@db/jobs"), "postgresql://bob:***@db/jobs");
  EXPECT_EQ(redact_url("postgresql://bob:pa#ss@db:5432"), "postgresql://bob:***@db:5432");
  EXPECT_EQ(redact_url("postgresql://bob:p@ss@db/jobs"), "postgresql://bob:***@db/jobs");
  EXPECT_EQ(redact_url("redis://:a:b?c@127.0.0.1:6379/0"), "redis://:***@127.0.0.1:6379/0");
  // Every secret query parameter, sslpassword included, and each one of several.
  EXPECT_EQ(redact_url("postgresql://db/jobs?sslpassword=k1&sslmode=require&password=x1"),
            "postgresql://db/jobs?sslpassword=***&sslmode=require&password=***");
  EXPECT_EQ(redact_url("postgresql://db/jobs?application_name=password=no"),
            "postgresql://db/jobs?application_name=password=no");
}

TEST(RedactUrl, SecretsAreWhatItHidesAsWrittenAndDecoded) {
  EXPECT_EQ(url_secrets("postgresql://bob:p%40ss@db/jobs?sslpassword=k1"),
            (std::vector<std::string>{"p%40ss", "p@ss", "k1"}));
  EXPECT_EQ(url_secrets("redis://:pa?ss@127.0.0.1:6379/0"), (std::vector<std::string>{"pa?ss"}));
  EXPECT_TRUE(url_secrets("postgresql://bob@db/jobs").empty());
  EXPECT_TRUE(url_secrets("sqlite:///tmp/a:b@c.db").empty());
}

TEST(Ids, AreUniqueAndTimeOrdered) {
  std::vector<std::string> ids;
  for (int i = 0; i < 10000; ++i) ids.push_back(new_job_id());
  for (auto& id : ids) EXPECT_EQ(id.size(), 26u);
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), ids.size());
}

TEST(Ids, AreUniqueAcrossThreads) {
  std::vector<std::string> a, b;
  std::thread ta([&] { for (int i = 0; i < 5000; ++i) a.push_back(new_job_id()); });
  std::thread tb([&] { for (int i = 0; i < 5000; ++i) b.push_back(new_job_id()); });
  ta.join();
  tb.join();
  std::set<std::string> all(a.begin(), a.end());
  all.insert(b.begin(), b.end());
  EXPECT_EQ(all.size(), 10000u);
}

TEST(LeaseToken, IsRandomHex) {
  auto t = new_lease_token();
  EXPECT_EQ(t.size(), 32u);
  EXPECT_EQ(t.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_NE(t, new_lease_token());
}

TEST(Backoff, GrowsThenCaps) {
  EXPECT_EQ(backoff_delay(0, 1, 60), 0);
  EXPECT_DOUBLE_EQ(backoff_delay(1, 1, 60), 1);
  EXPECT_DOUBLE_EQ(backoff_delay(3, 1, 60), 4);
  EXPECT_DOUBLE_EQ(backoff_delay(30, 1, 60), 60);
  EXPECT_DOUBLE_EQ(backoff_delay(2000, 1, 60), 60);
  EXPECT_DOUBLE_EQ(backoff_delay(3, 1, 60, 2.0, 0.5, 1.0), 2);   // full jitter draw
  EXPECT_DOUBLE_EQ(backoff_delay(3, 1, 60, 2.0, 0.5, 0.0), 4);
}

TEST(JobCodec, RoundTripsADocument) {
  NewJob nj;
  nj.flow = "quickstart";
  nj.tenant = "acme";
  nj.payload = json::object{{"q", "hi"}};
  nj.priority = 2;
  nj.max_attempts = 4;
  nj.delay_s = 10;
  nj.deadline_s = 30;
  nj.idempotency_key = "k";
  auto j = make_job(nj, "id-1", 1000.0);
  EXPECT_EQ(j.run_at, 1010.0);
  auto text = encode_job_document(j);
  auto d = decode_job_document(text, QueueConfig{});
  ASSERT_TRUE(d) << d.error->reason;
  EXPECT_EQ(d.job->id, "id-1");
  EXPECT_EQ(d.job->flow, "quickstart");
  EXPECT_EQ(d.job->tenant, "acme");
  EXPECT_EQ(d.job->payload, nj.payload);
  EXPECT_EQ(d.job->priority, 2);
  EXPECT_EQ(d.job->max_attempts, 4);
  EXPECT_EQ(d.job->run_at, 1010.0);
  EXPECT_EQ(d.job->deadline_s, 30.0);
  EXPECT_EQ(d.job->idempotency_key, "k");
  auto o = json::parse(text).as_object();
  EXPECT_FALSE(o.contains("state"));  // state lives beside the document
}

TEST(JobCodec, MinimalDocumentTakesDefaults) {
  auto d = decode_job_document(R"({"flow":"f","tenant":"t"})", QueueConfig{}, "fallback-id");
  ASSERT_TRUE(d);
  EXPECT_EQ(d.job->id, "fallback-id");
  EXPECT_EQ(d.job->max_attempts, 5);
  EXPECT_EQ(d.job->attempts, 0);
  EXPECT_TRUE(d.job->payload.is_null());
  EXPECT_FALSE(d.job->deadline_s);
  // Integers and doubles are both numbers.
  auto e = decode_job_document(R"({"flow":"f","tenant":"t","priority":3.0,"run_at":17})", QueueConfig{});
  ASSERT_TRUE(e);
  EXPECT_EQ(e.job->priority, 3);
  EXPECT_EQ(e.job->run_at, 17.0);
}

namespace {
DecodeError::Code code_of(std::string_view doc, const QueueConfig& cfg = {}) {
  auto d = decode_job_document(doc, cfg);
  EXPECT_FALSE(d) << doc;
  return d.error ? d.error->code : DecodeError::Code::bad_field;
}
}  // namespace

TEST(JobCodec, Q9_RejectsBadDocumentsWithClearReasons) {
  using C = DecodeError::Code;
  EXPECT_EQ(code_of(R"({"flow":"f","tenant":)"), C::bad_json);
  EXPECT_EQ(code_of(R"([1,2])"), C::not_object);
  EXPECT_EQ(code_of(R"({"flow":"f"})"), C::missing_tenant);
  EXPECT_EQ(code_of(R"({"flow":"f","tenant":""})"), C::missing_tenant);
  EXPECT_EQ(code_of(R"({"flow":"f","tenant":7})"), C::missing_tenant);
  EXPECT_EQ(code_of(R"({"tenant":"t"})"), C::missing_flow);
  EXPECT_EQ(code_of(R"({"flow":"f","tenant":"t","priority":"high"})"), C::bad_field);
  QueueConfig small;
  small.max_payload_bytes = 10;
  EXPECT_EQ(code_of(R"({"flow":"f","tenant":"t","payload":"0123456789abcdef"})", small), C::payload_too_large);
  EXPECT_TRUE(decode_job_document(R"({"flow":"f","tenant":"t","payload":"012345"})", small));
  QueueConfig known;
  known.flow_known = [](std::string_view f) { return f == "f"; };
  EXPECT_EQ(code_of(R"({"flow":"g","tenant":"t"})", known), C::unknown_flow);

  auto d = decode_job_document(R"({"flow":"f","tenant":)", QueueConfig{});
  EXPECT_NE(d.error->reason.find("invalid JSON"), std::string::npos) << d.error->reason;
  auto details = d.error->details().as_object();
  EXPECT_EQ(details.at("error"), "bad_json");
  auto big = decode_job_document(R"({"flow":"f","tenant":"t","payload":"0123456789abcdef"})", small);
  EXPECT_NE(big.error->reason.find("payload too large: 18 bytes > limit 10"), std::string::npos) << big.error->reason;
}

TEST(JobCodec, JobToJsonCarriesState) {
  Job j;
  j.id = "x";
  j.flow = "f";
  j.tenant = "t";
  j.state = JobState::dead;
  j.reason = "boom";
  auto o = job_to_json(j);
  EXPECT_EQ(o.at("state"), "dead");
  EXPECT_EQ(o.at("reason"), "boom");
}

}  // namespace penguiflow::queue
