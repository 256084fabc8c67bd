// tensor_non_finite.cpp: host emulation test of kernels/cuda/tensor/non_finite.cu
// (`cargo xtask kernels --emulate`) against a plain search with std::isfinite.
//
// Lengths around the block size and not multiples of it; grids of 1 to 3 blocks, so the
// grid-stride loop runs many times and threads of different blocks race on the atomicMin;
// NaN, +Inf and -Inf at the first, a middle and the last element, with a second non-finite
// value after the first; results written to slot 1 of 2 to check the slot addressing.
#include "host_shim.h"

#include <cstdio>
#include <vector>

#include "../../../../kernels/cuda/tensor/non_finite.cu"

static int failures = 0;
static const lat_u64 NONE = ~0ull;

template <typename T> static lat_u64 reference_index(const std::vector<T>& x) {
    for (size_t i = 0; i < x.size(); ++i) {
        if (!std::isfinite(lat_to_f32(x[i]))) return i;
    }
    return NONE;
}

template <typename T> static void run_case(const char* name, std::vector<T> x, unsigned int blocks, const char* what) {
    lat_u64 found[4] = {NONE, 0, NONE, 0};
    const lat_u64 n = x.size();
    emu_launch({blocks, 1, 1}, {256, 1, 1}, [&] { first_non_finite<T>(x.data(), n, found, 1); });
    emu_launch({1, 1, 1}, {32, 1, 1}, [&] { non_finite_value<T>(x.data(), n, found, 1); });
    const lat_u64 want = reference_index(x);
    bool ok = found[2] == want && found[0] == NONE && found[1] == 0;
    float got_value = 0, want_value = 0;
    if (ok && want != NONE) {
        got_value = __uint_as_float((unsigned int)found[3]);
        want_value = lat_to_f32(x[want]);
        ok = std::isnan(want_value) ? std::isnan(got_value) : got_value == want_value;
    } else if (ok) {
        ok = found[3] == 0;
    }
    std::printf("%s first_non_finite_%s n %llu grid %u %s: index %lld (want %lld) value %g (want %g)\n",
                ok ? "ok  " : "FAIL", name, (unsigned long long)n, blocks, what,
                found[2] == NONE ? -1ll : (long long)found[2], want == NONE ? -1ll : (long long)want, got_value,
                want_value);
    if (!ok) ++failures;
}

template <typename T> static void test_dtype(const char* name) {
    const float specials[] = {__uint_as_float(0x7fc00000u), __uint_as_float(0x7f800000u), __uint_as_float(0xff800000u)};
    const char* special_names[] = {"NaN", "+Inf", "-Inf"};
    for (size_t n : {1ul, 255ul, 256ul, 1000ul, 5003ul}) {
        std::vector<T> clean(n);
        for (size_t i = 0; i < n; ++i) clean[i] = lat_from_f32<T>((float)(i % 97) * 0.25f - 12.0f);
        run_case<T>(name, clean, 2, "all finite");
        for (size_t spot : {size_t{0}, n / 2, n - 1}) {
            for (int s = 0; s < 3; ++s) {
                std::vector<T> x = clean;
                x[spot] = lat_from_f32<T>(specials[s]);
                if (spot + 3 < n) x[spot + 3] = lat_from_f32<T>(specials[(s + 1) % 3]);
                char what[64];
                std::snprintf(what, sizeof what, "%s at %zu", special_names[s], spot);
                run_case<T>(name, x, 1 + (unsigned int)(spot % 3), what);
            }
        }
    }
    // Every element non-finite: every thread of the grid hits on its first element.
    std::vector<T> all(777, lat_from_f32<T>(specials[1]));
    run_case<T>(name, all, 3, "all +Inf");
}

int main() {
    test_dtype<float>("f32");
    test_dtype<lat_f16>("f16");
    test_dtype<lat_bf16>("bf16");
    std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "passed", failures);
    return failures ? 1 : 0;
}
