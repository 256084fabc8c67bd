// tensor_kernels.cpp: host emulation test of kernels/cuda/tensor/*.cu against double
// references (`cargo xtask kernels --emulate`). Grids are deliberately small so the
// grid-stride loops run more than once; shapes are not multiples of the tiles.
#include "host_shim.h"

#include <cstdio>
#include <random>

#include "../../../../kernels/cuda/tensor/elementwise.cu"
#include "../../../../kernels/cuda/tensor/matmul.cu"
#include "../../../../kernels/cuda/tensor/rms_norm.cu"
#include "../../../../kernels/cuda/tensor/softmax.cu"

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

// Rounds reference values through T, so the comparison sees the same final rounding.
template <typename T> std::vector<double> rounded(const std::vector<double>& v) {
    std::vector<double> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = lat_to_f32(lat_from_f32<T>((float)v[i]));
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
    for (size_t i = 0; i < got.size(); ++i) {
        if (std::isfinite(want[i])) scale = std::max(scale, std::fabs(want[i]));
    }
    for (size_t i = 0; i < got.size(); ++i) {
        const bool both_nan = std::isnan(got[i]) && std::isnan(want[i]);
        const double err = both_nan ? 0.0 : std::fabs(got[i] - want[i]);
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

static std::vector<float> random_values(size_t n, unsigned seed, float lo = -2.f, float hi = 2.f) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(rng);
    return v;
}

template <typename T> void test_elementwise(const char* name, double tol) {
    const lat_u64 n = 1000;
    auto a32 = random_values(n, 1), b32 = random_values(n, 2);
    auto a = to_dtype<T>(a32), b = to_dtype<T>(b32);
    auto af = to_f32(a), bf = to_f32(b);
    std::vector<T> out(n);
    std::vector<double> sum(n), prod(n), scaled(n);
    for (size_t i = 0; i < n; ++i) {
        sum[i] = (double)af[i] + bf[i];
        prod[i] = (double)af[i] * bf[i];
        scaled[i] = 0.75 * af[i];
    }
    char label[128];
    emu_launch({2, 1, 1}, {256, 1, 1}, [&] { add_contig<T>(a.data(), b.data(), out.data(), n); });
    std::snprintf(label, sizeof label, "add_contig_%s", name);
    compare(label, to_f32(out), rounded<T>(sum), tol);
    emu_launch({3, 1, 1}, {256, 1, 1}, [&] { mul_contig<T>(a.data(), b.data(), out.data(), n); });
    std::snprintf(label, sizeof label, "mul_contig_%s", name);
    compare(label, to_f32(out), rounded<T>(prod), tol);
    emu_launch({1, 1, 1}, {256, 1, 1}, [&] { scale_contig<T>(a.data(), out.data(), 0.75f, n); });
    std::snprintf(label, sizeof label, "scale_contig_%s", name);
    compare(label, to_f32(out), rounded<T>(scaled), tol);
}

struct MatmulCase {
    unsigned int batch, m, n, k;
    bool rhs_batched, rhs_transposed;
    dim3 tiled_grid;  // {0,..} = full grid
};

template <typename T> void test_matmul(const char* name, double tol) {
    const MatmulCase cases[] = {
        {2, 70, 130, 37, true, false, {0, 0, 0}},
        {2, 70, 130, 37, false, true, {0, 0, 0}},
        {1, 5, 3, 1, false, false, {0, 0, 0}},
        {3, 65, 66, 33, true, true, {1, 1, 1}},
        {2, 130, 20, 17, false, false, {1, 2, 1}},
        {1, 300, 260, 45, false, true, {0, 0, 0}},
        {2, 257, 129, 9, true, false, {2, 1, 1}},
    };
    for (const auto& c : cases) {
        const size_t b_mats = c.rhs_batched ? c.batch : 1;
        auto a = to_dtype<T>(random_values((size_t)c.batch * c.m * c.k, 3));
        auto b = to_dtype<T>(random_values(b_mats * c.k * c.n, 4));
        auto af = to_f32(a), bf = to_f32(b);
        std::vector<double> want((size_t)c.batch * c.m * c.n);
        for (size_t bi = 0; bi < c.batch; ++bi)
            for (size_t i = 0; i < c.m; ++i)
                for (size_t j = 0; j < c.n; ++j) {
                    double acc = 0;
                    const size_t b_off = c.rhs_batched ? bi * c.k * c.n : 0;
                    for (size_t p = 0; p < c.k; ++p) {
                        const double bv = c.rhs_transposed ? bf[b_off + j * c.k + p] : bf[b_off + p * c.n + j];
                        acc += (double)af[(bi * c.m + i) * c.k + p] * bv;
                    }
                    want[(bi * c.m + i) * c.n + j] = acc;
                }
        want = rounded<T>(want);
        const lat_u64 stride = c.rhs_batched ? (lat_u64)c.k * c.n : 0;
        const unsigned int tr = c.rhs_transposed ? 1 : 0;
        std::vector<T> out(want.size());
        for (int variant = 0; variant < 2; ++variant) {
            const unsigned int tile = variant == 0 ? 64 : 128;
            dim3 grid = c.tiled_grid;
            if (grid.x == 0) grid = {(c.m + tile - 1) / tile, (c.n + tile - 1) / tile, c.batch};
            std::fill(out.begin(), out.end(), lat_from_f32<T>(-999.0f));
            emu_launch(grid, {256, 1, 1}, [&] {
                if (variant == 0) {
                    matmul_tiled<T, 4, 16>(a.data(), b.data(), out.data(), c.m, c.n, c.k, c.batch, stride, tr);
                } else {
                    matmul_tiled<T, 8, 8>(a.data(), b.data(), out.data(), c.m, c.n, c.k, c.batch, stride, tr);
                }
            });
            char label[160];
            std::snprintf(label, sizeof label, "matmul_%s_%s b%u m%u n%u k%u batched=%d transposed=%d grid(%u,%u,%u)",
                          variant == 0 ? "tiled" : "tiled128", name, c.batch, c.m, c.n, c.k, c.rhs_batched,
                          c.rhs_transposed, grid.x, grid.y, grid.z);
            compare(label, to_f32(out), want, tol);
        }
        std::vector<T> naive(want.size());
        emu_launch({2, 3, 1}, {16, 16, 1}, [&] {
            matmul_naive<T>(a.data(), b.data(), naive.data(), c.m, c.n, c.k, c.batch, stride, tr);
        });
        char label[160];
        std::snprintf(label, sizeof label, "matmul_naive_%s b%u m%u n%u k%u", name, c.batch, c.m, c.n, c.k);
        compare(label, to_f32(naive), want, tol);
    }
}

template <typename T> void test_rows(const char* name, double tol) {
    for (unsigned int cols : {45u, 300u, 1500u}) {
        const lat_u64 rows = 9;
        auto x32 = random_values(rows * cols, 5, -6.f, 6.f);
        x32[3] = -INFINITY;  // a masked entry: contributes 0
        auto x = to_dtype<T>(x32);
        auto w = to_dtype<T>(random_values(cols, 6, 0.5f, 1.5f));
        auto xf = to_f32(x), wf = to_f32(w);
        std::vector<double> soft(rows * cols), norm(rows * cols);
        for (size_t r = 0; r < rows; ++r) {
            double mx = -INFINITY, sum = 0, sq = 0;
            for (size_t j = 0; j < cols; ++j) mx = std::max(mx, (double)xf[r * cols + j]);
            for (size_t j = 0; j < cols; ++j) sum += std::exp(xf[r * cols + j] - mx);
            for (size_t j = 0; j < cols; ++j) soft[r * cols + j] = std::exp(xf[r * cols + j] - mx) / sum;
            for (size_t j = 0; j < cols; ++j) {
                const double v = xf[r * cols + j];
                sq += std::isfinite(v) ? v * v : 0;
            }
            const double inv = 1.0 / std::sqrt(sq / cols + 1e-5);
            for (size_t j = 0; j < cols; ++j) norm[r * cols + j] = xf[r * cols + j] * inv * wf[j];
        }
        soft = rounded<T>(soft);
        std::vector<T> out(rows * cols);
        char label[128];
        emu_launch({2, 1, 1}, {128, 1, 1}, [&] { softmax_warp<T>(x.data(), out.data(), rows, cols); });
        std::snprintf(label, sizeof label, "softmax_warp_%s cols %u", name, cols);
        compare(label, to_f32(out), soft, tol);
        emu_launch({4, 1, 1}, {256, 1, 1}, [&] { softmax_block<T>(x.data(), out.data(), rows, cols); });
        std::snprintf(label, sizeof label, "softmax_block_%s cols %u", name, cols);
        compare(label, to_f32(out), soft, tol);
        // RMSNorm on rows without the -inf entry.
        auto x_norm32 = random_values(rows * cols, 7, -3.f, 3.f);
        auto xn = to_dtype<T>(x_norm32);
        auto xnf = to_f32(xn);
        for (size_t r = 0; r < rows; ++r) {
            double sq = 0;
            for (size_t j = 0; j < cols; ++j) sq += (double)xnf[r * cols + j] * xnf[r * cols + j];
            const double inv = 1.0 / std::sqrt(sq / cols + 1e-5);
            for (size_t j = 0; j < cols; ++j) norm[r * cols + j] = xnf[r * cols + j] * inv * wf[j];
        }
        norm = rounded<T>(norm);
        emu_launch({1, 1, 1}, {128, 1, 1}, [&] { rms_norm_warp<T>(xn.data(), w.data(), out.data(), rows, cols, 1e-5f); });
        std::snprintf(label, sizeof label, "rms_norm_warp_%s cols %u", name, cols);
        compare(label, to_f32(out), norm, tol);
        emu_launch({2, 1, 1}, {256, 1, 1}, [&] { rms_norm_block<T>(xn.data(), w.data(), out.data(), rows, cols, 1e-5f); });
        std::snprintf(label, sizeof label, "rms_norm_block_%s cols %u", name, cols);
        compare(label, to_f32(out), norm, tol);
    }
}

int main() {
    // Conversions: bf16 round-to-nearest-even and NaN, f16 through _Float16.
    if (lat_f32_to_bf16(1.00390625f).bits != 0x3f80 || lat_f32_to_bf16(1.01171875f).bits != 0x3f82 ||
        lat_f32_to_bf16(__uint_as_float(0x7f800001u)).bits != 0x7fc0 || lat_f32_to_f16(1.0f).bits != 0x3c00) {
        std::printf("FAIL 16-bit conversions\n");
        ++failures;
    }
    test_elementwise<float>("f32", 1e-6);
    test_elementwise<lat_bf16>("bf16", 1e-6);
    test_elementwise<lat_f16>("f16", 1e-6);
    test_matmul<float>("f32", 1e-5);
    test_matmul<lat_bf16>("bf16", 1e-2);
    test_matmul<lat_f16>("f16", 2e-3);
    test_rows<float>("f32", 1e-5);
    test_rows<lat_bf16>("bf16", 1e-2);
    test_rows<lat_f16>("f16", 2e-3);
    std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "passed", failures);
    return failures ? 1 : 0;
}
