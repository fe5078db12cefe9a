// The far fields of a reconstruction's windows on a single-slice object, and their gradient: the
// reconstruction side of the back end "native" of ptyro-native.
//
// For an object (1, ox, oy), probes (g, m, nx, ny), each position's probe index group (b,) and
// window start (b, 2), and the centring ramp cen (nx, ny), computes per position i and mode k
// exactly what ptyro_invert.forward computes with XLA (complex64):
//
//   forward:  f[i, k] = FFT_ortho(probes[g_i, k] * obj[0, s_i + window] * cen)
//   add:      c = FFT_ortho(ct[i, k]);  go[0, s_i + window] += c * probes[g_i, k] * cen  (summed over k)
//                                       gp[g_i, k]          += c * obj[0, s_i + window] * cen
//   add_each: the same for go, and gp_out[i, k] = c * obj[0, s_i + window] * cen  (a probe per position)
//
// (JAX's cotangents, no conjugates: the unitary DFT matrix is symmetric, so the transpose of the
// forward FFT is itself.) Probe indices are clamped into range as jnp.take(mode="clip") clamps
// them, window starts as jax.lax.dynamic_slice takes them. go and gp are updated in place
// (input_output_aliases): a chunk's gradient is added into the caller's sums.
//
// XLA runs each product as a pass over memory of its own, apart from its FFTs; here the products
// of a position are made while its window is in the cache, and the FFTs are pocketfft's (the
// vendored header), one thread per call (the library runs calls in concurrent streams).

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "pocketfft_hdronly.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using C = std::complex<float>;

// the loops over a row of n complex values, written out on distinct (restrict) float pointers so
// that the compiler vectorises them (std::complex's operator* calls __mulsc3, the C99 Annex G
// recovery of infinities and NaNs, for every product): out = a * b, acc += a * b
inline void row_mul(const float *__restrict a, const float *__restrict b, float *__restrict out, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const float ar = a[2 * j], ai = a[2 * j + 1], br = b[2 * j], bi = b[2 * j + 1];
    out[2 * j] = ar * br - ai * bi;
    out[2 * j + 1] = ar * bi + ai * br;
  }
}
inline void row_mul_add(const float *__restrict a, const float *__restrict b, float *__restrict acc, int64_t n) {
  // in blocks through a buffer in registers' reach: GCC does not vectorise the interleaved
  // read-modify-write of acc, but does both loops
  constexpr int64_t B = 64;
  float t[2 * B];
  for (int64_t j0 = 0; j0 < n; j0 += B) {
    const int64_t m = std::min(B, n - j0);
    row_mul(a + 2 * j0, b + 2 * j0, t, m);
    float *__restrict dst = acc + 2 * j0;
    for (int64_t j = 0; j < 2 * m; ++j) dst[j] += t[j];
  }
}
struct Problem {
  int64_t ox = 0, oy = 0, g = 0, m = 0, nx = 0, ny = 0, b = 0;
  const C *obj = nullptr, *probes = nullptr, *cen = nullptr;
  const int32_t *group = nullptr, *start = nullptr;

  int64_t n() const { return nx * ny; }
  // position i's probe index, clamped (jnp.take(mode="clip")), and window start, brought into range
  // as jax.lax.dynamic_slice does (a negative start wrapped once, as Python indexing does, then clamped)
  static int64_t wrap(int64_t s, int64_t size, int64_t win) { return std::clamp<int64_t>(s < 0 ? s + size : s, 0, size - win); }
  int64_t probe(int64_t i) const { return std::clamp<int64_t>(group[i], 0, g - 1); }
  int64_t sx(int64_t i) const { return wrap(start[2 * i], ox, nx); }
  int64_t sy(int64_t i) const { return wrap(start[2 * i + 1], oy, ny); }

  // dst = p * (the window from (sx, sy)) * cen, row by row (``row``: scratch for one row, 2 * ny floats)
  void window_product(const float *p, int64_t sx, int64_t sy, float *dst, float *row) const {
    const float *cf = reinterpret_cast<const float *>(cen);
    for (int64_t x = 0; x < nx; ++x) {
      const float *o = reinterpret_cast<const float *>(obj + (sx + x) * oy + sy);
      row_mul(p + 2 * x * ny, o, row, ny);
      row_mul(row, cf + 2 * x * ny, dst + 2 * x * ny, ny);
    }
  }

  // the unitary forward 2D FFT of one (nx, ny) wave (in place where in == out)
  void fft(const C *in, C *out) const {
    const pocketfft::shape_t shape{size_t(nx), size_t(ny)};
    const pocketfft::stride_t stride{ptrdiff_t(ny * sizeof(C)), ptrdiff_t(sizeof(C))};
    pocketfft::c2c(shape, stride, stride, {0, 1}, pocketfft::FORWARD, in, out, 1.0f / std::sqrt(float(nx * ny)), 1);
  }
};

