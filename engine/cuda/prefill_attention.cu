#include "engine/cuda/prefill_attention.h"
