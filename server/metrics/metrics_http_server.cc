#include "server/metrics/metrics_http_server.h"

#include <utility>

#include "prometheus/text_serializer.h"

namespace catserve::metrics {
namespace {

constexpr char kTextPlain[] = "text/plain; charset=utf-8";
constexpr char kExpositionFormat[] = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace

void MetricsHttpServer::AddProbeRoutes(http::Routes& routes, const prometheus::Collectable* metrics,
                                       std::function<bool()> ready) {
  routes
      .Get("/metrics",
           [metrics](const http::Request&, std::shared_ptr<http::Call> call) {
             call->Reply(200, kExpositionFormat,
                         prometheus::TextSerializer().Serialize(metrics->Collect()));
           })
      .Get("/healthz",
           [](const http::Request&, std::shared_ptr<http::Call> call) {
             call->Reply(200, kTextPlain, "ok\n");
           })
      .Get("/readyz",
           [ready = std::move(ready)](const http::Request&, std::shared_ptr<http::Call> call) {
             if (ready && !ready()) {
               call->Reply(503, kTextPlain, "not ready\n");
             } else {
               call->Reply(200, kTextPlain, "ready\n");
             }
           });
}

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    absl::string_view address, const prometheus::Collectable* metrics,
    std::function<bool()> ready) {
  http::Routes routes;
  AddProbeRoutes(routes, metrics, std::move(ready));
  http::Options options;
  options.name = "metrics";
  absl::StatusOr<std::unique_ptr<http::HttpServer>> http =
      http::HttpServer::Start(address, std::move(routes), std::move(options));
  if (!http.ok()) return http.status();
  return std::unique_ptr<MetricsHttpServer>(new MetricsHttpServer(*std::move(http)));
}

}  // namespace catserve::metrics
