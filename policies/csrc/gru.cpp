// Compiled CPU recurrence of the GRU (nn.GRU's cell) and the refine-gate GRU (UR-GRU): a speed trick, not a
// definition. torch's own CPU GRU has no fused kernel (it steps through composite ops: measured 5-8x slower than
// nn.LSTM's oneDNN path at the benchmark sizes), so the gru/ugru cores use this one too on CPU.
//
// The maths is defined once, in policies/gates.py (gru_cell, effective_gate, refine_gru_cell) and
// policies/recurrence.py (gru_step_loop: resets, then one recurrent product and the cell per step). The loops below
// restate it only to fuse the per-step elementwise work into one pass; tests/test_kernels.py checks outputs and every
// gradient against gru_step_loop(gates.gru_cell / refine_gru_cell, ...) in float32 and float64, tests/test_gru.py
// against nn.GRU and the equations.
//
// Input projections x = W_ih x_t + b_ih and recurrent ones a = W_hh h_{t-1} + b_hh are ordered (r, z, n[, q]) in
// blocks of H: nn.GRU's reset, update and new blocks, then (refine only) the refine gate q of the update gate.
//   r = sigma(x_r + a_r)   z = sigma(x_z + a_z)   n = tanh(x_n + r a_n)
//   g = z (GRU)   or   g = z + (2q - 1) z (1 - z), q = sigma(x_q + a_q) (refine GRU: the effective keep gate)
//   h = (1 - g) n + g h_{t-1}
// A reset at step t multiplies h_{t-1} by keep = 1 - resets[t] before the step, as gru_step_loop does.
//
// Per step the forward pass costs one at::addmm_out into a preallocated buffer plus one elementwise loop; the
// backward pass one loop plus one in-place addmm. The input projection and the recurrent weight and bias gradients
// are one large product or sum each over the whole sequence, done in Python (policies/kernels.py).
#include <ATen/ATen.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "activations.h"

namespace {

// Gate blocks per unit: 3 for the GRU, 4 for the refine GRU.
constexpr int64_t blocks(bool refine) { return refine ? 4 : 3; }

void check_inputs(const at::Tensor& xproj, const at::Tensor& w_hh, const at::Tensor& b_hh, const at::Tensor& h0,
                  const at::Tensor& resets, bool refine) {
  const int64_t NB = blocks(refine);
  TORCH_CHECK(xproj.device().is_cpu(), "urgate GRU kernel: CPU tensors only");
  TORCH_CHECK(xproj.dim() == 3 && xproj.size(2) % NB == 0, "urgate GRU kernel: xproj must be (T, B, ", NB, "H)");
  const int64_t T = xproj.size(0), B = xproj.size(1), H = xproj.size(2) / NB;
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) == NB * H && w_hh.size(1) == H,
              "urgate GRU kernel: w_hh must be (", NB, "H, H)");
  TORCH_CHECK(b_hh.dim() == 1 && b_hh.size(0) == NB * H, "urgate GRU kernel: b_hh must be (", NB, "H,)");
  TORCH_CHECK(h0.dim() == 2 && h0.size(0) == B && h0.size(1) == H, "urgate GRU kernel: h0 must be (B, H)");
  TORCH_CHECK(resets.numel() == 0 || (resets.dim() == 2 && resets.size(0) == T && resets.size(1) == B),
              "urgate GRU kernel: resets must be (T, B) or empty");
  for (const at::Tensor* t : {&w_hh, &b_hh, &h0}) {
    TORCH_CHECK(t->scalar_type() == xproj.scalar_type(), "urgate GRU kernel: all tensors must share one dtype");
  }
}

