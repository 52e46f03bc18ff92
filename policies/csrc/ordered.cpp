// Compiled CPU recurrence of the ordered-gate LSTMs (O, OR, OM = ON-LSTM, UM): a speed trick, not a definition.
//
// The maths is defined once, in policies/gates.py (cumax, effective_gate, master_gates, cell_update and the cells
// ordered_cell, ordered_refine_cell, master_cell) and policies/recurrence.py (step_loop: resets, then one matrix
// product and the cell per step). The loops below restate it only to fuse each step's work into one pass per batch
// row; tests/test_ordered.py checks outputs and every gradient against step_loop over those cells in float32 and
// float64. Every kind computes an effective forget gate F and write gate W per unit, then
//   c = F c_prev + W u        h = o tanh(c)
// with (blocks of H, then the master blocks of n = H / chunk):
//   ordered        (i, f, u, o):          F = cumax(a_f),            W = sigma(a_i)
//   ordered_refine (r, f, u, o):          F = g(cumax(a_f), sigma(a_r)) = f + (2r - 1) f (1 - f),   W = 1 - F
//   master_*       (i, f, u, o, mf, mi):  fm = act(a_mf), im = 1 - act(a_mi) per chunk, act = cumax or sigma,
//                                         F = fm (f im + 1 - im),    W = im (i fm + 1 - fm)
// cumax(a) = cumsum(softmax(a)) along the row. The saved activations hold softmax(a) (not its cumulative sum) for
// cumax blocks; the backward pass recomputes the sums in the same order, so they are bit-identical.
// A reset at step t multiplies both states by keep = 1 - resets[t] before the step, as step_loop does.
#include <ATen/ATen.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include "activations.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

enum Kind : int64_t { ORDERED = 0, ORDERED_REFINE = 1, MASTER_CUMAX = 2, MASTER_SIGMOID = 3 };

using at::vec::Vectorized;
using urgate::vec_sigmoid;
using urgate::vec_tanh;

// out[k] = act(a[k] + b[k]) for k < m, act = sigma (tanh_ false) or tanh.
template <typename scalar_t>
inline void activate(const scalar_t* a, const scalar_t* b, int64_t m, scalar_t* out, bool tanh_) {
  using Vec = Vectorized<scalar_t>;
  for (int64_t k = 0; k < m; k += Vec::size()) {
    const int64_t w = std::min<int64_t>(Vec::size(), m - k);
    const Vec x = Vec::loadu(a + k, w) + Vec::loadu(b + k, w);
    (tanh_ ? vec_tanh(x) : vec_sigmoid(x)).store(out + k, w);
  }
}

// p = softmax(a + b) over m entries (max-shifted, as torch.softmax).
template <typename scalar_t>
inline void softmax(const scalar_t* a, const scalar_t* b, int64_t m, scalar_t* p) {
  using Vec = Vectorized<scalar_t>;
  constexpr int64_t V = Vec::size();
  const int64_t body = m - m % V;
  // The maximum: whole vectors (at::vec::maximum propagates NaN), then the tail; a NaN anywhere makes the whole
  // row NaN, as in torch.softmax.
  Vec vmx(-INFINITY);
  for (int64_t k = 0; k < body; k += V) vmx = at::vec::maximum(vmx, Vec::loadu(a + k) + Vec::loadu(b + k));
  scalar_t lanes[V];
  vmx.store(lanes);
  scalar_t mx = -INFINITY;
  for (int64_t k = 0; k < V; ++k) mx = (lanes[k] > mx || std::isnan(lanes[k])) ? lanes[k] : mx;
  for (int64_t k = body; k < m; ++k) {
    const scalar_t v = a[k] + b[k];
    mx = (v > mx || std::isnan(v)) ? v : mx;
  }
  Vec vs(scalar_t(0));
  for (int64_t k = 0; k < m; k += V) {
    const int64_t w = std::min<int64_t>(V, m - k);
    const Vec z = Vec::loadu(a + k, w) + Vec::loadu(b + k, w) - Vec(mx);
    const Vec e = Vec::blendv(z.exp_u20(), z, z.isnan());
    e.store(p + k, w);
    vs = vs + Vec::loadu(p + k, w);  // a partial load fills the missing lanes with 0
  }
  vs.store(lanes);
  scalar_t s = 0;
  for (int64_t k = 0; k < V; ++k) s += lanes[k];
  const Vec inv(scalar_t(1) / s);
  for (int64_t k = 0; k < m; k += V) {
    const int64_t w = std::min<int64_t>(V, m - k);
    (Vec::loadu(p + k, w) * inv).store(p + k, w);
  }
}

