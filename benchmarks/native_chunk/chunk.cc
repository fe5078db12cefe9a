// A timing prototype (issue 18, session 13): RECON-A's chunk work in plain C++ on one thread:
// per position the object window times its grouped probe (with the centring sign), an FFT, the
// amplitude loss and its gradient, an inverse FFT, and the object's and the probe's gradients added
// in place (pocketfft's c2c, the header plugins/ptyro-native vendors). Run by bench.py, which also
// checks it (--check) against JAX's gradient of the same loss on small inputs:
//   L = sum_j w_j sum_pixels (sqrt(|FFT_ortho(P_g(j) * O_window(j) * s)|^2 * scale + 1e-12) - sqrt(d_j + 1e-12))^2
// with s the centring sign (-1)^(x+y); returns L, and adds dL/dRe + i dL/dIm to go and gp (jax.grad
// returns their complex conjugates). It is not the library's step (no modes, masks, other losses
// or noise floor): it measures what such a kernel costs.
#include <complex>
#include <vector>
#include <cmath>
#include "pocketfft_hdronly.h"
using C = std::complex<float>;
extern "C" double chunk(const C *__restrict obj, int ox, int oy, const C *__restrict probes, const int *group, const int *start,
                         const float *__restrict data, const float *w, int n, int nx, int ny, float scale, C *__restrict go, C *__restrict gp) {
  const int N = nx * ny;
  std::vector<C> psi_v(N), win_v(N);
  C *__restrict psi = psi_v.data();
  C *__restrict win = win_v.data();
  std::vector<float> sgn_v(N);
  for (int x = 0; x < nx; ++x) for (int y = 0; y < ny; ++y) sgn_v[x * ny + y] = ((x + y) & 1) ? -1.f : 1.f;
  const float *__restrict sgn = sgn_v.data();
  pocketfft::shape_t shape{(size_t)nx, (size_t)ny};
  pocketfft::stride_t st{(ptrdiff_t)(ny * sizeof(C)), (ptrdiff_t)sizeof(C)};
  pocketfft::shape_t axes{0, 1};
  const float norm = 1.0f / std::sqrt(float(N));
  double loss = 0;
  for (int j = 0; j < n; ++j) {
    const float *__restrict p = reinterpret_cast<const float *>(probes + (size_t)group[j] * N);
    const int sx = start[2 * j], sy = start[2 * j + 1];
    float *__restrict wf = reinterpret_cast<float *>(win);
    float *__restrict pf = reinterpret_cast<float *>(psi);
    for (int x = 0; x < nx; ++x) {
      const float *__restrict o = reinterpret_cast<const float *>(obj + (size_t)(sx + x) * oy + sy);
      const int b = x * ny;
      for (int y = 0; y < ny; ++y) {
        const float s = sgn[b + y];
        const float ore = o[2 * y] * s, oim = o[2 * y + 1] * s;
        wf[2 * (b + y)] = ore; wf[2 * (b + y) + 1] = oim;
        const float pre = p[2 * (b + y)], pim = p[2 * (b + y) + 1];
        pf[2 * (b + y)] = pre * ore - pim * oim;
        pf[2 * (b + y) + 1] = pre * oim + pim * ore;
      }
    }
    pocketfft::c2c(shape, st, st, axes, true, psi, psi, norm, 1);
    const float *__restrict d = data + (size_t)j * N;
    const float wj = w[j];
    float lj = 0;
    for (int i = 0; i < N; ++i) {
      const float re = pf[2 * i], im = pf[2 * i + 1];
      const float a = std::sqrt((re * re + im * im) * scale + 1e-12f);
      const float r = a - std::sqrt(d[i] + 1e-12f);
      lj += r * r;
      const float f = wj * 2.f * scale * r / a;
      pf[2 * i] = re * f; pf[2 * i + 1] = im * f;
    }
    loss += wj * lj;
    pocketfft::c2c(shape, st, st, axes, false, psi, psi, norm, 1);
    float *__restrict gpf = reinterpret_cast<float *>(gp + (size_t)group[j] * N);
    for (int x = 0; x < nx; ++x) {
      float *__restrict g = reinterpret_cast<float *>(go + (size_t)(sx + x) * oy + sy);
      const int b = x * ny;
      for (int y = 0; y < ny; ++y) {
        const float cre = pf[2 * (b + y)], cim = pf[2 * (b + y) + 1];
        const float s = sgn[b + y];
        const float pre = p[2 * (b + y)] * s, pim = p[2 * (b + y) + 1] * s;
        g[2 * y] += cre * pre + cim * pim;        // chi * conj(p * s)
        g[2 * y + 1] += cim * pre - cre * pim;
        const float wre = wf[2 * (b + y)], wim = wf[2 * (b + y) + 1];
        gpf[2 * (b + y)] += cre * wre + cim * wim;  // chi * conj(win)
        gpf[2 * (b + y) + 1] += cim * wre - cre * wim;
      }
    }
  }
  return loss;
}
