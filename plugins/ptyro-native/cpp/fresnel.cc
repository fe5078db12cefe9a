// Fused multislice far field for XLA on the CPU: the far-field back end "native" of ptyro-native.
//
// For waves psi (c, nx, ny), transmission functions t_0 .. t_{S-1} (given as head (S-1, nx, ny)
// and last (nx, ny)), Fresnel kernels k_0 .. k_{S-2} (S-1, nx, ny) and a far-field mask
// m (nx, ny), computes per wave exactly what ptyro_simul.multislice.fresnel_far_field does:
//
//     w <- IFFT2(k_i * FFT2(t_i * w))      for i = 0 .. S-2   (XLA's 1/N-normalised inverse)
//     out = |FFT2(t_{S-1} * w)|^2 * m
//
// XLA runs every multiplication as its own pass over memory between its FFTs. Here each 2D FFT
// is split into its two 1D passes and the multiplications are done on the lines while they sit
// in registers, so one slice is two passes over the wave instead of six:
//   - a row pass (lines along y, contiguous): IFFT_y, times t_{i+1}, FFT_y;
//   - a column pass (lines along x): FFT_x, times k_i / N, IFFT_x.
// The kernels and the mask include the 2/3-Nyquist band limit, so whole columns of them are zero:
// those columns are written as zeros without being transformed (a third of the column FFTs).
// Lines are processed VLEN at a time in SIMD lanes with pocketfft's vectorised 1D transforms.
// The waves of a call go through the slices together, block of lines by block of lines, so each
// block of an operator is read from memory once per call and reused for every wave.

#include <complex>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "pocketfft_hdronly.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using pocketfft::detail::cmplx;
using pocketfft::detail::pocketfft_c;

namespace {

using C = std::complex<float>;
#ifndef POCKETFFT_NO_VECTORS
using V = pocketfft::detail::vtype_t<float>;
constexpr size_t L = pocketfft::detail::VLEN<float>::val;
#else
using V = float;
constexpr size_t L = 1;
#endif

inline float lane(const V &v, size_t j) {
#ifndef POCKETFFT_NO_VECTORS
  return v[j];
#else
  (void)j;
  return v;
#endif
}
inline void set_lane(V &v, size_t j, float x) {
#ifndef POCKETFFT_NO_VECTORS
  v[j] = x;
#else
  (void)j;
  v = x;
#endif
}

// Moving lines between the interleaved complex arrays and the SIMD line buffer (lane j = line j).
// Column lines (point stride ny, line stride 1): lane j of point p is src[p * pstride + j].
// Row lines (point stride 1, line stride ny): lane j of point p is src[j * lstride + p].
// With AVX2 and full blocks of 8 lines these are shuffles of whole 8x8 blocks; otherwise element
// by element (the last, partial block of lines; other instruction sets).

#if defined(__AVX2__) && !defined(POCKETFFT_NO_VECTORS)
#define PTYRO_AVX2 1
#include <immintrin.h>
static_assert(L == 8, "AVX2 path expects 8 float lanes");

// 8 complex values (16 floats) into their real and imaginary parts
inline void load8(const C *src, __m256 &re, __m256 &im) {
  const __m256 a = _mm256_loadu_ps(reinterpret_cast<const float *>(src));
  const __m256 b = _mm256_loadu_ps(reinterpret_cast<const float *>(src) + 8);
  const __m256 r = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
  const __m256 i = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
  re = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(r), _MM_SHUFFLE(3, 1, 2, 0)));
  im = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(i), _MM_SHUFFLE(3, 1, 2, 0)));
}

inline void store8(C *dst, __m256 re, __m256 im) {
  re = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(re), _MM_SHUFFLE(3, 1, 2, 0)));
  im = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(im), _MM_SHUFFLE(3, 1, 2, 0)));
  _mm256_storeu_ps(reinterpret_cast<float *>(dst), _mm256_unpacklo_ps(re, im));
  _mm256_storeu_ps(reinterpret_cast<float *>(dst) + 8, _mm256_unpackhi_ps(re, im));
}

