#include "FuzzDriver.h"

// Defined by libFuzzer's runtime (compiler-rt FuzzerDriver.cpp), which -sanitize=fuzzer links.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

int ferry_fuzz_main(int argc, char **argv, int (*testOneInput)(const uint8_t *data, size_t size)) {
    return LLVMFuzzerRunDriver(&argc, &argv, testOneInput);
}
