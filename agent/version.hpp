#pragma once

namespace nvqos {
inline constexpr const char* kVersion = NVQOS_VERSION;
}
