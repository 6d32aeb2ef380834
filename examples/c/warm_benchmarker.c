/*
 * warm_benchmarker_c: the warm benchmark of rFaaS written in C over librfaas. Same flags and
 * summary line as warm_benchmarker: allocates one executor and measures repeated blocking
 * invocations of one function (hot or warm, per hot_timeout in benchmark.json).
 *
 *   warm_benchmarker_c --config benchmark.json --device-database devices.json \
 *     [--executors-database executors_database.json] --functions libfunctions.so \
 *     --name empty -s 1 [--output-stats samples.csv] [--input-file F] [--output-file F] [-v]
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rfaas.h>

/* How long the resource manager may take to grant a lease, and to have cores free again. */
#define LEASE_TIMEOUT_MS 10000

static const char *program = "warm_benchmarker_c";

/* Unless `status` is RFAAS_OK: prints `program: [what: ]<the library's message>` once and
 * exits with 1. */
static void check(rfaas_status status, const char *what) {
  if (status != RFAAS_OK) {
    fprintf(stderr, "%s: %s%s%s\n", program, what ? what : "", what ? ": " : "",
            rfaas_last_error());
    exit(1);
  }
}

static void fail(const char *message, const char *detail) {
  fprintf(stderr, "%s: %s%s\n", program, message, detail ? detail : "");
  exit(1);
}

static void usage(FILE *out) {
  fprintf(out,
          "Usage: %s --config FILE --device-database FILE [--executors-database FILE]\n"
          "       --functions FILE --name NAME -s SIZE [--output-stats FILE]\n"
          "       [--input-file FILE] [--output-file FILE] [-v]\n",
          program);
}

static unsigned char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fail("cannot read ", path);
  }
  size_t cap = 1 << 16, n = 0;
  unsigned char *data = malloc(cap);
  size_t got;
  while (data && (got = fread(data + n, 1, cap - n, f)) > 0) {
    n += got;
    if (n == cap) {
      cap *= 2;
      data = realloc(data, cap);
    }
  }
  if (!data || ferror(f)) {
    fail("cannot read ", path);
  }
  fclose(f);
  *len = n;
  return data;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int compare_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

/* Pins the calling thread to the last core, as warm_benchmarker does for pin_threads. */
static void pin_to_last_core(void) {
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  int core = cores > 1 ? (int)cores - 1 : 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(core, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) {
    fprintf(stderr, "%s: could not pin the client thread to core %d\n", program, core);
  }
}

static rfaas_lease *take_lease(const rfaas_benchmark_settings *s, const rfaas_endpoint *endpoint,
                               const char *executors_database) {
  rfaas_lease *lease = NULL;
  if (executors_database) {
    check(rfaas_lease_from_database(executors_database, s->numcores, s->memory_mb, &lease), NULL);
    return lease;
  }
  if (!s->resource_manager) {
    fail("give --executors-database, or set resource_manager_address in the benchmark "
         "configuration", NULL);
  }
  /* Cores of a lease that just ended return once its manager reaped the executor. */
  uint64_t deadline = now_ns() + (uint64_t)LEASE_TIMEOUT_MS * 1000000u;
  for (;;) {
    rfaas_status status = rfaas_lease_from_resource_manager(
        endpoint, s->resource_manager, s->numcores, s->memory_mb, LEASE_TIMEOUT_MS, &lease);
    if (status != RFAAS_ERROR_NO_RESOURCES || now_ns() >= deadline) {
      check(status, NULL);
      return lease;
    }
    struct timespec pause = {0, 2000000};
    nanosleep(&pause, NULL);
  }
}