ffi::Error Prepare(Problem &P, const char *name, ffi::Buffer<ffi::C64> &obj, ffi::Buffer<ffi::C64> &probes,
                   ffi::Buffer<ffi::S32> &group, ffi::Buffer<ffi::S32> &start, ffi::Buffer<ffi::C64> &cen) {
  const auto od = obj.dimensions(), pd = probes.dimensions(), gd = group.dimensions(), sd = start.dimensions(),
             cd = cen.dimensions();
  if (od.size() != 3 || od[0] != 1 || pd.size() != 4 || gd.size() != 1 || sd.size() != 2 || sd[1] != 2 ||
      sd[0] != gd[0] || cd.size() != 2 || cd[0] != pd[2] || cd[1] != pd[3] || pd[0] < 1 || pd[1] < 1 ||
      od[1] < pd[2] || od[2] < pd[3])
    return ffi::Error::InvalidArgument(std::string(name) +
                                       ": expected object (1, ox, oy), probes (g, m, nx, ny) with nx <= ox and "
                                       "ny <= oy, group (b,), start (b, 2) and centring (nx, ny)");
  P.ox = od[1];
  P.oy = od[2];
  P.g = pd[0];
  P.m = pd[1];
  P.nx = pd[2];
  P.ny = pd[3];
  P.b = gd[0];
  P.obj = obj.typed_data();
  P.probes = probes.typed_data();
  P.cen = cen.typed_data();
  P.group = group.typed_data();
  P.start = start.typed_data();
  return ffi::Error::Success();
}

ffi::Error ForwardImpl(ffi::Buffer<ffi::C64> obj, ffi::Buffer<ffi::C64> probes, ffi::Buffer<ffi::S32> group,
                       ffi::Buffer<ffi::S32> start, ffi::Buffer<ffi::C64> cen, ffi::ResultBuffer<ffi::C64> out) {
  Problem P;
  ffi::Error err = Prepare(P, "ptyro_window_far_fields", obj, probes, group, start, cen);
  if (err.failure()) return err;
  const int64_t N = P.n();
  C *f = out->typed_data();
  std::vector<float> row(2 * P.ny);
  for (int64_t i = 0; i < P.b; ++i) {
    const int64_t gi = P.probe(i), sx = P.sx(i), sy = P.sy(i);
    for (int64_t k = 0; k < P.m; ++k) {
      C *fk = f + (i * P.m + k) * N;
      const float *p = reinterpret_cast<const float *>(P.probes + (gi * P.m + k) * N);
      P.window_product(p, sx, sy, reinterpret_cast<float *>(fk), row.data());
      P.fft(fk, fk);
    }
  }
  return ffi::Error::Success();
}

// each == false: gp (g, m, nx, ny) is a sum, added to; each == true: gp (b, m, nx, ny) is written
template <bool each>
void Add(const Problem &P, const C *ct, C *go, C *gp) {
  const int64_t N = P.n();
  const float *cf = reinterpret_cast<const float *>(P.cen);
  std::vector<C> buf(N);
  std::vector<float> cc(2 * P.ny);
  float *c = reinterpret_cast<float *>(buf.data());
  for (int64_t i = 0; i < P.b; ++i) {
    const int64_t gi = P.probe(i), sx = P.sx(i), sy = P.sy(i);
    for (int64_t k = 0; k < P.m; ++k) {
      P.fft(ct + (i * P.m + k) * N, buf.data());
      const float *p = reinterpret_cast<const float *>(P.probes + (gi * P.m + k) * N);
      float *gpk = reinterpret_cast<float *>(gp + ((each ? i : gi) * P.m + k) * N);
      for (int64_t x = 0; x < P.nx; ++x) {
        const float *o = reinterpret_cast<const float *>(P.obj + (sx + x) * P.oy + sy);
        float *g = reinterpret_cast<float *>(go + (sx + x) * P.oy + sy);
        const int64_t j = 2 * x * P.ny;
        row_mul(c + j, cf + j, cc.data(), P.ny);  // the centring ramp on the cotangent, once for both products
        row_mul_add(cc.data(), p + j, g, P.ny);
        if (each)
          row_mul(cc.data(), o, gpk + j, P.ny);
        else
          row_mul_add(cc.data(), o, gpk + j, P.ny);
      }
    }
  }
}

