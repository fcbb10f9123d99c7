#include "server/server_credentials.h"

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace catserve::server {
namespace {

// The file exists, can be read and holds a PEM block of `kind` ("CERTIFICATE", "PRIVATE KEY").
absl::Status CheckPemFile(const std::string& path, const char* flag, const char* kind) {
  std::ifstream file(path);
  if (!file) return absl::NotFoundError(absl::StrCat("--", flag, "=", path, " cannot be read"));
  std::stringstream text;
  text << file.rdbuf();
  // "-----BEGIN PRIVATE KEY", "-----BEGIN RSA PRIVATE KEY", "-----BEGIN EC PRIVATE KEY", ...
  const std::string& pem = text.str();
  if (!absl::StrContains(pem, "-----BEGIN ") || !absl::StrContains(pem, kind)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "=", path, " holds no PEM ", kind, " block"));
  }
  return absl::OkStatus();
}

std::string ReadAll(const std::string& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// The checks both transports share: OK for plaintext too.
absl::Status CheckTlsFiles(const TlsFiles& files) {
  if (files.cert.empty() && files.key.empty()) {
    if (!files.client_ca.empty()) {
      return absl::InvalidArgumentError(
          "--tls_client_ca needs --tls_cert and --tls_key: client certificates are checked only "
          "over TLS");
    }
    return absl::OkStatus();
  }
  if (files.cert.empty() || files.key.empty()) {
    return absl::InvalidArgumentError("set both --tls_cert and --tls_key, or neither");
  }
  if (files.reload_seconds < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_reload_seconds must be >= 1 (got ", files.reload_seconds, ")"));
  }
  if (absl::Status s = CheckPemFile(files.cert, "tls_cert", "CERTIFICATE"); !s.ok()) return s;
  if (absl::Status s = CheckPemFile(files.key, "tls_key", "PRIVATE KEY"); !s.ok()) return s;
  if (!files.client_ca.empty()) {
    if (absl::Status s = CheckPemFile(files.client_ca, "tls_client_ca", "CERTIFICATE"); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<http::TlsPem> ReadTlsPem(const TlsFiles& files) {
  if (absl::Status s = CheckTlsFiles(files); !s.ok()) return s;
  if (files.cert.empty()) return http::TlsPem{};
  return http::TlsPem{.cert = ReadAll(files.cert),
                      .key = ReadAll(files.key),
                      .client_ca = files.client_ca.empty() ? "" : ReadAll(files.client_ca)};
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files) {
  if (absl::Status s = CheckTlsFiles(files); !s.ok()) return s;
  if (files.cert.empty()) return grpc::InsecureServerCredentials();
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      files.key, files.cert, files.client_ca, static_cast<unsigned>(files.reload_seconds));
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (files.client_ca.empty()) {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

}  // namespace catserve::server
