// quant_int8_mixed.cpp: host emulation test of kernels/cuda/quant/int8_mixed.cu
// (`cargo xtask kernels --emulate`) against an exact host reference of the LLM.int8
// scheme of crates/quant/src/bnb/int8.rs (`Int8Weight::matmul_f32`).
//
// The reference repeats the CPU's f32 operations (s_x, k = 127 / s_x, the codes, the
// scaling of the i32 sum) and sums the outlier part in double. Checked exactly: the outlier
// column bits, (s_x, k) per row, every packed code word of x, and for f32 x without
// outlier columns the output itself (the kernel then forms the CPU's value bit for bit).
// With outlier columns, f32 outputs may differ from the reference by the f32 summation of
// the outlier terms: |err| <= 1e-6 * (|integer part| + sum |outlier terms|). f16 / bf16
// outputs: within one unit in the last place of T of the reference.
//
// Inputs: cols not a multiple of 4 or of the block, m not a multiple of the tile of 4,
// outliers above and exactly at the threshold, a non-outlier entry just below it, a row
// whose only non-zero entry is an outlier (s_x = 0), an all-zero row, a row with
// s_x = 127 / 32 (k = 32 exactly) and entries on rounding ties, a NaN entry (an outlier at
// any threshold: y is NaN in its row), threshold 0 (no split), weight codes over the whole range -128..127. Grids of 2
// or 3 blocks, so the grid-stride loops run several times.
#include "host_shim.h"

#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "../../../../kernels/cuda/quant/int8_mixed.cu"

static int failures = 0;
static const float INV_127 = 7.874016e-3f;
static const float INV_127_SQ = 6.200124e-5f;

struct Case {
    unsigned int rows, cols, m;
    float threshold;
    bool nan_entry;
};

struct Reference {
    std::vector<unsigned int> flags;  // outlier column bits
    std::vector<float> stats;         // (s_x, k) per row
    std::vector<unsigned int> xq;     // packed codes [m, words]
    std::vector<float> int_part;      // the CPU's f32 integer part [m, rows]
    std::vector<double> outlier_sum;  // outlier part in double [m, rows]
    std::vector<double> outlier_abs;  // sum of |outlier terms| [m, rows]
    bool any_outlier = false;
};

// NaN and Inf at any threshold, |x| >= threshold when it is positive.
static bool is_outlier_entry(const Case& c, float v) {
    return !std::isfinite(v) || (c.threshold > 0.0f && std::fabs(v) >= c.threshold);
}

static Reference reference(const Case& c, const std::vector<float>& x, const std::vector<signed char>& cb,
                           const std::vector<float>& scb) {
    const unsigned int words = (c.cols + 3) / 4;
    Reference r;
    r.flags.assign((c.cols + 31) / 32, 0u);
    r.stats.assign(2 * c.m, 0.0f);
    r.xq.assign((size_t)c.m * words, 0u);
    std::vector<bool> outlier(c.cols, false);
    for (unsigned int t = 0; t < c.m; ++t)
        for (unsigned int col = 0; col < c.cols; ++col)
            if (is_outlier_entry(c, x[(size_t)t * c.cols + col])) outlier[col] = true;
    for (unsigned int col = 0; col < c.cols; ++col)
        if (outlier[col]) {
            r.flags[col / 32] |= 1u << (col % 32);
            r.any_outlier = true;
        }
    std::vector<int> codes((size_t)c.m * c.cols, 0);
    for (unsigned int t = 0; t < c.m; ++t) {
        float s = 0.0f;
        for (unsigned int col = 0; col < c.cols; ++col) {
            const float a = std::fabs(x[(size_t)t * c.cols + col]);
            if (!is_outlier_entry(c, x[(size_t)t * c.cols + col]) && a > s) s = a;
        }
        const float k = s > 0.0f ? 127.0f / s : 0.0f;
        r.stats[2 * t] = s;
        r.stats[2 * t + 1] = k;
        if (s <= 0.0f) continue;
        for (unsigned int col = 0; col < c.cols; ++col) {
            if (outlier[col]) continue;
            const float scaled = x[(size_t)t * c.cols + col] * k;
            const int code = std::isnan(scaled) ? 0 : (int)std::fmin(std::fmax(std::rint(scaled), -127.0f), 127.0f);
            codes[(size_t)t * c.cols + col] = code;
            r.xq[(size_t)t * words + col / 4] |= ((unsigned int)code & 0xffu) << (8 * (col % 4));
        }
    }
    r.int_part.assign((size_t)c.m * c.rows, 0.0f);
    r.outlier_sum.assign((size_t)c.m * c.rows, 0.0);
    r.outlier_abs.assign((size_t)c.m * c.rows, 0.0);
    for (unsigned int t = 0; t < c.m; ++t)
        for (unsigned int row = 0; row < c.rows; ++row) {
            int64_t acc = 0;
            double sum = 0, abs_sum = 0;
            for (unsigned int col = 0; col < c.cols; ++col) {
                const int w = cb[(size_t)row * c.cols + col];
                acc += (int64_t)codes[(size_t)t * c.cols + col] * w;
                if (outlier[col]) {
                    const float weight = ((float)w * scb[row]) * INV_127;
                    const double term = (double)x[(size_t)t * c.cols + col] * weight;
                    sum += term;
                    abs_sum += std::fabs(term);
                }
            }
            const float s_x = r.stats[2 * t];
            r.int_part[(size_t)t * c.rows + row] = ((float)(int)acc * (s_x * scb[row])) * INV_127_SQ;
            r.outlier_sum[(size_t)t * c.rows + row] = sum;
            r.outlier_abs[(size_t)t * c.rows + row] = abs_sum;
        }
    return r;
}

