// The words of other programs that the etcd client recognises a situation by, in one table: what
// etcd, Go's HTTP server, curl and OpenSSL write, where no code or status tells the situations
// apart. Each entry says who writes it and why it is matched. Matching words is a last resort,
// and a fragile one (another version may word it otherwise): each match only sharpens a code
// or status that was checked first, and a text that no longer matches falls back to the plainer
// reading, never to a wrong one.
#pragma once

#include <array>
#include <string_view>

namespace pidlock::fleet::etcd::texts {

// Whether `text` says `words` anywhere in it.
constexpr bool says(std::string_view text, std::string_view words) noexcept {
  return text.find(words) != std::string_view::npos;
}

// --- etcd (server/etcdserver/api/v3rpc/rpctypes), as the gateway passes its errors on ---

// ErrGRPCLeaseNotFound, with NotFound: the lease expired or was revoked. A keep-alive or a
// revoke told so has nothing left to do; NotFound alone could be another missing thing.
inline constexpr std::string_view lease_not_found = "lease not found";

// ErrGRPCUserEmpty, with InvalidArgument: etcd has authentication on and the request carried no
// token. It wants credentials (an auth failure, not a bad request), and a client that has them
// authenticates again.
inline constexpr std::string_view user_name_is_empty = "user name is empty";

// ErrGRPCAuthOldRevision, with InvalidArgument: the token was issued before a change to users or
// roles. Authenticating again gets a good one.
inline constexpr std::string_view auth_store_is_old = "auth store is old";

// ErrGRPCAuthNotEnabled, with FailedPrecondition, to /v3/auth/authenticate: credentials were
// given to an etcd that checks none. Nothing is wrong: requests go without a token.
inline constexpr std::string_view authentication_is_not_enabled = "authentication is not enabled";

// --- Go's net/http, in front of etcd ---

// The body of the 400 a TLS listener answers plain HTTP with: the endpoint was given as http://
// but speaks TLS. A TLS failure to be fixed in the URL, not an answer that is not etcd's.
inline constexpr std::string_view http_request_to_https_server = "HTTP request to an HTTPS server";

// --- curl and OpenSSL, in curl's error buffer ---

// A TLS alert, on a read or write after the handshake (CURLE_RECV_ERROR, CURLE_SEND_ERROR): how a
// TLS 1.3 server refuses a client certificate, or its absence. TLS refusing, not a member going
// away; without it a broken new https connection is tried once more with TLS 1.2 at most, whose
// handshake says why.
inline constexpr std::string_view tls_alert = " alert ";

// With CURLE_SSL_CONNECT_ERROR: the connection was reset, cut or timed out during the handshake.
// That is a server going away (or plain HTTP closing a TLS hello without a word), which may
// pass, not TLS refusing a certificate, which will not. OpenSSL words a cut connection as
// SSL_ERROR_SYSCALL or as an unexpected EOF, depending on timing.
inline constexpr std::array<std::string_view, 4> handshake_cut_short = {
    "SSL_ERROR_SYSCALL", "reset", "unexpected eof", "timed out"};

}  // namespace pidlock::fleet::etcd::texts
