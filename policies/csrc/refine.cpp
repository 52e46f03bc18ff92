// Compiled CPU recurrence of the refine-gate LSTM (R- and UR-LSTM): a speed trick, not a definition.
//
// The maths is defined once, in policies/gates.py (effective_gate, refine_cell) and policies/recurrence.py
// (step_loop: resets, then one matrix product and the cell per step). The loops below restate it only to fuse the
// per-step elementwise work into one pass; tests/test_kernels.py checks outputs and every gradient against
// step_loop(gates.refine_cell, ...) in float32 and float64, and tests/test_cores.py against PAPER.md's equations.
//
// Pre-activations are ordered (r, f, u, o) in blocks of H, as nn.LSTM's (i, f, g, o):
//   r = sigma(a_r)  f = sigma(a_f)  u = tanh(a_u)  o = sigma(a_o)
//   g = f + (2r - 1) f (1 - f)          (the effective forget gate)
//   c = g c_prev + (1 - g) u            h = o tanh(c)
// A reset at step t multiplies both states by keep = 1 - resets[t] before the step, as step_loop does.
//
// Per step the forward pass costs one matrix product into a preallocated buffer plus one elementwise loop; the
// backward pass one loop plus one matrix product (small_gemm.h's loop for a few rows, else at::mm_out). The input
// projection and the recurrent weight gradient are one large matrix product each over the whole sequence, done in
// Python (policies/kernels.py).
#include <ATen/ATen.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include "activations.h"
#include "small_gemm.h"

#include <algorithm>
#include <vector>

namespace {

using urgate::vec_sigmoid;
using urgate::vec_tanh;

void check_inputs(const at::Tensor& xproj, const at::Tensor& w_hh, const at::Tensor& h0, const at::Tensor& c0,
                  const at::Tensor& resets) {
  TORCH_CHECK(xproj.device().is_cpu(), "urgate refine kernel: CPU tensors only");
  TORCH_CHECK(xproj.dim() == 3 && xproj.size(2) % 4 == 0, "urgate refine kernel: xproj must be (T, B, 4H)");
  const int64_t T = xproj.size(0), B = xproj.size(1), H = xproj.size(2) / 4;
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) == 4 * H && w_hh.size(1) == H, "urgate refine kernel: w_hh must be (4H, H)");
  TORCH_CHECK(h0.dim() == 2 && h0.size(0) == B && h0.size(1) == H, "urgate refine kernel: h0 must be (B, H)");
  TORCH_CHECK(c0.dim() == 2 && c0.size(0) == B && c0.size(1) == H, "urgate refine kernel: c0 must be (B, H)");
  TORCH_CHECK(resets.numel() == 0 || (resets.dim() == 2 && resets.size(0) == T && resets.size(1) == B),
              "urgate refine kernel: resets must be (T, B) or empty");
  for (const at::Tensor* t : {&w_hh, &h0, &c0}) {
    TORCH_CHECK(t->scalar_type() == xproj.scalar_type(), "urgate refine kernel: all tensors must share one dtype");
  }
}

// One step's elementwise work on n <= Vec::size() units of one batch row (j0 = first unit).
template <typename scalar_t>
inline void forward_units(int64_t H, int64_t j0, int64_t n, const scalar_t* __restrict__ xr,
                          const scalar_t* __restrict__ gr, scalar_t k, scalar_t kn, scalar_t* __restrict__ cr,
                          scalar_t* __restrict__ orow, scalar_t* __restrict__ hn, scalar_t* __restrict__ ar,
                          scalar_t* __restrict__ cpr, scalar_t* __restrict__ tcr) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const Vec one(scalar_t(1)), two(scalar_t(2));
  auto pre = [&](int64_t block) {
    return Vec::loadu(xr + block * H + j0, n) + Vec::loadu(gr + block * H + j0, n);
  };
  const Vec r = vec_sigmoid(pre(0)), f = vec_sigmoid(pre(1)), u = vec_tanh(pre(2)), o = vec_sigmoid(pre(3));
  const Vec ge = f + (two * r - one) * f * (one - f);
  const Vec cp = Vec::loadu(cr + j0, n) * Vec(k);
  const Vec c = ge * cp + (one - ge) * u;
  const Vec tc = vec_tanh(c);
  const Vec h = o * tc;
  c.store(cr + j0, n);
  h.store(orow + j0, n);
  if (hn) (h * Vec(kn)).store(hn + j0, n);
  if (ar) {
    r.store(ar + j0, n);
    f.store(ar + H + j0, n);
    u.store(ar + 2 * H + j0, n);
    o.store(ar + 3 * H + j0, n);
    cp.store(cpr + j0, n);
    tc.store(tcr + j0, n);
  }
}