// Gradient through cumax: given p = softmax(a) and dy = dL/d cumsum(p), write dL/da = p (dp - <p, dp>) with
// dp_k = sum_{j >= k} dy_j.
template <typename scalar_t>
inline void cumax_backward(const scalar_t* p, scalar_t* dy, int64_t m, scalar_t* da) {
  scalar_t run = 0, dot = 0;
  for (int64_t k = m - 1; k >= 0; --k) {
    run += dy[k];
    dy[k] = run;  // dp_k
    dot += p[k] * run;
  }
  for (int64_t k = 0; k < m; ++k) da[k] = p[k] * (dy[k] - dot);
}

struct Dims {
  int64_t T, B, H, n, chunk, G;
};

// One step for one batch row: activations into act (G), cell state cr updated in place, h into hrow. cum and fw
// are scratch rows (the cumax / master gate values; F and W).
template <typename scalar_t>
inline void forward_row(const Dims& d, int64_t kind, const scalar_t* xr, const scalar_t* gr, scalar_t k,
                        scalar_t* cr, scalar_t* hrow, scalar_t* act, scalar_t* cpr, scalar_t* tcr, scalar_t* cum,
                        scalar_t* fw) {
  const int64_t H = d.H, n = d.n, cs = d.chunk;
  const bool ordered = kind == ORDERED || kind == ORDERED_REFINE;
  activate(xr, gr, H, act, false);
  activate(xr + 2 * H, gr + 2 * H, H, act + 2 * H, true);
  activate(xr + 3 * H, gr + 3 * H, H, act + 3 * H, false);
  if (ordered) {
    softmax(xr + H, gr + H, H, act + H);
    scalar_t s = 0;
    for (int64_t j = 0; j < H; ++j) cum[j] = (s += act[H + j]);
  } else {
    activate(xr + H, gr + H, H, act + H, false);
    if (kind == MASTER_CUMAX) {
      softmax(xr + 4 * H, gr + 4 * H, n, act + 4 * H);
      softmax(xr + 4 * H + n, gr + 4 * H + n, n, act + 4 * H + n);
      scalar_t sf = 0, si = 0;
      for (int64_t q = 0; q < n; ++q) {
        cum[q] = (sf += act[4 * H + q]);
        cum[n + q] = scalar_t(1) - (si += act[4 * H + n + q]);
      }
    } else {
      activate(xr + 4 * H, gr + 4 * H, 2 * n, act + 4 * H, false);
      for (int64_t q = 0; q < 2 * n; ++q) cum[q] = q < n ? act[4 * H + q] : scalar_t(1) - act[4 * H + q];
    }
  }
  // F (effective forget) into fw[0, H), W (write) into fw[H, 2H).
  scalar_t* F = fw;
  scalar_t* W = fw + H;
  if (kind == ORDERED) {
    for (int64_t j = 0; j < H; ++j) {
      F[j] = cum[j];
      W[j] = act[j];
    }
  } else if (kind == ORDERED_REFINE) {
    for (int64_t j = 0; j < H; ++j) {
      const scalar_t f = cum[j];
      F[j] = f + (scalar_t(2) * act[j] - scalar_t(1)) * f * (scalar_t(1) - f);
      W[j] = scalar_t(1) - F[j];
    }
  } else {
    if (cs == 1) {  // one master value per unit: vectorised over units
      using Vec = Vectorized<scalar_t>;
      const Vec one(scalar_t(1));
      for (int64_t j = 0; j < H; j += Vec::size()) {
        const int64_t w = std::min<int64_t>(Vec::size(), H - j);
        const Vec fm = Vec::loadu(cum + j, w), im = Vec::loadu(cum + n + j, w);
        (fm * (Vec::loadu(act + H + j, w) * im + one - im)).store(F + j, w);
        (im * (Vec::loadu(act + j, w) * fm + one - fm)).store(W + j, w);
      }
    } else {
      for (int64_t q = 0; q < n; ++q) {
        const scalar_t fm = cum[q], im = cum[n + q];
        for (int64_t j = q * cs; j < (q + 1) * cs; ++j) {
          F[j] = fm * (act[H + j] * im + scalar_t(1) - im);
          W[j] = im * (act[j] * fm + scalar_t(1) - fm);
        }
      }
    }
  }
  using Vec = Vectorized<scalar_t>;
  for (int64_t j = 0; j < H; j += Vec::size()) {
    const int64_t w = std::min<int64_t>(Vec::size(), H - j);
    const Vec cp = Vec::loadu(cr + j, w) * Vec(k);
    const Vec c = Vec::loadu(F + j, w) * cp + Vec::loadu(W + j, w) * Vec::loadu(act + 2 * H + j, w);
    const Vec tc = vec_tanh(c);
    c.store(cr + j, w);
    (Vec::loadu(act + 3 * H + j, w) * tc).store(hrow + j, w);
    if (cpr) {
      cp.store(cpr + j, w);
      tc.store(tcr + j, w);
    }
  }
}