ffi::Error CheckSums(const Problem &P, const char *name, ffi::Buffer<ffi::C64> &ct, ffi::Buffer<ffi::C64> &go,
                     int64_t gp_first, const ffi::Span<const int64_t> &gpd) {
  const auto td = ct.dimensions(), od = go.dimensions();
  if (td.size() != 4 || td[0] != P.b || td[1] != P.m || td[2] != P.nx || td[3] != P.ny || od.size() != 3 ||
      od[0] != 1 || od[1] != P.ox || od[2] != P.oy || gpd.size() != 4 || gpd[0] != gp_first || gpd[1] != P.m ||
      gpd[2] != P.nx || gpd[3] != P.ny)
    return ffi::Error::InvalidArgument(std::string(name) +
                                       ": expected cotangents (b, m, nx, ny), the object's sums (1, ox, oy) and the "
                                       "probes' (" + std::to_string(gp_first) + ", m, nx, ny)");
  return ffi::Error::Success();
}

// the add kernels' common part: shapes checked, the sums in place (aliased to the results by
// input_output_aliases; copied where XLA did not alias them), the gradient added
template <bool each>
ffi::Error AddInto(const char *name, ffi::Buffer<ffi::C64> &obj, ffi::Buffer<ffi::C64> &probes,
                   ffi::Buffer<ffi::S32> &group, ffi::Buffer<ffi::S32> &start, ffi::Buffer<ffi::C64> &cen,
                   ffi::Buffer<ffi::C64> &ct, ffi::Buffer<ffi::C64> &go, const C *gp, C *go_out, C *gp_out,
                   const ffi::Span<const int64_t> &gpd) {
  Problem P;
  ffi::Error err = Prepare(P, name, obj, probes, group, start, cen);
  if (err.failure()) return err;
  err = CheckSums(P, name, ct, go, each ? P.b : P.g, gpd);
  if (err.failure()) return err;
  if (go_out != go.typed_data()) std::memcpy(go_out, go.typed_data(), go.element_count() * sizeof(C));
  if (!each && gp_out != gp) std::memcpy(gp_out, gp, size_t(P.g * P.m * P.n()) * sizeof(C));
  Add<each>(P, ct.typed_data(), go_out, gp_out);
  return ffi::Error::Success();
}

ffi::Error AddImpl(ffi::Buffer<ffi::C64> obj, ffi::Buffer<ffi::C64> probes, ffi::Buffer<ffi::S32> group,
                   ffi::Buffer<ffi::S32> start, ffi::Buffer<ffi::C64> cen, ffi::Buffer<ffi::C64> ct,
                   ffi::Buffer<ffi::C64> go, ffi::Buffer<ffi::C64> gp, ffi::ResultBuffer<ffi::C64> go_out,
                   ffi::ResultBuffer<ffi::C64> gp_out) {
  return AddInto<false>("ptyro_window_far_fields_add", obj, probes, group, start, cen, ct, go, gp.typed_data(),
                        go_out->typed_data(), gp_out->typed_data(), gp.dimensions());
}

ffi::Error AddEachImpl(ffi::Buffer<ffi::C64> obj, ffi::Buffer<ffi::C64> probes, ffi::Buffer<ffi::S32> group,
                       ffi::Buffer<ffi::S32> start, ffi::Buffer<ffi::C64> cen, ffi::Buffer<ffi::C64> ct,
                       ffi::Buffer<ffi::C64> go, ffi::ResultBuffer<ffi::C64> go_out, ffi::ResultBuffer<ffi::C64> gp_out) {
  return AddInto<true>("ptyro_window_far_fields_add_each", obj, probes, group, start, cen, ct, go, nullptr,
                       go_out->typed_data(), gp_out->typed_data(), gp_out->dimensions());
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(PtyroWindowFarFields, ForwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::C64>>()
                                  .Arg<ffi::Buffer<ffi::C64>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::C64>>()
                                  .Ret<ffi::Buffer<ffi::C64>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(PtyroWindowFarFieldsAdd, AddImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::C64>>()
                                  .Arg<ffi::Buffer<ffi::C64>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::C64>>()
                                  .Arg<ffi::Buffer<ffi::C64>>()
                                  .Arg<ffi::Buffer<ffi::C64>>()
                                  .Arg<ffi::Buffer<ffi::C64>>()
                                  .Ret<ffi::Buffer<ffi::C64>>()
                                  .Ret<ffi::Buffer<ffi::C64>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(PtyroWindowFarFieldsAddEach, AddEachImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::C64>>()
                                  .Arg<ffi::Buffer<ffi::C64>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::C64>>()
                                  .Arg<ffi::Buffer<ffi::C64>>()
                                  .Arg<ffi::Buffer<ffi::C64>>()
                                  .Ret<ffi::Buffer<ffi::C64>>()
                                  .Ret<ffi::Buffer<ffi::C64>>());