template <typename scalar_t>
void forward_loop(int64_t T, int64_t B, int64_t H, const scalar_t* xp, const at::Tensor& w_t, const scalar_t* w_tc,
                  const scalar_t* keep, at::Tensor& gbuf, at::Tensor& hprev, at::Tensor& cstate, scalar_t* out, scalar_t* acts,
                  scalar_t* cprev_all, scalar_t* tanhc_all, bool save) {
  constexpr int64_t V = at::vec::Vectorized<scalar_t>::size();
  const int64_t G = 4 * H, BH = B * H;
  const scalar_t* g = gbuf.data_ptr<scalar_t>();
  scalar_t* c = cstate.data_ptr<scalar_t>();
  scalar_t* hp_base = hprev.data_ptr<scalar_t>();
  for (int64_t t = 0; t < T; ++t) {
    // With save, hprev holds every step's (reset) previous hidden state for the weight gradient; else 2 buffers.
    const int64_t slot = save ? t : (t & 1), next = save ? t + 1 : ((t + 1) & 1);
    if (w_tc) {  // w_tc: W_hh^T, contiguous (H x 4H)
      urgate::small_gemm<scalar_t>(B, H, G, hp_base + slot * BH, H, w_tc, G, gbuf.data_ptr<scalar_t>(), G);
    } else {
      at::mm_out(gbuf, hprev.select(0, slot), w_t);
    }
    for (int64_t b = 0; b < B; ++b) {
      const scalar_t k = keep ? keep[t * B + b] : scalar_t(1);
      const scalar_t kn = (keep && t + 1 < T) ? keep[(t + 1) * B + b] : scalar_t(1);
      const int64_t row = t * BH + b * H;
      scalar_t* hn = (t + 1 < T) ? hp_base + next * BH + b * H : nullptr;
      for (int64_t j = 0; j < H; j += V) {
        forward_units<scalar_t>(H, j, std::min(V, H - j), xp + (t * B + b) * G, g + b * G, k, kn, c + b * H,
                                out + row, hn, save ? acts + (t * B + b) * G : nullptr,
                                save ? cprev_all + row : nullptr, save ? tanhc_all + row : nullptr);
      }
    }
  }
}