// One step's elementwise work on n <= Vec::size() units of one batch row (j0 = first unit).
template <typename scalar_t, bool REFINE>
inline void forward_units(int64_t H, int64_t j0, int64_t n, const scalar_t* __restrict__ xr,
                          const scalar_t* __restrict__ ar, const scalar_t* __restrict__ hpr, scalar_t kn,
                          scalar_t* __restrict__ orow, scalar_t* __restrict__ hn, scalar_t* __restrict__ acts,
                          scalar_t* __restrict__ anr) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const Vec one(scalar_t(1)), two(scalar_t(2));
  auto pre = [&](int64_t block) {
    return Vec::loadu(xr + block * H + j0, n) + Vec::loadu(ar + block * H + j0, n);
  };
  const Vec r = urgate::vec_sigmoid(pre(0)), z = urgate::vec_sigmoid(pre(1));
  const Vec a_n = Vec::loadu(ar + 2 * H + j0, n);
  const Vec nn = urgate::vec_tanh(Vec::loadu(xr + 2 * H + j0, n) + r * a_n);
  Vec q, ge = z;
  if constexpr (REFINE) {
    q = urgate::vec_sigmoid(pre(3));
    ge = z + (two * q - one) * z * (one - z);
  }
  const Vec hp = Vec::loadu(hpr + j0, n);
  const Vec h = (one - ge) * nn + ge * hp;
  h.store(orow + j0, n);
  if (hn) (h * Vec(kn)).store(hn + j0, n);
  if (acts) {
    r.store(acts + j0, n);
    z.store(acts + H + j0, n);
    nn.store(acts + 2 * H + j0, n);
    if constexpr (REFINE) q.store(acts + 3 * H + j0, n);
    a_n.store(anr + j0, n);
  }
}

template <typename scalar_t, bool REFINE>
void forward_loop(int64_t T, int64_t B, int64_t H, const scalar_t* xp, const at::Tensor& w_t, const at::Tensor& b_hh,
                  const scalar_t* keep, at::Tensor& abuf, at::Tensor& hprev, scalar_t* out, scalar_t* acts,
                  scalar_t* an_all, bool save) {
  constexpr int64_t V = at::vec::Vectorized<scalar_t>::size();
  const int64_t G = blocks(REFINE) * H, BH = B * H;
  const scalar_t* a = abuf.data_ptr<scalar_t>();
  scalar_t* hp_base = hprev.data_ptr<scalar_t>();
  for (int64_t t = 0; t < T; ++t) {
    // With save, hprev holds every step's (reset) previous hidden state for the weight gradient; else 2 buffers.
    const int64_t slot = save ? t : (t & 1), next = save ? t + 1 : ((t + 1) & 1);
    at::addmm_out(abuf, b_hh, hprev.select(0, slot), w_t);
    for (int64_t b = 0; b < B; ++b) {
      const scalar_t kn = (keep && t + 1 < T) ? keep[(t + 1) * B + b] : scalar_t(1);
      const int64_t row = t * BH + b * H;
      const scalar_t* hpr = hp_base + slot * BH + b * H;
      scalar_t* hn = (t + 1 < T) ? hp_base + next * BH + b * H : nullptr;
      for (int64_t j = 0; j < H; j += V) {
        forward_units<scalar_t, REFINE>(H, j, std::min(V, H - j), xp + (t * B + b) * G, a + b * G, hpr, kn, out + row, hn,
                                save ? acts + (t * B + b) * G : nullptr, save ? an_all + row : nullptr);
      }
    }
  }
}

