#include "schema.hpp"

#include <penguiflow/backends/postgres.hpp>

#include <boost/json/serialize.hpp>

#include <cstdio>

namespace penguiflow::queue {
namespace pg {

bool valid_schema_name(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
      return false;
  return true;
}

std::string quote_ident(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

namespace {

std::string replace_all(std::string text, std::string_view from, std::string_view to) {
  for (auto p = text.find(from); p != std::string::npos; p = text.find(from, p + to.size()))
    text.replace(p, from.size(), to);
  return text;
}

// Version 1. Times are unix seconds (double precision), read from the database clock so
// that every worker and outside producer agree. `payload` is text, not jsonb, so a row
// an outside client wrote with broken JSON can exist and is dead-lettered at fetch (Q9);
// `raw` holds a whole job document written by a producer that has only a JSON
// serializer (docs/wire-format.md).
constexpr const char* kV1 = R"SQL(
CREATE FUNCTION @S.now_s() RETURNS double precision LANGUAGE sql STABLE
  AS $f$ SELECT extract(epoch FROM statement_timestamp())::double precision $f$;

CREATE TABLE @S.jobs (
  id               text PRIMARY KEY DEFAULT gen_random_uuid()::text,
  seq              bigserial NOT NULL,
  flow             text,
  tenant           text,
  payload          text,
  raw              text,
  attempts         integer NOT NULL DEFAULT 0,
  max_attempts     integer NOT NULL DEFAULT 5,
  priority         integer NOT NULL DEFAULT 0,
  run_at           double precision NOT NULL DEFAULT @S.now_s(),
  deadline_s       double precision,
  idempotency_key  text UNIQUE,
  state            text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'succeeded', 'dead')),
  reason           text NOT NULL DEFAULT '',
  details          text,
  result           text,
  latency_s        double precision,
  created_at       double precision NOT NULL DEFAULT @S.now_s(),
  updated_at       double precision NOT NULL DEFAULT @S.now_s(),
  lease_owner      text,
  lease_token      text,
  lease_expires_at double precision
);
-- Claims walk this index in fetch order (Q4); expired leases are found through the next.
CREATE INDEX jobs_ready ON @S.jobs (priority DESC, run_at, seq) WHERE state = 'queued';
CREATE INDEX jobs_leased ON @S.jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_settled ON @S.jobs (updated_at) WHERE state IN ('succeeded', 'dead');

CREATE TABLE @S.effects (
  key        text PRIMARY KEY,
  value      text NOT NULL,
  created_at double precision NOT NULL DEFAULT @S.now_s()
);

-- Every insert (ours or an outside client's) and every job becoming queued again wakes
-- the idle fetchers LISTENing on the channel named like the schema.
CREATE FUNCTION @S.notify_jobs() RETURNS trigger LANGUAGE plpgsql
  AS $f$ BEGIN PERFORM pg_notify(TG_TABLE_SCHEMA, ''); RETURN NULL; END $f$;
CREATE TRIGGER jobs_inserted AFTER INSERT ON @S.jobs
  FOR EACH STATEMENT EXECUTE FUNCTION @S.notify_jobs();
CREATE TRIGGER jobs_requeued AFTER UPDATE ON @S.jobs FOR EACH ROW
  WHEN (NEW.state = 'queued' AND (OLD.state <> 'queued' OR NEW.run_at < OLD.run_at))
  EXECUTE FUNCTION @S.notify_jobs();

-- A producer may insert a whole job document as text into `raw` (leaving payload NULL).
-- Copy what orders and describes the job into the columns when it is readable; the
-- worker decodes and validates the document at fetch and dead-letters it if it is bad.
CREATE FUNCTION @S.unpack_raw() RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE d jsonb;
BEGIN
  BEGIN
    d := NEW.raw::jsonb;
    IF jsonb_typeof(d) = 'object' THEN
      IF jsonb_typeof(d->'flow') = 'string' THEN NEW.flow := d->>'flow'; END IF;
      IF jsonb_typeof(d->'tenant') = 'string' THEN NEW.tenant := d->>'tenant'; END IF;
      IF jsonb_typeof(d->'priority') = 'number' THEN NEW.priority := (d->>'priority')::numeric::integer; END IF;
      IF jsonb_typeof(d->'run_at') = 'number' THEN NEW.run_at := (d->>'run_at')::double precision; END IF;
      IF jsonb_typeof(d->'attempts') = 'number' THEN NEW.attempts := (d->>'attempts')::numeric::integer; END IF;
      IF jsonb_typeof(d->'max_attempts') = 'number' THEN NEW.max_attempts := (d->>'max_attempts')::numeric::integer; END IF;
      IF jsonb_typeof(d->'deadline_s') = 'number' THEN NEW.deadline_s := (d->>'deadline_s')::double precision; END IF;
    END IF;
  EXCEPTION WHEN others THEN NULL;  -- unreadable: the fetch dead-letters it (Q9)
  END;
  RETURN NEW;
END $f$;
CREATE TRIGGER jobs_unpack_raw BEFORE INSERT ON @S.jobs FOR EACH ROW
  WHEN (NEW.raw IS NOT NULL AND NEW.payload IS NULL) EXECUTE FUNCTION @S.unpack_raw();

-- The documented way for any client to enqueue, also inside its own transaction.
CREATE FUNCTION @S.enqueue(flow text, tenant text, payload jsonb,
                           priority integer DEFAULT 0, delay_s double precision DEFAULT 0,
                           max_attempts integer DEFAULT 5, idempotency_key text DEFAULT NULL,
                           deadline_s double precision DEFAULT NULL)
  RETURNS text LANGUAGE plpgsql AS $f$
#variable_conflict use_column
DECLARE new_id text;
BEGIN
  INSERT INTO @S.jobs AS j (flow, tenant, payload, priority, run_at, max_attempts, idempotency_key, deadline_s)
  VALUES (enqueue.flow, enqueue.tenant, enqueue.payload::text, enqueue.priority,
          @S.now_s() + coalesce(enqueue.delay_s, 0), enqueue.max_attempts,
          nullif(enqueue.idempotency_key, ''), enqueue.deadline_s)
  ON CONFLICT (idempotency_key) DO NOTHING
  RETURNING j.id INTO new_id;
  IF new_id IS NULL THEN
    SELECT j.id INTO new_id FROM @S.jobs j WHERE j.idempotency_key = enqueue.idempotency_key;
  END IF;
  RETURN new_id;
END $f$;

INSERT INTO @S.schema_version (version) VALUES (1);
)SQL";

// Version 2: dead jobs get their own partial index, so that depth() (the worker's queue
// gauges, every 2 s) counts queued, running and dead jobs from partial indexes and never
// reads the succeeded history. Only a job going dead writes to it.
constexpr const char* kV2 = R"SQL(
CREATE INDEX jobs_dead ON @S.jobs (tenant) WHERE state = 'dead';
INSERT INTO @S.schema_version (version) VALUES (2);
)SQL";

// Version 3: the idempotency key's unique index covers only rows that have a key. Claims
// and settles are non-HOT updates (`state` is in the partial indexes' predicates), and each
// inserted a NULL entry into the full unique index: one index insertion less per claimed
// and per settled job. ON CONFLICT must now name the index's predicate to infer it
// (docs/wire-format.md), so enqueue() is replaced. Idempotent: a schema whose version row
// was lost is re-migrated without error.
constexpr const char* kV3 = R"SQL(
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency_key ON @S.jobs (idempotency_key)
  WHERE idempotency_key IS NOT NULL;
ALTER TABLE @S.jobs DROP CONSTRAINT IF EXISTS jobs_idempotency_key_key;

CREATE OR REPLACE FUNCTION @S.enqueue(flow text, tenant text, payload jsonb,
                           priority integer DEFAULT 0, delay_s double precision DEFAULT 0,
                           max_attempts integer DEFAULT 5, idempotency_key text DEFAULT NULL,
                           deadline_s double precision DEFAULT NULL)
  RETURNS text LANGUAGE plpgsql AS $f$
#variable_conflict use_column
DECLARE new_id text;
BEGIN
  INSERT INTO @S.jobs AS j (flow, tenant, payload, priority, run_at, max_attempts, idempotency_key, deadline_s)
  VALUES (enqueue.flow, enqueue.tenant, enqueue.payload::text, enqueue.priority,
          @S.now_s() + coalesce(enqueue.delay_s, 0), enqueue.max_attempts,
          nullif(enqueue.idempotency_key, ''), enqueue.deadline_s)
  ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
  RETURNING j.id INTO new_id;
  IF new_id IS NULL THEN
    SELECT j.id INTO new_id FROM @S.jobs j WHERE j.idempotency_key = enqueue.idempotency_key;
  END IF;
  RETURN new_id;
END $f$;

INSERT INTO @S.schema_version (version) VALUES (3);
)SQL";

}  // namespace

std::vector<std::string> migrations(const std::string& qs) {
  return {replace_all(kV1, "@S", qs), replace_all(kV2, "@S", qs), replace_all(kV3, "@S", qs)};
}

}  // namespace pg

PostgresStatement postgres_enqueue_statement(std::string_view schema, const NewJob& job) {
  if (!pg::valid_schema_name(schema))
    throw QueueError("postgres: invalid schema name '" + std::string(schema) + "' (1-63 of [A-Za-z0-9_-])");
  PostgresStatement st;
  st.sql = "SELECT " + pg::quote_ident(schema) + ".enqueue($1, $2, $3::jsonb, $4::integer, $5::double precision, " +
           "$6::integer, $7, $8::double precision)";
  auto num = [](double d) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", d);
    return std::string(buf);
  };
  st.params = {job.flow,
               job.tenant,
               boost::json::serialize(job.payload),
               std::to_string(job.priority),
               num(job.delay_s),
               std::to_string(job.max_attempts),
               job.idempotency_key.empty() ? std::nullopt : std::optional<std::string>(job.idempotency_key),
               job.deadline_s ? std::optional<std::string>(num(*job.deadline_s)) : std::nullopt};
  return st;
}

}  // namespace penguiflow::queue
