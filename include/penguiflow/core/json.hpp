// JSON at the edges of the process (C6, W2).
//
// `decode<T>(json, node)` turns JSON into a typed payload with field-level errors
// ("field 'query': expected string, got number"), which Boost.JSON's own conversion does
// not name. It walks Boost.Describe'd structs member by member and uses
// boost::json::value_to for everything else. `to_json(any)` turns a payload back into
// JSON through converters registered per type (typed nodes register theirs).
#pragma once

#include <penguiflow/core/errors.hpp>

#include <boost/core/demangle.hpp>
#include <boost/describe/members.hpp>
#include <boost/json/value.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_to.hpp>
#include <boost/mp11/algorithm.hpp>

#include <any>
#include <functional>
#include <optional>
#include <string>
#include <typeindex>
#include <vector>

namespace penguiflow {

/// Demangled C++ type name, for messages. Computed once per type (a typed node asks for
/// its types every time it is built, and the stateless worker builds flows per job).
template <class T>
const std::string& type_name() {
  static const std::string name = boost::core::demangle(typeid(T).name());
  return name;
}

std::string_view json_kind(const boost::json::value& v);

namespace detail {

template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};
template <class T>
struct is_vector : std::false_type {};
template <class T, class A>
struct is_vector<std::vector<T, A>> : std::true_type {};

/// The JSON name of what T decodes from ("string", "integer", ...), for messages.
template <class T>
std::string json_type_name() {
  if constexpr (std::is_same_v<T, bool>) return "boolean";
  else if constexpr (std::is_integral_v<T>) return "integer";
  else if constexpr (std::is_floating_point_v<T>) return "number";
  else if constexpr (std::is_convertible_v<T, std::string_view> || std::is_same_v<T, std::string>) return "string";
  else return type_name<T>();
}

[[noreturn]] void throw_field_error(const std::string& node, const std::string& path, std::string problem);

template <class T>
T decode_at(const boost::json::value& v, const std::string& node, const std::string& path) {
  namespace json = boost::json;
  namespace describe = boost::describe;
  if constexpr (is_optional<T>::value) {
    if (v.is_null()) return std::nullopt;
    return decode_at<typename T::value_type>(v, node, path);
  } else if constexpr (is_vector<T>::value) {
    if (!v.is_array()) throw_field_error(node, path, "expected array, got " + std::string(json_kind(v)));
    T out;
    const auto& arr = v.get_array();
    out.reserve(arr.size());
    for (std::size_t i = 0; i < arr.size(); ++i)
      out.push_back(decode_at<typename T::value_type>(arr[i], node, path + "[" + std::to_string(i) + "]"));
    return out;
  } else if constexpr (describe::has_describe_members<T>::value) {
    if (!v.is_object()) throw_field_error(node, path.empty() ? "<root>" : path, "expected object, got " + std::string(json_kind(v)));
    const auto& obj = v.get_object();
    T out{};
    boost::mp11::mp_for_each<describe::describe_members<T, describe::mod_public>>([&](auto d) {
      using M = std::remove_cvref_t<decltype(out.*d.pointer)>;
      std::string field = path.empty() ? std::string(d.name) : path + "." + d.name;
      auto it = obj.find(d.name);
      if (it == obj.end()) {
        if constexpr (is_optional<M>::value) return;
        throw_field_error(node, field, "field required");
      }
      out.*d.pointer = decode_at<M>(it->value(), node, field);
    });
    return out;
  } else {
    auto r = json::try_value_to<T>(v);
    if (!r) throw_field_error(node, path.empty() ? "<root>" : path,
                              "expected " + json_type_name<T>() + ", got " + std::string(json_kind(v)));
    return std::move(*r);
  }
}

using ToJsonFn = boost::json::value (*)(const std::any&);
void register_to_json(std::type_index type, ToJsonFn fn);

template <class T>
boost::json::value any_to_json(const std::any& a) {
  return boost::json::value_from(*std::any_cast<T>(&a));
}

}  // namespace detail

/// Decodes `v` into T, throwing ValidationError(node, field, problem) on the first
/// mismatch. Unknown object keys are ignored (as pydantic does by default).
template <class T>
T decode(const boost::json::value& v, const std::string& node = {}) {
  return detail::decode_at<T>(v, node, "");
}

/// Makes `to_json(std::any)` understand payloads of type T. Idempotent, thread-safe.
template <class T>
void register_json_type() {
  if constexpr (boost::json::has_value_from<T>::value) {
    detail::register_to_json(std::type_index(typeid(T)), &detail::any_to_json<T>);
  }
}

/// Converts a payload to JSON: JSON values, strings, numbers, bools, Message,
/// FinalAnswer, StreamChunk, FlowError and every registered type. Throws
/// std::invalid_argument naming the type when no converter is known.
boost::json::value to_json(const std::any& payload);

}  // namespace penguiflow
