// attn_window_step.cpp: host emulation test of kernels/cuda/attn/window_step.cu (the
// LoLCATs window hybrid's decode step) against a double-precision step with the
// semantics of crates/attn/src/window/decode.rs (`cargo xtask kernels --emulate`).
//
// The kernels run in the order of crates/attn/src/gpu/cuda.rs `window_step`: gather,
// Hedgehog (`hedgehog_v1` of fused.cu, f32 out) on q and the evicted key, state update,
// two cache updates, output; the extended-state pack / split is done on the host. Several
// chained steps per dtype, sequences at different positions (one fresh, one already past
// 64 tokens with W = 70 so the output kernel tiles more than 64 window entries), V > 64,
// grids smaller than the work so block- and grid-stride loops repeat.
#include "host_shim.h"

#include <cstdio>
#include <random>

static inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
static inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }

#include "../../../../kernels/cuda/attn/fused.cu"
#include "../../../../kernels/cuda/attn/window_step.cu"

static int failures = 0;

template <typename T> std::vector<T> to_dtype(const std::vector<float>& v) {
    std::vector<T> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = lat_from_f32<T>(v[i]);
    return out;
}

template <typename T> std::vector<float> to_f32(const std::vector<T>& v) {
    std::vector<float> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = lat_to_f32(v[i]);
    return out;
}

static void compare(const char* what, const std::vector<float>& got, const std::vector<double>& want, double tol) {
    if (got.size() != want.size()) {
        std::printf("FAIL %s: %zu values, expected %zu\n", what, got.size(), want.size());
        ++failures;
        return;
    }
    double scale = 1e-30, max_err = 0;
    size_t worst = 0;
    for (size_t i = 0; i < got.size(); ++i) scale = std::max(scale, std::fabs(want[i]));
    for (size_t i = 0; i < got.size(); ++i) {
        const double err = std::fabs(got[i] - want[i]);
        if (!(err <= max_err)) {
            max_err = err;
            worst = i;
        }
    }
    const bool ok = max_err / scale <= tol;
    std::printf("%s %s: max abs err %.3g (rel %.3g, tol %.1g) at %zu: got %.7g want %.7g\n", ok ? "ok  " : "FAIL", what,
                max_err, max_err / scale, tol, worst, got[worst], want[worst]);
    if (!ok) ++failures;
}

static std::vector<float> random_values(size_t n, unsigned seed, float lo = -1.f, float hi = 1.f) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(rng);
    return v;
}

// phi(x) = [softmax(x W_h), softmax(-x W_h)] in double; x [D], w [H, D, F].
static std::vector<double> hedgehog_ref(const float* x, const std::vector<float>& w, unsigned h, unsigned d,
                                        unsigned f) {
    std::vector<double> u(f, 0.0), out(2 * f);
    for (unsigned j = 0; j < f; ++j)
        for (unsigned e = 0; e < d; ++e) u[j] += (double)x[e] * w[((size_t)h * d + e) * f + j];
    double hi = -1e300, lo = 1e300, sp = 0, sn = 0;
    for (double x : u) hi = std::max(hi, x), lo = std::min(lo, x);
    for (double x : u) sp += std::exp(x - hi), sn += std::exp(lo - x);
    for (unsigned j = 0; j < f; ++j) out[j] = std::exp(u[j] - hi) / sp, out[f + j] = std::exp(lo - u[j]) / sn;
    return out;
}

struct Case {
    unsigned n, h, d, vd, f, w, steps;
    std::vector<unsigned> seen0;
};

