// The one checked reader of JSON objects that came from elsewhere: etcd's answers (wire.cpp) and
// the slot records anyone with write access to the key prefix may write (slot_record.cpp).
// Every field is type-checked as it is read; the first that is wrong is remembered, with where
// it is ("kvs[0].lease: not a 64-bit integer"), and a wrong field reads as its default. Nothing
// here throws.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace pidlock::fleet {

class JsonFields {
 public:
  using json = nlohmann::json;

  // What a field set to null is. proto3's JSON (etcd's answers) writes null for a default, so
  // there it is absent; pidlock writes no null into a slot record, so there it is a value of the
  // wrong type ("host: not a string").
  enum class Null { absent, wrong_type };
  enum class Presence { optional, required };

  // `context` is where the object is, ending with '.': "responses[0].". Something that is not an
  // object is a problem at once, and every field of it reads as absent.
  JsonFields(const json& object, std::string context, Null null = Null::absent);

  // proto3's int64: a JSON integer, or a string of decimal digits (as the gateway writes them).
  // Absent: 0.
  std::int64_t int64(const char* name);
  // A JSON integer, not a string, in [low, high]: floats, strings and out-of-range values are not
  // read as integers ("not an integer from 1 to 4194304"). Absent: 0.
  std::int64_t integer(const char* name, std::int64_t low, std::int64_t high,
                       Presence presence = Presence::optional);
  bool boolean(const char* name);
  std::string text(const char* name, Presence presence = Presence::optional);
  // Bytes, as proto3's JSON writes them: base64.
  std::string bytes(const char* name);
  // A nested object that must be there (a response header, a stream's result).
  const json* object(const char* name);
  // A repeated field: absent is empty.
  const json* array(const char* name);

  bool has(const char* name) const { return find(name) != nullptr; }
  bool ok() const { return problem_.empty(); }
  const std::string& context() const { return context_; }
  std::string take_problem() { return std::move(problem_); }
  void fail(std::string_view name, std::string_view what);
  // A problem found below this object, already with its own context.
  void fail_with(std::string problem);

 private:
  const json* find(const char* name) const;
  const json* find(const char* name, Presence presence);

  const json& object_;
  std::string context_;
  Null null_;
  std::string problem_;
};

}  // namespace pidlock::fleet
