// Compiled CPU weight gradient of an embedding-bag sum: a speed trick, not a definition.
//
// The sum is out[b] = sum_l weight[indices[b, l]] (torch's F.embedding_bag, mode "sum"), so the gradient of weight
// row i is the sum of grad[b] over every (b, l) with indices[b, l] == i. The plain definition is the count matrix's
// product counts^T @ grad, which policies/extractors.py (BagSum) computes where this extension is unavailable;
// torch's own CPU backward sorts all B * L indices first. tests/test_extractors.py checks all three agree.
//
// The loop: bags in blocks of BLOCK (their gradient rows stay in the L1 cache), and within a block one position l
// at a time, so that the weight rows it adds into are few (a grid view's cell and channel take a handful of
// values). Consecutive bags are consecutive steps of a rollout and mostly index the same row at a position: a run
// of equal indices is summed in registers, then added to its row once.
#include <ATen/ATen.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>

namespace {

constexpr int64_t BLOCK = 64;  // 64 gradient rows of 128 floats: 32 KB

// Adds columns [j, j + NV vectors) of gradient rows b0..b1-1 into the rows that position l indexes; n is the number
// of valid elements in the last vector (Vec::size() except at the end of a row).
template <typename scalar_t, int NV>
inline void add_position(const int64_t* idx, int64_t L, int64_t l, int64_t b0, int64_t b1, const scalar_t* g,
                         int64_t D, int64_t j, int64_t n, scalar_t* o) {
  using Vec = at::vec::Vectorized<scalar_t>;
  constexpr int64_t V = Vec::size();
  Vec acc[NV];
  auto flush = [&](int64_t row) {
    scalar_t* orow = o + row * D + j;
    for (int v = 0; v < NV; ++v) {
      const int64_t m = v == NV - 1 ? n : V;
      (Vec::loadu(orow + v * V, m) + acc[v]).store(orow + v * V, m);
      acc[v] = Vec(scalar_t(0));
    }
  };
  for (int v = 0; v < NV; ++v) acc[v] = Vec(scalar_t(0));
  int64_t row = idx[b0 * L + l];
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t i = idx[b * L + l];
    if (i != row) {
      flush(row);
      row = i;
    }
    const scalar_t* gr = g + b * D + j;
    for (int v = 0; v < NV; ++v) acc[v] = acc[v] + Vec::loadu(gr + v * V, v == NV - 1 ? n : V);
  }
  flush(row);
}

at::Tensor bag_sum_backward(const at::Tensor& indices_in, const at::Tensor& grad_in, int64_t n_rows) {
  TORCH_CHECK(indices_in.device().is_cpu() && grad_in.device().is_cpu(), "urgate bag kernel: CPU tensors only");
  TORCH_CHECK(indices_in.dim() == 2 && indices_in.scalar_type() == at::kLong,
              "urgate bag kernel: indices must be (B, L) int64");
  TORCH_CHECK(grad_in.dim() == 2 && grad_in.size(0) == indices_in.size(0), "urgate bag kernel: grad must be (B, D)");
  TORCH_CHECK(n_rows >= 0, "urgate bag kernel: n_rows must be >= 0");
  const at::Tensor indices = indices_in.contiguous(), grad = grad_in.contiguous();
  const int64_t B = indices.size(0), L = indices.size(1), D = grad.size(1);
  at::Tensor out = at::zeros({n_rows, D}, grad.options());
  const int64_t* idx = indices.data_ptr<int64_t>();
  for (int64_t k = 0; k < B * L; ++k) {
    TORCH_CHECK(idx[k] >= 0 && idx[k] < n_rows, "urgate bag kernel: index ", idx[k], " out of range for ", n_rows,
                " rows");
  }
  if (B == 0 || L == 0 || D == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "urgate_bag_sum_backward", [&] {
    constexpr int64_t V = at::vec::Vectorized<scalar_t>::size();
    const scalar_t* g = grad.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    for (int64_t b0 = 0; b0 < B; b0 += BLOCK) {
      const int64_t b1 = std::min(B, b0 + BLOCK);
      for (int64_t l = 0; l < L; ++l) {
        int64_t j = 0;
        for (; j + 8 * V <= D; j += 8 * V) add_position<scalar_t, 8>(idx, L, l, b0, b1, g, D, j, V, o);
        for (; j < D; j += V) add_position<scalar_t, 1>(idx, L, l, b0, b1, g, D, j, std::min(V, D - j), o);
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(urgate, m) {
  m.def("bag_sum_backward(Tensor indices, Tensor grad, int n_rows) -> Tensor", &bag_sum_backward);
}
