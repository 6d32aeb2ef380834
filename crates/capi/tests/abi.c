/*
 * The C ABI from C, against a real executor manager: every call's status and message, NULL
 * and out-of-range arguments, blocking and asynchronous calls. Built (linked statically
 * against librfaas.a through rfaas-static.pc) and run by crates/benchmarks/tests/clients.
 *
 *   abi DEVICES_JSON EXECUTORS_JSON FUNCTIONS
 *
 * Prints one line per failed check and ends with "N passed, M failed".
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rfaas.h>

static int passed, failed;

#define CHECK(cond)                                                      \
  do {                                                                   \
    if (cond) {                                                          \
      passed++;                                                          \
    } else {                                                             \
      failed++;                                                          \
      printf("FAILED line %d: %s (last error: %s)\n", __LINE__, #cond,   \
             rfaas_last_error());                                        \
    }                                                                    \
  } while (0)

/* `status` is `expected` and the message names `needle`. */
#define CHECK_FAILS(call, expected, needle)                                         \
  do {                                                                              \
    rfaas_status s_ = (call);                                                       \
    CHECK(s_ == (expected));                                                        \
    CHECK(strstr(rfaas_last_error(), (needle)) != NULL);                            \
  } while (0)

static unsigned char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  *len = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *data = malloc(*len);
  if (fread(data, 1, *len, f) != *len) {
    free(data);
    data = NULL;
  }
  fclose(f);
  return data;
}