// Returns {out (T, B, H), h_T, c_T, acts (T, B, 4H), hprev (T, B, H), cprev (T, B, H), tanh_c (T, B, H)}; the
// last four are what the backward pass needs and are empty when save is false (inference).
std::vector<at::Tensor> refine_forward(const at::Tensor& xproj_in, const at::Tensor& w_hh_in, const at::Tensor& h0_in,
                                       const at::Tensor& c0_in, const at::Tensor& resets_in, bool save) {
  check_inputs(xproj_in, w_hh_in, h0_in, c0_in, resets_in);
  const at::Tensor xproj = xproj_in.contiguous(), w_hh = w_hh_in.contiguous();
  const int64_t T = xproj.size(0), B = xproj.size(1), H = xproj.size(2) / 4;
  const auto opts = xproj.options();
  at::Tensor keep = resets_in.numel() ? (1 - resets_in.to(xproj.scalar_type())).contiguous() : resets_in;
  at::Tensor out = at::empty({T, B, H}, opts);
  at::Tensor cstate = c0_in.contiguous().clone();
  at::Tensor gbuf = at::empty({B, 4 * H}, opts);
  at::Tensor hprev = at::empty({save ? T : 2, B, H}, opts);
  at::Tensor acts, cprev, tanhc;
  if (save) {
    acts = at::empty({T, B, 4 * H}, opts);
    cprev = at::empty({T, B, H}, opts);
    tanhc = at::empty({T, B, H}, opts);
  } else {
    acts = cprev = tanhc = at::empty({0}, opts);
  }
  if (T == 0) return {out, h0_in.clone(), cstate, acts, hprev, cprev, tanhc};
  {
    at::Tensor h0k = keep.numel() ? h0_in * keep.select(0, 0).unsqueeze(1) : h0_in;
    hprev.select(0, 0).copy_(h0k);
  }
  const at::Tensor w_t = w_hh.t();
  const at::Tensor w_tc = B <= urgate::SMALL_GEMM_MAX_ROWS ? w_t.contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(xproj.scalar_type(), "urgate_refine_forward", [&] {
    forward_loop<scalar_t>(T, B, H, xproj.data_ptr<scalar_t>(), w_t,
                           w_tc.defined() ? w_tc.data_ptr<scalar_t>() : nullptr,
                           keep.numel() ? keep.data_ptr<scalar_t>() : nullptr,
                           gbuf, hprev, cstate, out.data_ptr<scalar_t>(), save ? acts.data_ptr<scalar_t>() : nullptr,
                           save ? cprev.data_ptr<scalar_t>() : nullptr, save ? tanhc.data_ptr<scalar_t>() : nullptr,
                           save);
  });
  return {out, out.select(0, T - 1).clone(), cstate, acts, hprev, cprev, tanhc};
}

// Gradients of one step on n <= Vec::size() units of one batch row: writes d(pre-activations) and the gradient
// reaching c_{t-1}; dh_next is the gradient reaching h_t through step t + 1 (before that step's reset mask kn).
template <typename scalar_t>
inline void backward_units(int64_t H, int64_t j0, int64_t n, const scalar_t* __restrict__ ar,
                           const scalar_t* __restrict__ gr, const scalar_t* __restrict__ cpr,
                           const scalar_t* __restrict__ tcr, scalar_t k, scalar_t kn,
                           const scalar_t* __restrict__ dh_next, scalar_t* __restrict__ dcr,
                           scalar_t* __restrict__ dgr) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const Vec one(scalar_t(1)), two(scalar_t(2));
  const Vec r = Vec::loadu(ar + j0, n), f = Vec::loadu(ar + H + j0, n);
  const Vec u = Vec::loadu(ar + 2 * H + j0, n), o = Vec::loadu(ar + 3 * H + j0, n);
  const Vec tc = Vec::loadu(tcr + j0, n);
  const Vec fq = f * (one - f);
  const Vec r2 = two * r - one;
  const Vec ge = f + r2 * fq;
  const Vec dh = Vec::loadu(gr + j0, n) + Vec::loadu(dh_next + j0, n) * Vec(kn);
  const Vec dc = Vec::loadu(dcr + j0, n) + dh * o * (one - tc * tc);
  const Vec dg = dc * (Vec::loadu(cpr + j0, n) - u);
  (dg * two * fq * r * (one - r)).store(dgr + j0, n);             // dg/dr = 2 f (1 - f)
  (dg * (one + r2 * (one - two * f)) * fq).store(dgr + H + j0, n);  // dg/df = 1 + (2r - 1)(1 - 2f)
  (dc * (one - ge) * (one - u * u)).store(dgr + 2 * H + j0, n);
  (dh * tc * o * (one - o)).store(dgr + 3 * H + j0, n);
  (dc * ge * Vec(k)).store(dcr + j0, n);
}