// Returns {out (T, B, H), h_T, acts (T, B, NB H), hprev (T, B, H), a_n (T, B, H)}; the last three are what the
// backward pass needs (activations r, z, n[, q]; the reset gate's operand W_hn h + b_hn) and are empty without save.
std::vector<at::Tensor> gru_forward(const at::Tensor& xproj_in, const at::Tensor& w_hh_in, const at::Tensor& b_hh_in,
                                    const at::Tensor& h0_in, const at::Tensor& resets_in, bool refine, bool save) {
  check_inputs(xproj_in, w_hh_in, b_hh_in, h0_in, resets_in, refine);
  const at::Tensor xproj = xproj_in.contiguous(), w_hh = w_hh_in.contiguous(), b_hh = b_hh_in.contiguous();
  const int64_t NB = blocks(refine);
  const int64_t T = xproj.size(0), B = xproj.size(1), H = xproj.size(2) / NB;
  const auto opts = xproj.options();
  at::Tensor keep = resets_in.numel() ? (1 - resets_in.to(xproj.scalar_type())).contiguous() : resets_in;
  at::Tensor out = at::empty({T, B, H}, opts);
  at::Tensor abuf = at::empty({B, NB * H}, opts);
  at::Tensor hprev = at::empty({save ? T : 2, B, H}, opts);
  at::Tensor acts, an;
  if (save) {
    acts = at::empty({T, B, NB * H}, opts);
    an = at::empty({T, B, H}, opts);
  } else {
    acts = an = at::empty({0}, opts);
  }
  if (T == 0) return {out, h0_in.clone(), acts, hprev, an};
  {
    at::Tensor h0k = keep.numel() ? h0_in * keep.select(0, 0).unsqueeze(1) : h0_in;
    hprev.select(0, 0).copy_(h0k);
  }
  const at::Tensor w_t = w_hh.t();
  AT_DISPATCH_FLOATING_TYPES(xproj.scalar_type(), "urgate_gru_forward", [&] {
    auto run = [&](auto refine_tag) {
      forward_loop<scalar_t, decltype(refine_tag)::value>(
          T, B, H, xproj.data_ptr<scalar_t>(), w_t, b_hh, keep.numel() ? keep.data_ptr<scalar_t>() : nullptr, abuf,
          hprev, out.data_ptr<scalar_t>(), save ? acts.data_ptr<scalar_t>() : nullptr,
          save ? an.data_ptr<scalar_t>() : nullptr, save);
    };
    refine ? run(std::true_type{}) : run(std::false_type{});
  });
  return {out, out.select(0, T - 1).clone(), acts, hprev, an};
}

// Gradients of one step on n <= Vec::size() units of one batch row. dhr holds, on entry, the gradient reaching
// h_t through step t + 1 (before that step's reset mask kn) and, on exit, the direct part g dh of the gradient
// reaching h_{t-1}; the caller adds the recurrent product. Writes d(input projections) and d(recurrent ones).
template <typename scalar_t, bool REFINE>
inline void backward_units(int64_t H, int64_t j0, int64_t n, const scalar_t* __restrict__ acts,
                           const scalar_t* __restrict__ anr, const scalar_t* __restrict__ hpr,
                           const scalar_t* __restrict__ gr, scalar_t kn, scalar_t* __restrict__ dhr,
                           scalar_t* __restrict__ dxr, scalar_t* __restrict__ dar) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const Vec one(scalar_t(1)), two(scalar_t(2));
  const Vec r = Vec::loadu(acts + j0, n), z = Vec::loadu(acts + H + j0, n);
  const Vec nn = Vec::loadu(acts + 2 * H + j0, n);
  const Vec zq = z * (one - z);
  Vec q, q2, ge = z;
  if constexpr (REFINE) {
    q = Vec::loadu(acts + 3 * H + j0, n);
    q2 = two * q - one;
    ge = z + q2 * zq;
  }
  const Vec dh = Vec::loadu(gr + j0, n) + Vec::loadu(dhr + j0, n) * Vec(kn);
  const Vec dg = dh * (Vec::loadu(hpr + j0, n) - nn);
  const Vec d_n = dh * (one - ge) * (one - nn * nn);
  const Vec d_r = d_n * Vec::loadu(anr + j0, n) * r * (one - r);
  Vec d_z = dg * zq;
  if constexpr (REFINE) {
    d_z = d_z * (one + q2 * (one - two * z));      // dg/dz = 1 + (2q - 1)(1 - 2z)
    const Vec d_q = dg * two * zq * q * (one - q);  // dg/dq = 2 z (1 - z)
    d_q.store(dxr + 3 * H + j0, n);
    d_q.store(dar + 3 * H + j0, n);
  }
  d_r.store(dxr + j0, n);
  d_z.store(dxr + H + j0, n);
  d_n.store(dxr + 2 * H + j0, n);
  d_r.store(dar + j0, n);
  d_z.store(dar + H + j0, n);
  (d_n * r).store(dar + 2 * H + j0, n);
  (dh * ge).store(dhr + j0, n);
}

