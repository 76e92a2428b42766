// A small, strict parser of the Prometheus text exposition format 0.0.4, so tests read
// rendered metrics back instead of comparing strings. Throws std::runtime_error naming
// the line on anything malformed (unknown escape, unterminated value, sample before its
// TYPE, HELP/TYPE twice for one family, ...).
#pragma once

#include <cmath>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace penguiflow::testing {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct Exposition {
  std::map<std::string, std::string> help;  // family -> help (unescaped)
  std::map<std::string, std::string> type;  // family -> counter|gauge|histogram|...
  std::vector<Sample> samples;

  /// Samples named `name` whose labels include every pair of `match`.
  std::vector<Sample> find(const std::string& name, const std::map<std::string, std::string>& match = {}) const {
    std::vector<Sample> out;
    for (auto& s : samples) {
      if (s.name != name) continue;
      bool ok = true;
      for (auto& [k, v] : match) {
        auto it = s.labels.find(k);
        ok &= it != s.labels.end() && it->second == v;
      }
      if (ok) out.push_back(s);
    }
    return out;
  }
  /// The value of the single sample matching; throws when there is not exactly one.
  double value(const std::string& name, const std::map<std::string, std::string>& match = {}) const {
    auto found = find(name, match);
    if (found.size() != 1)
      throw std::runtime_error("expected one sample of " + name + ", found " + std::to_string(found.size()));
    return found[0].value;
  }
};

inline double parse_prom_number(const std::string& s) {
  if (s == "+Inf") return HUGE_VAL;
  if (s == "-Inf") return -HUGE_VAL;
  if (s == "NaN") return NAN;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0') throw std::runtime_error("bad number '" + s + "'");
  return v;
}

inline std::string family_of(const std::string& sample, const std::map<std::string, std::string>& types) {
  if (types.count(sample)) return sample;
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    std::string suf(suffix);
    if (sample.size() > suf.size() && sample.compare(sample.size() - suf.size(), suf.size(), suf) == 0) {
      std::string base = sample.substr(0, sample.size() - suf.size());
      if (types.count(base) && types.at(base) == "histogram") return base;
    }
  }
  return {};
}

inline Exposition parse_exposition(const std::string& text) {
  Exposition e;
  std::istringstream in(text);
  std::string line;
  int lineno = 0;
  auto bad = [&](const std::string& why) {
    throw std::runtime_error("line " + std::to_string(lineno) + ": " + why + ": " + line);
  };
  auto is_name_char = [](char c, bool first) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' || (!first && c >= '0' && c <= '9');
  };
  if (!text.empty() && text.back() != '\n') throw std::runtime_error("exposition must end with a line feed");
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::istringstream ls(line);
      std::string hash, kw, name;
      ls >> hash >> kw >> name;
      if (kw == "HELP") {
        if (e.help.count(name)) bad("HELP twice");
        std::string rest = line.substr(std::string("# HELP ").size() + name.size());
        if (!rest.empty()) {
          if (rest[0] != ' ') bad("HELP without space");
          rest.erase(0, 1);
        }
        std::string help;
        for (std::size_t i = 0; i < rest.size(); ++i) {
          if (rest[i] != '\\') {
            help += rest[i];
            continue;
          }
          if (++i >= rest.size()) bad("dangling escape in HELP");
          if (rest[i] == '\\') help += '\\';
          else if (rest[i] == 'n') help += '\n';
          else bad("unknown escape in HELP");
        }
        e.help[name] = help;
      } else if (kw == "TYPE") {
        if (e.type.count(name)) bad("TYPE twice");
        std::string t;
        ls >> t;
        static const std::set<std::string> kinds{"counter", "gauge", "histogram", "summary", "untyped"};
        if (!kinds.count(t)) bad("unknown type");
        for (auto& s : e.samples)
          if (family_of(s.name, e.type) == name || s.name == name) bad("TYPE after samples");
        e.type[name] = t;
      }
      continue;
    }
    std::size_t i = 0;
    Sample s;
    while (i < line.size() && is_name_char(line[i], i == 0)) s.name += line[i++];
    if (s.name.empty()) bad("no metric name");
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (true) {
        if (i >= line.size()) bad("unterminated labels");
        if (line[i] == '}') {
          ++i;
          break;
        }
        std::string lname;
        while (i < line.size() && is_name_char(line[i], lname.empty()) && line[i] != ':') lname += line[i++];
        if (lname.empty() || i + 1 >= line.size() || line[i] != '=' || line[i + 1] != '"') bad("bad label");
        i += 2;
        std::string value;
        bool closed = false;
        while (i < line.size()) {
          char c = line[i++];
          if (c == '"') {
            closed = true;
            break;
          }
          if (c != '\\') {
            value += c;
            continue;
          }
          if (i >= line.size()) bad("dangling escape");
          char x = line[i++];
          if (x == '\\') value += '\\';
          else if (x == '"') value += '"';
          else if (x == 'n') value += '\n';
          else bad("unknown escape");
        }
        if (!closed) bad("unterminated label value");
        if (s.labels.count(lname)) bad("label repeats");
        s.labels[lname] = value;
        if (i < line.size() && line[i] == ',') ++i;
      }
    }
    if (i >= line.size() || line[i] != ' ') bad("no space before value");
    std::string rest = line.substr(i + 1);
    auto sp = rest.find(' ');  // an optional timestamp follows
    s.value = parse_prom_number(rest.substr(0, sp));
    if (family_of(s.name, e.type).empty()) bad("sample without TYPE");
    e.samples.push_back(std::move(s));
  }
  return e;
}

}  // namespace penguiflow::testing