template <typename scalar_t>
void backward_loop(int64_t T, int64_t B, int64_t H, const scalar_t* gout, const scalar_t* acts, const scalar_t* cprev,
                   const scalar_t* tanhc, const scalar_t* keep, const at::Tensor& w_hh, at::Tensor& dgates,
                   at::Tensor& dh, at::Tensor& dc) {
  constexpr int64_t V = at::vec::Vectorized<scalar_t>::size();
  const int64_t G = 4 * H, BH = B * H;
  scalar_t* dgp = dgates.data_ptr<scalar_t>();
  scalar_t* dhp = dh.data_ptr<scalar_t>();  // gradient reaching h_t through step t + 1 (unmasked)
  scalar_t* dcp = dc.data_ptr<scalar_t>();  // gradient reaching c_t (already masked)
  for (int64_t t = T - 1; t >= 0; --t) {
    for (int64_t b = 0; b < B; ++b) {
      const scalar_t k = keep ? keep[t * B + b] : scalar_t(1);
      const scalar_t kn = (keep && t + 1 < T) ? keep[(t + 1) * B + b] : scalar_t(1);
      const int64_t row = t * BH + b * H;
      for (int64_t j = 0; j < H; j += V) {
        backward_units<scalar_t>(H, j, std::min(V, H - j), acts + (t * B + b) * G, gout + row, cprev + row,
                                 tanhc + row, k, kn, dhp + b * H, dcp + b * H, dgp + (t * B + b) * G);
      }
    }
    if (B <= urgate::SMALL_GEMM_MAX_ROWS) {
      urgate::small_gemm<scalar_t>(B, G, H, dgp + t * B * G, G, w_hh.data_ptr<scalar_t>(), H, dhp, H);
    } else {
      at::mm_out(dh, dgates.select(0, t), w_hh);
    }
  }
  if (keep) {
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < H; ++j) dhp[b * H + j] *= keep[b];
  }
}

// Returns {d(pre-activations) (T, B, 4H), dh0, dc0}. The caller forms dW_hh = dG^T @ hprev in one product.
std::vector<at::Tensor> refine_backward(const at::Tensor& grad_out, const at::Tensor& grad_h, const at::Tensor& grad_c,
                                        const at::Tensor& w_hh_in, const at::Tensor& acts, const at::Tensor& cprev,
                                        const at::Tensor& tanhc, const at::Tensor& resets) {
  const int64_t T = acts.size(0), B = acts.size(1), H = acts.size(2) / 4;
  const at::Tensor go = grad_out.contiguous(), w_hh = w_hh_in.contiguous();
  at::Tensor keep = resets.numel() ? (1 - resets.to(acts.scalar_type())).contiguous() : resets;
  at::Tensor dgates = at::empty({T, B, 4 * H}, acts.options());
  at::Tensor dh = grad_h.contiguous().clone();
  at::Tensor dc = grad_c.contiguous().clone();
  if (T == 0) return {dgates, dh, dc};
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "urgate_refine_backward", [&] {
    backward_loop<scalar_t>(T, B, H, go.data_ptr<scalar_t>(), acts.data_ptr<scalar_t>(), cprev.data_ptr<scalar_t>(),
                            tanhc.data_ptr<scalar_t>(), keep.numel() ? keep.data_ptr<scalar_t>() : nullptr, w_hh,
                            dgates, dh, dc);
  });
  return {dgates, dh, dc};
}

}  // namespace

// A fragment, so that every compiled extension of the package can add its ops to the one torch.ops.urgate.
TORCH_LIBRARY_FRAGMENT(urgate, m) {
  m.def("refine_forward(Tensor xproj, Tensor w_hh, Tensor h0, Tensor c0, Tensor resets, bool save) -> Tensor[]",
        &refine_forward);
  m.def("refine_backward(Tensor grad_out, Tensor grad_h, Tensor grad_c, Tensor w_hh, Tensor acts, Tensor cprev, "
        "Tensor tanhc, Tensor resets) -> Tensor[]",
        &refine_backward);
}