// x for a case: uniform [-1, 1) plus the special rows and entries listed in the header.
static std::vector<float> make_x(const Case& c, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<float> x((size_t)c.m * c.cols);
    for (auto& v : x) v = dist(rng);
    auto at = [&](unsigned int t, unsigned int col) -> float& { return x[(size_t)t * c.cols + col]; };
    const unsigned int last = c.cols - 1;
    if (c.m >= 3) {
        for (unsigned int col = 0; col < c.cols; ++col) at(1, col) = 0.0f;
        at(1, last) = 9.25f;  // the row's only non-zero entry, an outlier: s_x = 0
        for (unsigned int col = 0; col < c.cols; ++col) at(2, col) = 0.0f;  // all zero
    }
    // Row 0: s_x = 127/32 (k = 32 exactly), entries on ties, an outlier above the threshold.
    at(0, 0) = 3.96875f;
    if (c.cols > 4) {
        at(0, 1) = 0.015625f;   // x * k = 0.5 -> 0
        at(0, 2) = -0.046875f;  // -1.5 -> -2
        at(0, 3) = 0.078125f;   // 2.5 -> 2
    }
    if (c.cols > 8) at(0, 5) = 7.5f;
    const unsigned int edge_row = c.m >= 4 ? c.m - 1 : 0;
    if (c.cols > 12) at(edge_row, last - 1) = -6.0f;  // exactly at the threshold
    if (c.cols > 16 && c.m >= 4) at(3, 9) = 5.9375f;  // just below: part of s_x
    if (c.nan_entry && c.cols > 20) at(0, 17) = std::nanf("");  // an outlier at any threshold
    return x;
}

template <typename T> static float ulp_of(float v);
template <> float ulp_of<float>(float) { return 0.0f; }
template <> float ulp_of<lat_bf16>(float v) { return std::fmax(std::fabs(v), 1e-30f) * 0x1p-7f; }
template <> float ulp_of<lat_f16>(float v) { return std::fmax(std::fabs(v), 6.1e-5f) * 0x1p-10f; }

