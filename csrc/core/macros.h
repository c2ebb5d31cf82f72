// Portability macros for the header-only core: the same source compiles as host code
// (g++, CPU backend) and as __host__ __device__ code (nvcc, CUDA backend).
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FM_HOST_DEVICE __host__ __device__
#define FM_INLINE __forceinline__
#else
#define FM_HOST_DEVICE
#define FM_INLINE inline __attribute__((always_inline))
#endif

#if defined(__CUDA_ARCH__)
#define FM_DEVICE_CODE 1
#endif
