#include "engine/cuda/cublas_library.h"

#include <dlfcn.h>

#include <string>

#include "absl/base/call_once.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace catserve::engine::cuda {
namespace {

template <typename F>
bool Resolve(void* library, const char* name, F& fn) {
  fn = reinterpret_cast<F>(dlsym(library, name));
  return fn != nullptr;
}

absl::StatusOr<CublasLibrary> Open() {
  const std::string name = absl::StrCat("libcublas.so.", CUBLAS_VER_MAJOR);
  void* library = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    const char* error = dlerror();
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot open ", name,
        " (the CUDA engine needs cuBLAS): ", error != nullptr ? error : "unknown error"));
  }
  CublasLibrary l;
  const char* missing = nullptr;
  if (!Resolve(library, "cublasCreate_v2", l.create)) missing = "cublasCreate_v2";
  if (!Resolve(library, "cublasDestroy_v2", l.destroy)) missing = "cublasDestroy_v2";
  if (!Resolve(library, "cublasSetStream_v2", l.set_stream)) missing = "cublasSetStream_v2";
  if (!Resolve(library, "cublasSetWorkspace_v2", l.set_workspace)) {
    missing = "cublasSetWorkspace_v2";
  }
  if (!Resolve(library, "cublasGemmEx", l.gemm_ex)) missing = "cublasGemmEx";
  if (!Resolve(library, "cublasGetStatusString", l.status_string)) {
    missing = "cublasGetStatusString";
  }
  if (missing != nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(name, " has no ", missing));
  }
  return l;  // the library stays open for the life of the process
}

}  // namespace

absl::StatusOr<const CublasLibrary*> LoadCublas() {
  static absl::once_flag once;
  static absl::StatusOr<CublasLibrary>* library = nullptr;
  absl::call_once(once, [] { library = new absl::StatusOr<CublasLibrary>(Open()); });
  if (!library->ok()) return library->status();
  return &**library;
}

}  // namespace catserve::engine::cuda
