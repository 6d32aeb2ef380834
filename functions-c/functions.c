/*
 * Example functions in C with the SDK header: one source, built as the native library
 * libfunctions_c.so and as the WASI module functions_c.wasm (tools/build_functions.sh).
 *
 *   upper     ASCII text in, the same in upper case out
 *   checksum  any bytes in, their 64-bit FNV-1a hash out (8 bytes, little-endian)
 *   allocate  a little-endian uint32 count of MiB in: mallocs that much, touches every page
 *             and frees it; out "ok", or an error when the allocation's memory does not have it
 *   hello     anything in: prints a line to stdout (the executor's log), returns nothing
 */
#include <stdio.h>
#include <stdlib.h>

#include <rfaas_function.h>

RFAAS_FUNCTION(upper) {
    const unsigned char *in = args;
    unsigned char *out = res;
    if (size > rfaas_output_capacity(size))
        return rfaas_error(res, size, "the output slot is smaller than the input");
    for (uint32_t i = 0; i < size; i++)
        out[i] = (in[i] >= 'a' && in[i] <= 'z') ? (unsigned char)(in[i] - 'a' + 'A') : in[i];
    return size;
}

RFAAS_FUNCTION(checksum) {
    const unsigned char *in = args;
    uint64_t hash = UINT64_C(0xcbf29ce484222325);
    for (uint32_t i = 0; i < size; i++) {
        hash ^= in[i];
        hash *= UINT64_C(0x100000001b3);
    }
    if (rfaas_output_capacity(size) < 8)
        return rfaas_error(res, size, "the output slot is smaller than 8 bytes");
    unsigned char *out = res;
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)(hash >> (8 * i));
    return 8;
}

RFAAS_FUNCTION(allocate) {
    if (size != 4)
        return rfaas_error(res, size, "expected a uint32 count of MiB");
    const unsigned char *in = args;
    uint32_t mib = (uint32_t)in[0] | (uint32_t)in[1] << 8 | (uint32_t)in[2] << 16 |
                   (uint32_t)in[3] << 24;
    size_t bytes = (size_t)mib << 20;
    volatile unsigned char *block = malloc(bytes);
    if (block == NULL) {
        char message[64];
        snprintf(message, sizeof message, "cannot allocate %u MiB", (unsigned)mib);
        return rfaas_error(res, size, message);
    }
    for (size_t i = 0; i < bytes; i += 4096)
        block[i] = 1;
    free((void *)block);
    memcpy(res, "ok", 2);
    return 2;
}

RFAAS_FUNCTION(hello) {
    (void)args;
    (void)res;
    printf("hello from C: %u bytes in\n", (unsigned)size);
    fflush(stdout);
    return 0;
}