inline void transpose8(__m256 *r) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)), u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)), u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0)), u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0)), u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

inline __m256 vec(const V &v) { return reinterpret_cast<const __m256 &>(v); }
inline V vval(__m256 v) { return reinterpret_cast<V &>(v); }

// 8 row lines, points [p, p+8): re[q], im[q] hold point p+q across the 8 lines
inline void load_rows8(const C *src, ptrdiff_t lstride, size_t p, __m256 *re, __m256 *im) {
  for (size_t j = 0; j < 8; ++j) load8(src + j * lstride + p, re[j], im[j]);
  transpose8(re);
  transpose8(im);
}
#endif

inline void gather_generic(cmplx<V> *buf, const C *src, ptrdiff_t lstride, ptrdiff_t pstride, size_t n, size_t count) {
  for (size_t p = 0; p < n; ++p) {
    for (size_t j = 0; j < L; ++j) {
      const C v = j < count ? src[j * lstride + p * pstride] : C(0.f, 0.f);
      set_lane(buf[p].r, j, v.real());
      set_lane(buf[p].i, j, v.imag());
    }
  }
}

inline void scatter_generic(const cmplx<V> *buf, C *dst, ptrdiff_t lstride, ptrdiff_t pstride, size_t n, size_t count) {
  for (size_t p = 0; p < n; ++p)
    for (size_t j = 0; j < count; ++j) dst[j * lstride + p * pstride] = C(lane(buf[p].r, j), lane(buf[p].i, j));
}

// column lines y0 .. y0+count of an (n, ny) array
inline void gather_cols(cmplx<V> *buf, const C *src, size_t ny, size_t n, size_t count) {
#ifdef PTYRO_AVX2
  if (count == 8) {
    for (size_t p = 0; p < n; ++p) {
      __m256 re, im;
      load8(src + p * ny, re, im);
      buf[p].r = vval(re);
      buf[p].i = vval(im);
    }
    return;
  }
#endif
  gather_generic(buf, src, 1, ny, n, count);
}

inline void scatter_cols(const cmplx<V> *buf, C *dst, size_t ny, size_t n, size_t count) {
#ifdef PTYRO_AVX2
  if (count == 8) {
    for (size_t p = 0; p < n; ++p) store8(dst + p * ny, vec(buf[p].r), vec(buf[p].i));
    return;
  }
#endif
  scatter_generic(buf, dst, 1, ny, n, count);
}

// row lines x0 .. x0+count of an (., n) array (line stride n)
inline void gather_rows(cmplx<V> *buf, const C *src, size_t n, size_t count) {
#ifdef PTYRO_AVX2
  if (count == 8 && n % 8 == 0) {
    __m256 re[8], im[8];
    for (size_t p = 0; p < n; p += 8) {
      load_rows8(src, n, p, re, im);
      for (size_t q = 0; q < 8; ++q) {
        buf[p + q].r = vval(re[q]);
        buf[p + q].i = vval(im[q]);
      }
    }
    return;
  }
#endif
  gather_generic(buf, src, n, 1, n, count);
}

inline void scatter_rows(const cmplx<V> *buf, C *dst, size_t n, size_t count) {
#ifdef PTYRO_AVX2
  if (count == 8 && n % 8 == 0) {
    __m256 re[8], im[8];
    for (size_t p = 0; p < n; p += 8) {
      for (size_t q = 0; q < 8; ++q) {
        re[q] = vec(buf[p + q].r);
        im[q] = vec(buf[p + q].i);
      }
      transpose8(re);
      transpose8(im);
      for (size_t j = 0; j < 8; ++j) store8(dst + j * n + p, re[j], im[j]);
    }
    return;
  }
#endif
  scatter_generic(buf, dst, n, 1, n, count);
}


// which columns y of op (nx, ny) hold any nonzero value
std::vector<uint8_t> active_columns(const C *op, size_t nx, size_t ny) {
  std::vector<uint8_t> act(ny, 0);
  for (size_t x = 0; x < nx; ++x)
    for (size_t y = 0; y < ny; ++y)
      if (op[x * ny + y] != C(0.f, 0.f)) act[y] = 1;
  return act;
}