static void *other_thread(void *unused) {
  (void)unused;
  /* The message of a failure is per thread: this thread has none. */
  return (void *)(strcmp(rfaas_last_error(), "") == 0 ? "clean" : NULL);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: abi DEVICES_JSON EXECUTORS_JSON FUNCTIONS\n");
    return 2;
  }
  const char *devices = argv[1], *executors = argv[2], *functions = argv[3];
  int native = strstr(functions, ".so") != NULL;

  CHECK(rfaas_abi_version() == RFAAS_ABI_VERSION);
  CHECK(strcmp(rfaas_status_name(RFAAS_ERROR_TIMEOUT), "RFAAS_ERROR_TIMEOUT") == 0);
  CHECK(strcmp(rfaas_status_name(99), "unknown status") == 0);
  CHECK(strcmp(rfaas_last_error(), "") == 0);

  /* Files and NULLs. */
  rfaas_endpoint *endpoint = NULL;
  CHECK_FAILS(rfaas_endpoint_open("no-such-devices.json", NULL, &endpoint), RFAAS_ERROR_CONFIG,
              "no-such-devices.json");
  CHECK(endpoint == NULL);
  CHECK_FAILS(rfaas_endpoint_open(NULL, NULL, &endpoint), RFAAS_ERROR_INVALID_ARGUMENT,
              "device_database is NULL");
  CHECK_FAILS(rfaas_endpoint_open(devices, "no-such-device", &endpoint), RFAAS_ERROR_CONFIG,
              "no-such-device");
  pthread_t thread;
  void *verdict = NULL;
  pthread_create(&thread, NULL, other_thread, NULL);
  pthread_join(thread, &verdict);
  CHECK(verdict != NULL);
  CHECK(rfaas_endpoint_open(devices, "", &endpoint) == RFAAS_OK);
  CHECK_FAILS(rfaas_endpoint_open(devices, "", NULL), RFAAS_ERROR_INVALID_ARGUMENT, "out is NULL");

  rfaas_lease *lease = NULL;
  CHECK_FAILS(rfaas_lease_from_database(executors, 64, 256, &lease), RFAAS_ERROR_NO_EXECUTOR,
              "64 cores");
  CHECK_FAILS(rfaas_lease_from_resource_manager(endpoint, "not an address", 1, 256, 100, &lease),
              RFAAS_ERROR_INVALID_ARGUMENT, "not host:port");
  CHECK(rfaas_lease_from_database(executors, 1, 256, &lease) == RFAAS_OK);

  size_t code_len = 0;
  unsigned char *code = read_file(functions, &code_len);
  CHECK(code != NULL);
  rfaas_allocation_spec spec;
  rfaas_allocation_spec_init(&spec);
  CHECK(spec.cores == 1 && spec.max_payload == 4096 && spec.input_buf_count == 2);
  rfaas_executor *executor = NULL;
  CHECK_FAILS(rfaas_allocate(NULL, lease, code, code_len, &spec, &executor),
              RFAAS_ERROR_INVALID_ARGUMENT, "endpoint is NULL");
  spec.sandbox = 7;
  CHECK_FAILS(rfaas_allocate(endpoint, lease, code, code_len, &spec, &executor),
              RFAAS_ERROR_INVALID_ARGUMENT, "sandbox 7");
  spec.sandbox = native ? RFAAS_SANDBOX_WASM : RFAAS_SANDBOX_NATIVE;
  CHECK_FAILS(rfaas_allocate(endpoint, lease, code, code_len, &spec, &executor), RFAAS_ERROR_CODE,
              "");
  CHECK_FAILS(rfaas_allocate(endpoint, lease, (const uint8_t *)"junk", 4, &spec, &executor),
              RFAAS_ERROR_CODE, "");
  CHECK(executor == NULL);

  /* A real allocation. */
  rfaas_allocation_spec_init(&spec);
  spec.hot_timeout_ms = 0;
  spec.max_payload = 64;
  CHECK(rfaas_allocate(endpoint, lease, code, code_len, &spec, &executor) == RFAAS_OK);
  if (!executor) {
    printf("%d passed, %d failed\n", passed, failed + 1);
    return 1;
  }
  CHECK(rfaas_executor_cores(executor) == 1);
  rfaas_function empty = 0, oversize = 0, nope = 0;
  CHECK(rfaas_executor_function(executor, "empty", &empty) == RFAAS_OK);
  CHECK(rfaas_executor_function(executor, "oversize", &oversize) == RFAAS_OK);
  CHECK_FAILS(rfaas_executor_function(executor, "nope", &nope), RFAAS_ERROR_CODE, "`nope`");
  rfaas_input_buffer *in = NULL, *big = NULL;
  rfaas_output_buffer *out = NULL;
  CHECK(rfaas_input_buffer_new(executor, 64, &in) == RFAAS_OK);
  CHECK(rfaas_input_buffer_new(executor, 128, &big) == RFAAS_OK);
  CHECK(rfaas_output_buffer_new(executor, 64, &out) == RFAAS_OK);
  CHECK(rfaas_input_buffer_capacity(in) == 64 && rfaas_output_buffer_capacity(out) == 64);
  memcpy(rfaas_input_buffer_data(in), "hello, rfaas", 12);

  uint32_t len = 0;
  CHECK(rfaas_execute(executor, 0, empty, in, 12, out, &len) == RFAAS_OK);
  CHECK(len == 12 && memcmp(rfaas_output_buffer_data(out), "hello, rfaas", 12) == 0);
  CHECK_FAILS(rfaas_execute(executor, 5, empty, in, 12, out, &len), RFAAS_ERROR_INVALID_ARGUMENT,
              "thread 5");
  CHECK_FAILS(rfaas_execute(executor, 0, 99, in, 12, out, &len), RFAAS_ERROR_INVALID_ARGUMENT,
              "function 99");
  CHECK_FAILS(rfaas_execute(executor, 0, empty, in, 65, out, &len), RFAAS_ERROR_INVALID_ARGUMENT,
              "65 bytes");
  CHECK_FAILS(rfaas_execute(executor, 0, empty, big, 100, out, &len),
              RFAAS_ERROR_INVALID_ARGUMENT, "max payload");
  CHECK_FAILS(rfaas_execute(executor, 0, empty, in, 12, out, NULL), RFAAS_ERROR_INVALID_ARGUMENT,
              "result_len is NULL");
  CHECK_FAILS(rfaas_execute(executor, 0, empty, NULL, 12, out, &len),
              RFAAS_ERROR_INVALID_ARGUMENT, "input is NULL");
  CHECK_FAILS(rfaas_execute(executor, 0, oversize, in, 12, out, &len), RFAAS_ERROR_INVOCATION,
              "more bytes than its output buffer");
  CHECK(rfaas_last_return_code() == 3);
  CHECK(rfaas_execute_within(executor, 0, empty, in, 5, out, 5000, &len) == RFAAS_OK && len == 5);

  /* Asynchronous: two slots in flight, polled and waited for; a third call is busy. */
  rfaas_input_buffer *in2 = NULL;
  rfaas_output_buffer *out2 = NULL;
  CHECK(rfaas_input_buffer_new(executor, 64, &in2) == RFAAS_OK);
  CHECK(rfaas_output_buffer_new(executor, 64, &out2) == RFAAS_OK);
  memcpy(rfaas_input_buffer_data(in2), "second", 6);
  rfaas_invocation *first = NULL, *second = NULL, *third = NULL;
  CHECK(rfaas_submit(executor, 0, empty, in, 12, out, &first) == RFAAS_OK);
  CHECK(rfaas_submit(executor, 0, empty, in2, 6, out2, &second) == RFAAS_OK);
  CHECK_FAILS(rfaas_submit(executor, 0, empty, in2, 6, out2, &third), RFAAS_ERROR_BUSY,
              "in use by calls in flight");
  bool done = false;
  while (rfaas_invocation_is_done(first, &done) == RFAAS_OK && !done) {
  }
  CHECK(done);
  CHECK(rfaas_invocation_wait(first, &len) == RFAAS_OK && len == 12);
  CHECK(rfaas_invocation_wait_within(second, 5000, &len) == RFAAS_OK && len == 6);
  CHECK(memcmp(rfaas_output_buffer_data(out2), "second", 6) == 0);
  CHECK_FAILS(rfaas_invocation_wait(NULL, &len), RFAAS_ERROR_INVALID_ARGUMENT,
              "invocation is NULL");
  /* A NULL out-pointer still frees the invocation; so does giving one up. */
  CHECK(rfaas_submit(executor, 0, empty, in, 12, out, &first) == RFAAS_OK);
  CHECK_FAILS(rfaas_invocation_wait(first, NULL), RFAAS_ERROR_INVALID_ARGUMENT,
              "result_len is NULL");
  CHECK(rfaas_submit(executor, 0, empty, in2, 6, out2, &second) == RFAAS_OK);
  rfaas_invocation_free(second);

  /* Once the late results of the given-up calls are in, their slots are free again (a call
   * that finds none free takes the results that have arrived). */
  rfaas_status status;
  int tries = 0;
  memcpy(rfaas_input_buffer_data(in2), "again", 5);
  while ((status = rfaas_execute(executor, 0, empty, in2, 5, out2, &len)) == RFAAS_ERROR_BUSY &&
         tries++ < 1000000) {
  }
  CHECK(status == RFAAS_OK && len == 5);
  if (native) {
    rfaas_function sleep_fn = 0;
    CHECK(rfaas_executor_function(executor, "sleep", &sleep_fn) == RFAAS_OK);
    uint32_t millis = 300;
    memcpy(rfaas_input_buffer_data(in), &millis, 4);
    CHECK_FAILS(rfaas_execute_within(executor, 0, sleep_fn, in, 4, out, 50, &len),
                RFAAS_ERROR_TIMEOUT, "did not answer within");
    /* The timed-out call keeps its slot; the other one serves (after the sleep ends). */
    CHECK(rfaas_execute(executor, 0, empty, in2, 5, out2, &len) == RFAAS_OK && len == 5);
  }

  rfaas_input_buffer_free(in);
  rfaas_input_buffer_free(in2);
  rfaas_input_buffer_free(big);
  rfaas_output_buffer_free(out);
  rfaas_output_buffer_free(out2);
  rfaas_deallocate(executor);
  rfaas_lease_free(lease);
  rfaas_endpoint_free(endpoint);
  /* NULL is nothing to free. */
  rfaas_deallocate(NULL);
  rfaas_lease_free(NULL);
  rfaas_endpoint_free(NULL);
  rfaas_invocation_free(NULL);
  rfaas_benchmark_settings_free(NULL);
  free(code);
  printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