template <typename T> void test_window_step(const char* name, const Case& c, double tol) {
    const unsigned n = c.n, h = c.h, d = c.d, vd = c.vd, f = c.f, w = c.w, kf = 2 * c.f;
    const size_t nh = (size_t)n * h;
    const float scale = 1.0f / std::sqrt((float)d);
    const auto wq = random_values((size_t)h * d * f, 11);
    const auto wk = random_values((size_t)h * d * f, 12);
    std::vector<float> factor(h);
    for (unsigned i = 0; i < h; ++i) factor[i] = 1.0f / (1.0f + std::exp(-(-2.2f + 0.9f * i)));
    // Initial state: random S, positive z, random caches; tokens seen per sequence.
    auto kv = random_values(nh * kf * vd, 13, -0.2f, 0.2f);
    auto z = random_values(nh * kf, 14, 0.5f, 2.0f);
    auto keys = random_values(nh * w * d, 15);
    auto values = random_values(nh * w * vd, 16);
    std::vector<unsigned> seen = c.seen0;
    std::vector<double> s_ref(kv.begin(), kv.end()), z_ref(z.begin(), z.end());
    std::vector<double> k_ref(keys.begin(), keys.end()), v_ref(values.begin(), values.end());
    for (unsigned step = 0; step < c.steps; ++step) {
        const auto q = to_dtype<T>(random_values(nh * d, 100 + 3 * step));
        const auto k = to_dtype<T>(random_values(nh * d, 101 + 3 * step));
        const auto v = to_dtype<T>(random_values(nh * vd, 102 + 3 * step));
        const auto qf = to_f32(q), kf32 = to_f32(k), vf = to_f32(v);

        // Reference step (double state).
        std::vector<double> y_ref(nh * vd);
        for (size_t g = 0; g < nh; ++g) {
            const unsigned seq = (unsigned)(g / h), hh = (unsigned)(g % h), m = seen[seq], slot = m % w;
            if (m >= w) {
                std::vector<float> old(d);
                for (unsigned e = 0; e < d; ++e) old[e] = (float)k_ref[(g * w + slot) * d + e];
                const auto phi = hedgehog_ref(old.data(), wk, hh, d, f);
                for (unsigned r = 0; r < kf; ++r) {
                    for (unsigned col = 0; col < vd; ++col)
                        s_ref[(g * kf + r) * vd + col] += phi[r] * v_ref[(g * w + slot) * vd + col];
                    z_ref[g * kf + r] += phi[r];
                }
            }
            for (unsigned e = 0; e < d; ++e) k_ref[(g * w + slot) * d + e] = kf32[g * d + e];
            for (unsigned col = 0; col < vd; ++col) v_ref[(g * w + slot) * vd + col] = vf[g * vd + col];
            const auto phi_q = hedgehog_ref(&qf[g * d], wq, hh, d, f);
            const unsigned count = std::min(m + 1, w);
            std::vector<double> sc(count);
            double cmax = -1e300;
            for (unsigned j = 0; j < count; ++j) {
                double acc = 0;
                for (unsigned e = 0; e < d; ++e) acc += (double)qf[g * d + e] * k_ref[(g * w + j) * d + e];
                sc[j] = scale * acc;
                cmax = std::max(cmax, sc[j]);
            }
            double den = 0;
            for (unsigned r = 0; r < kf; ++r) den += phi_q[r] * z_ref[g * kf + r];
            std::vector<double> num(vd, 0.0);
            for (unsigned j = 0; j < count; ++j) {
                const double a = factor[hh] * std::exp(sc[j] - cmax);
                den += a;
                for (unsigned col = 0; col < vd; ++col) num[col] += a * v_ref[(g * w + j) * vd + col];
            }
            for (unsigned col = 0; col < vd; ++col) {
                for (unsigned r = 0; r < kf; ++r) num[col] += phi_q[r] * s_ref[(g * kf + r) * vd + col];
                y_ref[g * vd + col] = lat_to_f32(lat_from_f32<T>((float)(num[col] / den)));
            }
        }

        // Kernel chain.
        std::vector<float> q32(nh * d), old_k(nh * d);
        emu_launch({2, 1, 1}, {256, 1, 1}, [&] {
            window_step_gather_v1<T>(q.data(), keys.data(), seen.data(), q32.data(), old_k.data(), n, h, d, w);
        });
        std::vector<float> phi_q(nh * kf), phi_old(nh * kf);
        emu_launch({2, 1, 1}, {128, 1, 1}, [&] {
            hedgehog_v1<float>(q32.data(), wq.data(), phi_q.data(), (unsigned)n, h, d, f, 1u);
        });
        emu_launch({2, 1, 1}, {128, 1, 1}, [&] {
            hedgehog_v1<float>(old_k.data(), wk.data(), phi_old.data(), (unsigned)n, h, d, f, 1u);
        });
        std::vector<float> ext_in(nh * kf * (vd + 1)), ext(ext_in.size());
        for (size_t r = 0; r < nh * kf; ++r) {
            for (unsigned col = 0; col < vd; ++col) ext_in[r * (vd + 1) + col] = kv[r * vd + col];
            ext_in[r * (vd + 1) + vd] = z[r];
        }
        emu_launch({3, 1, 1}, {256, 1, 1}, [&] {
            window_step_state_v1(ext_in.data(), phi_old.data(), values.data(), seen.data(), ext.data(), n, h, kf, vd,
                                 w);
        });
        std::vector<float> new_keys(keys.size()), new_values(values.size());
        emu_launch({2, 1, 1}, {256, 1, 1}, [&] {
            window_step_cache_v1<T>(k.data(), keys.data(), seen.data(), new_keys.data(), n, h, w, d);
        });
        emu_launch({2, 1, 1}, {256, 1, 1}, [&] {
            window_step_cache_v1<T>(v.data(), values.data(), seen.data(), new_values.data(), n, h, w, vd);
        });
        std::vector<T> out(nh * vd);
        emu_launch({2, 1, 1}, {64, 1, 1}, [&] {
            window_step_out_v1<T>(q.data(), phi_q.data(), ext.data(), new_keys.data(), new_values.data(), seen.data(),
                                  factor.data(), out.data(), n, h, d, kf, vd, w, scale);
        });
        for (size_t r = 0; r < nh * kf; ++r) {
            for (unsigned col = 0; col < vd; ++col) kv[r * vd + col] = ext[r * (vd + 1) + col];
            z[r] = ext[r * (vd + 1) + vd];
        }
        keys = new_keys;
        values = new_values;
        for (auto& s : seen) ++s;

        char label[160];
        std::snprintf(label, sizeof label, "window_step_%s W%u step %u output", name, w, step);
        compare(label, to_f32(out), y_ref, tol);
        std::snprintf(label, sizeof label, "window_step_%s W%u step %u S", name, w, step);
        compare(label, kv, s_ref, 1e-5);
        std::snprintf(label, sizeof label, "window_step_%s W%u step %u z", name, w, step);
        compare(label, z, z_ref, 1e-5);
        std::snprintf(label, sizeof label, "window_step_%s W%u step %u keys", name, w, step);
        compare(label, keys, k_ref, 0.0);
        std::snprintf(label, sizeof label, "window_step_%s W%u step %u values", name, w, step);
        compare(label, values, v_ref, 0.0);
    }
}

int main() {
    const Case small{3, 2, 20, 70, 6, 5, 8, {0, 3, 11}};
    const Case wide{2, 2, 24, 30, 4, 70, 3, {2, 100}};
    test_window_step<float>("f32", small, 2e-5);
    test_window_step<float>("f32", wide, 2e-5);
    test_window_step<lat_f16>("f16", small, 2e-3);
    test_window_step<lat_bf16>("bf16", small, 1e-2);
    test_window_step<lat_bf16>("bf16", wide, 1e-2);
    if (failures != 0) {
        std::printf("%d failure(s)\n", failures);
        return 1;
    }
    std::printf("all window_step kernels match\n");
    return 0;
}