template <typename T> static void run_case(const char* name, const Case& c, unsigned seed) {
    const unsigned int words = (c.cols + 3) / 4;
    std::vector<float> x32 = make_x(c, seed);
    std::vector<T> x(x32.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] = lat_from_f32<T>(x32[i]);
    std::vector<float> xf(x.size());
    for (size_t i = 0; i < x.size(); ++i) xf[i] = lat_to_f32(x[i]);

    std::mt19937 rng(seed + 7);
    std::uniform_int_distribution<int> code_dist(-128, 127);  // -128: foreign files
    std::uniform_real_distribution<float> scale_dist(0.01f, 2.0f);
    std::vector<signed char> cb((size_t)c.rows * c.cols);
    for (auto& v : cb) v = (signed char)code_dist(rng);
    std::vector<float> scb(c.rows);
    for (auto& v : scb) v = scale_dist(rng);
    std::vector<unsigned int> codes((size_t)c.rows * words, 0u);
    for (unsigned int row = 0; row < c.rows; ++row)
        for (unsigned int col = 0; col < c.cols; ++col)
            codes[(size_t)row * words + col / 4] |= ((unsigned int)(unsigned char)cb[(size_t)row * c.cols + col])
                                                    << (8 * (col % 4));

    std::vector<float> stats(2 * c.m, -1.0f);
    std::vector<unsigned int> flags((c.cols + 31) / 32, 0u);
    std::vector<unsigned int> xq((size_t)c.m * words, 0xdeadbeefu);
    std::vector<T> y((size_t)c.m * c.rows, lat_from_f32<T>(-999.0f));
    const unsigned int split = c.threshold > 0.0f ? 1u : 0u;
    emu_launch({2, 1, 1}, {128, 1, 1}, [&] {
        int8_row_stats<T>(x.data(), stats.data(), flags.data(), c.m, c.cols, c.threshold, split);
    });
    emu_launch({2, 1, 1}, {256, 1, 1}, [&] {
        int8_quantize_x<T>(x.data(), stats.data(), flags.data(), xq.data(), c.m, c.cols, words);
    });
    emu_launch({3, 1, 1}, {128, 1, 1}, [&] {
        int8_mixed_matmul<T>(codes.data(), scb.data(), xq.data(), stats.data(), flags.data(), x.data(), y.data(),
                             c.rows, c.cols, c.m, words);
    });

    const Reference r = reference(c, xf, cb, scb);
    const bool flags_ok = flags == r.flags;
    bool stats_ok = true;
    for (size_t i = 0; i < stats.size(); ++i) stats_ok &= __float_as_uint(stats[i]) == __float_as_uint(r.stats[i]);
    const bool xq_ok = xq == r.xq;
    double worst = 0;
    size_t worst_index = 0;
    bool y_ok = true;
    for (size_t i = 0; i < y.size(); ++i) {
        const float got = lat_to_f32(y[i]);
        const double want = (double)r.int_part[i] + r.outlier_sum[i];
        double bound;
        if (ulp_of<T>(1.0f) == 0.0f) {
            bound = r.any_outlier ? 1e-6 * (std::fabs(r.int_part[i]) + r.outlier_abs[i]) + 1e-30 : 0.0;
        } else {
            bound = ulp_of<T>((float)want) + 1e-6 * (std::fabs(r.int_part[i]) + r.outlier_abs[i]);
        }
        if (std::isnan(want)) {
            // A NaN entry of x reaches its row through the outlier part.
            if (!std::isnan(got)) y_ok = false;
            continue;
        }
        const double err = std::fabs((double)got - want);
        const bool exact_needed = bound == 0.0;
        const bool ok = exact_needed ? got == r.int_part[i] : err <= bound;
        if (!ok) y_ok = false;
        if (!(err <= worst)) {
            worst = err;
            worst_index = i;
        }
    }
    const bool ok = flags_ok && stats_ok && xq_ok && y_ok;
    std::printf("%s int8_mixed_%s rows %u cols %u m %u threshold %g%s: flags %s, stats %s, codes %s, y %s "
                "(max abs err %.3g at %zu)\n",
                ok ? "ok  " : "FAIL", name, c.rows, c.cols, c.m, c.threshold, c.nan_entry ? " NaN entry" : "",
                flags_ok ? "exact" : "WRONG", stats_ok ? "exact" : "WRONG", xq_ok ? "exact" : "WRONG",
                y_ok ? (r.any_outlier || ulp_of<T>(1.0f) != 0.0f ? "within bound" : "exact") : "WRONG", worst,
                worst_index);
    if (!ok) ++failures;
}

template <typename T> static void test_dtype(const char* name) {
    const Case cases[] = {
        {9, 37, 1, 6.0f, false},  {13, 150, 3, 6.0f, true}, {7, 301, 6, 6.0f, false},
        {5, 150, 3, 0.0f, true},  {11, 3, 2, 6.0f, false},  {6, 258, 5, -1.0f, false},
        {4, 1, 1, 6.0f, false},
    };
    unsigned seed = 1;
    for (const Case& c : cases) run_case<T>(name, c, seed++);
}

int main() {
    test_dtype<float>("f32");
    test_dtype<lat_f16>("f16");
    test_dtype<lat_bf16>("bf16");
    std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "passed", failures);
    return failures ? 1 : 0;
}