// One call's problem: waves (nwaves, nx, ny); transmission functions (nhead, tnx, tny) and
// (tnx, tny); kernels (nhead, nx, ny); mask (nx, ny); out (nwaves, nx, ny). Full grid: t has the
// waves' shape. Windowed: each wave sees the nx x ny crop of the periodic t starting at its
// position's offsets (npos, 2), one position per `per_position` consecutive waves (probe modes).
struct Problem {
  const C *waves;
  size_t nwaves, nx, ny;
  const C *th, *tl;
  size_t nhead, tnx, tny;
  const int32_t *offsets;
  size_t per_position;
  const C *kh;
  const float *m;
  float *res;
};

void FarField(const Problem &P) {
  const size_t nx = P.nx, ny = P.ny, npix = nx * ny, nhead = P.nhead, nwaves = P.nwaves;
  const C *waves = P.waves, *th = P.th, *tl = P.tl, *kh = P.kh;
  const float *m = P.m;
  float *res = P.res;
  pocketfft_c<float> px(nx), py(ny);
  pocketfft::detail::arr<cmplx<V>> buf(std::max(nx, ny));
  const float inv_n = 1.0f / float(npix);

  // the columns the kernels and the mask let through
  std::vector<std::vector<uint8_t>> kact(nhead);
  for (size_t i = 0; i < nhead; ++i) kact[i] = active_columns(kh + i * npix, nx, ny);
  std::vector<uint8_t> mact(ny, 0);
  for (size_t x = 0; x < nx; ++x)
    for (size_t y = 0; y < ny; ++y)
      if (m[x * ny + y] != 0.f) mact[y] = 1;

  auto trans = [&](size_t i) { return i < nhead ? th + i * P.tnx * P.tny : tl; };

  // Slice by slice over all the waves of the call, line block by line block: the operators'
  // lines of a block are loaded (and, for rows, transposed into lanes) once and used for every
  // wave, so they are read from memory once per call rather than once per wave.
  std::unique_ptr<C[]> work(new C[nwaves * npix]);
  auto wave = [&](size_t b) { return work.get() + b * npix; };
  pocketfft::detail::arr<cmplx<V>> op(std::max(nx, ny));

  // buf *= op lane by lane
  auto apply_op = [&](size_t n) {
    for (size_t p = 0; p < n; ++p) {
      const V r = buf[p].r * op[p].r - buf[p].i * op[p].i;
      const V i = buf[p].r * op[p].i + buf[p].i * op[p].r;
      buf[p].r = r;
      buf[p].i = i;
    }
  };
  // op = the rows x0 .. x0+cnt of t (lanes = rows): of the whole t, or of wave b's periodic crop
  std::vector<C> crop(P.offsets ? L * ny : 0);
  auto load_row_op = [&](const C *t, size_t x0, size_t cnt) { gather_rows(op.data(), t + x0 * ny, ny, cnt); };
  auto load_row_op_crop = [&](const C *t, size_t b, size_t x0, size_t cnt) {
    const int32_t *o = P.offsets + 2 * (b / P.per_position);
    const size_t ox = size_t(((int64_t(o[0]) % int64_t(P.tnx)) + int64_t(P.tnx)) % int64_t(P.tnx));
    const size_t oy = size_t(((int64_t(o[1]) % int64_t(P.tny)) + int64_t(P.tny)) % int64_t(P.tny));
    const size_t first = std::min(ny, P.tny - oy);
    for (size_t j = 0; j < cnt; ++j) {
      const C *row = t + ((ox + x0 + j) % P.tnx) * P.tny;
      std::memcpy(crop.data() + j * ny, row + oy, first * sizeof(C));
      if (first < ny) std::memcpy(crop.data() + j * ny + first, row, (ny - first) * sizeof(C));
    }
    gather_rows(op.data(), crop.data(), ny, cnt);
  };
  // op = the columns y0 .. y0+cnt of k, times scale (lanes = columns)
  auto load_col_op = [&](const C *k, size_t y0, size_t cnt, float scale) {
    gather_cols(op.data(), k + y0, ny, nx, cnt);
    for (size_t p = 0; p < nx; ++p) {
      op[p].r *= scale;
      op[p].i *= scale;
    }
  };
  auto any_active = [](const uint8_t *act, size_t y0, size_t cnt) {
    for (size_t j = 0; j < cnt; ++j)
      if (act[y0 + j]) return true;
    return false;
  };

  // row pass 0: w = FFT_y(t_0 * psi)
  for (size_t x0 = 0; x0 < nx; x0 += L) {
    const size_t cnt = std::min(L, nx - x0);
    if (!P.offsets) load_row_op(trans(0), x0, cnt);
    for (size_t b = 0; b < nwaves; ++b) {
      if (P.offsets) load_row_op_crop(trans(0), b, x0, cnt);
      gather_rows(buf.data(), waves + b * npix + x0 * ny, ny, cnt);
      apply_op(ny);
      py.exec(buf.data(), 1.f, true);
      scatter_rows(buf.data(), wave(b) + x0 * ny, ny, cnt);
    }
  }
  for (size_t i = 0; i < nhead; ++i) {
    // column pass: w = IFFT_x(k_i / N * FFT_x(w)), zero where k_i's columns are
    const C *k = kh + i * npix;
    for (size_t y0 = 0; y0 < ny; y0 += L) {
      const size_t cnt = std::min(L, ny - y0);
      if (!any_active(kact[i].data(), y0, cnt)) {
        for (size_t b = 0; b < nwaves; ++b)
          for (size_t x = 0; x < nx; ++x)
            for (size_t j = 0; j < cnt; ++j) wave(b)[x * ny + y0 + j] = C(0.f, 0.f);
        continue;
      }
      load_col_op(k, y0, cnt, inv_n);
      for (size_t b = 0; b < nwaves; ++b) {
        gather_cols(buf.data(), wave(b) + y0, ny, nx, cnt);
        px.exec(buf.data(), 1.f, true);
        apply_op(nx);
        px.exec(buf.data(), 1.f, false);
        scatter_cols(buf.data(), wave(b) + y0, ny, nx, cnt);
      }
    }
    // row pass: w = FFT_y(t_{i+1} * IFFT_y(w))
    for (size_t x0 = 0; x0 < nx; x0 += L) {
      const size_t cnt = std::min(L, nx - x0);
      if (!P.offsets) load_row_op(trans(i + 1), x0, cnt);
      for (size_t b = 0; b < nwaves; ++b) {
        if (P.offsets) load_row_op_crop(trans(i + 1), b, x0, cnt);
        gather_rows(buf.data(), wave(b) + x0 * ny, ny, cnt);
        py.exec(buf.data(), 1.f, false);
        apply_op(ny);
        py.exec(buf.data(), 1.f, true);
        scatter_rows(buf.data(), wave(b) + x0 * ny, ny, cnt);
      }
    }
  }
  // far field: out = |FFT_x(w)|^2 * m, zero where m's columns are
  for (size_t y0 = 0; y0 < ny; y0 += L) {
    const size_t cnt = std::min(L, ny - y0);
    for (size_t b = 0; b < nwaves; ++b) {
      float *o = res + b * npix;
      if (!any_active(mact.data(), y0, cnt)) {
        for (size_t x = 0; x < nx; ++x)
          for (size_t j = 0; j < cnt; ++j) o[x * ny + y0 + j] = 0.f;
        continue;
      }
      gather_cols(buf.data(), wave(b) + y0, ny, nx, cnt);
      px.exec(buf.data(), 1.f, true);
      for (size_t x = 0; x < nx; ++x) {
        const V p = buf[x].r * buf[x].r + buf[x].i * buf[x].i;
        for (size_t j = 0; j < cnt; ++j) o[x * ny + y0 + j] = lane(p, j) * m[x * ny + y0 + j];
      }
    }
  }
}

