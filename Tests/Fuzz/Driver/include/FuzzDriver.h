#ifndef FERRY_FUZZ_DRIVER_H
#define FERRY_FUZZ_DRIVER_H

#include <stddef.h>
#include <stdint.h>

/// Runs libFuzzer's driver on `testOneInput`, as libFuzzer's own `main` would. SwiftPM names an executable's entry
/// point `<Module>_main` and aliases `main` to it, which leaves libFuzzer's `main` out of the link; each fuzz
/// target's top-level code calls this instead.
int ferry_fuzz_main(int argc, char **argv, int (*testOneInput)(const uint8_t *data, size_t size));

#endif
