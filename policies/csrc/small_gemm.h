// The recurrent kernels' per-step matrix product for few rows: C (m x n) = A (m x k) @ M (k x n), every matrix
// row-major with its own leading dimension.
//
// A training minibatch of 8 sequences makes the recurrent product of every step an (8 x 128) by (128 x 512) one;
// MKL then spends a large part of each call packing M, which does not change between steps. This register-blocked
// loop (4 rows by 3 vectors of accumulators, fused multiply-adds over k) reads M in place: measured 1.6x faster
// than at::mm_out at 8 rows on an AVX2 CPU, as fast at 16, slower from about 32 rows, where the kernels call MKL
// (SMALL_GEMM_MAX_ROWS, higher with AVX-512). The sums run over k in order, so results differ from MKL's only by
// float rounding.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <algorithm>

namespace urgate {

// Up to this many rows the kernels use small_gemm for the per-step product, above it at::mm_out: 16 with 8-float
// vectors (AVX2, generic); 128 with AVX-512's 16-float vectors, whose register blocks span twice the columns
// (benchmarks/kernel_ab.py against the revision before: forward+backward at 32-128 rows in 0.6-0.8x the time).
constexpr int64_t SMALL_GEMM_MAX_ROWS = at::vec::Vectorized<float>::size() >= 16 ? 128 : 16;

// One register block: R rows of C by CV vectors of columns; the last vector holds `last` valid columns.
template <typename scalar_t, int R, int CV>
inline void gemm_block(int64_t k, const scalar_t* A, int64_t lda, const scalar_t* M, int64_t ldm, scalar_t* C,
                       int64_t ldc, int64_t last) {
  using Vec = at::vec::Vectorized<scalar_t>;
  constexpr int64_t V = Vec::size();
  Vec acc[R][CV];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < CV; ++c) acc[r][c] = Vec(scalar_t(0));
  for (int64_t p = 0; p < k; ++p) {
    Vec mv[CV];
    for (int c = 0; c < CV; ++c) mv[c] = Vec::loadu(M + p * ldm + c * V, c == CV - 1 ? last : V);
    for (int r = 0; r < R; ++r) {
      const Vec a(A[r * lda + p]);
      for (int c = 0; c < CV; ++c) acc[r][c] = at::vec::fmadd(a, mv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < CV; ++c) acc[r][c].store(C + r * ldc + c * V, c == CV - 1 ? last : V);
}

// The last 0-3 rows of a column block, in one register block (each block reads its columns of M once).
template <typename scalar_t, int CV>
inline void gemm_rows_tail(int64_t rows, int64_t k, const scalar_t* A, int64_t lda, const scalar_t* M, int64_t ldm,
                           scalar_t* C, int64_t ldc, int64_t last) {
  if (rows == 3) gemm_block<scalar_t, 3, CV>(k, A, lda, M, ldm, C, ldc, last);
  if (rows == 2) gemm_block<scalar_t, 2, CV>(k, A, lda, M, ldm, C, ldc, last);
  if (rows == 1) gemm_block<scalar_t, 1, CV>(k, A, lda, M, ldm, C, ldc, last);
}

// C (m x n) = A (m x k) @ M (k x n), row-major with leading dimensions lda, ldm, ldc (C is overwritten).
template <typename scalar_t>
void small_gemm(int64_t m, int64_t k, int64_t n, const scalar_t* A, int64_t lda, const scalar_t* M, int64_t ldm,
                scalar_t* C, int64_t ldc) {
  constexpr int64_t V = at::vec::Vectorized<scalar_t>::size();
  constexpr int RB = 4, CB = 3;
  int64_t j = 0;
  for (; j + CB * V <= n; j += CB * V) {
    int64_t i = 0;
    for (; i + RB <= m; i += RB)
      gemm_block<scalar_t, RB, CB>(k, A + i * lda, lda, M + j, ldm, C + i * ldc + j, ldc, V);
    gemm_rows_tail<scalar_t, CB>(m - i, k, A + i * lda, lda, M + j, ldm, C + i * ldc + j, ldc, V);
  }
  for (; j < n; j += V) {
    const int64_t last = std::min(V, n - j);
    int64_t i = 0;
    for (; i + RB <= m; i += RB)
      gemm_block<scalar_t, RB, 1>(k, A + i * lda, lda, M + j, ldm, C + i * ldc + j, ldc, last);
    gemm_rows_tail<scalar_t, 1>(m - i, k, A + i * lda, lda, M + j, ldm, C + i * ldc + j, ldc, last);
  }
}

}  // namespace urgate