// checks the shapes, fills a Problem; offsets null for the full grid
ffi::Error Prepare(Problem &P, ffi::Buffer<ffi::C64> &psi, ffi::Buffer<ffi::C64> &trans_head, ffi::Buffer<ffi::C64> &trans_last,
                   ffi::Buffer<ffi::C64> &kernels, ffi::Buffer<ffi::F32> &mask, float *out, const int32_t *offsets, size_t npos) {
  const auto pd = psi.dimensions(), td = trans_head.dimensions(), kd = kernels.dimensions();
  const auto ld = trans_last.dimensions(), md = mask.dimensions();
  if (pd.size() < 2 || td.size() != 3 || kd.size() != 3 || ld.size() != 2 || md.size() != 2)
    return ffi::Error::InvalidArgument("ptyro_fresnel_far_field: expected waves (..., nx, ny), operators (s-1, ., .), (., .)");
  P.nx = pd[pd.size() - 2];
  P.ny = pd[pd.size() - 1];
  P.nhead = td[0];
  P.tnx = td[1];
  P.tny = td[2];
  P.nwaves = 1;
  for (size_t d = 0; d + 2 < pd.size(); ++d) P.nwaves *= pd[d];
  const bool same = P.tnx == P.nx && P.tny == P.ny;
  if (!(offsets ? (P.tnx >= P.nx && P.tny >= P.ny) : same) || ld[0] != td[1] || ld[1] != td[2] ||
      kd[0] != td[0] || size_t(kd[1]) != P.nx || size_t(kd[2]) != P.ny || size_t(md[0]) != P.nx || size_t(md[1]) != P.ny)
    return ffi::Error::InvalidArgument("ptyro_fresnel_far_field: operator shapes do not match the waves");
  if (offsets && (npos == 0 || P.nwaves % npos != 0))
    return ffi::Error::InvalidArgument("ptyro_fresnel_far_field: the waves are not a whole number per window offset");
  P.waves = psi.typed_data();
  P.th = trans_head.typed_data();
  P.tl = trans_last.typed_data();
  P.kh = kernels.typed_data();
  P.m = mask.typed_data();
  P.res = out;
  P.offsets = offsets;
  P.per_position = offsets ? P.nwaves / npos : 1;
  return ffi::Error::Success();
}

