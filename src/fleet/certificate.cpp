// A client certificate's validity dates and whether a PEM file holds a key, read from PEM text.
#include "certificate.hpp"

#include <array>
#include <ctime>

#include "../base64.hpp"

namespace pidlock::fleet::certificate {
namespace {

unsigned char byte_of(char c) { return static_cast<unsigned char>(c); }

// One DER element: its tag and its contents.
struct Element {
  unsigned char tag = 0;
  std::string_view contents;
};

constexpr unsigned char sequence = 0x30;
constexpr unsigned char utc_time = 0x17;
constexpr unsigned char generalized_time = 0x18;
constexpr unsigned char explicit_version = 0xA0;

// Takes the next element off the front of `der`, or nothing when it is cut short or its length
// is not one DER allows here (at most four length bytes: no certificate is larger).
std::optional<Element> take(std::string_view& der) {
  if (der.size() < 2) return std::nullopt;
  const unsigned char tag = byte_of(der[0]);
  std::size_t length = byte_of(der[1]);
  std::size_t header = 2;
  if ((length & 0x80U) != 0) {
    const std::size_t bytes = length & 0x7FU;
    if (bytes == 0 || bytes > 4 || der.size() < 2 + bytes) return std::nullopt;
    length = 0;
    for (std::size_t i = 0; i < bytes; ++i) length = (length << 8U) | byte_of(der[2 + i]);
    header += bytes;
  }
  if (der.size() - header < length) return std::nullopt;
  Element element{tag, der.substr(header, length)};
  der.remove_prefix(header + length);
  return element;
}

std::optional<Element> take(std::string_view& der, unsigned char tag) {
  auto element = take(der);
  if (!element || element->tag != tag) return std::nullopt;
  return element;
}

std::optional<int> number(std::string_view digits) {
  int value = 0;
  for (const char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  return value;
}

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
std::int64_t days_from_civil(std::int64_t year, int month, int day) {
  year -= month <= 2 ? 1 : 0;
  const std::int64_t era = (year >= 0 ? year : year - 399) / 400;
  const std::int64_t year_of_era = year - era * 400;
  const std::int64_t day_of_year = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
  const std::int64_t day_of_era =
      year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
  return era * 146097 + day_of_era - 719468;
}

// UTCTime (YYMMDDHHMMSSZ, years 1950–2049) or GeneralizedTime (YYYYMMDDHHMMSSZ), as RFC 5280
// requires them: in UTC, with seconds, without fractions.
std::optional<std::int64_t> unix_time(const Element& time) {
  std::string_view text = time.contents;
  std::optional<int> year;
  if (time.tag == utc_time && text.size() == 13) {
    year = number(text.substr(0, 2));
    if (year) *year += *year < 50 ? 2000 : 1900;
    text.remove_prefix(2);
  } else if (time.tag == generalized_time && text.size() == 15) {
    year = number(text.substr(0, 4));
    text.remove_prefix(4);
  } else {
    return std::nullopt;
  }
  const auto month = number(text.substr(0, 2));
  const auto day = number(text.substr(2, 2));
  const auto hour = number(text.substr(4, 2));
  const auto minute = number(text.substr(6, 2));
  const auto second = number(text.substr(8, 2));
  if (!year || !month || !day || !hour || !minute || !second || text.back() != 'Z' || *month < 1 ||
      *month > 12 || *day < 1 || *day > 31 || *hour > 23 || *minute > 59 || *second > 60) {
    return std::nullopt;
  }
  const int seconds_of_day = *hour * 3600 + *minute * 60 + *second;  // under 86,461
  return days_from_civil(*year, *month, *day) * 86400 + seconds_of_day;
}

// The DER bytes of the first certificate in `pem`.
std::optional<std::string> first_certificate(std::string_view pem) {
  constexpr std::string_view begin = "-----BEGIN CERTIFICATE-----";
  constexpr std::string_view end = "-----END CERTIFICATE-----";
  const auto start = pem.find(begin);
  if (start == std::string_view::npos) return std::nullopt;
  const auto stop = pem.find(end, start);
  if (stop == std::string_view::npos) return std::nullopt;
  std::string text;
  for (const char c : pem.substr(start + begin.size(), stop - start - begin.size())) {
    if (c != '\n' && c != '\r' && c != ' ' && c != '\t') text += c;
  }
  return base64::decode(text);
}

}  // namespace

// Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
// signature, issuer, validity SEQUENCE { notBefore Time, notAfter Time }, … }, … } (RFC 5280).
std::optional<Validity> validity(std::string_view pem) {
  const auto der = first_certificate(pem);
  if (!der) return std::nullopt;
  std::string_view rest = *der;
  const auto certificate = take(rest, sequence);
  if (!certificate) return std::nullopt;
  std::string_view body = certificate->contents;
  const auto to_be_signed = take(body, sequence);
  if (!to_be_signed) return std::nullopt;
  std::string_view fields = to_be_signed->contents;
  auto field = take(fields);
  if (field && field->tag == explicit_version) field = take(fields);  // now the serial number
  if (!field || !take(fields, sequence) || !take(fields, sequence)) return std::nullopt;
  const auto period = take(fields, sequence);
  if (!period) return std::nullopt;
  std::string_view times = period->contents;
  const auto not_before = take(times);
  const auto not_after = take(times);
  if (!not_before || !not_after) return std::nullopt;
  const auto from = unix_time(*not_before);
  const auto until = unix_time(*not_after);
  if (!from || !until) return std::nullopt;
  return Validity{*from, *until};
}

bool holds_private_key(std::string_view pem) {
  const auto begin = pem.find("-----BEGIN ");
  return begin != std::string_view::npos &&
         pem.find("PRIVATE KEY-----", begin) != std::string_view::npos;
}

std::string utc(std::int64_t unix_seconds) {
  const auto seconds = static_cast<std::time_t>(unix_seconds);
  std::tm parts{};
  if (::gmtime_r(&seconds, &parts) == nullptr) return std::to_string(unix_seconds) + " (Unix)";
  std::array<char, 32> text{};
  const std::size_t length =
      std::strftime(text.data(), text.size(), "%Y-%m-%d %H:%M:%S UTC", &parts);
  return std::string(text.data(), length);
}

}  // namespace pidlock::fleet::certificate
