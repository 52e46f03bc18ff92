// A dense matrix product on small_gemm.h's register-blocked loop: the compiled cores' input projection and weight
// gradients (policies/kernels.py, ``linear`` and ``CompiledRecurrence``) on CPUs where it is faster than torch's
// BLAS. On the AMD EPYC (AVX-512) CPU of the measurements, torch's MKL runs a 512 x 128 x 512 product at ~110
// GFLOP/s and this loop at ~220 (docs/speed.md). The sums run over k in order: results differ from MKL's by float
// rounding at most.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "small_gemm.h"

namespace {

// C (m x n) = A (m x k) @ M (k x n), both made contiguous.
at::Tensor matmul(const at::Tensor& a_in, const at::Tensor& m_in) {
  TORCH_CHECK(a_in.device().is_cpu() && m_in.device().is_cpu(), "urgate matmul: CPU tensors only");
  TORCH_CHECK(a_in.dim() == 2 && m_in.dim() == 2 && a_in.size(1) == m_in.size(0),
              "urgate matmul: needs (m, k) and (k, n) matrices");
  TORCH_CHECK(a_in.scalar_type() == m_in.scalar_type(), "urgate matmul: both matrices must share one dtype");
  const at::Tensor a = a_in.contiguous(), m = m_in.contiguous();
  const int64_t rows = a.size(0), inner = a.size(1), cols = m.size(1);
  at::Tensor c = at::empty({rows, cols}, a.options());
  if (rows == 0 || cols == 0) return c;
  if (inner == 0) return c.zero_();
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "urgate_matmul", [&] {
    urgate::small_gemm<scalar_t>(rows, inner, cols, a.data_ptr<scalar_t>(), inner, m.data_ptr<scalar_t>(), cols,
                                 c.data_ptr<scalar_t>(), cols);
  });
  return c;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(urgate, m) { m.def("matmul(Tensor a, Tensor m) -> Tensor", &matmul); }