ffi::Error FarFieldImpl(ffi::Buffer<ffi::C64> psi, ffi::Buffer<ffi::C64> trans_head, ffi::Buffer<ffi::C64> trans_last,
                        ffi::Buffer<ffi::C64> kernels, ffi::Buffer<ffi::F32> mask, ffi::ResultBuffer<ffi::F32> out) {
  Problem P;
  ffi::Error err = Prepare(P, psi, trans_head, trans_last, kernels, mask, out->typed_data(), nullptr, 0);
  if (err.failure()) return err;
  FarField(P);
  return ffi::Error::Success();
}

ffi::Error WindowedImpl(ffi::Buffer<ffi::C64> psi, ffi::Buffer<ffi::C64> trans_head, ffi::Buffer<ffi::C64> trans_last,
                        ffi::Buffer<ffi::C64> kernels, ffi::Buffer<ffi::F32> mask, ffi::Buffer<ffi::S32> offsets,
                        ffi::ResultBuffer<ffi::F32> out) {
  const auto od = offsets.dimensions();
  if (od.size() != 2 || od[1] != 2) return ffi::Error::InvalidArgument("ptyro_fresnel_far_field: offsets must be (positions, 2)");
  Problem P;
  ffi::Error err = Prepare(P, psi, trans_head, trans_last, kernels, mask, out->typed_data(), offsets.typed_data(), od[0]);
  if (err.failure()) return err;
  FarField(P);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(PtyroFresnelFarField, FarFieldImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::C64>>()
                                  .Arg<ffi::Buffer<ffi::C64>>()
                                  .Arg<ffi::Buffer<ffi::C64>>()
                                  .Arg<ffi::Buffer<ffi::C64>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(PtyroFresnelFarFieldWindowed, WindowedImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::C64>>()
                                  .Arg<ffi::Buffer<ffi::C64>>()
                                  .Arg<ffi::Buffer<ffi::C64>>()
                                  .Arg<ffi::Buffer<ffi::C64>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