int main(int argc, char **argv) {
  const char *config = NULL, *devices = NULL, *executors = NULL, *functions = NULL;
  const char *name = NULL, *output_stats = NULL, *input_file = NULL, *output_file = NULL;
  long long size = -1;
  int verbose = 0;
  static const struct option options[] = {
      {"config", required_argument, NULL, 'c'},
      {"device-database", required_argument, NULL, 'd'},
      {"executors-database", required_argument, NULL, 'e'},
      {"functions", required_argument, NULL, 'f'},
      {"name", required_argument, NULL, 'n'},
      {"size", required_argument, NULL, 's'},
      {"output-stats", required_argument, NULL, 'o'},
      {"input-file", required_argument, NULL, 'i'},
      {"output-file", required_argument, NULL, 'w'},
      {"verbose", no_argument, NULL, 'v'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  int opt;
  while ((opt = getopt_long(argc, argv, "s:vh", options, NULL)) != -1) {
    char *end;
    switch (opt) {
      case 'c': config = optarg; break;
      case 'd': devices = optarg; break;
      case 'e': executors = optarg; break;
      case 'f': functions = optarg; break;
      case 'n': name = optarg; break;
      case 'o': output_stats = optarg; break;
      case 'i': input_file = optarg; break;
      case 'w': output_file = optarg; break;
      case 'v': verbose++; break;
      case 's':
        size = strtoll(optarg, &end, 10);
        if (*optarg == '\0' || *end != '\0' || size < 0 || size > UINT32_MAX) {
          fail("-s takes a payload size in bytes, not ", optarg);
        }
        break;
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return 2;
    }
  }
  if (!config || !devices || !functions || !name || size < 0) {
    usage(stderr);
    return 2;
  }
  if (rfaas_abi_version() != RFAAS_ABI_VERSION) {
    fail("librfaas has another ABI version than rfaas.h", NULL);
  }
  check(rfaas_log_init((uint8_t)verbose), NULL);

  rfaas_benchmark_settings settings;
  check(rfaas_benchmark_settings_load(config, &settings), NULL);
  size_t code_len;
  unsigned char *code = read_file(functions, &code_len);
  unsigned char *payload = malloc(size ? (size_t)size : 1);
  if (input_file) {
    size_t len;
    unsigned char *data = read_file(input_file, &len);
    if (len < (size_t)size) {
      fail("the input file has fewer bytes than -s: ", input_file);
    }
    memcpy(payload, data, (size_t)size);
    free(data);
  } else {
    memset(payload, 1, (size_t)size); /* as the seed does */
  }
  if (settings.pin_threads) {
    pin_to_last_core();
  }

  rfaas_endpoint *endpoint;
  check(rfaas_endpoint_open(devices, settings.rdma_device, &endpoint), NULL);
  rfaas_lease *lease = take_lease(&settings, endpoint, executors);
  rfaas_allocation_spec spec;
  rfaas_allocation_spec_init(&spec);
  spec.cores = settings.numcores;
  spec.memory_mb = settings.memory_mb;
  spec.hot_timeout_ms = settings.hot_timeout_ms;
  spec.max_payload = (uint32_t)size;
  spec.input_buf_count = 1;
  spec.listen_port = settings.rdma_device_port;
  rfaas_executor *executor;
  check(rfaas_allocate(endpoint, lease, code, code_len, &spec, &executor), "allocating an executor");
  free(code);
  rfaas_function function;
  check(rfaas_executor_function(executor, name, &function), NULL);
  rfaas_input_buffer *input;
  rfaas_output_buffer *output;
  check(rfaas_input_buffer_new(executor, (size_t)size, &input), NULL);
  check(rfaas_output_buffer_new(executor, (size_t)size, &output), NULL);
  memcpy(rfaas_input_buffer_data(input), payload, (size_t)size);

  uint32_t result_len = 0;
  for (uint64_t i = 0; i < settings.warmup_repetitions; i++) {
    check(rfaas_execute(executor, 0, function, input, (size_t)size, output, &result_len), NULL);
  }
  uint64_t repetitions = settings.repetitions;
  if (repetitions == 0) {
    fail("benchmark.json asks for 0 repetitions", NULL);
  }
  uint64_t *samples = malloc(repetitions * sizeof *samples);
  for (uint64_t i = 0; i < repetitions; i++) {
    uint64_t start = now_ns();
    check(rfaas_execute(executor, 0, function, input, (size_t)size, output, &result_len), NULL);
    samples[i] = now_ns() - start;
  }

  if (output_stats) {
    FILE *csv = fopen(output_stats, "w");
    if (!csv) {
      fail("cannot write ", output_stats);
    }
    fprintf(csv, "repetition,size,round_trip_ns\n");
    for (uint64_t i = 0; i < repetitions; i++) {
      fprintf(csv, "%llu,%lld,%llu\n", (unsigned long long)i, size,
              (unsigned long long)samples[i]);
    }
    if (fclose(csv) != 0) {
      fail("cannot write ", output_stats);
    }
  }
  double sum = 0;
  for (uint64_t i = 0; i < repetitions; i++) {
    sum += (double)samples[i];
  }
  qsort(samples, repetitions, sizeof *samples, compare_u64);
  double median = repetitions % 2 ? (double)samples[repetitions / 2]
                                  : ((double)samples[repetitions / 2 - 1] +
                                     (double)samples[repetitions / 2]) / 2.0;
  fprintf(stderr, "Executed %llu repetitions, avg %g usec/iter, median %g\n",
          (unsigned long long)repetitions, sum / (double)repetitions / 1e3, median / 1e3);

  const unsigned char *result = rfaas_output_buffer_data(output);
  if (output_file) {
    FILE *f = fopen(output_file, "wb");
    if (!f || fwrite(result, 1, result_len, f) != result_len || fclose(f) != 0) {
      fail("cannot write ", output_file);
    }
  }
  printf("Data: ");
  for (uint32_t i = 0; i < result_len && i < 16; i++) {
    printf(i ? " %u" : "%u", result[i]);
  }
  printf("%s\n", result_len > 16 ? " ..." : "");

  free(samples);
  free(payload);
  rfaas_input_buffer_free(input);
  rfaas_output_buffer_free(output);
  rfaas_deallocate(executor);
  rfaas_lease_free(lease);
  rfaas_endpoint_free(endpoint);
  rfaas_benchmark_settings_free(&settings);
  return 0;
}
