// The FFT pairs alone (bench.py): n forward and inverse 2D transforms of (nx, ny) complex64 on one thread.
#include <complex>
#include "pocketfft_hdronly.h"
using C = std::complex<float>;
extern "C" void ffts(C *a, int n, int nx, int ny) {
  pocketfft::shape_t shape{(size_t)nx, (size_t)ny};
  pocketfft::stride_t st{(ptrdiff_t)(ny * sizeof(C)), (ptrdiff_t)sizeof(C)};
  for (int j = 0; j < n; ++j) {
    pocketfft::c2c(shape, st, st, {0, 1}, true, a + (size_t)j * nx * ny, a + (size_t)j * nx * ny, 1.f, 1);
    pocketfft::c2c(shape, st, st, {0, 1}, false, a + (size_t)j * nx * ny, a + (size_t)j * nx * ny, 1.f / (nx * ny), 1);
  }
}