void check_inputs(int64_t kind, int64_t chunk, const at::Tensor& xproj, const at::Tensor& w_hh, const at::Tensor& h0,
                  const at::Tensor& c0, const at::Tensor& resets) {
  TORCH_CHECK(kind >= ORDERED && kind <= MASTER_SIGMOID, "urgate ordered kernel: unknown kind");
  TORCH_CHECK(xproj.device().is_cpu(), "urgate ordered kernel: CPU tensors only");
  TORCH_CHECK(xproj.dim() == 3 && h0.dim() == 2, "urgate ordered kernel: xproj must be (T, B, G), h0 (B, H)");
  const int64_t T = xproj.size(0), B = xproj.size(1), G = xproj.size(2), H = h0.size(1);
  const bool master = kind >= MASTER_CUMAX;
  TORCH_CHECK(chunk >= 1 && H % chunk == 0, "urgate ordered kernel: chunk must divide H");
  TORCH_CHECK(G == 4 * H + (master ? 2 * (H / chunk) : 0), "urgate ordered kernel: xproj has the wrong width");
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) == G && w_hh.size(1) == H, "urgate ordered kernel: w_hh must be (G, H)");
  TORCH_CHECK(h0.size(0) == B && c0.dim() == 2 && c0.size(0) == B && c0.size(1) == H,
              "urgate ordered kernel: h0 and c0 must be (B, H)");
  TORCH_CHECK(resets.numel() == 0 || (resets.dim() == 2 && resets.size(0) == T && resets.size(1) == B),
              "urgate ordered kernel: resets must be (T, B) or empty");
  for (const at::Tensor* t : {&w_hh, &h0, &c0}) {
    TORCH_CHECK(t->scalar_type() == xproj.scalar_type(), "urgate ordered kernel: all tensors must share one dtype");
  }
}

Dims dims_of(int64_t kind, int64_t chunk, const at::Tensor& xproj, const at::Tensor& h0) {
  const int64_t H = h0.size(1);
  const int64_t n = kind >= MASTER_CUMAX ? H / chunk : 0;
  return {xproj.size(0), xproj.size(1), H, n, chunk, xproj.size(2)};
}

