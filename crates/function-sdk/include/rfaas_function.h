/*
 * rfaas_function.h: write rFaaS functions in C or C++.
 *
 * An rFaaS function has the ABI `uint32_t f(void *args, uint32_t size, void *res)`: the
 * executor hands it the `size` input bytes the client wrote at `args`; the function writes its
 * output at `res` and returns how many bytes it wrote. The same source builds as a native
 * shared library and as a WASI reactor module:
 *
 *   cc -shared -fPIC -fvisibility=hidden -O2 -I<include> f.c -o libf.so
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -I<include> f.c -o f.wasm
 *
 *   #include <rfaas_function.h>
 *
 *   RFAAS_FUNCTION(upper) {
 *       const char *in = args;
 *       char *out = res;
 *       if (size > rfaas_output_capacity(size))
 *           return rfaas_error(res, size, "the output slot is smaller than the input");
 *       for (uint32_t i = 0; i < size; i++)
 *           out[i] = (in[i] >= 'a' && in[i] <= 'z') ? in[i] - 32 : in[i];
 *       return size;
 *   }
 *
 * - The output slot holds rfaas_output_capacity() bytes (the allocation's largest payload),
 *   which the executor tells the library before any function runs. Returning more bytes than
 *   the caller's result buffer holds is answered with the return code OutputTooLarge.
 * - A function fails a call with rfaas_error(): the message goes to the caller with the return
 *   code FunctionError. The ABI carries that as RFAAS_FUNCTION_ERROR | length of the message,
 *   written at the start of the output.
 * - Memory is held to the allocation's: malloc returns NULL past it (native: the executor's
 *   RLIMIT_DATA; wasm: a refused memory.grow). Check it. An abort() for want of memory is
 *   reported to the caller as the allocation running out of memory.
 * - In wasm, stdout and stderr go to the executor's log; files, sockets, the environment and
 *   arguments are not there (WASI preview 1 with no capabilities).
 */
#ifndef RFAAS_FUNCTION_H
#define RFAAS_FUNCTION_H

#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
#define RFAAS_EXTERN_C extern "C"
#else
#define RFAAS_EXTERN_C
#endif

#if defined(__wasm__)
#define RFAAS_EXPORT(name) __attribute__((export_name(#name)))
#else
#define RFAAS_EXPORT(name) __attribute__((visibility("default")))
#endif

/* A function that returns RFAAS_FUNCTION_ERROR | n failed; the first n bytes of its output are
 * a UTF-8 message for the caller. */
#define RFAAS_FUNCTION_ERROR UINT32_C(0x80000000)

/* Defines the function `name`, exported under that name, which clients call it by. */
#define RFAAS_FUNCTION(name)                                                                   \
    RFAAS_EXTERN_C RFAAS_EXPORT(name) uint32_t name(void *args, uint32_t size, void *res)

/* The output slot's size as the executor told it; 0 until it did. Weak, so that every
 * translation unit may include this header and the library holds one. */
#ifdef __cplusplus
extern "C" {
#endif
__attribute__((weak, visibility("hidden"))) uint32_t rfaas_output_capacity_ = 0;

/* The executor calls this once after loading the library (native) or instantiating the module
 * (wasm), before any function, with the size of every output slot. */
__attribute__((weak)) RFAAS_EXPORT(__rfaas_set_output_capacity) void
__rfaas_set_output_capacity(uint32_t capacity) {
    rfaas_output_capacity_ = capacity;
}
#ifdef __cplusplus
}
#endif

/* How many bytes the function may write at `res`: the output slot, or `size` (the seed's
 * contract: the output holds at least the input) where the executor did not say. */
static inline uint32_t rfaas_output_capacity(uint32_t size) {
    return rfaas_output_capacity_ != 0 ? rfaas_output_capacity_ : size;
}

/* Fails the call: writes `message` (cut to the output's capacity) at `res` and returns the
 * value the function must return. `size` is the function's input size. */
static inline uint32_t rfaas_error(void *res, uint32_t size, const char *message) {
    size_t len = strlen(message);
    uint32_t capacity = rfaas_output_capacity(size);
    if (len > capacity)
        len = capacity;
    if (len > RFAAS_FUNCTION_ERROR - 1)
        len = RFAAS_FUNCTION_ERROR - 1;
    memcpy(res, message, len);
    return RFAAS_FUNCTION_ERROR | (uint32_t)len;
}

#endif /* RFAAS_FUNCTION_H */
