// TEMPORARY stand-in until the hostile-bytes branch lands.
#pragma once
#include <string>
#include <string_view>
namespace pidlock::text {
inline std::string for_terminal(std::string_view bytes) { return std::string(bytes); }
}  // namespace pidlock::text