// Returns {out (T, B, H), h_T, c_T, acts (T, B, G), hprev (T, B, H), cprev (T, B, H), tanh_c (T, B, H)}; the
// last four are what the backward pass needs and are empty when save is false (inference).
std::vector<at::Tensor> ordered_forward(int64_t kind, int64_t chunk, const at::Tensor& xproj_in,
                                        const at::Tensor& w_hh_in, const at::Tensor& h0_in, const at::Tensor& c0_in,
                                        const at::Tensor& resets_in, bool save) {
  check_inputs(kind, chunk, xproj_in, w_hh_in, h0_in, c0_in, resets_in);
  const at::Tensor xproj = xproj_in.contiguous(), w_hh = w_hh_in.contiguous();
  const Dims d = dims_of(kind, chunk, xproj, h0_in);
  const int64_t T = d.T, B = d.B, H = d.H, G = d.G, BH = B * H;
  const auto opts = xproj.options();
  at::Tensor keep = resets_in.numel() ? (1 - resets_in.to(xproj.scalar_type())).contiguous() : resets_in;
  at::Tensor out = at::empty({T, B, H}, opts);
  at::Tensor cstate = c0_in.contiguous().clone();
  at::Tensor gbuf = at::empty({B, G}, opts);
  at::Tensor hprev = at::empty({save ? T : 2, B, H}, opts);
  at::Tensor acts = at::empty({save ? T : 1, B, G}, opts);
  at::Tensor cprev = at::empty({save ? T : 0, B, H}, opts);
  at::Tensor tanhc = at::empty({save ? T : 0, B, H}, opts);
  at::Tensor cum = at::empty({std::max(H, 2 * d.n)}, opts);
  at::Tensor fw = at::empty({2 * H}, opts);
  if (T == 0) return {out, h0_in.clone(), cstate, acts, hprev, cprev, tanhc};
  hprev.select(0, 0).copy_(keep.numel() ? h0_in * keep.select(0, 0).unsqueeze(1) : h0_in);
  const at::Tensor w_t = w_hh.t();
  AT_DISPATCH_FLOATING_TYPES(xproj.scalar_type(), "urgate_ordered_forward", [&] {
    const scalar_t* xp = xproj.data_ptr<scalar_t>();
    const scalar_t* kp = keep.numel() ? keep.data_ptr<scalar_t>() : nullptr;
    const scalar_t* g = gbuf.data_ptr<scalar_t>();
    scalar_t* c = cstate.data_ptr<scalar_t>();
    scalar_t* hp = hprev.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    scalar_t* ap = acts.data_ptr<scalar_t>();
    scalar_t* cumv = cum.data_ptr<scalar_t>();
    for (int64_t t = 0; t < T; ++t) {
      // With save, hprev holds every step's (reset) previous hidden state for the weight gradient; else 2 buffers.
      const int64_t slot = save ? t : (t & 1), next = save ? t + 1 : ((t + 1) & 1);
      at::mm_out(gbuf, hprev.select(0, slot), w_t);
      for (int64_t b = 0; b < B; ++b) {
        const scalar_t k = kp ? kp[t * B + b] : scalar_t(1);
        const int64_t row = t * BH + b * H;
        scalar_t* act = ap + ((save ? t : 0) * B + b) * G;
        forward_row<scalar_t>(d, kind, xp + (t * B + b) * G, g + b * G, k, c + b * H, o + row, act,
                              save ? cprev.data_ptr<scalar_t>() + row : nullptr,
                              save ? tanhc.data_ptr<scalar_t>() + row : nullptr, cumv, fw.data_ptr<scalar_t>());
        if (t + 1 < T) {
          const scalar_t kn = kp ? kp[(t + 1) * B + b] : scalar_t(1);
          scalar_t* hn = hp + next * BH + b * H;
          for (int64_t j = 0; j < H; ++j) hn[j] = o[row + j] * kn;
        }
      }
    }
  });
  if (!save) acts = at::empty({0}, opts);
  return {out, out.select(0, T - 1).clone(), cstate, acts, hprev, cprev, tanhc};
}