template <typename scalar_t, bool REFINE>
void backward_loop(int64_t T, int64_t B, int64_t H, const scalar_t* gout, const scalar_t* acts, const scalar_t* an,
                   const scalar_t* hprev, const scalar_t* keep, const at::Tensor& w_hh, at::Tensor& dx, at::Tensor& da,
                   at::Tensor& dh) {
  constexpr int64_t V = at::vec::Vectorized<scalar_t>::size();
  const int64_t G = blocks(REFINE) * H, BH = B * H;
  scalar_t* dxp = dx.data_ptr<scalar_t>();
  scalar_t* dap = da.data_ptr<scalar_t>();
  scalar_t* dhp = dh.data_ptr<scalar_t>();  // gradient reaching h_t through step t + 1 (unmasked)
  for (int64_t t = T - 1; t >= 0; --t) {
    for (int64_t b = 0; b < B; ++b) {
      const scalar_t kn = (keep && t + 1 < T) ? keep[(t + 1) * B + b] : scalar_t(1);
      const int64_t row = t * BH + b * H;
      for (int64_t j = 0; j < H; j += V) {
        backward_units<scalar_t, REFINE>(H, j, std::min(V, H - j), acts + (t * B + b) * G, an + row, hprev + row,
                                 gout + row, kn, dhp + b * H, dxp + (t * B + b) * G, dap + (t * B + b) * G);
      }
    }
    dh.addmm_(da.select(0, t), w_hh);
  }
  if (keep) {
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < H; ++j) dhp[b * H + j] *= keep[b];
  }
}

// Returns {d(input projections) (T, B, NB H), d(recurrent projections) (T, B, NB H), dh0}. The caller forms
// dW_hh = dA^T @ hprev and db_hh = sum dA in one product and one sum.
std::vector<at::Tensor> gru_backward(const at::Tensor& grad_out, const at::Tensor& grad_h, const at::Tensor& w_hh_in,
                                     const at::Tensor& acts, const at::Tensor& an, const at::Tensor& hprev,
                                     const at::Tensor& resets, bool refine) {
  const int64_t NB = blocks(refine);
  const int64_t T = acts.size(0), B = acts.size(1), H = acts.size(2) / NB;
  const at::Tensor go = grad_out.contiguous(), w_hh = w_hh_in.contiguous();
  at::Tensor keep = resets.numel() ? (1 - resets.to(acts.scalar_type())).contiguous() : resets;
  at::Tensor dx = at::empty({T, B, NB * H}, acts.options());
  at::Tensor da = at::empty({T, B, NB * H}, acts.options());
  at::Tensor dh = grad_h.contiguous().clone();
  if (T == 0) return {dx, da, dh};
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "urgate_gru_backward", [&] {
    auto run = [&](auto refine_tag) {
      backward_loop<scalar_t, decltype(refine_tag)::value>(
          T, B, H, go.data_ptr<scalar_t>(), acts.data_ptr<scalar_t>(), an.data_ptr<scalar_t>(),
          hprev.data_ptr<scalar_t>(), keep.numel() ? keep.data_ptr<scalar_t>() : nullptr, w_hh, dx, da, dh);
    };
    refine ? run(std::true_type{}) : run(std::false_type{});
  });
  return {dx, da, dh};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(urgate, m) {
  m.def("gru_forward(Tensor xproj, Tensor w_hh, Tensor b_hh, Tensor h0, Tensor resets, bool refine, bool save) "
        "-> Tensor[]",
        &gru_forward);
  m.def("gru_backward(Tensor grad_out, Tensor grad_h, Tensor w_hh, Tensor acts, Tensor a_n, Tensor hprev, "
        "Tensor resets, bool refine) -> Tensor[]",
        &gru_backward);
}
