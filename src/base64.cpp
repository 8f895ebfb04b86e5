// Base64, both ways, strict: the one codec for the etcd wire, certificates and the JSON output.
#include "base64.hpp"

#include <array>
#include <cstdint>

namespace pidlock::base64 {
namespace {

constexpr std::string_view alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr std::uint8_t not_in_alphabet = 0xFF;

constexpr std::array<std::uint8_t, 256> make_sextets() {
  std::array<std::uint8_t, 256> sextets{};
  sextets.fill(not_in_alphabet);
  for (std::size_t i = 0; i < alphabet.size(); ++i) {
    sextets[static_cast<unsigned char>(alphabet[i])] = static_cast<std::uint8_t>(i);
  }
  return sextets;
}
constexpr auto sextets = make_sextets();

std::uint32_t byte_at(std::string_view bytes, std::size_t i) {
  return i < bytes.size() ? static_cast<unsigned char>(bytes[i]) : 0U;
}

}  // namespace

std::string encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    const std::uint32_t group =
        byte_at(bytes, i) << 16U | byte_at(bytes, i + 1) << 8U | byte_at(bytes, i + 2);
    const std::size_t present = bytes.size() - i;  // 1, 2, or 3 and more
    out += alphabet[group >> 18U & 63U];
    out += alphabet[group >> 12U & 63U];
    out += present > 1 ? alphabet[group >> 6U & 63U] : '=';
    out += present > 2 ? alphabet[group & 63U] : '=';
  }
  return out;
}

std::optional<std::string> decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    // Padding: "xx==" or "xxx=", and only in the last group.
    std::size_t padding = 0;
    if (last && text[i + 3] == '=') padding = text[i + 2] == '=' ? 2 : 1;
    std::uint32_t group = 0;
    for (std::size_t j = 0; j < 4 - padding; ++j) {
      const std::uint8_t sextet = sextets[static_cast<unsigned char>(text[i + j])];
      if (sextet == not_in_alphabet) return std::nullopt;
      group = group << 6U | sextet;
    }
    group <<= 6U * padding;
    // Non-zero bits under the padding would decode to the same bytes as their zero form.
    if ((padding == 1 && (group & 0xFFU) != 0) || (padding == 2 && (group & 0xFFFFU) != 0)) {
      return std::nullopt;
    }
    out += static_cast<char>(group >> 16U & 0xFFU);
    if (padding < 2) out += static_cast<char>(group >> 8U & 0xFFU);
    if (padding < 1) out += static_cast<char>(group & 0xFFU);
  }
  return out;
}

}  // namespace pidlock::base64