// Gradients of one step for one batch row: d(pre-activations) into dgr (G); dcr holds the gradient reaching c_t
// on entry and the one reaching c_{t-1} on exit; dh_next is the gradient reaching h_t through step t + 1. cum,
// dcum and dfw are scratch rows.
template <typename scalar_t>
inline void backward_row(const Dims& d, int64_t kind, const scalar_t* act, const scalar_t* gr,
                         const scalar_t* cpr, const scalar_t* tcr, scalar_t k, scalar_t kn, const scalar_t* dh_next,
                         scalar_t* dcr, scalar_t* dgr, scalar_t* cum, scalar_t* dcum, scalar_t* dfw) {
  const int64_t H = d.H, n = d.n, cs = d.chunk;
  const scalar_t one(1), two(2);
  if (kind == ORDERED || kind == ORDERED_REFINE) {
    scalar_t s = 0;
    for (int64_t j = 0; j < H; ++j) cum[j] = (s += act[H + j]);
  } else if (kind == MASTER_CUMAX) {
    scalar_t sf = 0, si = 0;
    for (int64_t q = 0; q < n; ++q) {
      cum[q] = (sf += act[4 * H + q]);
      cum[n + q] = one - (si += act[4 * H + n + q]);
    }
  } else {
    for (int64_t q = 0; q < n; ++q) {
      cum[q] = act[4 * H + q];
      cum[n + q] = one - act[4 * H + n + q];
    }
  }
  using Vec = Vectorized<scalar_t>;
  constexpr int64_t V = Vec::size();
  const Vec vone(one), vtwo(two), vk(k), vkn(kn);
  auto ld = [](const scalar_t* p, int64_t w) { return Vec::loadu(p, w); };
  // Per unit: dc (into dcr), then dF = dc c_prev and dW = dc u (into dfw), and the gradient of o.
  scalar_t* dF = dfw;
  scalar_t* dW = dfw + H;
  for (int64_t j = 0; j < H; j += V) {
    const int64_t w = std::min(V, H - j);
    const Vec u = ld(act + 2 * H + j, w), o = ld(act + 3 * H + j, w), tc = ld(tcr + j, w);
    const Vec dh = ld(gr + j, w) + ld(dh_next + j, w) * vkn;
    const Vec dc = ld(dcr + j, w) + dh * o * (vone - tc * tc);
    dc.store(dcr + j, w);
    (dc * ld(cpr + j, w)).store(dF + j, w);
    (dc * u).store(dW + j, w);
    (dh * tc * o * (vone - o)).store(dgr + 3 * H + j, w);
  }
  // Per kind: F and W from the saved activations, their gradients, and the gradient reaching c_{t-1}.
  if (kind == ORDERED) {
    for (int64_t j = 0; j < H; j += V) {
      const int64_t w = std::min(V, H - j);
      const Vec a0 = ld(act + j, w), u = ld(act + 2 * H + j, w), dc = ld(dcr + j, w);
      (ld(dW + j, w) * a0 * (vone - a0)).store(dgr + j, w);
      (dc * a0 * (vone - u * u)).store(dgr + 2 * H + j, w);
      ld(dF + j, w).store(dcum + j, w);
      (dc * ld(cum + j, w) * vk).store(dcr + j, w);
    }
  } else if (kind == ORDERED_REFINE) {
    for (int64_t j = 0; j < H; j += V) {
      const int64_t w = std::min(V, H - j);
      const Vec r = ld(act + j, w), u = ld(act + 2 * H + j, w), f = ld(cum + j, w), dc = ld(dcr + j, w);
      const Vec fq = f * (vone - f), r2 = vtwo * r - vone;
      const Vec F = f + r2 * fq, dg = ld(dF + j, w) - ld(dW + j, w);
      (dg * vtwo * fq * r * (vone - r)).store(dgr + j, w);        // dg/dr = 2 f (1 - f)
      (dg * (vone + r2 * (vone - vtwo * f))).store(dcum + j, w);  // dg/df = 1 + (2r - 1)(1 - 2f)
      (dc * (vone - F) * (vone - u * u)).store(dgr + 2 * H + j, w);
      (dc * F * vk).store(dcr + j, w);
    }
  } else if (cs == 1) {  // one master value per unit: the same loop as below, vectorised over units
    for (int64_t j = 0; j < H; j += V) {
      const int64_t w = std::min(V, H - j);
      const Vec i = ld(act + j, w), f = ld(act + H + j, w), u = ld(act + 2 * H + j, w);
      const Vec fm = ld(cum + j, w), im = ld(cum + n + j, w), dc = ld(dcr + j, w);
      const Vec dFj = ld(dF + j, w), dWj = ld(dW + j, w);
      const Vec kf = f * im + vone - im, wi = i * fm + vone - fm;
      (dWj * im * fm * i * (vone - i)).store(dgr + j, w);
      (dFj * fm * im * f * (vone - f)).store(dgr + H + j, w);
      (dc * im * wi * (vone - u * u)).store(dgr + 2 * H + j, w);
      (dFj * kf + dWj * im * (i - vone)).store(dcum + j, w);
      (dFj * fm * (f - vone) + dWj * wi).store(dcum + n + j, w);
      (dc * fm * kf * vk).store(dcr + j, w);
    }
  } else {
    for (int64_t q = 0; q < n; ++q) {
      const scalar_t fm = cum[q], im = cum[n + q];
      scalar_t dfm = 0, dim = 0;
      for (int64_t j = q * cs; j < (q + 1) * cs; ++j) {
        const scalar_t i = act[j], f = act[H + j], u = act[2 * H + j];
        const scalar_t kf = f * im + one - im, wi = i * fm + one - fm;  // F = fm kf, W = im wi
        dgr[j] = dW[j] * im * fm * i * (one - i);
        dgr[H + j] = dF[j] * fm * im * f * (one - f);
        dgr[2 * H + j] = dcr[j] * im * wi * (one - u * u);
        dfm += dF[j] * kf + dW[j] * im * (i - one);
        dim += dF[j] * fm * (f - one) + dW[j] * wi;
        dcr[j] *= fm * kf * k;
      }
      dcum[q] = dfm;
      dcum[n + q] = dim;
    }
  }
  if (kind == ORDERED || kind == ORDERED_REFINE) {
    cumax_backward(act + H, dcum, H, dgr + H);
  } else if (kind == MASTER_CUMAX) {
    for (int64_t q = 0; q < n; ++q) dcum[n + q] = -dcum[n + q];  // im = 1 - cumax(a_mi)
    cumax_backward(act + 4 * H, dcum, n, dgr + 4 * H);
    cumax_backward(act + 4 * H + n, dcum + n, n, dgr + 4 * H + n);
  } else {
    for (int64_t q = 0; q < n; ++q) {
      const scalar_t sf = act[4 * H + q], si = act[4 * H + n + q];
      dgr[4 * H + q] = dcum[q] * sf * (one - sf);
      dgr[4 * H + n + q] = -dcum[n + q] * si * (one - si);
    }
  }
}

