// The gRPC port's transport security, from the --tls_* flags.
#ifndef CATSERVE_SERVER_SERVER_CREDENTIALS_H_
#define CATSERVE_SERVER_SERVER_CREDENTIALS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/security/server_credentials.h"
#include "server/http/http_server.h"

namespace catserve::server {

struct TlsFiles {
  std::string cert;         // --tls_cert: PEM certificate chain of the server
  std::string key;          // --tls_key: PEM private key of that certificate
  std::string client_ca;    // --tls_client_ca: PEM CA bundle; set, clients must present a
                            // certificate it signed (mTLS)
  int reload_seconds = 60;  // --tls_reload_seconds: how often the files are looked at again
};

// Plaintext when `files` names no certificate; else TLS (mTLS with a client CA) whose certificate,
// key and CA are re-read from their files every `reload_seconds`, so a certificate rotated on disk
// (cert-manager renewing a mounted Secret) is served to new connections without a restart.
// INVALID_ARGUMENT naming the flag when the set is incomplete (a key without a certificate, a
// client CA without either, a reload period < 1) or a file is not PEM; NOT_FOUND when a file
// cannot be read.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files);

// The same files' contents for the OpenAI API's HTTPS port: empty when `files` names no
// certificate; the same checks and errors as MakeServerCredentials. Read once, at start.
absl::StatusOr<http::TlsPem> ReadTlsPem(const TlsFiles& files);

}  // namespace catserve::server

#endif  // CATSERVE_SERVER_SERVER_CREDENTIALS_H_