// Returns {d(pre-activations) (T, B, G), dh0, dc0}. The caller forms dW_hh = dG^T @ hprev in one product.
std::vector<at::Tensor> ordered_backward(int64_t kind, int64_t chunk, const at::Tensor& grad_out,
                                         const at::Tensor& grad_h, const at::Tensor& grad_c, const at::Tensor& w_hh_in,
                                         const at::Tensor& acts, const at::Tensor& cprev, const at::Tensor& tanhc,
                                         const at::Tensor& resets) {
  const Dims d = dims_of(kind, chunk, acts, grad_h);
  const int64_t T = d.T, B = d.B, H = d.H, G = d.G, BH = B * H;
  const at::Tensor go = grad_out.contiguous(), w_hh = w_hh_in.contiguous();
  at::Tensor keep = resets.numel() ? (1 - resets.to(acts.scalar_type())).contiguous() : resets;
  at::Tensor dgates = at::empty({T, B, G}, acts.options());
  at::Tensor dh = grad_h.contiguous().clone();
  at::Tensor dc = grad_c.contiguous().clone();
  at::Tensor cum = at::empty({std::max(H, 2 * d.n)}, acts.options());
  at::Tensor dcum = at::empty({std::max(H, 2 * d.n)}, acts.options());
  at::Tensor dfw = at::empty({2 * H}, acts.options());
  if (T == 0) return {dgates, dh, dc};
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "urgate_ordered_backward", [&] {
    const scalar_t* kp = keep.numel() ? keep.data_ptr<scalar_t>() : nullptr;
    const scalar_t* ap = acts.data_ptr<scalar_t>();
    const scalar_t* gp = go.data_ptr<scalar_t>();
    const scalar_t* cpp = cprev.data_ptr<scalar_t>();
    const scalar_t* tcp = tanhc.data_ptr<scalar_t>();
    scalar_t* dgp = dgates.data_ptr<scalar_t>();
    scalar_t* dhp = dh.data_ptr<scalar_t>();  // gradient reaching h_t through step t + 1 (unmasked)
    scalar_t* dcp = dc.data_ptr<scalar_t>();  // gradient reaching c_t (already masked)
    for (int64_t t = T - 1; t >= 0; --t) {
      for (int64_t b = 0; b < B; ++b) {
        const scalar_t k = kp ? kp[t * B + b] : scalar_t(1);
        const scalar_t kn = (kp && t + 1 < T) ? kp[(t + 1) * B + b] : scalar_t(1);
        const int64_t row = t * BH + b * H;
        backward_row<scalar_t>(d, kind, ap + (t * B + b) * G, gp + row, cpp + row, tcp + row, k, kn, dhp + b * H,
                               dcp + b * H, dgp + (t * B + b) * G, cum.data_ptr<scalar_t>(),
                               dcum.data_ptr<scalar_t>(), dfw.data_ptr<scalar_t>());
      }
      at::mm_out(dh, dgates.select(0, t), w_hh);
    }
    if (kp) {
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < H; ++j) dhp[b * H + j] *= kp[b];
    }
  });
  return {dgates, dh, dc};
}

}  // namespace

// A fragment: the refine kernel's extension owns (or shares) the urgate namespace.
TORCH_LIBRARY_FRAGMENT(urgate, m) {
  m.def("ordered_forward(int kind, int chunk, Tensor xproj, Tensor w_hh, Tensor h0, Tensor c0, Tensor resets, "
        "bool save) -> Tensor[]",
        &ordered_forward);
  m.def("ordered_backward(int kind, int chunk, Tensor grad_out, Tensor grad_h, Tensor grad_c, Tensor w_hh, "
        "Tensor acts, Tensor cprev, Tensor tanhc, Tensor resets) -> Tensor[]",
        &ordered_backward);
}
